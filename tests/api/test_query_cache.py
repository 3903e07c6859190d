"""GET /api/metrics with the cache of settled steps: the same answers as without it, and fresh after changes.

Every answer of the caching service is compared with the answer of a second service over the same database
with the cache off (``query_cache_mb=0``), which reads everything through ``metrics.query_series``.
``X-Metrics-Cache`` says how the cache took part, so the tests can tell a hit from a miss.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from meshhook_rt_metrics.api.query_cache import (
    Entry,
    QueryCache,
    SeriesQuery,
    between,
    series_json,
    split_points,
    trimmed,
)
from tests.api.conftest import ApiServer, World
from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, roll_up

MINUTES = 180  # three hours of minutes, all before the module starts
NOW = math.floor(time.time() / 60) * 60
START = NOW - MINUTES * 60


def points_of_minute(minute: int) -> list[dict[str, Any]]:
    ts = START + minute * 60 + 11
    return [
        *(
            counter(
                "jobs_total", 1 + (minute * 7 + i) % 5, {"route": route, "instance": inst}, ts=ts, count=2
            )
            for i, (route, inst) in enumerate(
                [("/a", "w1"), ("/a", "w2"), ("/b", "w1"), ("/b", "w2"), ("/c", "w3")]
            )
        ),
        counter("jobs_total", 3, {"instance": "w4"}, ts=ts),  # no route label
        gauge("depth", 10.0 + minute % 13, {"queue": "q1"}, ts=ts),
        gauge("depth", 40.0 - minute % 7, {"queue": "q2"}, ts=ts + 3),
        histogram(
            "work_seconds", [0.001 * (1 + (i * 13 + minute) % 97) for i in range(30)], {"node": "http"}, ts=ts
        ),
        histogram(
            "work_seconds", [0.2 + 0.01 * ((i + minute) % 11) for i in range(12)], {"node": "sql"}, ts=ts
        ),
    ]


@pytest.fixture(scope="module")
def data(world: World, conn: psycopg.Connection[Any]) -> uuid.UUID:
    ingest(conn, batch(world.project_a, [p for m in range(MINUTES) for p in points_of_minute(m)]))
    conn.execute("update metrics.maintenance_state set five_minute_watermark = '-infinity'")
    roll_up(conn)
    return world.project_a


@pytest.fixture(scope="module")
def uncached(db: TestDatabase) -> Iterator[httpx.Client]:
    server = ApiServer(db, query_cache_mb=0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    server.stop()


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{round(epoch % 1 * 1e6):06d}+00:00"


def get(http: httpx.Client, headers: dict[str, str], **params: Any) -> httpx.Response:
    response = http.get("/api/metrics", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


def series(response: httpx.Response) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = response.json()["series"]
    return found


# (metric, agg, by, matchers, step): each a cache key of its own
CASES = [
    ("jobs_total", "sum", None, None, "5m"),
    ("jobs_total", "rate", [""], None, "5m"),
    ("jobs_total", "sum", ["route"], None, "5m"),
    ("jobs_total", "count", ["route"], ["instance=~w[12]"], "10m"),
    ("jobs_total", "sum", ["instance"], None, "1h"),
    ("jobs_total", "avg", None, ["route=/a"], "1m"),
    ("jobs_total", "rate", [""], None, None),
    ("depth", "last", None, None, "5m"),
    ("depth", "max", ["queue"], None, "15m"),
    ("depth", "min", [""], None, "3m"),
    ("work_seconds", "p99", [""], None, "5m"),
    ("work_seconds", "p50", ["node"], None, "5m"),
    ("work_seconds", "quantile(0.9)", None, None, "1h"),
    ("work_seconds", "p99.9", [""], None, "2m"),
]


def params_of(project: uuid.UUID, case: tuple[Any, ...], start: float, end: float) -> dict[str, Any]:
    metric, agg, by, matchers, step = case
    params: dict[str, Any] = {"project_id": str(project), "metric": metric, "agg": agg}
    params.update({"from": iso(start), "to": iso(end)})
    if by is not None:
        params["by"] = by
    if matchers is not None:
        params["match"] = matchers
    if step is not None:
        params["step"] = step
    return params


@pytest.mark.parametrize("case", CASES, ids=["-".join(str(x) for x in c) for c in CASES])
def test_a_repeated_query_is_answered_from_the_cache_as_it_is_without(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, case: tuple[Any, ...]
) -> None:
    headers = world.headers(world.admin_a)
    start, end = START + 17.25, time.time()  # a partial first step, and the latest minutes unsettled
    params = params_of(data, case, start, end)
    first, second = get(client, headers, **params), get(client, headers, **params)
    expected = series(get(uncached, headers, **params))
    assert expected, "the case has data"
    assert (first.headers["x-metrics-cache"], second.headers["x-metrics-cache"]) == ("miss", "hit")
    assert series(first) == expected
    assert series(second) == expected
    # refreshed seconds later: the partial first step starts within the same minute, so it is the same one
    nudged = params_of(data, case, start + 20, time.time())
    refreshed = get(client, headers, **nudged)
    assert refreshed.headers["x-metrics-cache"] == "hit"
    assert series(refreshed) == series(get(uncached, headers, **nudged))
    # a dashboard's next refresh: the range moved on; the steps it shares with the cached ones are reused
    later = params_of(data, case, start + 7 * 60 + 3, time.time() + 60)
    moved = get(client, headers, **later)
    assert moved.headers["x-metrics-cache"] == "hit"
    assert series(moved) == series(get(uncached, headers, **later))
    # a range reaching further back than the cached steps reads the steps before them too
    earlier = params_of(data, case, START - 3600, end)
    wider = get(client, headers, **earlier)
    assert wider.headers["x-metrics-cache"] == "hit"
    assert series(wider) == series(get(uncached, headers, **earlier))


def test_points_after_the_cached_steps_are_read_fresh(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, conn: psycopg.Connection[Any]
) -> None:
    headers = world.headers(world.admin_a)
    params = params_of(data, ("jobs_total", "sum", ["route"], None, "5m"), START, time.time() + 120)
    before = series(get(client, headers, **params))
    ingest(conn, batch(data, [counter("jobs_total", 1000, {"route": "/new", "instance": "w1"})]))
    after = get(client, headers, **params)
    assert after.headers["x-metrics-cache"] == "hit"
    plain = series(get(uncached, headers, **params))
    assert series(after) == plain
    assert [s["labels"] for s in series(after)] == [s["labels"] for s in before] + [{"route": "/new"}]
    assert before[0]["labels"] == {}  # jsonb order, as query_series has it: fewer labels first


def test_a_late_point_in_a_cached_window_is_seen_before_and_after_maintenance(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, conn: psycopg.Connection[Any]
) -> None:
    headers = world.headers(world.admin_a)
    cases = [
        ("depth", "max", None, None, "1m"),
        ("depth", "max", None, None, "5m"),
        ("depth", "max", None, None, "1h"),
    ]
    queries = [params_of(data, c, START, time.time()) for c in cases]
    for params in queries:
        get(client, headers, **params)
        assert get(client, headers, **params).headers["x-metrics-cache"] == "hit"
    late_ts = START + 150 * 60 + 30  # half an hour ago: rolled up, settled, and after a cached hour
    ingest(conn, batch(data, [gauge("depth", 1e6, {"queue": "q1"}, ts=late_ts)]))
    assert conn.execute("select count(*) from metrics.late_five_minutes").fetchone()[0] > 0  # type: ignore[index]
    for params in queries:  # the marked window on is read again: the same answer as without the cache
        pending = get(client, headers, **params)
        assert pending.headers["x-metrics-cache"] == "hit"
        assert series(pending) == series(get(uncached, headers, **params))
    one_minute = series(get(client, headers, **queries[0]))
    assert [late_ts // 60 * 60, 1e6] in one_minute[0]["points"]  # minutes show the late point at once
    roll_up(conn)  # recomputes the window and the hour: the project's revision moves
    for params in queries:
        recomputed = get(client, headers, **params)
        assert recomputed.headers["x-metrics-cache"] == "miss"
        assert series(recomputed) == series(get(uncached, headers, **params))
        assert 1e6 in [p[1] for s in series(recomputed) for p in s["points"]]


def test_steps_settled_after_the_cache_was_filled_are_read_not_taken_from_it(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, conn: psycopg.Connection[Any]
) -> None:
    """The cache keeps only settled steps: minutes still open when a response was cached, which get on-time
    points afterwards, must come from the database once maintenance has rolled them up."""
    headers = world.headers(world.admin_a)
    queries = [
        params_of(data, ("depth", "min", None, None, step), START, time.time()) for step in ("1m", "5m")
    ]

    def rolled_up_until(ago: str) -> None:
        """As if maintenance had last run ``ago``: what came after is open, and points for it are on time."""
        conn.execute(
            "update metrics.maintenance_state set"
            " five_minute_watermark = metrics.five_minute_window(now() - %s::interval),"
            " hour_watermark = date_trunc('hour', now() - %s::interval - interval '1 hour')",
            (ago, ago),
        )

    def revision() -> Any:
        return conn.execute(
            "select coalesce((select revision from metrics.rollup_revisions where project_id = %s), 0)",
            (data,),
        ).fetchone()

    rolled_up_until("1 hour")
    for params in queries:
        get(client, headers, **params)
        assert get(client, headers, **params).headers["x-metrics-cache"] == "hit"
    before = revision()
    for value, ago in ((-5e5, 40), (-6e5, 15)):  # each time into minutes that were open when last cached
        ingest(conn, batch(data, [gauge("depth", value, {"queue": "q2"}, ts=time.time() - ago * 60)]))
        roll_up(conn)  # nothing was late, so the revision stays
        rolled_up_until("30 minutes" if value == -5e5 else "5 minutes")
        assert revision() == before
        for params in queries:
            answer = get(client, headers, **params)
            assert answer.headers["x-metrics-cache"] == "hit"
            assert series(answer) == series(get(uncached, headers, **params))
            assert value in [p[1] for s in series(answer) for p in s["points"]]


def test_a_range_apart_from_the_cached_steps_is_a_miss_and_replaces_them(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID
) -> None:
    headers = world.headers(world.admin_a)
    case = ("depth", "count", ["queue"], None, "5m")
    early = params_of(data, case, START, START + 1800)
    late = params_of(data, case, START + 7200, time.time())
    assert get(client, headers, **early).headers["x-metrics-cache"] == "miss"
    apart = get(client, headers, **late)
    assert apart.headers["x-metrics-cache"] == "miss"  # nothing cached lies inside the range
    assert series(apart) == series(get(uncached, headers, **late))
    assert get(client, headers, **late).headers["x-metrics-cache"] == "hit"


def test_settled_steps_without_points_are_cached_too(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, conn: psycopg.Connection[Any]
) -> None:
    """A metric that started a minute ago: the settled part of "the last 3 hours" is known to be empty."""
    headers = world.headers(world.admin_a)
    ingest(conn, batch(data, [counter("fresh_total", 4, {"route": "/a"})]))
    params = params_of(data, ("fresh_total", "sum", None, None, "5m"), START, time.time() + 60)
    assert get(client, headers, **params).headers["x-metrics-cache"] == "miss"
    again = get(client, headers, **params)
    assert again.headers["x-metrics-cache"] == "hit"
    assert series(again) == series(get(uncached, headers, **params))
    assert len(series(again)) == 1


def test_cached_points_are_only_given_to_callers_who_see_the_project(
    client: httpx.Client, world: World, data: uuid.UUID
) -> None:
    params = params_of(data, ("jobs_total", "sum", None, None, "5m"), START, time.time())
    get(client, world.headers(world.admin_a), **params)
    assert get(client, world.headers(world.admin_a), **params).headers["x-metrics-cache"] == "hit"
    for user in (world.admin_b, world.outsider):
        denied = client.get("/api/metrics", params=params, headers=world.headers(user))
        assert denied.status_code == 403
        assert "points" not in denied.text
    viewer = get(client, world.headers(world.viewer_a), **params)  # a member: the same data, from the cache
    assert viewer.headers["x-metrics-cache"] == "hit"
    service = get(client, world.service_headers, **params)
    assert series(service) == series(viewer)


def test_ranges_before_minute_retention_and_odd_steps_bypass_the_cache(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID
) -> None:
    headers = world.headers(world.admin_a)
    old = params_of(data, ("jobs_total", "sum", None, None, "1h"), time.time() - 15 * 86400, time.time())
    odd = params_of(data, ("jobs_total", "sum", None, None, "90s"), START, time.time())
    for params in (old, odd):
        answer = get(client, headers, **params)
        assert answer.headers["x-metrics-cache"] == "bypass"
        assert series(answer) == series(get(uncached, headers, **params))


@pytest.mark.parametrize(
    "change",
    [{"agg": "p101"}, {"step": "0m"}, {"from": iso(NOW), "to": iso(NOW - 60)}, {"match": ["route=~("]}],
    ids=["agg", "step", "range", "matcher"],
)
def test_bad_input_fails_as_it_does_without_the_cache(
    client: httpx.Client, uncached: httpx.Client, world: World, data: uuid.UUID, change: dict[str, Any]
) -> None:
    headers = world.headers(world.admin_a)
    params = {**params_of(data, ("jobs_total", "sum", None, None, "5m"), START, time.time()), **change}
    cached, plain = (c.get("/api/metrics", params=params, headers=headers) for c in (client, uncached))
    assert cached.status_code in (400, 422)
    assert (cached.status_code, cached.json()) == (plain.status_code, plain.json())


# -- the cache's own rules, without a database ----------------------------------------------------------


def entry(since: float, until: float, points: dict[str, list[str]], span: float = 3600) -> Entry:
    return Entry(
        1, since, until, span, tuple(points), points, sum(len(p) for v in points.values() for p in v)
    )


def test_points_are_split_and_sliced_by_epoch() -> None:
    points = split_points("[[60,1.5],[120,null],[180,-2e-07],[300,1e+20]]")
    assert points == ["60,1.5", "120,null", "180,-2e-07", "300,1e+20"]
    assert split_points("[]") == []
    assert between(points, 100, 300) == ["120,null", "180,-2e-07"]
    assert between(points, 0, 60) == []
    assert series_json(["{}"], {"{}": points[:2]}) == '[{"labels": {}, "points": [[60,1.5],[120,null]]}]'
    assert series_json(['{"a": "1"}', "{}"], {"{}": []}) == "[]"  # label sets without points are left out


def test_entries_keep_steps_back_to_minute_retention_and_their_longest_range() -> None:
    e = entry(0, 600, {'{"a": "1"}': ["0,1", "300,2"], '{"a": "2"}': ["300,3"]}, span=3600)
    assert trimmed(e, minutes_from=-1e9, step=300) is e
    newer = trimmed(entry(0, 600, e.points, span=300), minutes_from=-1e9, step=300)
    assert (newer.since, newer.points) == (300, {'{"a": "1"}': ["300,2"], '{"a": "2"}': ["300,3"]})
    retained = trimmed(entry(0, 600, {'{"a": "1"}': ["0,1"]}), minutes_from=250, step=300)
    assert (retained.since, retained.points, retained.order) == (300, {}, ())


def test_the_cache_keeps_to_its_budget_dropping_the_least_recently_used() -> None:
    cache = QueryCache(max_bytes=100)
    keys = [(SeriesQuery(uuid.uuid4(), "m", "[]", "sum", None), 300.0) for _ in range(3)]
    for key in keys:
        cache.put(key, entry(0, 300, {"{}": ["0," + "1" * 30]}))
    assert len(cache) == 3
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[1], entry(0, 300, {"{}": ["0," + "1" * 40]}))  # replaces, then over budget
    assert cache.size <= 100
    assert cache.get(keys[2]) is None  # the least recently used went first
    assert cache.get(keys[0]) is not None
    cache.put(keys[0], entry(0, 300, {"{}": ["0," + "1" * 200]}))  # larger than the budget: not kept
    assert cache.get(keys[0]) is None
    cache.put(keys[1], None)
    assert (len(cache), cache.size) == (0, 0)
