"""``benchmarks.ingest``'s design K1 restores the merge a later migration replaced, from the landed migration's
own text, and the pass still works with it."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from benchmarks import ingest as bench
from tests.support import TestDatabase, batch, histogram, ingest, other_databases_finished


def test_a_landed_function_is_its_migration_text_up_to_the_end_of_its_body() -> None:
    setup = bench.DESIGNS["K1"].setup
    assert setup.startswith("create or replace function metrics.rollup_points(p_from xid8, p_to xid8)")
    assert setup.endswith("\n$$;")
    assert "cross join lateral rows from (pg_catalog.unnest(s.sketch_pos_keys)" in setup
    assert "enable_nestloop" not in setup


def test_a_landed_function_that_is_not_there_is_an_error() -> None:
    with pytest.raises(ValueError):
        bench.landed_function(
            "20261206002200_metrics_point_sketch_arrays.sql", "create function metrics.nothing("
        )


def test_design_k1_merges_as_the_shipped_pass_does(fresh_db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        conn.execute(bench.DESIGNS["K1"].setup)
        points = [
            histogram("latency_seconds", [0.01 * (1.05**j) for j in range(50)], {"route": f"/r{s}"})
            for s in range(6)
        ]
        for k in range(3):
            ingest(conn, batch(project, points, batch_id=f"b{k}"), merge=False)
        other_databases_finished(conn)
        assert conn.execute("select metrics.rollup_pass()").fetchone()[0]["points"] == 18  # type: ignore[index]
        merged = conn.execute(
            "select count(*), sum(count), sum(metrics.sketch_count(sketch)) from metrics.rollup_1m where project_id = %s",
            (project,),
        ).fetchone()
        assert merged is not None and (int(merged[1]), int(merged[2])) == (3 * 6 * 50, 3 * 6 * 50)
