"""metrics.rollup_5m_by_label: 5-minute rows merged across series, and the query path that reads them.

Unfiltered queries at whole-5-minute steps that merge all series or group them by one label read these
rows instead of one row per series and window. They must give exactly the answers of the per-series path,
which a matcher that every series satisfies forces (a missing label matches "").
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, roll_up

PROJECT = uuid.uuid4()
# the start of the hour before last: every window of the data is closed whatever the minute of the hour
START = math.floor(time.time() / 3600) * 3600 - 7200
WINDOWS = 3  # 15 minutes of data
EVERY_SERIES = json.dumps([{"label": "never_set", "op": "=", "value": ""}])  # forces the per-series path
AGGREGATIONS = ["sum", "rate", "count", "avg", "min", "max", "last", "p50", "p99"]


def points_of_minute(minute: int) -> list[dict[str, Any]]:
    ts = START + minute * 60 + 7
    points = [
        counter("hits_total", 1 + minute, {"route": "/a", "instance": "w1"}, ts=ts, count=1 + minute),
        counter("hits_total", 2.5, {"route": "/a", "instance": "w2"}, ts=ts, count=2),
        counter("hits_total", 4, {"route": "/b", "instance": "w1"}, ts=ts),
        counter("hits_total", 8, {"instance": "w3"}, ts=ts),  # no route label
        gauge("queue_depth", 10.0 + minute, {"queue": "jobs"}, ts=ts),
        gauge("queue_depth", 50.0 - minute, {"queue": "mail"}, ts=ts + 1),
        histogram(
            "work_seconds", [0.001 * (i + 1) * (minute + 1) for i in range(40)], {"node": "http"}, ts=ts
        ),
        histogram("work_seconds", [0.5 + 0.01 * i for i in range(25)], {"node": "sql"}, ts=ts),
    ]
    for shard in ("a", "b", "c"):  # negative, zero and positive observations: all three sketch stores
        points.append(
            histogram(
                "offset_seconds",
                [-2.0 + 0.1 * ((i * 7 + minute + ord(shard)) % 40) for i in range(30)] + [0.0] * (minute % 3),
                {"shard": shard},
                ts=ts,
            )
        )
    if minute < 5:  # a label name that only the first window has: later windows group by it from ''
        points.append(counter("hits_total", 100, {"route": "/c", "instance": "w9", "shard": "s1"}, ts=ts))
    return points


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        ingest(connection, batch(PROJECT, [p for m in range(WINDOWS * 5) for p in points_of_minute(m)]))
        connection.execute("update metrics.maintenance_state set five_minute_watermark = '-infinity'")
        roll_up(connection)
        yield connection


def q(
    conn: psycopg.Connection[Any],
    metric: str,
    agg: str,
    by: list[str] | None,
    matchers: str = "[]",
    span: tuple[int, int] = (0, WINDOWS * 300),
    step: str = "5 minutes",
) -> list[tuple[Any, ...]]:
    """The rows in the order metrics.query returns them (the order is part of the answer)."""
    return conn.execute(
        "select labels, extract(epoch from ts)::bigint, value from metrics.query(%s, %s, to_timestamp(%s),"
        " to_timestamp(%s), %s::jsonb, %s::interval, %s, %s)",
        (PROJECT, metric, START + span[0], START + span[1], matchers, step, agg, by),
    ).fetchall()


def same(fast: list[tuple[Any, ...]], slow: list[tuple[Any, ...]]) -> None:
    assert [r[:2] for r in fast] == [r[:2] for r in slow]
    assert [r[2] for r in fast] == pytest.approx([r[2] for r in slow], rel=1e-12)


def test_windows_have_merged_rows_for_all_series_and_each_label(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "select label, value, series, count, sum from metrics.rollup_5m_by_label"
        " where project_id = %s and metric = 'hits_total' and bucket = to_timestamp(%s) order by 1, 2 nulls first",
        (PROJECT, START),
    ).fetchall()
    # minutes 0..4: w1 counts 1..5 (sum 15), w2 2 each (10), /b 1 each (5), w3 1 each (5), /c 1 each (5)
    assert rows == [
        ("", None, 5, 40, 15 + 12.5 + 20 + 40 + 500),
        ("instance", "w1", 2, 20, 15 + 20),
        ("instance", "w2", 1, 10, 12.5),
        ("instance", "w3", 1, 5, 40),
        ("instance", "w9", 1, 5, 500),
        ("route", None, 1, 5, 40),
        ("route", "/a", 2, 25, 27.5),
        ("route", "/b", 1, 5, 20),
        ("route", "/c", 1, 5, 500),
        ("shard", None, 4, 35, 87.5),
        ("shard", "s1", 1, 5, 500),
    ]
    later = conn.execute(
        "select distinct label from metrics.rollup_5m_by_label"
        " where project_id = %s and metric = 'hits_total' and bucket > to_timestamp(%s) order by 1",
        (PROJECT, START),
    ).fetchall()
    assert later == [("",), ("instance",), ("route",)], "only the labels the window's series carry"


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("by", [[], ["route"], ["instance"], ["shard"], ["queue"], ["node"], ["absent"]])
@pytest.mark.parametrize("metric", ["hits_total", "queue_depth", "work_seconds"])
def test_merged_rows_answer_exactly_like_the_series(
    conn: psycopg.Connection[Any], metric: str, by: list[str], agg: str
) -> None:
    fast = q(conn, metric, agg, by)
    assert fast, "there are answers to compare"
    same(fast, q(conn, metric, agg, by, EVERY_SERIES))


@pytest.mark.parametrize("span", [(60, 900), (0, 600), (-120, 1200), (300, 420)])
def test_ranges_not_on_window_edges_read_minutes_at_the_edges(
    conn: psycopg.Connection[Any], span: tuple[int, int]
) -> None:
    for by in ([], ["route"]):
        same(
            q(conn, "hits_total", "sum", by, span=span), q(conn, "hits_total", "sum", by, EVERY_SERIES, span)
        )


LABEL_NAMES = {
    "hits_total": ["instance", "route", "shard"],
    "queue_depth": ["queue"],
    "work_seconds": ["node"],
}


@pytest.mark.parametrize("span", [(0, 3600), (60, 2000), (-300, 840), (120, 121)])
@pytest.mark.parametrize("step", ["1 minute", "5 minutes", "1 hour"])
@pytest.mark.parametrize("metric", ["hits_total", "queue_depth", "work_seconds"])
def test_rows_taken_as_whole_points_answer_like_grouped_ones(
    conn: psycopg.Connection[Any], metric: str, step: str, span: tuple[int, int]
) -> None:
    """Every series apart at its tier's width takes rollup rows as points without grouping them; grouping
    by all of the metric's label names gives the same label sets through the grouping path."""
    answered = 0
    for agg in AGGREGATIONS:
        whole = q(conn, metric, agg, None, span=span, step=step)
        grouped = q(conn, metric, agg, LABEL_NAMES[metric], span=span, step=step)
        same(whole, grouped)
        answered += len(whole)
    assert answered, "there are answers to compare"


# p50, p90, p99, p99.9: stored with the merged rows (metrics.stored_quantiles); the others from the sketches
QUANTILES = {
    "quantile(0)": 0.0,
    "p50": 0.5,
    "p90": 0.9,
    "p99": 0.99,
    "p99.9": 99.9 / 100,
    "quantile(0.999)": 0.999,
    "quantile(1)": 1.0,
}
ORACLE = """
select case when %(by)s::text[] is null then s.labels
    else coalesce((select jsonb_object_agg(k, s.labels -> k) from unnest(%(by)s::text[]) k where s.labels ? k),
      '{}'::jsonb) end as out_labels,
  extract(epoch from date_bin(%(step)s::interval, r.bucket, 'epoch'))::bigint as step,
  metrics.sketch_quantile(metrics.sketch_union(r.sketch), %(q)s, min(r.min), max(r.max)) as value
from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
where s.project_id = %(p)s and s.name = %(metric)s and r.bucket >= to_timestamp(%(from)s)
  and r.bucket < to_timestamp(%(to)s)
group by 1, 2
"""


@pytest.mark.parametrize("span", [(0, WINDOWS * 300), (60, 840), (0, 3600)])
@pytest.mark.parametrize("step", ["1 minute", "5 minutes", "1 hour", "5 minutes 0.4 seconds"])
@pytest.mark.parametrize("by", [[], ["node"], ["shard"], None])
@pytest.mark.parametrize("metric", ["work_seconds", "offset_seconds"])
def test_quantiles_are_those_of_the_merged_minute_sketches(
    conn: psycopg.Connection[Any], metric: str, by: list[str] | None, step: str, span: tuple[int, int]
) -> None:
    """Every path (merged rows, hours, 5-minute rows, minutes merged set-based) against sketch_quantile over
    sketch_union of the minute rows, the functions' own rules."""
    for agg, quantile in QUANTILES.items():
        answer = {
            (json.dumps(labels, sort_keys=True), ts): v
            for labels, ts, v in q(conn, metric, agg, by, span=span, step=step)
        }
        expected = {
            (json.dumps(labels, sort_keys=True), ts): v
            for labels, ts, v in conn.execute(
                ORACLE,
                {
                    "by": by,
                    "step": step,
                    "q": quantile,
                    "p": PROJECT,
                    "metric": metric,
                    "from": START + span[0],
                    "to": START + span[1],
                },
            ).fetchall()
        }
        assert answer, "there are answers to compare"
        assert answer.keys() == expected.keys()
        assert list(answer.values()) == pytest.approx([expected[k] for k in answer], rel=1e-12), agg


def test_merged_rows_store_the_usual_quantiles_of_their_sketch(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "select quantiles, metrics.sketch_quantiles(sketch, metrics.stored_quantiles(), min, max), sketch is null"
        " from metrics.rollup_5m_by_label where project_id = %s",
        (PROJECT,),
    ).fetchall()
    assert any(stored for stored, _, _ in rows), "histograms have stored quantiles"
    for stored, computed, no_sketch in rows:
        assert stored == (None if no_sketch else computed)
    assert conn.execute("select metrics.stored_quantiles()").fetchone() == (
        [0.5, 0.75, 0.9, 0.95, 0.99, 99.9 / 100],
    )


def test_unfiltered_queries_read_the_merged_rows(conn: psycopg.Connection[Any]) -> None:
    """Marked by inflating the merged rows: only the queries that may read them change."""
    before_rows = q(conn, "hits_total", "sum", ["route"])
    conn.execute("update metrics.rollup_5m_by_label set sum = sum * 1000 where project_id = %s", (PROJECT,))
    try:
        merged = q(conn, "hits_total", "sum", [])
        assert [v for *_, v in merged] == pytest.approx(
            [v * 1000 for *_, v in q(conn, "hits_total", "sum", [], EVERY_SERIES)]
        )
        assert [v for *_, v in q(conn, "hits_total", "sum", ["route"])] == pytest.approx(
            [v * 1000 for *_, v in before_rows]
        )
        assert q(conn, "hits_total", "sum", None) == q(conn, "hits_total", "sum", None, EVERY_SERIES), (
            "every series apart: per-series rows"
        )
        assert q(conn, "hits_total", "sum", ["route", "instance"]) == q(
            conn, "hits_total", "sum", ["route", "instance"], EVERY_SERIES
        ), "two labels: per-series rows"
        assert [v for *_, v in q(conn, "hits_total", "sum", [], step="1 minute")] == [
            v for *_, v in q(conn, "hits_total", "sum", [], EVERY_SERIES, step="1 minute")
        ], "1-minute steps: minutes"
    finally:
        conn.execute(
            "update metrics.rollup_5m_by_label set sum = sum / 1000 where project_id = %s", (PROJECT,)
        )


def test_late_points_rebuild_the_windows_merged_rows(conn: psycopg.Connection[Any]) -> None:
    late = [counter("hits_total", 1000, {"route": "/late", "instance": "w1"}, ts=START + 400)]
    ingest(conn, batch(PROJECT, late))
    roll_up(conn)
    merged = dict(
        conn.execute(
            "select value, sum from metrics.rollup_5m_by_label where project_id = %s and metric = 'hits_total'"
            " and label = 'route' and bucket = to_timestamp(%s)",
            (PROJECT, START + 300),
        ).fetchall()
    )
    assert merged["/late"] == 1000
    for by in ([], ["route"]):
        same(q(conn, "hits_total", "sum", by), q(conn, "hits_total", "sum", by, EVERY_SERIES))


def test_members_of_other_projects_see_none_of_them(conn: psycopg.Connection[Any]) -> None:
    stranger = str(uuid.uuid4())
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": stranger, "role": "authenticated"}),),
        )
        assert conn.execute("select count(*) from metrics.rollup_5m_by_label").fetchone() == (0,)
        assert q(conn, "hits_total", "sum", []) == []
    assert conn.execute(
        "select count(*) from metrics.rollup_5m_by_label where project_id = %s", (PROJECT,)
    ).fetchone() != (0,)


def test_retention_deletes_them_with_the_5_minute_rows(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "update metrics.projects set minute_retention = interval '1 minute' where id = %s", (PROJECT,)
    )
    try:
        report = conn.execute("select metrics.apply_retention()").fetchone()
        assert report is not None and report[0]["five_minute_groups_deleted"] > 0
        assert conn.execute(
            "select count(*) from metrics.rollup_5m_by_label where project_id = %s", (PROJECT,)
        ).fetchone() == (0,)
    finally:
        conn.execute("update metrics.projects set minute_retention = null where id = %s", (PROJECT,))
