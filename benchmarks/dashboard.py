"""Live dashboard, measured in a real browser (headless Chromium driven by playwright-core), against baselines
measured in the SAME run:

    .venv/bin/python -m benchmarks.dashboard                  # ~5 minutes
    .venv/bin/python -m benchmarks.dashboard --quick          # fewer samples, shorter windows (~3 minutes)

Setup (loopback only, a temporary directory removed at the end): a local stack of its own (``LocalStack`` with
the maintain loop that publishes live rollup messages, the gateway (auth, Realtime) and the HTTP service that
serves ``/dashboard/``; its ports are chosen free, never 54321/54330), four projects with one signed-in admin:
``live`` and ``fleet`` (saved dashboards with the panels below), ``history`` (the package's default dashboard
over 24 h of minute data) and ``empty`` (the default dashboard, no data). The page is the standalone build in
dashboard/build (``make dashboard``). The browser half is benchmarks/dashboard_browser.mjs: it injects an
instrumentation script into every page (see its header: rAF-based paint times, WebSocket/fetch/canvas hooks), so
the dashboard's own code is not changed. Worker-side times are ``time.time()`` in the worker process, page times
``performance.timeOrigin + performance.now()``: the same machine clock.

1. inc -> painted. A worker process (``MetricsClient``, flush every 1 s, ingest over PostgreSQL) alternately sets
   a gauge to a new value and increments a counter, ``--trials`` times, 2-3 s apart (random). The page shows the
   ``live`` dashboard (two time-series panels, their data tables open; last 1 h). Painted = the paint of the frame
   whose data table first shows the new value (gauge: the newest row reads the value; counter: the column's sum
   reaches the number of increments). Baseline in the same run, on the same increments: a poller that reads the
   same two queries from ``GET /api/metrics`` every 5 s (Grafana's fastest common refresh) and sees the value
   when its response arrives (a lower bound for a polling dashboard: its paint is not counted).
2. Broadcast -> painted with 100 series. The worker sets ``bench_gauge{i="0".."99"}`` every second; the page shows
   the ``fleet`` dashboard (one panel, ``last`` by ``i``: 100 lines). Per rollup broadcast naming the metric (the
   WebSocket ``message`` event in the page): the first tail read (``GET /api/metrics``) that starts after it,
   then the first uPlot redraw of the panel after that read's response, then that redraw's paint. Also: the API
   round trip of those reads (part of the path by design: values come only from SQL), and the page's main-thread
   busy time (CDP ``Performance.getMetrics`` TaskDuration) over ``--steady`` seconds of this, against the same
   page with no data flowing (``--idle`` seconds after the worker stopped).
3. First chart over 24 h. ``?last=24h`` on the ``history`` project (24 h of minutes for every metric of the
   default dashboard, written straight into the rollup tables as benchmarks/api.py does, then rolled up by
   ``metrics.maintain()``): ``--loads`` page loads, a new browser context each, already signed in (storage state
   of one sign-in through the form): navigation start -> paint of the first uPlot chart with data. Baseline:
   the same page on the ``empty`` project -> first panel settled ("No data in this range"): framework + session
   + dashboard read + empty queries.

Percentiles are nearest-rank. Results: benchmarks/results/dashboard.json. Goals (issue: live dashboard):
inc -> painted p95 <= 2.5 s; broadcast -> painted p95 <= 50 ms; busy <= 5 % of a core; first chart p95 <= 1.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import queue
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from benchmarks import _report
from benchmarks._signals import stop_on_sigterm
from meshhook_rt_metrics.localstack.postgres import free_port
from meshhook_rt_metrics.localstack.stack import LocalStack, Service

ROOT = Path(__file__).resolve().parent.parent
BROWSER_SCRIPT = Path(__file__).resolve().parent / "dashboard_browser.mjs"
STACK_SERVICES = ("maintain", "gateway", "api")
GOALS = {
    "inc_to_painted_p95_s": 2.5,
    "broadcast_to_painted_p95_ms": 50.0,
    "busy_fraction_max": 0.05,
    "first_chart_p95_s": 1.5,
}
POLL_INTERVAL_S = 5.0
FLEET_SERIES = 100
GAUGE_TITLE = "Bench gauge"
COUNTER_TITLE = "Bench counter"
FLEET_TITLE = "Fleet gauges"
EMAIL = "bench@dashboard.bench.local"

_started = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr (the results table goes to stdout)."""
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float], expected: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }
    if expected is not None:
        out["missing"] = expected - len(values)
    return out


def panel(pid: str, title: str, metric: str, agg: str, by: list[str], width: int = 6) -> dict[str, Any]:
    return {
        "id": pid,
        "title": title,
        "type": "timeseries",
        "metric": metric,
        "agg": agg,
        "by": by,
        "match": [],
        "quantiles": None,
        "ratio": None,
        "unit": "none",
        "thresholds": [],
        "width": width,
        "height": 2,
    }


LIVE_SPEC = {
    "version": 1,
    "title": "Bench live",
    "panels": [
        panel("gauge", GAUGE_TITLE, "bench_live_gauge", "last", []),
        panel("counter", COUNTER_TITLE, "bench_live_total", "sum", []),
    ],
}
FLEET_SPEC = {
    "version": 1,
    "title": "Bench fleet",
    "panels": [panel("fleet", FLEET_TITLE, "bench_gauge", "last", ["i"], width=12)],
}

# 24 h of minutes for every metric of the package's default dashboard (dashboard/src/lib/data/spec.js)
HISTORY_SQL = """
insert into metrics.families (project_id, name, kind) values
  (%(p)s, 'meshhook_webhook_requests_total', 'counter'),
  (%(p)s, 'meshhook_workflow_runs_completed_total', 'counter'),
  (%(p)s, 'process_cpu_seconds_total', 'counter'),
  (%(p)s, 'system_disk_io_bytes_total', 'counter'),
  (%(p)s, 'system_network_io_bytes_total', 'counter'),
  (%(p)s, 'meshhook_queue_messages', 'gauge'),
  (%(p)s, 'process_resident_memory_bytes', 'gauge'),
  (%(p)s, 'system_cpu_utilization_ratio', 'gauge'),
  (%(p)s, 'meshhook_workflow_step_duration_seconds', 'histogram'),
  (%(p)s, 'meshhook_http_client_request_duration_seconds', 'histogram');
insert into metrics.series (project_id, name, labels)
select %(p)s, 'meshhook_webhook_requests_total', jsonb_build_object('route', '/api/hooks/[slug]' || r, 'outcome', o, 'signature', 'valid')
  from generate_series(0, 4) r, unnest(array['ok', 'error', 'rejected']) o
union all select %(p)s, 'meshhook_workflow_runs_completed_total', jsonb_build_object('status', s)
  from unnest(array['succeeded', 'failed', 'cancelled']) s
union all select %(p)s, 'process_cpu_seconds_total', jsonb_build_object('service', 'meshhook-worker', 'instance', 'worker-' || i)
  from generate_series(0, 3) i
union all select %(p)s, 'process_resident_memory_bytes', jsonb_build_object('service', 'meshhook-worker', 'instance', 'worker-' || i)
  from generate_series(0, 3) i
union all select %(p)s, 'system_cpu_utilization_ratio', jsonb_build_object('host', 'host-' || h) from generate_series(0, 1) h
union all select %(p)s, 'system_disk_io_bytes_total', jsonb_build_object('host', 'host-' || h, 'direction', d)
  from generate_series(0, 1) h, unnest(array['read', 'write']) d
union all select %(p)s, 'system_network_io_bytes_total', jsonb_build_object('host', 'host-' || h, 'direction', d)
  from generate_series(0, 1) h, unnest(array['receive', 'transmit']) d
union all select %(p)s, 'meshhook_queue_messages', jsonb_build_object('queue', q, 'state', s)
  from unnest(array['jobs', 'webhooks', 'retries']) q, unnest(array['ready', 'running']) s
union all select %(p)s, 'meshhook_workflow_step_duration_seconds', jsonb_build_object('node_type', n, 'outcome', 'ok')
  from unnest(array['http_call', 'transform', 'delay', 'branch']) n
union all select %(p)s, 'meshhook_http_client_request_duration_seconds',
  jsonb_build_object('node_type', n, 'method', 'POST', 'status_class', '2xx')
  from unnest(array['http_call', 'webhook_out', 'slack', 'email']) n;
-- counters and gauges: a daily wave per series
insert into metrics.rollup_1m (project_id, series_id, bucket, count, sum, min, max, last, last_ts)
select %(p)s, s.id, m, 60, v * 60, v * 0.8, v * 1.2, v, m + interval '59 seconds'
from metrics.series s
  join metrics.families f on f.project_id = s.project_id and f.name = s.name and f.kind <> 'histogram',
  generate_series(date_trunc('minute', now()) - interval '1440 minutes',
                  date_trunc('minute', now()) - interval '1 minute', interval '1 minute') m,
  lateral (select (1 + (s.id %% 7)) * (1.5 + sin(extract(epoch from m) / 13751 + s.id)) *
    case s.name when 'process_resident_memory_bytes' then 5e7 when 'system_cpu_utilization_ratio' then 0.1
      when 'system_disk_io_bytes_total' then 1e5 when 'system_network_io_bytes_total' then 1e5
      when 'process_cpu_seconds_total' then 0.05 else 1 end as v) w
where s.project_id = %(p)s;
-- histograms: 20 sketches of 60 observations (log-uniform ~0.007..2.7 s), reused across minutes
insert into metrics.rollup_1m (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
select %(p)s, s.id, m, 60, 30, 0.0067, 2.72, 0.5, m,
  (array(select metrics.sketch_from_values(array(select exp(random() * 6 - 5) from generate_series(1, 60) where g > 0))
         from generate_series(1, 20) g))[1 + (s.id + extract(epoch from m)::bigint / 60) %% 20]
from metrics.series s
  join metrics.families f on f.project_id = s.project_id and f.name = s.name and f.kind = 'histogram',
  generate_series(date_trunc('minute', now()) - interval '1440 minutes',
                  date_trunc('minute', now()) - interval '1 minute', interval '1 minute') m
where s.project_id = %(p)s;
"""


# -- the stack ---------------------------------------------------------------------------------------------------
class BenchStack(LocalStack):
    """The local stack with the maintain loop (live rollup messages), the gateway (auth, Realtime) and the HTTP
    service (API + /dashboard/); no alert worker, receiver or demo."""

    def services(self) -> list[Service]:
        chosen = [s for s in super().services() if s.name in STACK_SERVICES]
        for service in chosen:
            if service.name == "api":
                # the benchmark's many page loads and polls come from one user: measure them, not the limit
                service.env["MESHHOOK_METRICS_QUERY_RATE_PER_SECOND"] = "0"
        return chosen


@contextlib.contextmanager
def local_stack(work: Path) -> Iterator[LocalStack]:
    stack = BenchStack(work / "stack", db_port=0, fast=False)
    # free ephemeral ports, never the defaults (54321/54330) that a developer's own stack may use or come back to
    for service in ("gateway", "api"):
        path = stack.state_dir / service / "port"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{free_port(0)}\n")
    try:
        stack.up(lambda m: say(f"stack: {m}") if not m.startswith("applying migration") else None)
        yield stack
    finally:
        stack.stop_services(lambda m: say(f"stack: {m}"))
        stack.postgres.destroy()
        say("stack: PostgreSQL stopped and removed")


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, psycopg.Error):
            if check():
                return
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


# -- projects, user, data -------------------------------------------------------------------------------------
def create_projects(stack: LocalStack, password: str) -> tuple[dict[str, uuid.UUID], uuid.UUID]:
    from meshhook_rt_metrics.localstack.users import add_member

    projects = {name: uuid.uuid4() for name in ("live", "fleet", "history", "empty")}
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        user = uuid.UUID(str(add_member(conn, EMAIL, password, projects["live"], "admin")))
        for name in ("fleet", "history", "empty"):
            add_member(conn, EMAIL, password, projects[name], "admin")
    return projects, user


def populate_history(db_url: str, project: uuid.UUID) -> float:
    """24 h of minutes for the default dashboard's metrics, rolled up as benchmarks/api.py does."""
    started = time.perf_counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        with conn.transaction():
            psycopg.ClientCursor(conn).execute(HISTORY_SQL, {"p": project})
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
    return time.perf_counter() - started


def save_dashboard(api: str, token: str, project: uuid.UUID, spec: dict[str, Any]) -> None:
    response = httpx.post(
        f"{api}/api/metrics/dashboards",
        json={"project_id": str(project), "name": "Bench", "spec": spec},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if response.status_code != 201:
        raise RuntimeError(f"saving the dashboard: {response.status_code} {response.text}")


# -- the worker process ---------------------------------------------------------------------------------------
def worker_process(
    db_url: str, project_id: str, spool_dir: str, commands: Queue[Any], events: Queue[Any]
) -> None:
    """A MeshHook worker: MetricsClient (flush 1 s). Commands: ("gauge", v), ("inc", n), ("fleet", on), ("stop",).
    t0 is taken right before the call. With the fleet on, the 100 gauges are set once a second."""
    from meshhook_rt_metrics.client import MetricsClient

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(11)
    with MetricsClient(
        project_id=project_id,
        database_url=db_url,
        flush_interval=1.0,
        spool_dir=Path(spool_dir),
        source=f"bench-dashboard-worker:{os.getpid()}",
        system_metrics=False,
    ) as client:
        gauge = client.gauge("bench_live_gauge", "A gauge the benchmark sets")
        counter = client.counter("bench_live_total", "A counter the benchmark increments")
        fleet = client.gauge("bench_gauge", "100 gauges set every second", labels=("i",))
        fleet_on, next_set = False, 0.0
        events.put(("ready", 0, time.time()))
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if fleet_on and time.monotonic() >= next_set:
                for i in range(FLEET_SERIES):
                    fleet.set(rng.randint(0, 1000), i=str(i))
                next_set += 1.0
            try:
                command = commands.get(timeout=0.01)
            except queue.Empty:
                continue
            if command[0] == "stop":
                break
            if command[0] == "gauge":
                t0 = time.time()
                gauge.set(command[1])
                events.put(("gauge", command[1], t0))
            elif command[0] == "inc":
                t0 = time.time()
                counter.inc()
                events.put(("inc", command[1], t0))
            elif command[0] == "fleet":
                fleet_on, next_set = bool(command[1]), time.monotonic()
                events.put(("fleet", command[1], time.time()))


@contextlib.contextmanager
def meshhook_worker(db_url: str, project: uuid.UUID, work: Path) -> Iterator[tuple[Queue[Any], Queue[Any]]]:
    ctx = multiprocessing.get_context("spawn")
    commands: Queue[Any] = ctx.Queue()
    events: Queue[Any] = ctx.Queue()
    worker = ctx.Process(
        target=worker_process,
        args=(db_url, str(project), str(work / f"spool-{project}"), commands, events),
        daemon=True,
    )
    worker.start()
    try:
        events.get(timeout=60)
        yield commands, events
    finally:
        if worker.is_alive():
            commands.put(("stop",))
            worker.join(15)
        if worker.is_alive():
            worker.terminate()
            worker.join(5)


# -- the browser ----------------------------------------------------------------------------------------------
class Browser:
    """benchmarks/dashboard_browser.mjs: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, log: Path) -> None:
        self.proc = subprocess.Popen(
            ["node", str(BROWSER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab"),  # noqa: SIM115
            cwd=ROOT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def call(self, cmd: str, timeout: float = 120, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"browser: {cmd} took over {timeout:.0f} s") from None
        if not line:
            raise RuntimeError(f"browser: exited during {cmd} (code {self.proc.poll()})")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"browser: {cmd} failed: {answer['error']}")
        return answer["result"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit", timeout=20)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# -- part 3: first chart over 24 h ----------------------------------------------------------------------------
def first_chart(
    browser: Browser, dashboard: str, projects: dict[str, uuid.UUID], loads: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, mark in (("history", "firstData"), ("empty", "firstSettled")):
        url = f"{dashboard}?project={projects[name]}&last=24h"
        warm = browser.call("loads", url=url, n=1, mark=mark)["runs"]
        runs = browser.call("loads", url=url, n=loads, mark=mark, timeout=60 + 20 * loads)["runs"]
        key = "first_data_ms_since_nav" if mark == "firstData" else "first_settled_ms_since_nav"
        out[name] = {
            "end_point": "first uPlot chart painted with data"
            if mark == "firstData"
            else "first panel settled",
            "warmup_ms": warm[0][key],
            "ms": summary([r[key] for r in runs], loads),
            "dom_content_loaded_ms": summary([r["dom_content_loaded_ms"] for r in runs]),
            "first_api_start_ms": summary([r["first_api_start_ms"] for r in runs if r["first_api_start_ms"]]),
            "api_requests": runs[0]["api_requests"],
            "charts": runs[0]["charts"],
            "runs": runs,
        }
        for r in runs[1:]:  # the request waterfall of the first measured load is enough
            r.pop("resources", None)
        say(f"first chart, {name}: p50 {out[name]['ms']['p50']:.0f} ms, p95 {out[name]['ms']['p95']:.0f} ms")
    return out


# -- part 1: inc -> painted -------------------------------------------------------------------------------------
class Poller:
    """The baseline: GET /api/metrics for the two panels' queries every 5 s (last 1 h, step 1 m)."""

    def __init__(self, api: str, token: str, project: uuid.UUID) -> None:
        self.api, self.token, self.project = api, token, project
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _query(self, http: httpx.Client, metric: str, agg: str) -> list[list[Any]]:
        now = datetime.now(UTC)
        params = {
            "project_id": str(self.project),
            "metric": metric,
            "agg": agg,
            "by": "",
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": now.isoformat(),
            "step": "60s",
        }
        response = http.get(f"{self.api}/api/metrics?{urlencode(params)}")
        response.raise_for_status()
        series = response.json()["series"]
        return series[0]["points"] if series else []

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=10) as http:
            next_poll = time.monotonic()
            while not self.stop_event.is_set():
                started = time.time()
                with contextlib.suppress(httpx.HTTPError):
                    gauge = [v for _, v in self._query(http, "bench_live_gauge", "last") if v is not None]
                    total = sum(v or 0 for _, v in self._query(http, "bench_live_total", "sum"))
                    self.samples.append(
                        {
                            "start": started,
                            "t": time.time(),
                            "gauge": gauge[-1] if gauge else None,
                            "total": total,
                        }
                    )
                next_poll += POLL_INTERVAL_S
                self.stop_event.wait(max(0.0, next_poll - time.monotonic()))

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(15)


def inc_to_painted(
    browser: Browser,
    dashboard: str,
    api: str,
    token: str,
    project: uuid.UUID,
    db_url: str,
    work: Path,
    trials: int,
) -> dict[str, Any]:
    rng = random.Random(5)
    with meshhook_worker(db_url, project, work) as (commands, events):
        opened = browser.call(
            "open",
            url=f"{dashboard}?project={project}&last=1h",
            tables=[GAUGE_TITLE, COUNTER_TITLE],
            watch=["bench_live_gauge", "bench_live_total"],
        )
        with Poller(api, token, project) as poller:
            time.sleep(2)
            fired: list[tuple[str, float, float]] = []  # kind, expected value, t0 (epoch s)
            for k in range(trials):
                if k % 2 == 0:
                    commands.put(("gauge", 100 + k))
                else:
                    commands.put(("inc", k // 2 + 1))
                kind, value, t0 = events.get(timeout=10)
                fired.append((kind, float(value), t0))
                time.sleep(rng.uniform(2.0, 3.0))
            time.sleep(POLL_INTERVAL_S + 3)
        page = browser.call("events")
    probes = [p for p in page["probes"] if p.get("painted")]

    def page_seen(kind: str, value: float, t0: float) -> float | None:
        for p in probes:
            if p["t"] < t0 * 1000:
                continue
            cell = p["value"].get(GAUGE_TITLE if kind == "gauge" else COUNTER_TITLE)
            if not cell:
                continue
            if (kind == "gauge" and cell["newest"] == str(int(value))) or (
                kind == "inc" and cell["total"] >= value
            ):
                return float(p["painted"]) / 1000 - t0
        return None

    def poll_seen(kind: str, value: float, t0: float) -> float | None:
        for s in poller.samples:
            if s["start"] < t0:
                continue
            if (kind == "gauge" and s["gauge"] == value) or (kind == "inc" and s["total"] >= value):
                return float(s["t"]) - t0
        return None

    rows: list[dict[str, Any]] = []
    for kind, value, t0 in fired:
        rows.append(
            {
                "kind": kind,
                "value": value,
                "t0": t0,
                "page_s": page_seen(kind, value, t0),
                "poll_s": poll_seen(kind, value, t0),
            }
        )
    live = [r["page_s"] for r in rows if r["page_s"] is not None]
    polled = [r["poll_s"] for r in rows if r["poll_s"] is not None]
    result = {
        "trials": trials,
        "page_s": summary(live, trials),
        "page_gauge_s": summary(
            [r["page_s"] for r in rows if r["kind"] == "gauge" and r["page_s"] is not None]
        ),
        "page_counter_s": summary(
            [r["page_s"] for r in rows if r["kind"] == "inc" and r["page_s"] is not None]
        ),
        "poll_5s_s": summary(polled, trials),
        "page_clock_minus_date_ms": opened["page_clock_minus_date_ms"],
        "rollup_frames": len(page["ws"]),
        "rows": rows,
    }
    if live and polled:
        result["ratio_p50"] = result["page_s"]["p50"] / result["poll_5s_s"]["p50"]
        result["ratio_p95"] = result["page_s"]["p95"] / result["poll_5s_s"]["p95"]
    say(
        f"inc -> painted: p50 {result['page_s']['p50']:.2f} s, p95 {result['page_s']['p95']:.2f} s;"
        f" 5 s poll p95 {result['poll_5s_s']['p95']:.2f} s"
    )
    return result


# -- part 2: broadcast -> painted, 100 series; busy time ----------------------------------------------------------
def analyse_broadcasts(page: dict[str, Any]) -> dict[str, Any]:
    frames = [f for f in page["ws"] if "bench_gauge" in f["names"]]
    fetches = sorted(
        (f for f in page["fetches"] if "metric=bench_gauge" in f["url"] and f.get("end")),
        key=lambda f: f["start"],
    )
    draws = sorted((d for d in page["draws"] if d.get("painted")), key=lambda d: d["t"])
    total, wait, rtt, after, first = [], [], [], [], []
    unmatched = 0
    for frame in frames:
        read = next((f for f in fetches if f["start"] >= frame["t"]), None)
        draw = next((d for d in draws if read and d["t"] >= read["end"]), None)
        if read is None or draw is None:
            unmatched += 1
            continue
        # a minute the page saw whole is drawn from the broadcast itself, before the SQL answer lands: the
        # first redraw after the frame and before that read ends (a 5 s window tick could fall there too,
        # at ~30 ms in 5 s, under 1 % of frames)
        early = next((d for d in draws if frame["t"] <= d["t"] < read["end"]), None)
        first.append((early or draw)["painted"] - frame["t"])
        total.append(draw["painted"] - frame["t"])
        wait.append(read["start"] - frame["t"])
        rtt.append(read["end"] - read["start"])
        after.append(draw["painted"] - read["end"])
    return {
        "broadcasts": len(frames),
        "unmatched": unmatched,
        "frame_bytes": summary([f["bytes"] for f in frames]),
        "broadcast_to_painted_ms": summary(first),
        # the SQL answer that confirms a drawn minute causes no redraw; one that changes it is painted then
        "broadcast_to_sql_answer_ms": summary([w + r for w, r in zip(wait, rtt, strict=True)]),
        "broadcast_to_read_start_ms": summary(wait),
        # what the path costs without the wait for PanelData's 1 s read throttle (a projection, not measured)
        "broadcast_to_painted_without_throttle_wait_ms": summary(
            [t - w for t, w in zip(total, wait, strict=True)]
        ),
        "tail_read_round_trip_ms": summary(rtt),
        "read_end_to_painted_ms": summary(after),
        "all_tail_reads_round_trip_ms": summary([f["end"] - f["start"] for f in fetches]),
        "redraws": len(draws),
        "broadcast_interval_ms": summary([b["t"] - a["t"] for a, b in itertools.pairwise(frames)]),
        "tail_read_interval_ms": summary([b["start"] - a["start"] for a, b in itertools.pairwise(fetches)]),
    }


def fleet(
    browser: Browser, dashboard: str, project: uuid.UUID, db_url: str, work: Path, steady: float, idle: float
) -> dict[str, Any]:
    with meshhook_worker(db_url, project, work) as (commands, events):
        commands.put(("fleet", True))
        events.get(timeout=10)
        time.sleep(4)  # the series exist before the page reads them
        browser.call(
            "open",
            url=f"{dashboard}?project={project}&last=1h",
            draws=[FLEET_TITLE],
            watch=["bench_gauge"],
            wait_title=FLEET_TITLE,
        )
        time.sleep(6)
        browser.call("events")  # warm-up
        browser.call("busy_start")
        time.sleep(steady)
        busy = browser.call("busy_stop")
        page = browser.call("events")
        commands.put(("fleet", False))
        events.get(timeout=10)
    time.sleep(5)  # the last flush and its broadcast
    browser.call("events")
    browser.call("busy_start")
    time.sleep(idle)
    idle_busy = browser.call("busy_stop")
    quiet = browser.call("events")
    browser.call("close")
    result = analyse_broadcasts(page)
    result["busy_steady"] = busy
    result["busy_idle"] = idle_busy
    result["idle_rollup_frames"] = len(quiet["ws"])
    result["busy_ratio_steady_over_idle"] = (
        busy["busy_fraction"] / idle_busy["busy_fraction"] if idle_busy["busy_fraction"] else None
    )
    say(
        f"broadcast -> painted: p50 {result['broadcast_to_painted_ms']['p50']:.0f} ms,"
        f" p95 {result['broadcast_to_painted_ms']['p95']:.0f} ms; busy {busy['busy_fraction'] * 100:.2f} %"
        f" (idle {idle_busy['busy_fraction'] * 100:.2f} %)"
    )
    return result


# -- report -------------------------------------------------------------------------------------------------------
def report(result: dict[str, Any]) -> None:
    inc, fl, fc = result["inc_to_painted"], result["broadcast_to_painted"], result["first_chart"]
    goals = result["goals"]

    def yes(ok: bool) -> str:
        return "yes" if ok else "NO"

    rows = [
        [
            "inc/set -> painted (s), live page",
            inc["page_s"]["n"],
            inc["page_s"]["p50"],
            inc["page_s"]["p95"],
            f"<= {GOALS['inc_to_painted_p95_s']}",
            yes(goals["inc_to_painted_met"]),
        ],
        [
            "  gauge.set -> painted (s)",
            inc["page_gauge_s"]["n"],
            inc["page_gauge_s"]["p50"],
            inc["page_gauge_s"]["p95"],
            "",
            "",
        ],
        [
            "  counter.inc -> painted (s)",
            inc["page_counter_s"]["n"],
            inc["page_counter_s"]["p50"],
            inc["page_counter_s"]["p95"],
            "",
            "",
        ],
        [
            "inc/set -> seen (s), baseline: poll every 5 s",
            inc["poll_5s_s"]["n"],
            inc["poll_5s_s"]["p50"],
            inc["poll_5s_s"]["p95"],
            "",
            "",
        ],
        [
            "  ratio live / 5 s poll",
            "",
            inc.get("ratio_p50", float("nan")),
            inc.get("ratio_p95", float("nan")),
            "",
            "",
        ],
        [
            "broadcast -> painted, 100 series (ms)",
            fl["broadcast_to_painted_ms"]["n"],
            fl["broadcast_to_painted_ms"]["p50"],
            fl["broadcast_to_painted_ms"]["p95"],
            f"<= {GOALS['broadcast_to_painted_p95_ms']:.0f}",
            yes(goals["broadcast_to_painted_met"]),
        ],
        [
            "  broadcast -> tail read starts (ms)",
            "",
            fl["broadcast_to_read_start_ms"]["p50"],
            fl["broadcast_to_read_start_ms"]["p95"],
            "",
            "",
        ],
        [
            "  tail read GET /api/metrics round trip (ms)",
            "",
            fl["tail_read_round_trip_ms"]["p50"],
            fl["tail_read_round_trip_ms"]["p95"],
            "",
            "",
        ],
        [
            "  response -> painted (ms)",
            "",
            fl["read_end_to_painted_ms"]["p50"],
            fl["read_end_to_painted_ms"]["p95"],
            "",
            "",
        ],
        [
            "main-thread busy, 100 series live (% core)",
            "",
            fl["busy_steady"]["busy_fraction"] * 100,
            "",
            f"<= {GOALS['busy_fraction_max'] * 100:.0f}",
            yes(goals["busy_met"]),
        ],
        ["  baseline: same page idle (% core)", "", fl["busy_idle"]["busy_fraction"] * 100, "", "", ""],
        [
            "first chart with data, 24 h (ms)",
            fc["history"]["ms"]["n"],
            fc["history"]["ms"]["p50"],
            fc["history"]["ms"]["p95"],
            f"<= {GOALS['first_chart_p95_s'] * 1000:.0f}",
            yes(goals["first_chart_met"]),
        ],
        [
            "  baseline: empty project, first panel settled (ms)",
            fc["empty"]["ms"]["n"],
            fc["empty"]["ms"]["p50"],
            fc["empty"]["ms"]["p95"],
            "",
            "",
        ],
        [
            "  ratio 24 h / empty",
            "",
            fc["history"]["ms"]["p50"] / fc["empty"]["ms"]["p50"],
            fc["history"]["ms"]["p95"] / fc["empty"]["ms"]["p95"],
            "",
            "",
        ],
    ]
    print(_report.table(["dashboard (headless Chromium)", "n", "p50", "p95", "goal", "met"], rows))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir

    password = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as cleanup:
        stack = cleanup.enter_context(local_stack(work))
        if not stack.dashboard_built:
            raise RuntimeError("no dashboard build: run `make dashboard` first")
        api = f"http://127.0.0.1:{stack.api_port}"
        wait_until("HTTP service", lambda: httpx.get(f"{api}/healthz", timeout=2).status_code == 200, 60)
        wait_until(
            "gateway",
            lambda: httpx.get(f"http://127.0.0.1:{stack.gateway_port}/health", timeout=2).status_code == 200,
            60,
        )
        projects, user = create_projects(stack, password)
        token = keys_for_state_dir(stack.state_dir).user_token(user, expires_in=7200)
        save_dashboard(api, token, projects["live"], LIVE_SPEC)
        save_dashboard(api, token, projects["fleet"], FLEET_SPEC)
        seconds = populate_history(stack.database_url, projects["history"])
        say(
            f"projects ready; 24 h of minutes for the default dashboard written and rolled up in {seconds:.1f} s"
        )
        browser = Browser(work / "browser.log")
        cleanup.callback(browser.stop)
        dashboard = stack.dashboard_url
        browser.call("signin", url=dashboard, email=EMAIL, password=password)
        say("signed in through the page's form (storage state kept for the next contexts)")
        result: dict[str, Any] = {}
        if args.only in (None, "first_chart"):
            result["first_chart"] = first_chart(browser, dashboard, projects, args.loads)
        if args.only in (None, "inc"):
            result["inc_to_painted"] = inc_to_painted(
                browser, dashboard, api, token, projects["live"], stack.database_url, work, args.trials
            )
        if args.only in (None, "fleet"):
            result["broadcast_to_painted"] = fleet(
                browser, dashboard, projects["fleet"], stack.database_url, work, args.steady, args.idle
            )
        result["history_write_s"] = seconds
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--trials", type=int, default=40, help="increments/sets, half gauge, half counter (>= 30)"
    )
    parser.add_argument(
        "--steady", type=float, default=60, help="seconds of 100 live series for the busy time"
    )
    parser.add_argument(
        "--idle", type=float, default=30, help="seconds of the idle page (busy-time baseline)"
    )
    parser.add_argument("--loads", type=int, default=12, help="page loads per project for the first chart")
    parser.add_argument("--quick", action="store_true", help="20 trials, 20 s steady, 10 s idle, 6 loads")
    parser.add_argument(
        "--only", choices=["first_chart", "inc", "fleet"], help="one part only (no JSON, no verdict)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.steady, args.idle, args.loads = 20, 20, 10, 6
    stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="meshhook-bench-dashboard-"))
    say(f"work directory {work}")
    try:
        result = run(args, work)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.only:
        print(json.dumps(result, indent=1)[:20000])
        return 0
    inc, fl, fc = result["inc_to_painted"], result["broadcast_to_painted"], result["first_chart"]
    result["goals"] = {
        **GOALS,
        "inc_to_painted_met": inc["page_s"]["n"] >= 30
        and inc["page_s"]["missing"] == 0
        and inc["page_s"]["p95"] <= GOALS["inc_to_painted_p95_s"],
        "broadcast_to_painted_met": fl["broadcast_to_painted_ms"]["n"] > 0
        and fl["broadcast_to_painted_ms"]["p95"] <= GOALS["broadcast_to_painted_p95_ms"],
        "busy_met": fl["busy_steady"]["busy_fraction"] <= GOALS["busy_fraction_max"],
        "first_chart_met": fc["history"]["ms"]["n"] >= 10
        and fc["history"]["ms"]["missing"] == 0
        and fc["history"]["ms"]["p95"] <= GOALS["first_chart_p95_s"] * 1000,
    }
    result["settings"] = {
        "trials": args.trials,
        "steady_s": args.steady,
        "idle_s": args.idle,
        "loads": args.loads,
    }
    report(result)
    command = "python -m benchmarks.dashboard " + " ".join(argv if argv is not None else sys.argv[1:])
    path = _report.write("dashboard", command.strip(), result)
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
