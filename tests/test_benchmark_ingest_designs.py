"""``benchmarks.ingest`` runs the pass as the field does: a connection and thread per lane (``PassLoop``, and the
catch-up ``drain``); design S runs it in a single lane, and merges what two lanes merge."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

from benchmarks import ingest as bench
from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
from tests.support import TestDatabase, batch, histogram, ingest, other_databases_finished

MINUTE_ROWS = """
select s.name, s.labels::text, r.bucket, r.count, r.sum, r.min, r.max, r.sketch::text
from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
where r.project_id = %s order by 1, 2, 3
"""


def load(url: str, project: uuid.UUID, start: float, *, single: bool) -> list[tuple[Any, ...]]:
    """The same points, as jsonb (the RPC) and as arrays (ingest_known), negative values included, merged by
    the benchmark's catch-up in the shipped two lanes or in design S's single lane."""
    with psycopg.connect(url, autocommit=True) as conn:
        if single:
            conn.execute(bench.DESIGNS["S"].setup)
        assert bench.pass_lanes(url) == (1 if single else 2)
        for k in range(4):
            points = [
                histogram(
                    "latency_seconds",
                    [(-1) ** j * 0.01 * (1 + k + s) * (1.05**j) for j in range(50)],
                    {"route": f"/r{s}"},
                    ts=start + k,
                )
                for s in range(6)
            ]
            if k < 2:  # through the RPC: jsonb sketches; the series then exist
                ingest(conn, batch(project, points, batch_id=f"b{k}"), merge=False)
                continue
            ids = {
                (name, json.dumps(labels, sort_keys=True)): sid
                for sid, name, labels in conn.execute(
                    "select id, name, labels from metrics.series where project_id = %s", (project,)
                )
            }
            keys = [ids[(p["name"], json.dumps(p["labels"], sort_keys=True))] for p in points]
            literals = array_literals(points, keys)
            assert literals is not None
            conn.execute(INGEST_KNOWN, (str(project), "test-source", f"b{k}", *literals))
        other_databases_finished(conn)
        bench.drain(url)()
        assert conn.execute("select metrics.rollup_pass()").fetchone()[0]["points"] == 0  # type: ignore[index]
        return conn.execute(MINUTE_ROWS, (project,)).fetchall()


def test_design_s_merges_in_a_single_lane_what_the_shipped_two_merge(
    db: TestDatabase, fresh_db: TestDatabase
) -> None:
    project, start = uuid.uuid4(), time.time() - 10
    shipped = load(db.url, project, start, single=False)
    assert len(shipped) >= 6 and sum(int(r[3]) for r in shipped) == 4 * 6 * 50
    assert load(fresh_db.url, project, start, single=True) == shipped


def test_the_pass_loop_runs_a_thread_per_lane(fresh_db: TestDatabase) -> None:
    project = uuid.uuid4()
    points = [histogram("latency_seconds", [0.01, 0.02], {"route": f"/r{s}"}) for s in range(8)]
    loop = bench.PassLoop(fresh_db.url, 0.05)
    try:
        with psycopg.connect(fresh_db.url, autocommit=True) as conn:
            ingest(conn, batch(project, points), merge=False)
            lanes_of_points = conn.execute(
                "select count(distinct id %% 2) from metrics.series where project_id = %s", (project,)
            ).fetchone()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(n for _, n, _ in loop.passes) < len(points):
                time.sleep(0.05)
    finally:
        loop.close()
    assert lanes_of_points == (2,), "the points fall in both lanes"
    assert sum(n for _, n, _ in loop.passes) == len(points), (
        "every point merged once, by the lane of its series"
    )
    summary = loop.summary()
    assert summary["lanes"] == 2 and summary["passes_with_points"] == 2, summary
    assert loop.publishes and summary["publish_ms_p50"] is not None, "lane 0's fold and publish timed"


def test_lane_0s_publish_waits_are_timed_apart_from_its_merge(fresh_db: TestDatabase) -> None:
    """fold_and_publish waits (at most 2 s) for the other lanes' passes of the tick: a lane 1 pass held open
    makes lane 0's publish take those 2 s, which its merge's seconds must not include."""
    with (
        psycopg.connect(fresh_db.url) as holder,
        psycopg.connect(fresh_db.url, autocommit=True) as conn,
    ):
        holder.execute("select pg_advisory_xact_lock(hashtext('metrics.rollup_pass'), 1)")  # lane 1's pass
        result = bench.lane_pass(conn, 0)
    assert result["publish_s"] >= 1.5, result
    assert result["merge_s"] < result["publish_s"], result
