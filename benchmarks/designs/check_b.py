"""Guarantee checks of design B's rollup pass (benchmarks/designs/b_append_only.sql) on a scratch cluster.

    .venv/bin/python -m benchmarks.designs.check_b

1. an ingest transaction held open across several passes is rolled up once, after it commits;
2. a rolled-back ingest leaves nothing; a resent batch is a duplicate;
3. two passes at once: the second returns {"skipped": true};
4. a point of an hour and a 5-minute window already rolled up is marked in late_hours / late_five_minutes
   (and, since marks are written by the pass, also when the ingest began before the rollup ran);
5. the live message carries the minute after the pass.
Each check prints ok or raises.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

from benchmarks import ingest as bench


def batch(project: uuid.UUID, batch_id: str, value: float, ts: float, name: str = "check_gauge") -> str:
    point = {
        "name": name,
        "kind": "gauge",
        "labels": {},
        "ts": ts,
        "count": 1,
        "sum": value,
        "min": value,
        "max": value,
        "last": value,
    }
    return json.dumps(
        {"project_id": str(project), "source": "check", "batch_id": batch_id, "points": [point]}
    )


def minute_count(conn: psycopg.Connection[Any], project: uuid.UUID, name: str = "check_gauge") -> int:
    row = conn.execute(
        "select coalesce(sum(r.count), 0) from metrics.rollup_1m r join metrics.series s on s.id = r.series_id"
        " where r.project_id = %s and s.name = %s",
        (project, name),
    ).fetchone()
    return int(row[0]) if row else 0


def run_pass(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute("select metrics.rollup_pass()").fetchone()
    assert row is not None
    return dict(row[0])


def main() -> None:  # noqa: PLR0915 - the checks in order, one scenario
    with bench.database(None) as cluster:
        url = cluster.database_for(bench.DESIGNS["B"], "check")
        project = uuid.uuid4()
        now = time.time()
        with psycopg.connect(url, autocommit=True) as a, psycopg.connect(url, autocommit=True) as b:
            a.execute("select metrics.ingest(%s::jsonb)", (batch(project, "first", 1, now),))
            run_pass(a)
            assert minute_count(a, project) == 1

            # 1. open transaction across passes
            b.execute("begin")
            b.execute("select metrics.ingest(%s::jsonb)", (batch(project, "held", 2, now),))
            a.execute("select metrics.ingest(%s::jsonb)", (batch(project, "later", 3, now),))  # commits first
            for _ in range(3):
                run_pass(a)
            held_back = minute_count(a, project)
            b.execute("commit")
            run_pass(a)
            after = minute_count(a, project)
            run_pass(a)
            again = minute_count(a, project)
            # while the older transaction is open, the later committed one waits too (xmin watermark)
            assert held_back == 1, held_back
            assert after == again == 3, (after, again)
            print(
                f"1 ok: held-open ingest rolled up once after commit (count {held_back} -> {after} -> {again})"
            )

            # 2. rollback and resend
            b.execute("begin")
            b.execute("select metrics.ingest(%s::jsonb)", (batch(project, "rolled-back", 4, now),))
            b.execute("rollback")
            run_pass(a)
            row = a.execute("select metrics.ingest(%s::jsonb)", (batch(project, "later", 3, now),)).fetchone()
            assert row and row[0]["status"] == "duplicate", row
            run_pass(a)
            assert minute_count(a, project) == 3
            print("2 ok: rolled-back ingest left nothing; resent batch is a duplicate")

            # 3. concurrent passes
            b.execute("begin")
            first = b.execute("select metrics.rollup_pass()").fetchone()
            second = run_pass(a)
            b.execute("commit")
            assert second.get("skipped") is True, (first, second)
            print("3 ok: a second concurrent pass is skipped")

            # 4. late marks: pretend hours/windows up to now are rolled up, then send a point 10 minutes old
            a.execute(
                "update metrics.maintenance_state set hour_watermark = date_trunc('hour', now()) + interval '1 hour',"
                " five_minute_watermark = metrics.five_minute_window(now()) + interval '5 minutes'"
            )
            old = now - 600
            a.execute("select metrics.ingest(%s::jsonb)", (batch(project, "late", 5, old),))
            run_pass(a)
            late = a.execute(
                "select (select count(*) from metrics.late_hours), (select count(*) from metrics.late_five_minutes)"
            ).fetchone()
            assert late and late[0] >= 1 and late[1] >= 1, late
            print(f"4 ok: late point marked (late_hours {late[0]}, late_five_minutes {late[1]})")

            # 4b. the ingest transaction began before the "rollup" advanced the watermark (A's known gap)
            a.execute("delete from metrics.late_hours; delete from metrics.late_five_minutes")
            a.execute(
                "update metrics.maintenance_state set hour_watermark = '-infinity', five_minute_watermark = '-infinity'"
            )
            b.execute("begin")
            b.execute("select metrics.ingest(%s::jsonb)", (batch(project, "slow", 6, old),))
            a.execute(
                "update metrics.maintenance_state set hour_watermark = date_trunc('hour', now()) + interval '1 hour',"
                " five_minute_watermark = metrics.five_minute_window(now()) + interval '5 minutes'"
            )
            b.execute("commit")
            run_pass(a)
            late = a.execute(
                "select (select count(*) from metrics.late_hours), (select count(*) from metrics.late_five_minutes)"
            ).fetchone()
            assert late and late[0] >= 1 and late[1] >= 1, late
            print("4b ok: a point whose ingest began before the watermark moved is still marked late")

            # 5. live message after the pass
            a.execute("update metrics.publish_state set last_sent_at = '-infinity'")
            a.execute("select metrics.ingest(%s::jsonb)", (batch(project, "live", 77, time.time()),))
            run_pass(a)
            row = a.execute(
                "select count(*) from realtime.messages where topic = metrics.topic(%s)"
                " and payload -> 'series' @> '[{\"last\": 77}]'",
                (project,),
            ).fetchone()
            assert row and row[0] >= 1, row
            print("5 ok: the pass published the minute on the live topic")


if __name__ == "__main__":
    main()
