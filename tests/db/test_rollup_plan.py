"""The rollup pass's merge keeps its plan when the statistics say its points do not exist (migration
20261207000100).

A pass merges the newest points, whose transaction ids lie beyond the statistics ANALYZE last took of the
points table, so PostgreSQL estimates its range at a row or so. With such estimates the merge joined the minutes
to the sketch points with a nested loop, which took 8-10 s instead of ~1.5 s for the default benchmark's
90,000 points (docs/architecture.md). The merge runs with hash joins only since; this test makes the estimate
collapse and reads the plans the pass ran, one merge a lane (auto_explain, as the superuser)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg

from tests.support import TestDatabase, batch, counter, histogram, ingest, other_databases_finished


def send(conn: psycopg.Connection[Any], project: uuid.UUID, k: int) -> None:
    points = []
    for s in range(10):
        labels = {"route": f"/r{s}"}
        points.append(counter("requests_total", k + 1, labels))
        points.append(histogram("latency_seconds", [0.001 * (1 + s) * (1.1**j) for j in range(30)], labels))
    ingest(conn, batch(project, points, batch_id=f"b{k}"), merge=False)


def test_the_merge_joins_by_hash_when_the_statistics_predate_its_points(fresh_db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        for k in range(3):
            send(conn, project, k)
        other_databases_finished(conn)
        conn.execute("select metrics.rollup_pass()")
        partition = conn.execute("select tableoid::regclass::text from metrics.points limit 1").fetchone()[0]  # type: ignore[index]
        # the statistics end here, and autovacuum does not take newer ones before the pass
        conn.execute(f"alter table {partition} set (autovacuum_enabled = off)")
        conn.execute("analyze metrics.points")
        for k in range(3, 8):
            send(conn, project, k)
        other_databases_finished(conn)
    plans: list[str] = []
    with psycopg.connect(fresh_db.admin_url, autocommit=True) as admin:
        admin.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        admin.execute("load 'auto_explain'")
        admin.execute(
            "set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;"
            " set auto_explain.log_level = notice"
        )
        result = admin.execute("select metrics.rollup_pass()").fetchone()
    assert result is not None and result[0]["points"] == 100
    merges = [p for p in plans if "CTE new_points" in p]
    assert len(merges) == 2, "the one-shot pass ran the merge once a lane (two lanes by default)"
    for merge in merges:
        scan = re.search(r"CTE new_points\n\s+->\s+[^\n]*?rows=(\d+) ", merge)
        assert scan is not None, merge
        assert int(scan.group(1)) <= 2, "the range's estimate collapsed, as this test means it to"
        assert "Nested Loop" not in merge and "Merge Join" not in merge, merge
        assert "Hash Join" in merge
