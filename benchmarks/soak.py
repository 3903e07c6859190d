"""Soak: the demo workload at 10x its default rate through every service of the local stack, for 30 minutes.

    .venv/bin/python -m benchmarks.soak                                   # 30 min, 10x, 3 min warm-up
    .venv/bin/python -m benchmarks.soak --minutes 2 --warmup-minutes 0.5  # quick check

Setup (loopback only, a temporary directory removed at the end unless ``--keep``): a local stack of its own with
every service (``maintain``, ``gateway``, ``api``, ``receiver``, ``alert-worker``) on free ports (never the
defaults a developer's own stack uses) and the demo's alert rule (``demo.ensure_alerting``; its thresholds are
scaled by ``--rate`` so that the demo's incidents, not its normal traffic, fire it).

Load: ``--producers`` processes, each a ``SimulatedWorker`` (meshhook_rt_metrics/demo.py) recording through its
own ``MetricsClient`` with the Supabase sink (the gateway's Data API, service key), together ``--rate`` ticks a
second (the demo does one), with the demo's incidents (a minute of rejected webhooks every 4 minutes, the first
a minute after the start). Each producer counts what it records: the sum of the increments per counter series
and the observations per histogram series.

Observers, all running the whole time:
* a dashboard-like poller: every second, GET /api/metrics (last hour, 60 s steps) for 10 panels of the default
  dashboard (dashboard/src/lib/data/spec.js DEFAULT_DASHBOARD), with a user's token (a viewer of the project);
* a Realtime subscriber (realtime-py, the project's private topic, the same user's token) and a probe: a gauge
  set to the wall clock and flushed at once through the gateway every second; ingest -> broadcast latency is the
  arrival of a ``rollup`` message carrying that value minus the value;
* every ``--sample-every`` seconds the RSS and CPU time of every service process (the supervisor's child, from
  ``<state>/run/<service>.json``), of the producers, of PostgreSQL (postmaster and backends; reported only:
  shared buffers count in its RSS as they are touched) and of this harness (reported only).

Checks (exit 1 when one fails): memory of every service and producer grows <= 5 % after the warm-up (median of
the last 3 samples over the median of the first 3 after warm-up); no service restarted; no ERROR/CRITICAL/
Traceback line in any log of the state dir (service logs and PostgreSQL's) written after the stack was up (lines
written while it started, and PostgreSQL errors a normal run produces, are listed apart); no lost points (per counter series
``metrics.series_totals.sum`` equals the producers' total of increments, per histogram series its ``count`` the
observations); no failed ingest request or API read; broadcasts arrived; the producers kept the rate (>= 95 %);
when the run spans the first incident, the alert fired and its notification was sent. Latency figures (API
reads, ingest requests, ingest -> broadcast) are printed for the first and the last minute; JSON in
benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from benchmarks import _report
from benchmarks._signals import stop_on_sigterm
from meshhook_rt_metrics import demo
from meshhook_rt_metrics.localstack.postgres import free_port
from meshhook_rt_metrics.localstack.stack import LocalStack

SERVICES = ("maintain", "gateway", "api", "receiver", "alert-worker")
GROWTH_LIMIT = 0.05
RATE_KEPT = 0.95
PROBE_METRIC = "soak_probe_unixtime"
EMAIL = "soak-viewer@soak.bench.local"
LOG_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL|PANIC)\b|Traceback \(most recent call last\)")
# PostgreSQL errors that are part of a normal run, listed apart (never in a service log):
EXPECTED_PG_ERRORS = {
    # the gateway's write probe when a read-only member joins a private channel: as Supabase Realtime does, it
    # inserts a row into realtime.messages as the caller in a rolled-back transaction (gateway/realtime/authz.py)
    "realtime join write probe (viewer)": re.compile(
        r'ERROR:  new row violates row-level security policy for table "messages"'
    ),
}

# 10 panels of DEFAULT_DASHBOARD (dashboard/src/lib/data/spec.js): id, metric, agg, by, match
PANELS: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("stat-webhook-rate", "meshhook_webhook_requests_total", "rate", (), ()),
    ("stat-queue-depth", "meshhook_queue_messages", "max", (), ('state="ready"',)),
    ("webhooks", "meshhook_webhook_requests_total", "rate", ("outcome",), ()),
    ("workflow-runs", "meshhook_workflow_runs_completed_total", "rate", ("status",), ()),
    ("step-duration", "meshhook_workflow_step_duration_seconds", "p99", ("node_type",), ()),
    ("http-client-duration", "meshhook_http_client_request_duration_seconds", "p99", ("node_type",), ()),
    ("queues", "meshhook_queue_messages", "last", ("queue", "state"), ()),
    ("worker-cpu", "process_cpu_seconds_total", "rate", ("instance",), ()),
    ("worker-memory", "process_resident_memory_bytes", "last", ("instance",), ()),
    ("host-cpu", "system_cpu_utilization_ratio", "avg", ("host",), ()),
)

_started = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figures(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


def series_key(name: str, labels: dict[str, Any]) -> str:
    return name + json.dumps(labels, sort_keys=True, separators=(",", ":"))


# -- producers (separate processes) ------------------------------------------------------------------------------
class _Timed:
    """A sink that times each send (the ingest RPC through the gateway) and counts the failures."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.latencies: list[tuple[float, float]] = []  # (wall time, seconds)
        self.failures = 0
        self.lock = threading.Lock()

    def send(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            result = self.inner.send(batch)
        except Exception:
            with self.lock:
                self.failures += 1
            raise
        with self.lock:
            self.latencies.append((time.time(), time.perf_counter() - started))
        return result

    def take(self) -> tuple[list[tuple[float, float]], int]:
        with self.lock:
            out, failures = self.latencies, self.failures
            self.latencies = []
        return out, failures

    def close(self) -> None:
        self.inner.close()

    def after_fork(self) -> None:
        self.inner.after_fork()


class _Counting:
    """Wraps a labelled instrument: what the producer recorded, per series (the client-side truth)."""

    def __init__(self, inner: Any, name: str, totals: dict[str, float], histogram: bool) -> None:
        self.inner, self.name, self.totals, self.histogram = inner, name, totals, histogram

    def inc(self, amount: float = 1, /, **labels: Any) -> None:
        self.totals[series_key(self.name, labels)] += amount
        self.inner.inc(amount, **labels)

    def observe(self, value: float, /, **labels: Any) -> None:
        self.totals[series_key(self.name, labels)] += 1
        self.inner.observe(value, **labels)


def producer_process(
    index: int,
    url: str,
    key: str,
    project: str,
    ticks_per_second: float,
    started_wall: float,
    spool_dir: str,
    out: Any,
    stop: Any,
) -> None:
    from meshhook_rt_metrics.client import MetricsClient
    from meshhook_rt_metrics.client.sinks import SupabaseSink

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    sink = _Timed(SupabaseSink(url, key, timeout=5.0))
    client = MetricsClient(
        project_id=project,
        sink=sink,
        spool_dir=spool_dir,
        service_name="soak-producer",
        service_instance=f"producer-{index}",
    )
    counters: dict[str, float] = defaultdict(float)
    histograms: dict[str, float] = defaultdict(float)
    worker = demo.SimulatedWorker(client, seed=1000 + index)
    worker.requests = _Counting(worker.requests, "meshhook_webhook_requests_total", counters, False)  # type: ignore[assignment]
    worker.runs = _Counting(worker.runs, "meshhook_workflow_runs_completed_total", counters, False)  # type: ignore[assignment]
    worker.steps = _Counting(worker.steps, "meshhook_workflow_step_duration_seconds", histograms, True)  # type: ignore[assignment]
    worker.http_calls = _Counting(  # type: ignore[assignment]
        worker.http_calls, "meshhook_http_client_request_duration_seconds", histograms, True
    )
    out.put(("ready", index, os.getpid()))
    interval = 1.0 / ticks_per_second
    ticks = 0
    tick_seconds = 0.0
    first = time.monotonic()
    next_at = first + interval * ((index * 0.618) % 1.0)  # spread the producers' ticks over the interval
    next_report = first + 5.0
    while not stop.is_set():
        now = time.monotonic()
        if now < next_at:
            stop.wait(next_at - now)
            continue
        elapsed = time.time() - started_wall
        phase = (elapsed + demo.INCIDENT_EVERY - demo.INCIDENT_LENGTH - 60) % demo.INCIDENT_EVERY
        t0 = time.perf_counter()
        worker.tick(incident=phase >= demo.INCIDENT_EVERY - demo.INCIDENT_LENGTH)
        tick_seconds += time.perf_counter() - t0
        ticks += 1
        next_at += interval  # a fixed schedule: falling behind shows as missing ticks
        if now >= next_report:
            latencies, failures = sink.take()
            out.put(("stats", index, latencies, failures, ticks, time.monotonic() - first))
            next_report += 5.0
    ran = time.monotonic() - first
    client.close(timeout=30)
    latencies, failures = sink.take()
    out.put(("stats", index, latencies, failures, ticks, ran))
    out.put(
        (
            "done",
            index,
            dict(counters),
            dict(histograms),
            ticks,
            ran,
            tick_seconds,
            client.spool.pending,
        )
    )


# -- the dashboard-like poller -----------------------------------------------------------------------------------
class Poller(threading.Thread):
    """GET /api/metrics for each panel every second with the user's token: latency per read and per round."""

    def __init__(self, api: str, token: str, project: uuid.UUID, stop: threading.Event) -> None:
        super().__init__(name="soak-poller", daemon=True)
        self.api, self.token, self.project, self.stop = api, token, project, stop
        self.reads: list[tuple[float, float]] = []  # (monotonic, seconds)
        self.rounds: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.empty_panels: set[str] = set(p[0] for p in PANELS)

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=10) as http:
            next_at = time.monotonic()
            while not self.stop.is_set():
                round_started = time.monotonic()
                now = datetime.now(UTC)
                for pid, metric, agg, by, match in PANELS:
                    params: list[tuple[str, str | int | float | bool | None]] = [
                        ("project_id", str(self.project)),
                        ("metric", metric),
                        ("agg", agg),
                        ("from", (now - timedelta(hours=1)).isoformat()),
                        ("to", now.isoformat()),
                        ("step", "60s"),
                    ]
                    params += [("by", b) for b in by] or [("by", "")]
                    params += [("match", m) for m in match]
                    t0 = time.monotonic()
                    try:
                        response = http.get(f"{self.api}/api/metrics", params=params)
                        elapsed = time.monotonic() - t0
                        if response.status_code != 200:
                            self.errors.append(f"{pid}: HTTP {response.status_code} {response.text[:200]}")
                            continue
                        if response.json().get("series"):
                            self.empty_panels.discard(pid)
                        self.reads.append((t0, elapsed))
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{pid}: {type(exc).__name__}: {exc}")
                self.rounds.append((round_started, time.monotonic() - round_started))
                next_at = max(next_at + 1.0, time.monotonic())
                self.stop.wait(max(0.0, next_at - time.monotonic()))


# -- Realtime subscriber and probe -------------------------------------------------------------------------------
class Subscriber(threading.Thread):
    """realtime-py on the project's private topic with the user's token; records every ``rollup`` message and the
    ingest -> broadcast latency of the probe values it carries. Reconnects (counted) when the socket fails or goes
    quiet for 30 s."""

    def __init__(
        self, gateway: str, anon_key: str, token: str, project: uuid.UUID, stop: threading.Event
    ) -> None:
        super().__init__(name="soak-realtime", daemon=True)
        self.url = f"{gateway}/realtime/v1"
        self.anon_key, self.token, self.project, self.stop = anon_key, token, project, stop
        self.messages = 0
        self.seqs: set[int] = set()
        self.probe_latency: list[tuple[float, float]] = []  # (monotonic, seconds)
        self.probe_values_seen: set[float] = set()
        self.joins = 0
        self.errors: list[str] = []
        self.subscribed = threading.Event()
        self._last_message = time.monotonic()

    def _on_message(self, message: dict[str, Any]) -> None:
        received = time.time()
        self._last_message = time.monotonic()
        self.messages += 1
        payload = message.get("payload") or {}
        if isinstance(payload.get("seq"), int):
            self.seqs.add(payload["seq"])
        for item in payload.get("series") or []:
            if isinstance(item, dict) and item.get("name") == PROBE_METRIC and item.get("last") is not None:
                value = float(item["last"])
                if value not in self.probe_values_seen:
                    self.probe_values_seen.add(value)
                    self.probe_latency.append((time.monotonic(), received - value))

    async def _session(self) -> None:
        from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
        from realtime.types import RealtimeChannelOptions

        client = AsyncRealtimeClient(self.url, self.anon_key, auto_reconnect=False)
        try:
            await client.connect()
            await client.set_auth(self.token)
            options: RealtimeChannelOptions = {"config": {"private": True, "broadcast": {}, "presence": None}}
            channel = client.channel(f"metrics:{self.project}", options)
            channel.on_broadcast("rollup", self._on_message)  # type: ignore[arg-type]
            states: list[Any] = []
            await channel.subscribe(lambda state, error: states.append((state, error)))
            deadline = time.monotonic() + 10
            while not states and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not states or states[-1][0] != RealtimeSubscribeStates.SUBSCRIBED:
                raise ConnectionError(f"join refused: {states[-1] if states else 'no reply'}")
            self.joins += 1
            self.subscribed.set()
            self._last_message = time.monotonic()
            while not self.stop.is_set():
                await asyncio.sleep(0.25)
                if time.monotonic() - self._last_message > 30:
                    raise ConnectionError("no rollup message for 30 s")
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def _main(self) -> None:
        while not self.stop.is_set():
            try:
                await self._session()
            except Exception as exc:
                self.errors.append(f"{datetime.now(UTC):%H:%M:%S} {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    def run(self) -> None:
        asyncio.run(self._main())


class Probe(threading.Thread):
    """Once a second: a gauge set to the wall clock, flushed at once through the gateway (its own client)."""

    def __init__(
        self, url: str, key: str, project: uuid.UUID, spool_dir: Path, stop: threading.Event
    ) -> None:
        super().__init__(name="soak-probe", daemon=True)
        from meshhook_rt_metrics.client import MetricsClient

        self.client = MetricsClient(
            project_id=str(project),
            supabase_url=url,
            supabase_key=key,
            background=False,
            system_metrics=False,
            spool_dir=spool_dir,
        )
        self.gauge = self.client.gauge(PROBE_METRIC, "Soak probe: the wall clock (unix seconds) when flushed")
        self.stop = stop
        self.sent = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.gauge.set(time.time())
            self.client.flush()
            self.sent += 1
            next_at += 1.0
            if next_at < time.monotonic():
                next_at = time.monotonic() + 1.0
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        self.client.close()


# -- process sampling --------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """RSS and CPU time of every process every ``every`` seconds."""

    def __init__(
        self, stack: LocalStack, producers: dict[str, int], every: float, stop: threading.Event
    ) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.stack, self.producers, self.every, self.stop = stack, producers, every, stop
        self.samples: dict[str, list[tuple[float, int]]] = defaultdict(list)  # name -> (t since start, rss)
        self.cpu: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.pids: dict[str, set[int]] = defaultdict(set)
        self.t0 = time.monotonic()
        self._procs: dict[int, psutil.Process] = {}

    def _proc(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def _record(self, name: str, pids: list[int], t: float) -> None:
        rss, cpu = 0, 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = self._proc(pid)
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu += times.user + times.system
        if rss:
            self.samples[name].append((t, rss))
            self.cpu[name].append((t, cpu))

    def postgres_pids(self) -> list[int]:
        try:
            postmaster = int((self.stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
            proc = psutil.Process(postmaster)
            return [postmaster, *(c.pid for c in proc.children(recursive=True))]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        for name in SERVICES:
            details = self.stack.service_details(name)
            child = details.get("child_pid")
            if child:
                self.pids[name].add(int(child))
                self._record(name, [int(child)], t)
            if details.get("pid"):
                self._record(f"{name} (supervisor)", [int(details["pid"])], t)
        for name, pid in self.producers.items():
            self._record(name, [pid], t)
        self._record("postgres (all backends)", self.postgres_pids(), t)
        self._record("soak harness", [os.getpid()], t)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.sample()
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def memory_report(sampler: Sampler, warmup_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, samples in sampler.samples.items():
        after = [rss for t, rss in samples if t >= warmup_s]
        checked = not name.startswith(("postgres", "soak harness"))
        entry: dict[str, Any] = {
            "checked": checked,
            "samples_after_warmup": len(after),
            "rss_first_mib": samples[0][1] / 2**20,
            "rss_max_mib": max(r for _, r in samples) / 2**20,
        }
        if len(after) >= 4:
            base = statistics.median(after[:3])
            last = statistics.median(after[-3:])
            entry.update(
                rss_warm_mib=base / 2**20,
                rss_end_mib=last / 2**20,
                growth=last / base - 1,
                ok=(last / base - 1) <= GROWTH_LIMIT if checked else None,
            )
        else:
            entry.update(rss_warm_mib=None, rss_end_mib=None, growth=None, ok=None if not checked else False)
        cpu = sampler.cpu.get(name) or []
        if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]:
            entry["cpu_cores_avg"] = max(0.0, cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0])
        out[name] = entry
    return out


# -- checks at the end -------------------------------------------------------------------------------------------
def totals_check(
    db_url: str, project: uuid.UUID, counters: dict[str, float], histograms: dict[str, float]
) -> dict[str, Any]:
    names = sorted({k.split("{", 1)[0] for k in [*counters, *histograms]})
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            """select s.name, s.labels, f.kind, coalesce(t.count, 0), coalesce(t.sum, 0)
               from metrics.series s
               join metrics.families f on f.project_id = s.project_id and f.name = s.name
               left join metrics.series_totals_current t on t.series_id = s.id
               where s.project_id = %s and s.name = any(%s)""",
            (project, names),
        ).fetchall()
    stored = {series_key(name, labels): (kind, count, total) for name, labels, kind, count, total in rows}
    series: list[dict[str, Any]] = []
    for key, expected in sorted(counters.items()):
        _kind, _count, total = stored.get(key, ("counter", 0, 0.0))
        series.append({"series": key, "kind": "counter", "client": expected, "stored": total})
    for key, expected in sorted(histograms.items()):
        _kind, count, _total = stored.get(key, ("histogram", 0, 0.0))
        series.append({"series": key, "kind": "histogram count", "client": expected, "stored": float(count)})
    for entry in series:
        entry["ok"] = abs(entry["client"] - entry["stored"]) < 1e-6
    unexpected = sorted(set(stored) - set(counters) - set(histograms))
    return {
        "series": series,
        "unexpected_series": unexpected,
        "ok": all(e["ok"] for e in series) and not unexpected and bool(series),
        "client_points": sum(counters.values()) + sum(histograms.values()),
    }


def alert_check(db_url: str, project: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        messages = conn.execute(
            "select status, body ->> 'status', count(*) from metrics.alert_messages where project_id = %s"
            " group by 1, 2 order by 1, 2",
            (project,),
        ).fetchall()
        state = conn.execute(
            "select i.state from metrics.alert_instances i join metrics.alert_rules r on r.id = i.rule_id"
            " where r.project_id = %s and r.name = %s",
            (project, demo.RULE_NAME),
        ).fetchone()
    return {
        "messages": [{"status": s, "alert_status": a, "count": n} for s, a, n in messages],
        "instance_state": state[0] if state else "inactive",
        "firing_sent": sum(n for s, a, n in messages if s == "sent" and a == "firing"),
        "not_sent": sum(n for s, _a, n in messages if s != "sent"),
    }


def log_sizes(state_dir: Path) -> dict[Path, int]:
    """Where every log ends now: what comes before was written while the stack started."""
    return {p: p.stat().st_size for p in state_dir.rglob("*.log*") if p.is_file()}


def scan_logs(state_dir: Path, startup: dict[Path, int]) -> dict[str, Any]:
    """ERROR/CRITICAL/Traceback lines of every log in the state dir: during the run (the check), during the
    stack's start-up (before the load began: reported apart) and known PostgreSQL errors of a normal run.
    A log rotated during the run moves its start-up lines into ``.log.1``: they then count as the run's."""
    files = sorted(p for p in state_dir.rglob("*.log*") if p.is_file())
    hits: list[str] = []
    at_startup: list[str] = []
    expected: dict[str, int] = defaultdict(int)
    for path in files:
        postgres = path.parent.name == "pg"
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            number = 0
            while line_bytes := fh.readline():
                number += 1
                line = line_bytes.decode(errors="replace")
                if not LOG_ERROR.search(line):
                    continue
                known = next(
                    (k for k, rx in EXPECTED_PG_ERRORS.items() if postgres and rx.search(line)), None
                )
                where = f"{path.relative_to(state_dir)}:{number}: {line.rstrip()[:300]}"
                if known:
                    expected[known] += 1
                elif fh.tell() <= startup.get(path, 0):
                    at_startup.append(where)
                else:
                    hits.append(where)
    return {
        "files": [str(p.relative_to(state_dir)) for p in files],
        "error_lines": hits,
        "startup_error_lines": at_startup,
        "expected_postgres_errors": dict(expected),
    }


# -- report ------------------------------------------------------------------------------------------------------
def minute_figures(
    samples: list[tuple[float, float]], t0: float, minute: int, scale: float = 1000.0
) -> dict[str, Any]:
    return figures([v * scale for t, v in samples if int((t - t0) // 60) == minute])


def latency_table(console: Console, title: str, rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title=title)
    for column in ("path", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "path" else "right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    for name, f in rows.items():
        table.add_row(name, str(f["n"]), ms(f["p50"]), ms(f["p95"]), ms(f["p99"]), ms(f["max"]))
    console.print(table)


def latency_rows(state: dict[str, Any], minute: int) -> dict[str, dict[str, Any]]:
    t0 = state["t0"]
    return {
        "GET /api/metrics (one panel)": minute_figures(state["poller"].reads, t0, minute),
        f"poll round ({len(PANELS)} panels)": minute_figures(state["poller"].rounds, t0, minute),
        "ingest RPC via gateway (producers)": minute_figures(state["ingest"], t0, minute),
        "ingest -> broadcast received (probe)": minute_figures(state["subscriber"].probe_latency, t0, minute),
    }


def final_report(console: Console, result: dict[str, Any]) -> None:
    mem = Table(title=f"Memory (RSS) after {result['settings']['warmup_minutes']} min warm-up: growth <= 5 %")
    for column in ("process", "warm MiB", "end MiB", "max MiB", "growth", "CPU cores", "ok"):
        mem.add_column(column, justify="left" if column == "process" else "right")
    for name, e in sorted(result["memory"].items()):
        growth = "-" if e["growth"] is None else f"{e['growth'] * 100:+.1f} %"
        warm = "-" if e["rss_warm_mib"] is None else f"{e['rss_warm_mib']:.1f}"
        end = "-" if e["rss_end_mib"] is None else f"{e['rss_end_mib']:.1f}"
        ok = "n/a" if not e["checked"] else ("yes" if e["ok"] else "NO")
        cpu = e.get("cpu_cores_avg")
        mem.add_row(
            name, warm, end, f"{e['rss_max_mib']:.1f}", growth, "-" if cpu is None else f"{cpu:.3f}", ok
        )
    console.print(mem)
    cpu = result["cpu"]
    console.print(
        f"CPU: stack + producers {cpu['cores_all_measured_processes']:.2f} cores on average,"
        f" harness {cpu['cores_harness'] or 0:.2f}; machine: {cpu['cpus']} CPUs, load average at the end"
        f" {', '.join(f'{v:.2f}' for v in cpu['load_average_at_end'])} (shared with other work)"
    )

    totals = Table(title="No lost points: stored totals (metrics.series_totals) vs the producers' own counts")
    for column in ("series", "kind", "client", "stored", "ok"):
        totals.add_column(column, justify="left" if column in ("series", "kind") else "right")
    for e in result["totals"]["series"]:
        totals.add_row(
            e["series"], e["kind"], f"{e['client']:,.0f}", f"{e['stored']:,.0f}", "yes" if e["ok"] else "NO"
        )
    console.print(totals)

    checks = Table(title="Soak checks")
    checks.add_column("check")
    checks.add_column("value")
    checks.add_column("ok", justify="right")
    for name, (value, ok) in result["checks"].items():
        checks.add_row(name, str(value), "yes" if ok else "NO")
    console.print(checks)
    for key, title in (
        ("error_lines", "error lines in the logs during the run"),
        ("startup_error_lines", "error lines while the stack started (before the load; not counted)"),
    ):
        if result["logs"][key]:
            console.print(f"[bold]{title}:[/bold]")
            for line in result["logs"][key][:50]:
                console.print(f"  {line}", markup=False, highlight=False)


# -- the run -----------------------------------------------------------------------------------------------------
def start_stack(work: Path) -> LocalStack:
    stack = LocalStack(work / "stack", db_port=0)
    # free ephemeral ports, never the defaults (54321/54330/54340) a developer's own stack may use
    for service in ("gateway", "api", "receiver"):
        path = stack.state_dir / service / "port"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{free_port(0)}\n")
    stack.up(lambda m: say(f"stack: {m}") if not m.startswith("applying migration") else None)
    return stack


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, psycopg.Error):
            if check():
                return
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not ready within {timeout:.0f} s")


def run(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:  # noqa: PLR0915
    from meshhook_rt_metrics.localstack.demo_receiver import DEMO_SECRET
    from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir
    from meshhook_rt_metrics.localstack.users import add_member

    project = demo.DEMO_PROJECT
    duration = args.minutes * 60
    warmup = args.warmup_minutes * 60
    stack = start_stack(work)
    stop = threading.Event()
    producer_stop = multiprocessing.get_context("spawn").Event()
    procs: list[Any] = []
    try:
        env = stack.gateway_env()
        gateway, api = env["SUPABASE_URL"], f"http://127.0.0.1:{stack.api_port}"
        wait_until("api", lambda: httpx.get(f"{api}/healthz", timeout=2).status_code == 200, 90)
        wait_until("gateway", lambda: httpx.get(f"{gateway}/health", timeout=2).status_code == 200, 90)
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            demo.ensure_alerting(conn, stack.receiver_url, DEMO_SECRET)
            # the demo's thresholds are for one tick a second: scaled, only the incidents fire the rule
            conn.execute(
                "update metrics.alert_rules set threshold = %s, resolve_threshold = %s"
                " where project_id = %s and name = %s",
                (400 * args.rate, 300 * args.rate, project, demo.RULE_NAME),
            )
            user = add_member(conn, EMAIL, secrets.token_urlsafe(16), project, "viewer")
        token = keys_for_state_dir(stack.state_dir).user_token(user, expires_in=duration + 7200)
        say(f"stack up: gateway {gateway}, api {api}, receiver {stack.receiver_url}; project {project}")

        startup_logs = log_sizes(stack.state_dir)
        # producers
        ctx = multiprocessing.get_context("spawn")
        out: Any = ctx.Queue()
        started_wall = time.time()
        per_producer = args.rate / args.producers
        for i in range(args.producers):
            proc = ctx.Process(
                target=producer_process,
                args=(i, gateway, env["SUPABASE_SERVICE_ROLE_KEY"], str(project), per_producer, started_wall,
                      str(work / "spool"), out, producer_stop),
                daemon=True,
            )  # fmt: skip
            proc.start()
            procs.append(proc)
        producers: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(producers) < args.producers:
            _kind, index, pid = out.get(timeout=max(1.0, deadline - time.monotonic()))
            producers[f"producer-{index}"] = pid
        say(f"{args.producers} producers at {per_producer:g} ticks/s each ({args.rate:g}x the demo)")

        subscriber = Subscriber(gateway, env["SUPABASE_ANON_KEY"], token, project, stop)
        subscriber.start()
        subscriber.subscribed.wait(30)
        probe = Probe(gateway, env["SUPABASE_SERVICE_ROLE_KEY"], project, work / "spool", stop)
        poller = Poller(api, token, project, stop)
        sampler = Sampler(stack, producers, args.sample_every, stop)
        t0 = time.monotonic()
        sampler.t0 = t0
        for thread in (probe, poller, sampler):
            thread.start()
        state: dict[str, Any] = {"t0": t0, "poller": poller, "subscriber": subscriber, "ingest": []}
        ticks: dict[int, tuple[int, float]] = {}
        ingest_failures: dict[int, int] = defaultdict(int)

        def drain(block: float = 0.0) -> list[tuple[Any, ...]]:
            done: list[tuple[Any, ...]] = []
            try:
                item = out.get(timeout=block) if block else out.get_nowait()
                while True:
                    if item[0] == "stats":
                        _, index, latencies, failures, n, ran = item
                        # wall -> monotonic for the per-minute buckets
                        offset = time.monotonic() - time.time()
                        state["ingest"].extend((w + offset, s) for w, s in latencies)
                        ingest_failures[index] = failures
                        ticks[index] = (n, ran)
                    elif item[0] == "done":
                        done.append(item)
                    item = out.get_nowait()
            except queue.Empty:
                pass
            return done

        printed_start = False
        next_status = t0 + 60
        while time.monotonic() < t0 + duration:
            time.sleep(1.0)
            drain()
            now = time.monotonic()
            if not printed_start and now >= t0 + 61:
                latency_table(console, "Latency, first minute", latency_rows(state, 0))
                printed_start = True
            if now >= next_status:
                next_status += 60
                rss = {k: v[-1][1] / 2**20 for k, v in sampler.samples.items() if v and "(" not in k}
                say(
                    f"minute {int((now - t0) // 60)}: {len(poller.reads)} reads ({len(poller.errors)} errors),"
                    f" {subscriber.messages} broadcasts, ticks {sum(n for n, _ in ticks.values())},"
                    " RSS MiB " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items()))
                )
        say("load done: stopping the producers (final flush)")
        ran_for = time.monotonic() - t0
        sampler.sample()  # a last sample at the end of the load
        producer_stop.set()
        done: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 90
        while len(done) < len(procs) and time.monotonic() < deadline:
            done += drain(block=1.0)
        for proc in procs:
            proc.join(15)
        time.sleep(3)  # the last broadcasts and polls
        stop.set()
        for worker in (probe, poller, sampler, subscriber):
            worker.join(15)
        drain()

        counters: dict[str, float] = defaultdict(float)
        histograms: dict[str, float] = defaultdict(float)
        total_ticks, tick_cpu, spool_left, target_ticks = 0, 0.0, 0, 0.0
        for _, _index, c, h, n, producer_ran, tick_seconds, pending in done:
            target_ticks += per_producer * producer_ran
            for k, v in c.items():
                counters[k] += v
            for k, v in h.items():
                histograms[k] += v
            total_ticks += n
            tick_cpu += tick_seconds
            spool_left += pending
        totals = totals_check(stack.database_url, project, counters, histograms)
        alerts = alert_check(stack.database_url, project)
        logs = scan_logs(stack.state_dir, startup_logs)
        restarts = {name: stack.service_details(name)["restarts"] for name in SERVICES}
        memory = memory_report(sampler, warmup)
    finally:
        stop.set()
        producer_stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
        stack.stop_services(lambda m: say(f"stack: {m}"))
        with contextlib.suppress(OSError):  # kept with --keep, for a look after the run
            shutil.copy2(stack.state_dir / "pg" / "postgres.log", work / "postgres.log")
        stack.postgres.destroy()
        say("stack: PostgreSQL stopped and removed")

    last_minute = max(0, int(ran_for // 60) - 1)
    seqs = subscriber.seqs
    seq_gaps = (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else None
    # the first incident starts a minute in; the rule fires within seconds
    spans_incident = ran_for >= 60 + 40
    checks: dict[str, tuple[Any, bool]] = {
        "producers finished": (f"{len(done)}/{len(procs)}", len(done) == len(procs)),
        "no lost points (every series)": (
            f"{sum(e['ok'] for e in totals['series'])}/{len(totals['series'])} series match,"
            f" {totals['client_points']:,.0f} points; unexpected {len(totals['unexpected_series'])}",
            totals["ok"] and len(done) == len(procs),
        ),
        "nothing left in the producers' spools": (spool_left, spool_left == 0),
        "memory growth <= 5 % (services, producers)": (
            ", ".join(
                f"{k} {e['growth'] * 100:+.1f}%" if e["growth"] is not None else f"{k} n/a"
                for k, e in sorted(memory.items())
                if e["checked"] and not e["ok"]
            )
            or "all within",
            all(e["ok"] for e in memory.values() if e["checked"]),
        ),
        "no service restarts": (restarts, not any(restarts.values())),
        "no error lines in the logs": (
            f"{len(logs['error_lines'])} during the run; not counted: {len(logs['startup_error_lines'])}"
            f" at start-up, expected PostgreSQL errors {logs['expected_postgres_errors'] or 'none'}",
            not logs["error_lines"],
        ),
        "no failed ingest requests": (sum(ingest_failures.values()), not any(ingest_failures.values())),
        "no failed API reads": (len(poller.errors), not poller.errors),
        "every polled panel had data": (
            ", ".join(sorted(poller.empty_panels)) or "all",
            not poller.empty_panels,
        ),
        "broadcasts received": (
            f"{subscriber.messages} messages, {len(subscriber.probe_latency)}/{probe.sent} probes seen,"
            f" seq gaps {seq_gaps}, joins {subscriber.joins}",
            subscriber.messages > 0 and len(subscriber.probe_latency) > 0,
        ),
        f"rate kept (>= {RATE_KEPT * 100:.0f} % of {args.rate:g} ticks/s)": (
            f"{total_ticks}/{target_ticks:.0f} ticks ({total_ticks / max(target_ticks, 1) * 100:.1f} %)",
            bool(done) and total_ticks >= RATE_KEPT * target_ticks,
        ),
    }
    if spans_incident:
        checks["alert fired, notification sent"] = (
            f"{alerts['firing_sent']} firing sent, {alerts['not_sent']} not sent, state {alerts['instance_state']}",
            alerts["firing_sent"] >= 1 and alerts["not_sent"] == 0,
        )
    result: dict[str, Any] = {
        "settings": {
            "minutes": args.minutes,
            "warmup_minutes": args.warmup_minutes,
            "rate": args.rate,
            "producers": args.producers,
            "panels": [p[0] for p in PANELS],
            "sample_every_s": args.sample_every,
        },
        "ran_s": ran_for,
        "latency_ms": {
            "first_minute": latency_rows(state, 0),
            "last_minute": latency_rows(state, last_minute),
            "whole_run": {
                "GET /api/metrics (one panel)": figures([v * 1000 for _, v in poller.reads]),
                "ingest RPC via gateway (producers)": figures([v * 1000 for _, v in state["ingest"]]),
                "ingest -> broadcast received (probe)": figures(
                    [v * 1000 for _, v in subscriber.probe_latency]
                ),
            },
        },
        "last_minute_index": last_minute,
        "memory": memory,
        "cpu": {
            "cores_all_measured_processes": sum(
                e.get("cpu_cores_avg") or 0.0 for k, e in memory.items() if k != "soak harness"
            ),
            "cores_harness": memory.get("soak harness", {}).get("cpu_cores_avg"),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "totals": totals,
        "alerts": alerts,
        "logs": logs,
        "restarts": restarts,
        "poller_errors": poller.errors[:50],
        "realtime": {
            "messages": subscriber.messages,
            "seq_gaps": seq_gaps,
            "joins": subscriber.joins,
            "errors": subscriber.errors[:50],
            "probes_sent": probe.sent,
            "probes_seen": len(subscriber.probe_latency),
        },
        "producers": {
            "ticks": total_ticks,
            "target_ticks": target_ticks,
            "kept_fraction": total_ticks / max(target_ticks, 1),
            "tick_cpu_s": tick_cpu,
            "ingest_failures": sum(ingest_failures.values()),
            "spool_pending_at_end": spool_left,
        },
        "checks": {k: [v, ok] for k, (v, ok) in checks.items()},
        "ok": all(ok for _, ok in checks.values()),
    }
    result["figures"] = summary_figures(result)
    latency_table(
        console, f"Latency, last minute (minute {last_minute})", result["latency_ms"]["last_minute"]
    )
    final_report(console, {**result, "checks": checks})
    return result


def summary_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for benchmarks/summary.md: the checks' numbers, and last-minute latencies against the first minute."""
    load = f"{result['settings']['rate']:g}x demo, {result['ran_s'] / 60:.0f} min"
    checked = [e["growth"] for e in result["memory"].values() if e["checked"] and e["growth"] is not None]
    lost = sum(abs(e["client"] - e["stored"]) for e in result["totals"]["series"])
    rows: list[dict[str, Any]] = [
        {
            "figure": "RSS growth after warm-up, worst service or producer",
            "value": max(checked) * 100 if checked else None,
            "goal": f"<= {GROWTH_LIMIT * 100:.0f}",
            "met": bool(checked) and max(checked) <= GROWTH_LIMIT,
            "unit": "%",
        },
        {
            "figure": "points lost (|client - stored| over all series)",
            "value": lost,
            "goal": "0",
            "met": result["totals"]["ok"],
            "unit": "points",
        },
        {
            "figure": "error lines in the logs during the run",
            "value": len(result["logs"]["error_lines"]),
            "goal": "0",
            "met": not result["logs"]["error_lines"],
            "unit": "lines",
        },
        {
            "figure": "producer ticks kept",
            "value": result["producers"]["kept_fraction"] * 100,
            "goal": f">= {RATE_KEPT * 100:.0f}",
            "met": result["producers"]["kept_fraction"] >= RATE_KEPT,
            "unit": "%",
        },
    ]
    first, last = result["latency_ms"]["first_minute"], result["latency_ms"]["last_minute"]
    for path, q in (
        ("GET /api/metrics (one panel)", "p99"),
        ("ingest RPC via gateway (producers)", "p99"),
        ("ingest -> broadcast received (probe)", "p95"),
    ):
        value, baseline = last[path][q], first[path][q]
        rows.append(
            {
                "figure": f"{path} {q}, last minute (baseline: first minute)",
                "value": value,
                "baseline": baseline,
                "ratio": value / baseline if value is not None and baseline else None,
                "unit": "ms",
            }
        )
    for row in rows:
        row["load"] = load
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30, help="minutes of load (default 30)")
    parser.add_argument("--rate", type=float, default=10, help="times the demo's default rate (default 10)")
    parser.add_argument(
        "--warmup-minutes", type=float, default=3, help="memory baseline after this (default 3)"
    )
    parser.add_argument(
        "--producers", type=int, default=4, help="producer processes sharing the rate (default 4)"
    )
    parser.add_argument(
        "--sample-every", type=float, default=10, help="seconds between RSS samples (default 10)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    if args.warmup_minutes >= args.minutes:
        parser.error("--warmup-minutes must be shorter than --minutes")
    stop_on_sigterm()
    console = Console() if sys.stdout.isatty() else Console(width=140)
    work = Path(tempfile.mkdtemp(prefix="meshhook-soak-"))
    say(f"work directory {work}")
    try:
        result = run(args, work, console)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    command = "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    path = _report.write("soak", command.strip(), result)
    console.print(f"\n{path}")
    console.print("soak: [bold green]PASSED[/]" if result["ok"] else "soak: [bold red]FAILED[/]")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
