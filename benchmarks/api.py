"""HTTP service latency: GET /api/metrics over 24 h of minute data x 1,000 series, GET /metrics with 10,000
series, against prometheus_client's ``generate_latest`` over the same number of series in the SAME run.

    .venv/bin/python -m benchmarks.api                 # throwaway local PostgreSQL + `meshhook-metrics serve`
    .venv/bin/python -m benchmarks.api --repeat 50
    .venv/bin/python -m benchmarks.api --repeat 10 --only scrape   # GET /metrics vs generate_latest only

The data are written straight into the rollup tables (1,440 minutes x 1,000 series = 1.44 M minute rows,
plus the hourly, 5-minute and merged 5-minute rollups from metrics.maintain()) and into metrics.series_totals (10,000 series: 6,000
counters, 3,000 gauges, 1,000 histograms with ~100-value sketches), so only reads are measured. The service
runs as its own process (`meshhook-metrics serve`), the client measures whole HTTP round trips with a
keep-alive connection. Goals of issue 5: GET /api/metrics p95 <= 100 ms, GET /metrics p95 <= 500 ms.
Each query is measured on the service as deployed, whose cache of settled steps (api/query_cache.py) the
first request fills and the measured ones (a dashboard's refreshes of "the last 24 hours", the range moving
with the clock) hit, and on a second service with the cache off (MESHHOOK_METRICS_QUERY_CACHE_MB=0), which
reads every step each time: both are reported, the goal is judged on the first.
The verdict covers the queries across all 1,000 series; the "500 series (matcher)" case (a regex picks half of
them, grouped by route: per-series rows, no merged ones), the one-series case and p99 over 100 histogram series
(merged and by route from the quantiles stored with the merged rows; the last hour at 1-minute steps from
minute sketches merged per step) are reported beside them.
JSON results go to benchmarks/results/api-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from benchmarks._report import environment, table
from benchmarks._signals import stop_on_sigterm
from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database
from meshhook_rt_metrics.localstack.gateway.keys import JwtKeys
from meshhook_rt_metrics.localstack.postgres import LocalPostgres, free_port

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "benchmark-secret-" + "0123456789abcdef" * 4
GOAL_QUERY_P95_MS = 100.0
GOAL_SCRAPE_P95_MS = 500.0
QUERY_SERIES = 1000
MINUTES = 1440
COUNTERS, GAUGES, HISTOGRAMS = 6000, 3000, 1000

POPULATE_PROJECT = """
insert into metrics.projects (id) values (%(p)s);
insert into metrics.project_members (project_id, user_id, role) values (%(p)s, %(u)s, 'viewer');
insert into metrics.families (project_id, name, kind) values
  (%(p)s, 'bench_requests_total', 'counter'),
  (%(p)s, 'bench_http_requests_total', 'counter'),
  (%(p)s, 'bench_queue_depth', 'gauge'),
  (%(p)s, 'bench_duration_seconds', 'histogram');
"""
POPULATE_QUERIES = """
-- 24 h of minutes for 1,000 counter series (50 routes x 20 instances)
insert into metrics.series (project_id, name, labels)
select %(p)s, 'bench_requests_total',
  jsonb_build_object('route', '/api/hooks/r' || (i %% 50), 'instance', 'worker-' || (i / 50))
from generate_series(0, 999) i;
insert into metrics.rollup_1m (project_id, series_id, bucket, count, sum, min, max, last, last_ts)
select %(p)s, s.id, m, 10, 10 + (s.id %% 7), 1, 3, 2, m
from metrics.series s,
  generate_series(date_trunc('minute', now()) - interval '1440 minutes',
                  date_trunc('minute', now()) - interval '1 minute', interval '1 minute') m
where s.project_id = %(p)s and s.name = 'bench_requests_total';
-- 24 h of minutes for 100 histogram series (50 routes x 2 instances): 20 sketches of 60 observations
-- (log-uniform over ~0.007..2.7 s, ~150 buckets each), reused across minutes
insert into metrics.families (project_id, name, kind) values (%(p)s, 'bench_latency_seconds', 'histogram');
insert into metrics.series (project_id, name, labels)
select %(p)s, 'bench_latency_seconds',
  jsonb_build_object('route', '/api/hooks/r' || (i %% 50), 'instance', 'worker-' || (i / 50))
from generate_series(0, 99) i;
insert into metrics.rollup_1m (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
select %(p)s, s.id, m, 60, 30, 0.0067, 2.72, 0.5, m,
  (array(select metrics.sketch_from_values(array(select exp(random() * 6 - 5) from generate_series(1, 60) where g > 0))
         from generate_series(1, 20) g))[1 + (s.id + extract(epoch from m)::bigint / 60) %% 20]
from metrics.series s,
  generate_series(date_trunc('minute', now()) - interval '1440 minutes',
                  date_trunc('minute', now()) - interval '1 minute', interval '1 minute') m
where s.project_id = %(p)s and s.name = 'bench_latency_seconds';
"""
POPULATE_SCRAPE = """
-- 10,000 series with cumulative totals for the exposition
insert into metrics.series (project_id, name, labels)
select %(p)s, 'bench_http_requests_total',
  jsonb_build_object('route', '/api/hooks/r' || (i %% 600), 'status_class', (2 + i %% 4) || 'xx',
                     'instance', 'worker-' || (i / 600))
from generate_series(0, 5999) i
union all
select %(p)s, 'bench_queue_depth', jsonb_build_object('queue', 'q' || (i %% 300), 'state', 'ready', 'shard', (i / 300)::text)
from generate_series(0, 2999) i
union all
select %(p)s, 'bench_duration_seconds', jsonb_build_object('node_type', 'n' || (i %% 100), 'outcome', 'ok', 'shard', (i / 100)::text)
from generate_series(0, 999) i;
insert into metrics.series_totals (series_id, project_id, count, sum, last, last_ts, sketch)
select s.id, s.project_id, 100, 123.5 + s.id, s.id %% 97, now(),
  case when s.name = 'bench_duration_seconds' then
    metrics.sketch_from_values(array(select exp(random() * 6 - 5) from generate_series(1, 100) where s.id > 0))
  end
from metrics.series s
where s.project_id = %(p)s and s.name <> 'bench_requests_total';
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": percentile(times, 0.95),
        "max_ms": max(times),
        "runs": repeat,
    }


def baseline_registry() -> CollectorRegistry:
    """prometheus_client's own registry with the same series counts and label shapes."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter("bench_http_requests", "x", ["route", "status_class", "instance"], registry=registry)
    queue = Gauge("bench_queue_depth", "x", ["queue", "state", "shard"], registry=registry)
    duration = Histogram("bench_duration_seconds", "x", ["node_type", "outcome", "shard"], registry=registry)
    for i in range(COUNTERS):
        requests.labels(f"/api/hooks/r{i % 600}", f"{2 + i % 4}xx", f"worker-{i // 600}").inc(123.5 + i)
    for i in range(GAUGES):
        queue.labels(f"q{i % 300}", "ready", str(i // 300)).set(i % 97)
    for i in range(HISTOGRAMS):
        child = duration.labels(f"n{i % 100}", "ok", str(i // 100))
        for v in (0.01, 0.1, 0.5, 2.0):
            child.observe(v)
    return registry


def populate(pg: LocalPostgres, only: str) -> tuple[uuid.UUID, uuid.UUID, str, datetime, float]:
    """Project, member, scrape token, end of the rolled-up hours and the seconds the data took to write.

    ``only``: "queries" or "scrape" writes just the data of that part (the minute rows take the longest).
    """
    project, user = uuid.uuid4(), uuid.uuid4()
    sql = POPULATE_PROJECT
    sql += POPULATE_QUERIES if only != "scrape" else ""
    sql += POPULATE_SCRAPE if only != "queries" else ""
    started = time.perf_counter()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        with conn.transaction():
            psycopg.ClientCursor(conn).execute(sql, {"p": project, "u": user})
        # the rollups were written directly, past the triggers that mark late hours and 5-minute windows:
        # roll every hour and window up again (a maintenance run may have moved the watermarks meanwhile)
        conn.execute(
            "update metrics.maintenance_state set hour_watermark = '-infinity', five_minute_watermark = '-infinity'"
        )
        conn.execute("select metrics.maintain()")
        while not conn.execute(  # the 5-minute tier backfills an hour per run
            "select metrics.five_minutes_complete_until()"
            " >= metrics.five_minute_window(now() - interval '5 minutes')"
        ).fetchone()[0]:  # type: ignore[index]
            conn.execute("select metrics.rollup_five_minutes()")
        conn.execute("vacuum analyze")
        row = conn.execute(
            "select token, metrics.hours_complete_until() from metrics.create_scrape_token(%s, 'bench')",
            (project,),
        ).fetchone()
    assert row is not None
    return project, user, str(row[0]), row[1], time.perf_counter() - started


def start_server(
    pg: LocalPostgres, log: Path, *, cache_mb: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port(0)
    env = {
        **os.environ,
        "MESHHOOK_METRICS_DATABASE_URL": pg.url(),
        "MESHHOOK_METRICS_JWT_SECRET": SECRET,
        "MESHHOOK_METRICS_API_PORT": str(port),
        "MESHHOOK_METRICS_QUERY_RATE_PER_SECOND": "0",  # one user drives the load: measure queries, not the limit
    }
    if cache_mb is not None:
        env["MESHHOOK_METRICS_QUERY_CACHE_MB"] = str(cache_mb)
    server = subprocess.Popen(
        [sys.executable, "-m", "meshhook_rt_metrics.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the service did not start; see {log}")
        time.sleep(0.1)


Case = tuple[str, dict[str, Any], timedelta | None]


def query_cases(project: uuid.UUID, hours_until: datetime) -> list[Case]:
    """(label, parameters, window): a window makes the range "the last <window>" as of each request, the way
    a dashboard refreshes; the hourly cases end at ``hours_until`` (metrics.hours_complete_until()), so they
    are answered from hourly rollups."""
    hour = hours_until
    day, last_hour = timedelta(minutes=MINUTES), timedelta(hours=1)
    hours = {"from": (hour - timedelta(hours=24)).isoformat(), "to": hour.isoformat()}
    common: dict[str, Any] = {"project_id": str(project), "metric": "bench_requests_total"}
    latency = {**common, "metric": "bench_latency_seconds"}
    one = ["route=/api/hooks/r7", "instance=worker-3"]
    return [
        (
            "hourly: 1,000 series merged, rate, step 1h",
            {**common, **hours, "agg": "rate", "by": "", "step": "1h"},
            None,
        ),
        (
            "hourly: 1,000 series by route (50), sum, step 1h",
            {**common, **hours, "by": "route", "step": "1h"},
            None,
        ),
        ("hourly: 1,000 series returned, sum, step 1h", {**common, **hours, "step": "1h"}, None),
        ("minutes: 1,000 series merged, rate, auto step (5m)", {**common, "agg": "rate", "by": ""}, day),
        ("minutes: 1,000 series by route (50), sum, step 5m", {**common, "by": "route", "step": "5m"}, day),
        (
            "minutes: 500 series (matcher) by route, sum, step 5m",
            {**common, "by": "route", "step": "5m", "match": ["instance=~worker-[0-9]"]},
            day,
        ),
        (
            "minutes: 1 series, max, step 1m (1,440 points)",
            {**common, "agg": "max", "step": "1m", "match": one},
            day,
        ),
        ("histograms: 100 series merged, p99, auto step (5m)", {**latency, "agg": "p99", "by": ""}, day),
        (
            "histograms: 100 series by route (50), p99, step 5m",
            {**latency, "agg": "p99", "by": "route", "step": "5m"},
            day,
        ),
        (
            "histograms: 100 series merged, p99, last hour, step 1m",
            {**latency, "agg": "p99", "by": "", "step": "1m"},
            last_hour,
        ),
    ]


def as_of_now(params: dict[str, Any], window: timedelta | None) -> dict[str, Any]:
    if window is None:
        return params
    now = datetime.now(UTC)
    return {**params, "from": (now - window).isoformat(), "to": now.isoformat()}


def run_queries(
    http: httpx.Client,
    plain: httpx.Client,
    headers: dict[str, str],
    project: uuid.UUID,
    hours_until: datetime,
    repeat: int,
) -> list[dict[str, Any]]:
    """Each case on the service as deployed (its cache on: the first request fills it, the measured ones are
    a dashboard's refreshes) and on a second service with the cache off (every request reads everything)."""
    rows: list[dict[str, Any]] = []
    for label, params, window in query_cases(project, hours_until):
        started = time.perf_counter()
        response = http.get("/api/metrics", params=as_of_now(params, window), headers=headers)
        response.raise_for_status()
        first = time.perf_counter() - started
        body = response.json()

        def call(client: httpx.Client, p: dict[str, Any] = params, w: timedelta | None = window) -> None:
            client.get("/api/metrics", params=as_of_now(p, w), headers=headers).raise_for_status()

        runs = repeat if first < 1 else min(repeat, 5)
        cached = measure(lambda: call(http), runs, warmup=1)
        uncached = measure(lambda: call(plain), runs, warmup=1)
        points = sum(len(s["points"]) for s in body["series"])
        rows.append(
            {
                "case": label,
                "series": len(body["series"]),
                "points": points,
                "bytes": len(response.content),
                "first_ms": first * 1000,
                **cached,
                "uncached": uncached,
            }
        )
    return rows


def run_scrapes(http: httpx.Client, token: str, repeat: int) -> dict[str, Any]:
    text_headers = {"Authorization": f"Bearer {token}"}
    om_headers = {**text_headers, "Accept": "application/openmetrics-text;version=1.0.0"}
    body = http.get("/metrics", headers=text_headers)
    body.raise_for_status()
    return {
        "bytes": len(body.content),
        "text": measure(lambda: http.get("/metrics", headers=text_headers).raise_for_status(), repeat),
        "openmetrics": measure(lambda: http.get("/metrics", headers=om_headers).raise_for_status(), repeat),
    }


def report_queries(query_rows: list[dict[str, Any]]) -> dict[str, Any]:
    print(
        table(
            [
                "GET /api/metrics (24 h x 1,000 series)",
                "series",
                "points",
                "bytes",
                "first ms",
                "p50 ms",
                "p95 ms",
                "no cache: p50",
                "p95",
            ],
            [
                [
                    r["case"],
                    r["series"],
                    r["points"],
                    r["bytes"],
                    r["first_ms"],
                    r["p50_ms"],
                    r["p95_ms"],
                    r["uncached"]["p50_ms"],
                    r["uncached"]["p95_ms"],
                ]
                for r in query_rows
            ],
        )
    )
    print()
    goal = [r for r in query_rows if r["case"].startswith(("hourly", "minutes: 1,000"))]
    worst = max(r["p95_ms"] for r in goal)
    worst_uncached = max(r["uncached"]["p95_ms"] for r in goal)
    return {
        "query_p95_ms_worst": worst,
        "query_goal_met": worst <= GOAL_QUERY_P95_MS,
        "query_p95_ms_worst_without_cache": worst_uncached,
        "query_goal_met_without_cache": worst_uncached <= GOAL_QUERY_P95_MS,
    }


def report_scrape(scrape: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    text, om = scrape["text"], scrape["openmetrics"]
    print(
        table(
            ["10,000 series", "bytes", "p50 ms", "p95 ms", "p95 / generate_latest"],
            [
                [
                    "GET /metrics, text 0.0.4 (HTTP round trip)",
                    scrape["bytes"],
                    text["p50_ms"],
                    text["p95_ms"],
                    text["p95_ms"] / baseline["p95_ms"],
                ],
                [
                    "GET /metrics, OpenMetrics 1.0 (HTTP round trip)",
                    "",
                    om["p50_ms"],
                    om["p95_ms"],
                    om["p95_ms"] / baseline["p95_ms"],
                ],
                [
                    "prometheus_client generate_latest (in process)",
                    baseline["bytes"],
                    baseline["p50_ms"],
                    baseline["p95_ms"],
                    1.0,
                ],
            ],
        )
    )
    print()
    return {
        "scrape_p95_ms": text["p95_ms"],
        "scrape_goal_met": text["p95_ms"] <= GOAL_SCRAPE_P95_MS,
        "scrape_vs_generate_latest_p95": text["p95_ms"] / baseline["p95_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30, help="Measured runs per case.")
    parser.add_argument(
        "--only",
        choices=["all", "queries", "scrape"],
        default="all",
        help="Run (and populate) only GET /api/metrics or only GET /metrics + generate_latest.",
    )
    args = parser.parse_args()
    stop_on_sigterm()

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    pg = LocalPostgres(tmp / "pg", port=0, fast=True)
    server: subprocess.Popen[bytes] | None = None
    servers: list[subprocess.Popen[bytes]] = []
    try:
        pg.init()  # within the try: a SIGTERM while it starts still stops it
        pg.start()
        bootstrap_database(pg)
        migrator.migrate(pg.url())
        project, user, token, hours_until, populate_s = populate(pg, args.only)
        print(f"populated in {populate_s:.1f} s", file=sys.stderr)
        server, base = start_server(pg, tmp / "api.log")
        plain_server, plain_base = start_server(pg, tmp / "api-no-cache.log", cache_mb=0)
        servers.append(plain_server)
        headers = {"Authorization": f"Bearer {JwtKeys(SECRET).user_token(user, expires_in=7200)}"}
        query_rows: list[dict[str, Any]] = []
        scrape: dict[str, Any] = {}
        baseline: dict[str, Any] = {}
        verdict: dict[str, Any] = {}
        with (
            httpx.Client(base_url=base, timeout=60) as http,
            httpx.Client(base_url=plain_base, timeout=60) as plain,
        ):
            if args.only != "scrape":
                query_rows = run_queries(http, plain, headers, project, hours_until, args.repeat)
            if args.only != "queries":
                scrape = run_scrapes(http, token, args.repeat)
        if args.only != "queries":
            registry = baseline_registry()
            baseline = {
                **measure(lambda: generate_latest(registry), args.repeat),
                "bytes": len(generate_latest(registry)),
            }
        if query_rows:
            verdict |= report_queries(query_rows)
        if scrape:
            verdict |= report_scrape(scrape, baseline)
        verdict["load_average_1m"] = os.getloadavg()[0]
        print(json.dumps(verdict, indent=2))
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"api-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(
            json.dumps(
                {
                    "command": "python -m benchmarks.api " + " ".join(sys.argv[1:]),
                    "environment": environment(),
                    "populate_seconds": populate_s,
                    "queries": query_rows,
                    "scrape": scrape,
                    "generate_latest": baseline,
                    "verdict": verdict,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {out}", file=sys.stderr)
    finally:
        for process in ([server] if server is not None else []) + servers:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        pg.destroy()


if __name__ == "__main__":
    main()
