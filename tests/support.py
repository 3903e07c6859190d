"""Helpers shared by tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from meshhook_rt_metrics.db.session import as_caller, claims_for_user

_batch_ids = itertools.count(1)


@dataclass(frozen=True)
class TestDatabase:
    """A database of the test cluster: ``url`` as the migration owner ``postgres``, ``admin_url`` as superuser."""

    __test__ = False
    name: str
    url: str
    admin_url: str
    authenticator_password: str = "authenticator"
    """The cluster's generated password of ``authenticator`` (the gateway's Data API login)."""


def new_project() -> uuid.UUID:
    return uuid.uuid4()


def counter(
    name: str,
    value: float,
    labels: Mapping[str, str] | None = None,
    *,
    ts: float | None = None,
    count: int = 1,
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "counter",
        "labels": dict(labels or {}),
        "ts": ts or time.time(),
        "count": count,
        "sum": value,
    }


def gauge(
    name: str, value: float, labels: Mapping[str, str] | None = None, *, ts: float | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "gauge",
        "labels": dict(labels or {}),
        "ts": ts or time.time(),
        "count": 1,
        "sum": value,
        "min": value,
        "max": value,
        "last": value,
    }


def histogram(
    name: str, values: Iterable[float], labels: Mapping[str, str] | None = None, *, ts: float | None = None
) -> dict[str, Any]:
    from meshhook_rt_metrics.client.sketch import Sketch

    observed = list(values)
    sketch = Sketch()
    for value in observed:
        sketch.add(value)
    return {
        "name": name,
        "kind": "histogram",
        "labels": dict(labels or {}),
        "ts": ts or time.time(),
        "count": len(observed),
        "sum": sum(observed),
        "min": min(observed),
        "max": max(observed),
        "sketch": sketch.to_wire(),
    }


def batch(
    project: uuid.UUID,
    points: list[dict[str, Any]],
    *,
    source: str = "test-source",
    batch_id: str | None = None,
) -> dict[str, Any]:
    return {
        "project_id": str(project),
        "source": source,
        "batch_id": batch_id or f"b{next(_batch_ids)}",
        "points": points,
    }


def ingest(
    conn: psycopg.Connection[Any], payload: Mapping[str, Any], *, merge: bool = True
) -> dict[str, Any]:
    """``metrics.ingest`` of one batch, then (``merge``) what the rollup pass does with it once committed."""
    row = conn.execute("select metrics.ingest(%s::jsonb)", (json.dumps(payload),)).fetchone()
    assert row is not None
    if merge:
        merge_points(conn)
    return dict(row[0])


@contextlib.contextmanager
def rollup_loop(url: str, every: float = 0.2) -> Iterator[None]:
    """Run ``metrics.rollup_pass()`` every ``every`` seconds in a thread, as the stack's maintain loop (every second)
    or pg_cron (1 s) do: for tests of what follows an ingest by itself (rollups, totals, live messages)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True, application_name="tests rollup loop") as conn:
                while not stop.wait(every):
                    conn.execute("select metrics.rollup_pass()")
        except BaseException as exc:  # reported when the block ends
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]


def merge_points(conn: psycopg.Connection[Any], settle: float = 5.0) -> None:
    """Merge the points ingested so far into the rollups, as ``metrics.rollup_pass()`` does every second.

    Outside a transaction the pass itself runs, once no transaction of another database is older than the
    newest point (waiting ``settle`` seconds at most): the pass's watermark is the cluster's oldest running
    transaction, so another database's transaction that began before the ingest (another test's, an autovacuum
    ANALYZE's) would hold its points back. A transaction this database's own sessions hold open is a test's
    doing and is not waited for. Inside a transaction (possibly acting as a signed-in caller), the
    transaction's own points are merged by ``metrics.rollup_now()`` as the session's login role, and the
    caller's role is restored: the pass would merge exactly these points once the transaction commits.
    """
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        other_databases_finished(conn, settle)
        conn.execute("select metrics.rollup_pass()")
        return
    role = conn.execute("select current_user").fetchone()[0]  # type: ignore[index]
    conn.execute("set local role none")
    conn.execute("select metrics.rollup_now()")
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))


_HELD_BACK = """
select exists (
  select from pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) as x
  where x < (select max(p.xid) from metrics.points p)
    and not exists (
      select from pg_catalog.pg_stat_activity a
      where a.datname = pg_catalog.current_database() and a.backend_xid = pg_catalog.xid(x)
    )
)
"""


def held_back_by_another_database(conn: psycopg.Connection[Any]) -> bool:
    """Whether a running transaction outside this database's visible sessions is older than the newest point
    (it keeps the pass's watermark below that point)."""
    row = conn.execute(_HELD_BACK).fetchone()
    return bool(row and row[0])


def other_databases_finished(conn: psycopg.Connection[Any], limit: float = 10.0) -> None:
    """Wait (``limit`` seconds at most) until no transaction of another database is older than the newest
    point, so that the next pass's range is exactly the points committed here; this database's own open
    transactions, which tests hold on purpose, are not waited for."""
    deadline = time.monotonic() + limit
    while held_back_by_another_database(conn) and time.monotonic() < deadline:
        time.sleep(0.01)


def roll_up(conn: psycopg.Connection[Any]) -> None:
    """Every closed 5-minute window and hour rolled up, as the maintenance loop would have done by now (the
    5-minute tier backfills at most an hour per run)."""
    conn.execute("select metrics.maintain()")
    while not conn.execute(
        "select metrics.five_minutes_complete_until() >= metrics.five_minute_window(now() - interval '5 minutes')"
    ).fetchone()[0]:  # type: ignore[index]
        conn.execute("select metrics.rollup_five_minutes()")


def add_member(
    conn: psycopg.Connection[Any], project: uuid.UUID, user: uuid.UUID, role: str = "viewer"
) -> None:
    """Membership through the default store (as a trusted connection)."""
    conn.execute("insert into metrics.projects (id) values (%s) on conflict do nothing", (project,))
    conn.execute(
        "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, %s)"
        " on conflict (project_id, user_id) do update set role = excluded.role",
        (project, user, role),
    )


def user_claims(user: uuid.UUID) -> dict[str, Any]:
    return claims_for_user(str(user))


def can_read_topic(conn: psycopg.Connection[Any], claims: Mapping[str, Any], topic: str) -> bool:
    """Supabase Realtime's join check: probe rows inserted as admin, selected as the user, rolled back."""
    try:
        with conn.transaction():
            conn.execute("select set_config('realtime.topic', %s, true)", (topic,))
            conn.execute(
                "insert into realtime.messages (topic, extension, private, payload, event)"
                " values (%s, 'broadcast', true, '{}', 'probe'), (%s, 'presence', true, '{}', 'probe')",
                (topic, topic),
            )
            with as_caller(conn, claims):
                row = conn.execute(
                    "select count(*) from realtime.messages where topic = %s and extension = 'broadcast'",
                    (topic,),
                ).fetchone()
            raise _RollbackProbeError(bool(row and row[0]))
    except _RollbackProbeError as outcome:
        return outcome.visible


class _RollbackProbeError(Exception):
    def __init__(self, visible: bool) -> None:
        super().__init__("rollback probe")
        self.visible = visible


def stop_group(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Stop a process started in a session of its own, with its children: ``sig``, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
