"""Hardening of issue #15 (migration 20261206000200) where one connection cannot show it: a direct login that
claims another role, maintenance that must not block ingest (pg_locks), and what the HTTP service makes of the
new database errors and exposition rows. The single-session rules are in supabase/tests/hardening.sql."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from meshhook_rt_metrics.api import exposition
from meshhook_rt_metrics.api.alerts import translated
from meshhook_rt_metrics.api.errors import ApiError
from tests.support import TestDatabase, batch, counter, gauge, ingest


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


def partitions(conn: psycopg.Connection[Any]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'metrics.points'::regclass"
        )
    }


def old_partition(conn: psycopg.Connection[Any]) -> str:
    """A partition past raw retention, so that maintenance has one to drop."""
    conn.execute("select metrics.ensure_points_partition(current_date - 10)")
    row = conn.execute("select 'points_' || to_char(current_date - 10, 'YYYYMMDD')").fetchone()
    assert row is not None and row[0] in partitions(conn)
    return str(row[0])


# -- finding 2: JWT claims ----------------------------------------------------------------------------------------------
@pytest.fixture
def direct_login(fresh_db: TestDatabase) -> Iterator[str]:
    """A login role that is a member of authenticated (as a team might give a reporting tool), its URL."""
    name = f"direct_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as admin:
        admin.execute(f"create role {name} login password 'direct' in role authenticated")
    url = make_conninfo(
        **{**conninfo_to_dict(fresh_db.url), "user": name, "password": "direct"}  # type: ignore[arg-type]
    )
    yield url
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as admin:
        admin.execute(f"drop owned by {name}")
        admin.execute(f"drop role {name}")


def test_a_direct_login_cannot_claim_the_service_role(
    conn: psycopg.Connection[Any], direct_login: str
) -> None:
    victim = uuid.uuid4()
    ingest(conn, batch(victim, [counter("jobs_total", 1)]))
    with psycopg.connect(direct_login, autocommit=True) as login:
        login.execute(
            "select set_config('request.jwt.claims', %s, false)", (json.dumps({"role": "service_role"}),)
        )
        login.execute("select set_config('request.jwt.claim.role', 'service_role', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="claims name role service_role"):
            login.execute(
                "select metrics.ingest(%s::jsonb)",
                (json.dumps(batch(victim, [counter("jobs_total", 1000)])),),
            )
        horizon = login.execute(
            "select * from metrics.query_horizon(%s, now() - interval '1 hour', now())", (victim,)
        ).fetchall()
        assert horizon == [], "no horizon of a project the login is no member of"
        assert login.execute("select * from metrics.my_projects()").fetchall() == []
        # SET ROLE authenticated does not help either: the claim names service_role
        login.execute("set role authenticated")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login.execute(
                "select metrics.ingest(%s::jsonb)",
                (json.dumps(batch(victim, [counter("jobs_total", 1000)])),),
            )
    total = conn.execute(
        "select sum(t.sum) from metrics.series_totals_current t where t.project_id = %s", (victim,)
    ).fetchone()
    assert total == (1.0,), "nothing of the forged batches was stored"


def test_the_data_api_path_still_believes_its_claims(conn: psycopg.Connection[Any]) -> None:
    """As PostgREST: SET LOCAL ROLE <role claim> and the claims, here for the service role."""
    project = uuid.uuid4()
    with conn.transaction():
        conn.execute("set local role service_role")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)", (json.dumps({"role": "service_role"}),)
        )
        assert ingest(conn, batch(project, [counter("jobs_total", 1)]))["status"] == "accepted"
        assert conn.execute("select metrics.request_role()").fetchone() == ("service_role",)


# -- finding 4: maintenance does not block ingest ---------------------------------------------------------------------
STRONG = "('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"


def test_ingest_is_not_blocked_while_maintenance_runs_on_a_partition_day(
    fresh_db: TestDatabase, conn: psycopg.Connection[Any]
) -> None:
    """maintain() creates three partitions and drops one on this run, and is held up half-way (another session
    holds the maintenance_state row): meanwhile it holds no lock on metrics.points that ingest waits for, and an
    ingest completes. Before the migration, the partitions it created first held ACCESS EXCLUSIVE all along."""
    conn.execute("select metrics.ensure_points_partition(current_date)")
    old = old_partition(conn)
    project = uuid.uuid4()
    ingest(conn, batch(project, [counter("jobs_total", 1)]))  # the project's first batch: families, series
    holder = psycopg.connect(fresh_db.url)
    holder.execute("select * from metrics.maintenance_state for update")
    report: dict[str, Any] = {}

    def run() -> None:
        with psycopg.connect(fresh_db.url, autocommit=True, application_name="hardening-maintain") as m:
            row = m.execute("select metrics.maintain()").fetchone()
            assert row is not None
            report.update(row[0])

    thread = threading.Thread(target=run)
    thread.start()
    try:
        pid = None
        for _ in range(200):
            row = conn.execute(
                "select pid from pg_stat_activity where application_name = 'hardening-maintain'"
                " and wait_event_type = 'Lock'"
            ).fetchone()
            if row:
                pid = row[0]
                break
            time.sleep(0.05)
        assert pid is not None, "maintain() did not reach the held row"
        held = conn.execute(
            f"select mode from pg_locks where pid = %s and locktype = 'relation'"
            f" and relation = 'metrics.points'::regclass and granted and mode in {STRONG}",
            (pid,),
        ).fetchall()
        assert held == [], f"maintain() holds {held} on metrics.points while it runs"
        with psycopg.connect(fresh_db.url, autocommit=True) as other:
            other.execute("set statement_timeout = '5s'")
            started = time.monotonic()
            # merge=False: the holder's open transaction keeps the pass's watermark behind this ingest
            assert (
                ingest(other, batch(project, [counter("jobs_total", 1)]), merge=False)["status"] == "accepted"
            )
            assert time.monotonic() - started < 2.0
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=30)
    assert report["partitions_created"] == 3 and report["partitions_dropped"] == 1, report
    assert report["partitions_deferred"] == 0
    assert old not in partitions(conn)


def test_a_busy_partition_drop_waits_briefly_and_is_retried_by_the_next_run(
    fresh_db: TestDatabase, conn: psycopg.Connection[Any]
) -> None:
    old = old_partition(conn)
    blocker = psycopg.connect(fresh_db.url)
    blocker.execute("lock table metrics.points in row exclusive mode")  # as an open ingest transaction
    try:
        conn.execute("set statement_timeout = '10s'")
        started = time.monotonic()
        row = conn.execute("select metrics.maintain()").fetchone()
        elapsed = time.monotonic() - started
        assert row is not None
        assert (row[0]["partitions_dropped"], row[0]["partitions_deferred"]) == (0, 1)
        assert elapsed < 3.0, f"maintain() waited {elapsed:.1f}s for the busy table"
        assert old in partitions(conn)
        # nothing of the deferred drop is left holding or queued on metrics.points
        assert conn.execute(
            "select count(*) from pg_locks where relation = 'metrics.points'::regclass and not granted"
        ).fetchone() == (0,)
    finally:
        blocker.rollback()
        blocker.close()
    row = conn.execute("select metrics.maintain()").fetchone()
    assert row is not None and row[0]["partitions_dropped"] == 1 and row[0]["partitions_deferred"] == 0
    assert old not in partitions(conn)
    assert conn.execute("select current_setting('lock_timeout')").fetchone() == ("0",), (
        "the session's setting stays"
    )


def test_apply_retention_alone_still_drops_expired_partitions(conn: psycopg.Connection[Any]) -> None:
    old = old_partition(conn)
    report = conn.execute("select metrics.apply_retention()").fetchone()
    assert report is not None and report[0]["partitions_dropped"] == 1
    assert old not in partitions(conn)


# -- finding 17: what the HTTP service answers for a quota -------------------------------------------------------------
def test_the_http_service_answers_a_full_quota_with_422_at_field_quota(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    conn.execute("insert into metrics.projects (id, alert_rules_quota) values (%s, 1)", (project,))
    insert = "insert into metrics.alert_rules (project_id, name, metric, op, threshold) values (%s, %s, 'x', '>', 1)"
    conn.execute(insert, (project, "first"))
    with pytest.raises(ApiError) as raised, translated("rule"):
        conn.execute(insert, (project, "second"))
    error = raised.value
    assert error.status == 422 and error.code == "validation_failed"
    assert error.details is not None and error.details[0].loc == ["body", "quota"]
    assert error.details[0].message == "the project has 1 alert rules, the most allowed (alert_rules_quota)"


# -- finding 8: the rendered all-projects exposition -------------------------------------------------------------------
def test_a_project_cannot_hide_another_projects_metric_by_sending_another_kind(
    conn: psycopg.Connection[Any],
) -> None:
    victim, intruder = uuid.UUID("ff000000-0000-4000-8000-0000000000ff"), uuid.UUID(int=1)
    first = counter("shared_total", 5)
    ingest(conn, batch(victim, [{**first, "help": "Jobs done"}]))
    conn.execute(
        "update metrics.families set created_at = now() - interval '1 minute' where name = 'shared_total'"
    )
    ingest(conn, batch(intruder, [{**gauge("shared_total", 7.0), "help": "hijacked"}]))
    rows = conn.execute(f"select {exposition.ROW_COLUMNS} from metrics.exposition_rows()").fetchall()
    body, _ = exposition.render(rows, None)
    text = body.decode()
    assert "# HELP shared_total Jobs done" in text and "# TYPE shared_total counter" in text
    assert f'shared_total{{project_id="{victim}"}} 5.0' in text
    assert "hijacked" not in text and str(intruder) not in text
    conflicts = conn.execute(
        "select name, project_id, kind, exported_kind from metrics.exposition_conflicts()"
    )
    assert conflicts.fetchall() == [("shared_total", intruder, "gauge", "counter")]
