"""``benchmarks.ingest``'s design K1 restores the merge a later migration replaced, from the landed migration's
own text, and the pass still works with it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest

from benchmarks import ingest as bench
from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
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


MINUTE_ROWS = """
select s.name, s.labels::text, r.bucket, r.count, r.sum, r.min, r.max, r.sketch::text
from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
where r.project_id = %s order by 1, 2, 3
"""


def load(url: str, project: uuid.UUID, start: float, *, k1: bool) -> list[tuple[Any, ...]]:
    """The same points, as jsonb (the RPC) and as arrays (ingest_known), negative values included, merged by
    the shipped pass or by design K1's."""
    with psycopg.connect(url, autocommit=True) as conn:
        if k1:
            conn.execute(bench.DESIGNS["K1"].setup)
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
        assert conn.execute("select metrics.rollup_pass()").fetchone()[0]["points"] == 24  # type: ignore[index]
        return conn.execute(MINUTE_ROWS, (project,)).fetchall()


def test_design_k1_merges_what_the_shipped_pass_merges(db: TestDatabase, fresh_db: TestDatabase) -> None:
    project, start = uuid.uuid4(), time.time() - 10
    shipped = load(db.url, project, start, k1=False)
    assert len(shipped) >= 6 and sum(int(r[3]) for r in shipped) == 4 * 6 * 50
    assert load(fresh_db.url, project, start, k1=True) == shipped
