"""A point's count is at most metrics.max_point_count() (migration 20261206001700), so that no tenant can
overflow the rollups' bigint counts and stop the pass for every project (tests/db/test_rollup_pass.py,
test_the_largest_counts_cannot_stop_the_pass; the refusal on every path: BAD_POINTS in test_copy_ingest.py).
A cumulative histogram first seen with a longer life than that starts as a baseline instead of failing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.client.sketch import Sketch
from tests.support import TestDatabase, batch

LIFETIME = 2_000_000_000  # a long-lived process's histogram: 1,000 requests a second for 23 days


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def cumulative_histogram(count: int, ts: float) -> dict[str, Any]:
    """``count`` observations of 0.5 s since the process started."""
    sketch = Sketch()
    sketch.add(0.5)
    (key,) = sketch.to_wire()["p"]
    return {
        "name": "meshhook_long_life_seconds",
        "kind": "histogram",
        "labels": {},
        "ts": ts,
        "count": count,
        "sum": count / 2,
        "min": 0.5,
        "max": 0.5,
        "sketch": {"z": 0, "p": {key: count}, "n": {}},
        "cumulative": {"stream": "long-life", "start": "1000"},
    }


def ingest_http(conn: psycopg.Connection[Any], payload: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute("select metrics.ingest_http(%s::jsonb)", (json.dumps(payload),)).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def stored_counts(conn: psycopg.Connection[Any], project: uuid.UUID) -> list[int]:
    return [
        int(r[0]) for r in conn.execute("select count from metrics.points where project_id = %s", (project,))
    ]


def test_a_long_lived_cumulative_histogram_starts_as_a_baseline(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    now = time.time()
    first = batch(project, [cumulative_histogram(LIFETIME, now - 10)], source="otlp/node", batch_id="1")
    assert ingest_http(conn, first)["status"] == "accepted"
    assert stored_counts(conn, project) == [], "a lifetime is not one minute's delta"
    state = conn.execute(
        "select count from metrics.ingest_streams where project_id = %s", (project,)
    ).fetchone()
    assert state == (LIFETIME,), "the export's state is the stream's baseline"
    second = batch(project, [cumulative_histogram(LIFETIME + 3, now)], source="otlp/node", batch_id="2")
    assert ingest_http(conn, second)["status"] == "accepted"
    assert stored_counts(conn, project) == [3]


def test_a_delta_point_over_the_cap_is_refused_by_name(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    point = cumulative_histogram(LIFETIME, time.time())
    del point["cumulative"]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        conn.execute("select metrics.ingest(%s::jsonb)", (json.dumps(batch(project, [point])),))
    assert refused.value.diag.message_primary == (
        "points[0].count: greater than 1000000000, the most one point may count"
    )
    assert stored_counts(conn, project) == []


def test_a_constant_cumulative_histogram_converts_after_its_first_export(
    conn: psycopg.Connection[Any],
) -> None:
    """Every value 0.5, which lies above its bucket's representative value: the delta's min and max stay within
    the point's (before migration 20261206001700 its min came out above its max and the export failed)."""
    project = uuid.uuid4()
    now = time.time()
    for n, (count, ago) in enumerate([(10, 10), (13, 0)]):
        export = batch(project, [cumulative_histogram(count, now - ago)], source="otlp/node", batch_id=str(n))
        assert ingest_http(conn, export)["status"] == "accepted"
    stored = conn.execute(
        "select count, min, max from metrics.points where project_id = %s order by ts", (project,)
    ).fetchall()
    assert stored == [(10, 0.5, 0.5), (3, 0.5, 0.5)]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"ts": time.time() + 365 * 86400}, "points[0].ts"),
        ({"sketch": None}, "points[0].sketch"),
        ({"name": "9bad"}, "points[0].name"),
        ({"min": 2.0}, "points[0].min"),
        ({"sketch": {"z": 0, "p": {"-34": 5}, "n": {}}}, "points[0].sketch"),
    ],
)
def test_a_bad_long_lived_cumulative_histogram_is_refused_and_changes_nothing(
    conn: psycopg.Connection[Any], change: dict[str, Any], where: str
) -> None:
    """Its delta would become a baseline without reaching metrics.ingest, so the conversion checks it first."""
    project = uuid.uuid4()
    point = {**cumulative_histogram(LIFETIME, time.time()), **change}
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        ingest_http(conn, batch(project, [point], source="otlp/node"))
    assert str(refused.value.diag.message_primary).startswith(where)
    streams = conn.execute("select count(*) from metrics.ingest_streams where project_id = %s", (project,))
    assert streams.fetchone() == (0,)


@pytest.mark.parametrize(("count", "total"), [(1_000_000_001, 1.0), (1, 1e291), (1, -1e291)])
def test_the_table_refuses_rows_past_the_caps_whoever_writes_them(
    conn: psycopg.Connection[Any], count: int, total: float
) -> None:
    """A direct write (here as postgres; service_role may too) skips the ingest paths' rules: the table's own
    check still keeps the rollups' sums from overflowing (migration 20261206001900)."""
    project = uuid.uuid4()
    conn.execute("select metrics.ensure_points_partition(current_date)")
    with pytest.raises(psycopg.errors.CheckViolation, match="points_within_rollup_limits"):
        conn.execute(
            "insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum)"
            " values (%s, 1, now(), 'direct', 'b', %s, %s)",
            (project, count, total),
        )
    assert stored_counts(conn, project) == []
