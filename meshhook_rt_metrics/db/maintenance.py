"""The loop that runs the SQL rollup pass and maintenance functions where pg_cron cannot.

Debian's pg_cron 1.4 has no second-level schedules, so the rollup pass (``metrics.rollup_pass()``: merge
the committed points into the rollups, then publish live updates) runs from here every ``publish_every``
seconds, and again at once while it reports a backlog; ``metrics.maintain()`` runs every ``maintain_every``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def maintain_once(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """One full maintenance pass; returns the SQL function's report."""
    row = conn.execute("select metrics.maintain()").fetchone()
    if conn.execute("select to_regprocedure('localstack.ensure_realtime_partitions(int,int)')").fetchone()[0]:  # type: ignore[index]
        conn.execute("select localstack.ensure_realtime_partitions()")
    return dict(row[0]) if row and row[0] else {}


def pass_once(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """One rollup pass: merge the committed points (at most ``metrics.config.pass_max_points``) into the
    rollups, then publish every project's pending live updates that its rate limit allows; returns the pass's
    report (``messages`` sent, ``behind`` when a backlog beyond the bound is left for the next pass)."""
    row = conn.execute("select metrics.rollup_pass()").fetchone()
    return dict(row[0]) if row and row[0] else {}


def publish_once(conn: psycopg.Connection[Any]) -> int:
    """Rollup passes (each committed on its own in autocommit mode) until the watermark reaches where it could
    have gone when this started (the oldest transaction then running: every point then mergeable is merged),
    however fast others keep writing; returns the messages sent."""
    row = conn.execute(
        "select pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text"
    ).fetchone()
    target = row[0] if row else None
    sent = 0
    while True:
        report = pass_once(conn)
        sent += int(report.get("messages") or 0)
        if not report.get("behind") or _merged_up_to(conn, target):
            return sent


def _merged_up_to(conn: psycopg.Connection[Any], target: str | None) -> bool:
    row = conn.execute(
        "select xid_watermark >= %s::xid8 from metrics.rollup_pass_state", (target,)
    ).fetchone()
    return bool(row and row[0])


def _pass_task(conn: psycopg.Connection[Any]) -> bool:
    """The loop's pass; True (run again at once) while a backlog is left."""
    return bool(pass_once(conn).get("behind"))


BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


def _backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, failures - 1)))


def run_loop(
    db_url: str,
    publish_every: float = 1.0,
    maintain_every: float = 60.0,
    stop: threading.Event | None = None,
) -> None:
    """Run until ``stop`` is set. Nothing ends the loop but ``stop``: a lost connection is re-established with
    backoff, and any other error of a pass is logged with its traceback and that task (maintenance or
    publishing, independently) is retried with backoff (0.5 s doubling to 30 s) while the other goes on."""
    stop = stop or threading.Event()
    tasks: list[_Task] = [
        _Task("maintenance", maintain_every, lambda conn: log.info("maintenance: %s", maintain_once(conn))),
        _Task("publish", publish_every, _pass_task),
    ]
    connect_failures = 0
    while not stop.is_set():
        try:
            with psycopg.connect(
                db_url, autocommit=True, application_name="meshhook-metrics maintain"
            ) as conn:
                if connect_failures:
                    log.info("database connection re-established")
                connect_failures = 0
                while not stop.is_set():
                    for task in tasks:
                        task.run_if_due(conn)
                    stop.wait(min(max(0.0, t.next_at - time.monotonic()) for t in tasks))
        except Exception as exc:
            connect_failures += 1
            delay = _backoff(connect_failures)
            if isinstance(exc, psycopg.OperationalError):
                log.warning("database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, delay)
            else:
                log.exception("maintenance loop failed; reconnecting in %.1fs", delay)
            stop.wait(delay)


class _Task:
    """One periodic job of the loop with its own schedule and failure backoff; a run that returns True is due
    again at once (the pass, while it reports a backlog)."""

    def __init__(self, name: str, every: float, run: Callable[[psycopg.Connection[Any]], object]) -> None:
        self.name = name
        self.every = every
        self.run = run
        self.next_at = 0.0
        self.failures = 0

    def run_if_due(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() < self.next_at:
            return
        try:
            again = self.run(conn)
        except psycopg.OperationalError:
            raise  # the connection is gone: the loop reconnects
        except Exception:
            if conn.broken or conn.closed:
                raise
            self.failures += 1
            delay = max(self.every, _backoff(self.failures))
            log.exception("%s failed (%d in a row); retrying in %.1fs", self.name, self.failures, delay)
            self.next_at = time.monotonic() + delay
        else:
            if self.failures:
                log.info("%s recovered after %d failure(s)", self.name, self.failures)
            self.failures = 0
            self.next_at = time.monotonic() + (0.0 if again is True else self.every)
