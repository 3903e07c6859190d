"""metrics.query: aggregations, step and resolution, label matchers, grouping, and its input errors."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest

PROJECT = uuid.uuid4()
# the start of the hour before last: aligned for every step, and closed whatever the minute of the hour
# (the previous hour only counts as closed five minutes after it ends)
MINUTE = math.floor(time.time() / 3600) * 3600 - 7200


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        points = []
        for m in range(3):  # three minutes of data
            ts = MINUTE + m * 60 + 5
            points += [
                counter(
                    "req_total",
                    60 * (m + 1),
                    {"outcome": "ok", "route": "/api/hooks/[slug]"},
                    ts=ts,
                    count=m + 1,
                ),
                counter("req_total", 6, {"outcome": "error", "route": "/api/hooks/[slug]"}, ts=ts),
                counter("req_total", 1, {"outcome": "ok", "route": "/healthz"}, ts=ts),
                gauge("depth", 10.0 * m, {"queue": "jobs"}, ts=ts),
                gauge(
                    "depth", 99.0, {"queue": "jobs"}, ts=ts - 1
                ),  # earlier in the same minute: not the last
                histogram(
                    "step_seconds", [0.01 * (i + 1) for i in range(100)], {"node_type": "http_call"}, ts=ts
                ),
            ]
        ingest(connection, batch(PROJECT, points))
        yield connection


def q(
    conn: psycopg.Connection[Any],
    metric: str,
    agg: str,
    matchers: str = "[]",
    step: str | None = "1 minute",
    by: list[str] | None = None,
    span: tuple[int, int] = (0, 180),
) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select labels, extract(epoch from ts)::bigint, value from metrics.query(%s, %s, to_timestamp(%s), to_timestamp(%s),"
        " %s::jsonb, %s::interval, %s, %s) order by 1::text, 2",
        (PROJECT, metric, MINUTE + span[0], MINUTE + span[1], matchers, step, agg, by),
    ).fetchall()


def test_sum_and_rate_per_series_per_step(conn: psycopg.Connection[Any]) -> None:
    ok = '[{"label": "route", "op": "=", "value": "/api/hooks/[slug]"}, {"label": "outcome", "op": "=", "value": "ok"}]'
    assert [v for *_, v in q(conn, "req_total", "sum", ok)] == [60.0, 120.0, 180.0]
    assert [v for *_, v in q(conn, "req_total", "rate", ok)] == [1.0, 2.0, 3.0]
    assert [v for *_, v in q(conn, "req_total", "count", ok)] == [1.0, 2.0, 3.0]
    assert [ts for _, ts, _ in q(conn, "req_total", "sum", ok)] == [MINUTE, MINUTE + 60, MINUTE + 120]


def test_larger_steps_merge_minutes(conn: psycopg.Connection[Any]) -> None:
    ok = '[{"label": "outcome", "op": "=", "value": "ok"}, {"label": "route", "op": "!=", "value": "/healthz"}]'
    rows = q(conn, "req_total", "sum", ok, step="1 hour", span=(0, 180))
    assert sum(v for *_, v in rows) == 360.0


def test_gauge_last_min_max_avg(conn: psycopg.Connection[Any]) -> None:
    assert [v for *_, v in q(conn, "depth", "last")] == [0.0, 10.0, 20.0]
    assert [v for *_, v in q(conn, "depth", "max")] == [99.0, 99.0, 99.0]
    assert [v for *_, v in q(conn, "depth", "min")] == [0.0, 10.0, 20.0]
    assert [v for *_, v in q(conn, "depth", "avg")] == [49.5, 54.5, 59.5]


@pytest.mark.parametrize(
    ("agg", "quantile"), [("p50", 0.5), ("p99", 0.99), ("quantile(0.9)", 0.9), ("p99.9", 0.999)]
)
def test_quantiles_from_merged_sketches(conn: psycopg.Connection[Any], agg: str, quantile: float) -> None:
    (row,) = q(conn, "step_seconds", agg, step="3 minutes", span=(0, 180))
    values = sorted([0.01 * (i + 1) for i in range(100)] * 3)
    assert row[2] == pytest.approx(values[math.floor(quantile * (len(values) - 1))], rel=0.01)


@pytest.mark.parametrize(
    ("matchers", "series"),
    [
        ('[{"label": "outcome", "op": "=~", "value": "ok|error"}]', 3),
        ('[{"label": "outcome", "op": "!~", "value": "e.*"}]', 2),
        ('[{"label": "route", "op": "=~", "value": "/api"}]', 0),  # anchored, as in PromQL
        ('[{"label": "missing", "op": "=", "value": ""}]', 3),  # an absent label equals ""
    ],
)
def test_label_matchers(conn: psycopg.Connection[Any], matchers: str, series: int) -> None:
    assert len({str(labels) for labels, *_ in q(conn, "req_total", "sum", matchers)}) == series


def test_grouping_by_labels(conn: psycopg.Connection[Any]) -> None:
    rows = q(conn, "req_total", "sum", by=["outcome"], step="3 minutes")
    assert {(labels["outcome"], v) for labels, _, v in rows} == {("ok", 363.0), ("error", 18.0)}
    (total,) = q(conn, "req_total", "sum", by=[], step="3 minutes")
    assert total[0] == {} and total[2] == 381.0


def test_default_step_gives_minute_resolution_for_short_ranges(conn: psycopg.Connection[Any]) -> None:
    assert len(q(conn, "depth", "last", step=None)) == 3


def test_hour_steps_read_hourly_rollups_once_those_hours_are_complete(conn: psycopg.Connection[Any]) -> None:
    ok = '[{"label": "outcome", "op": "=", "value": "error"}]'
    conn.execute("update metrics.maintenance_state set hour_watermark = '-infinity'")
    assert conn.execute("select count(*) from metrics.rollup_1h").fetchone() == (0,)
    assert [v for *_, v in q(conn, "req_total", "sum", ok, step="1 hour", span=(0, 3600))] == [18.0], (
        "not rolled up yet: minutes"
    )
    conn.execute("select metrics.maintain()")  # rolls the previous hour up and moves the watermark past it
    conn.execute("update metrics.rollup_1h set sum = sum * 1000")  # mark: which table answered?
    try:
        assert [v for *_, v in q(conn, "req_total", "sum", ok, step="1 hour", span=(0, 3600))] == [18000.0]
        assert [v for *_, v in q(conn, "req_total", "sum", ok, step="1 minute")] == [6.0, 6.0, 6.0]
        # a range that covers only part of the hour: the hourly row would count the rest of the hour too
        assert [v for *_, v in q(conn, "req_total", "sum", ok, step="1 hour", span=(0, 120))] == [12.0]
        assert [v for *_, v in q(conn, "req_total", "sum", ok, step="1 hour", span=(60, 3600))] == [12.0]
    finally:
        conn.execute("update metrics.rollup_1h set sum = sum / 1000")


def test_old_ranges_read_hourly_rollups(conn: psycopg.Connection[Any]) -> None:
    hour = math.floor(MINUTE / 3600) * 3600
    conn.execute(
        "insert into metrics.rollup_1h (project_id, series_id, bucket, count, sum)"
        " select %s, id, to_timestamp(%s) - interval '20 days', 7, 700 from metrics.series"
        " where project_id = %s and name = 'req_total' and labels->>'route' = '/healthz'",
        (PROJECT, hour, PROJECT),
    )
    rows = q(
        conn,
        "req_total",
        "sum",
        '[{"label": "route", "op": "=", "value": "/healthz"}]',
        step=None,
        span=(-21 * 86400, -19 * 86400),
    )
    assert [v for *_, v in rows] == [700.0]


def test_old_ranges_count_only_their_own_minutes_of_a_last_partial_hour(
    conn: psycopg.Connection[Any],
) -> None:
    """A range starting beyond minute retention reads whole hours, and the minutes after the last of them:
    ending two minutes into an hour counts those two minutes, not the hour's rollup."""
    healthz = '[{"label": "route", "op": "=", "value": "/healthz"}]'
    conn.execute("select metrics.maintain()")  # the hour of the data rolled up
    conn.execute("update metrics.projects set minute_retention = interval '1 hour' where id = %s", (PROJECT,))
    try:
        rows = q(conn, "req_total", "sum", healthz, step="1 hour", span=(-21 * 86400, 120))
        assert [(ts - MINUTE, v) for _, ts, v in rows][-1] == (0, 2.0)
        whole = q(conn, "req_total", "sum", healthz, step="1 hour", span=(-21 * 86400, 3600))
        assert [(ts - MINUTE, v) for _, ts, v in whole][-1] == (0, 3.0), "the whole hour, from its rollup"
    finally:
        conn.execute("update metrics.projects set minute_retention = null where id = %s", (PROJECT,))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"agg": "median"}, "p_agg: unknown aggregation"),
        ({"matchers": '[{"label": "a", "op": "~~", "value": "x"}]'}, "p_matchers: [0].op: unknown operator"),
        ({"matchers": '[{"label": "a", "op": "=~", "value": "("}]'}, "p_matchers: [0].value: invalid regex"),
        (
            {"matchers": '[{"label": "a", "op": "=~", "value": "' + "a" * 257 + '"}]'},
            "p_matchers: [0].value: regex longer than 256",
        ),
        ({"matchers": '{"label": "a"}'}, "p_matchers: must be an array"),
        ({"step": "10 seconds"}, "p_step: must be between"),
        ({"step": "1 mon"}, "p_step: in days, hours, minutes or seconds"),
        ({"span": (100, 50)}, "p_from: p_from and p_to are required"),
    ],
)
def test_bad_queries_get_clear_errors(
    conn: psycopg.Connection[Any], args: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as raised:
        q(
            conn,
            "req_total",
            args.get("agg", "sum"),
            args.get("matchers", "[]"),
            args.get("step", "1 minute"),
            span=args.get("span", (0, 180)),
        )
    assert str(raised.value.diag.message_primary).startswith(message)


def test_hour_steps_read_complete_hours_from_hourly_rollups_and_the_tail_from_minutes(
    conn: psycopg.Connection[Any],
) -> None:
    now = time.time()
    ingest(conn, batch(PROJECT, [counter("tail_total", 5, ts=MINUTE + 60), counter("tail_total", 7, ts=now)]))
    conn.execute("select metrics.maintain()")
    conn.execute(
        "update metrics.rollup_1h set sum = sum * 1000 where series_id in"
        " (select id from metrics.series where name = 'tail_total')"
    )  # mark: which table answered?
    rows = conn.execute(
        "select extract(epoch from ts)::bigint, value from metrics.query(%s, 'tail_total', to_timestamp(%s),"
        " now() + interval '1 minute', '[]', interval '1 hour', 'sum') order by 1",
        (PROJECT, MINUTE),
    ).fetchall()
    assert rows[0] == (MINUTE, 5000.0), "the complete hour comes from the hourly rollup"
    assert rows[-1][1] == 7.0, "the current hour comes from minutes"


def test_five_minute_steps_read_complete_windows_from_the_5_minute_tier(
    conn: psycopg.Connection[Any],
) -> None:
    """Same answers from minutes and from 5-minute rows; once windows are complete, 5-minute steps read
    them (marked here by inflating them) and 1-minute steps still read minutes."""
    healthz = '[{"label": "route", "op": "=", "value": "/healthz"}]'
    conn.execute("update metrics.maintenance_state set five_minute_watermark = '-infinity'")
    conn.execute("delete from metrics.rollup_5m")
    span = (-300, 900)
    before = [
        q(conn, "req_total", "sum", step="5 minutes", by=["outcome"], span=span),
        q(conn, "step_seconds", "p90", step="15 minutes", span=span),
        q(conn, "depth", "last", step="5 minutes", span=span),
    ]
    conn.execute("select metrics.maintain()")
    assert conn.execute("select count(*) from metrics.rollup_5m").fetchone() != (0,)
    assert [
        q(conn, "req_total", "sum", step="5 minutes", by=["outcome"], span=span),
        q(conn, "step_seconds", "p90", step="15 minutes", span=span),
        q(conn, "depth", "last", step="5 minutes", span=span),
    ] == before
    conn.execute("update metrics.rollup_5m set sum = sum * 1000")  # mark: which table answered?
    try:
        inflated = q(conn, "req_total", "sum", healthz, step="5 minutes", span=(0, 300))
        assert [v for *_, v in inflated] == [3000.0], "a whole window inside the range: the 5-minute row"
        assert [v for *_, v in q(conn, "req_total", "sum", healthz, span=(0, 300))] == [1.0, 1.0, 1.0]
        # a window only partly inside the range is read from its minutes
        assert [v for *_, v in q(conn, "req_total", "sum", healthz, step="5 minutes", span=(0, 180))] == [3.0]
        assert [v for *_, v in q(conn, "req_total", "sum", healthz, step="5 minutes", span=(120, 900))] == [
            1.0
        ]
    finally:
        conn.execute("update metrics.rollup_5m set sum = sum / 1000")
