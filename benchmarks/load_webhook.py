"""Load test of the client in a real service: a MeshHook-shaped webhook receiver under a real HTTP load generator.

The service (``--serve VARIANT``, a Starlette app under uvicorn, one process): ``POST /api/hooks/{slug}`` reads a
~2 KB JSON body, checks its HMAC-SHA256 signature (``x-meshhook-signature: sha256=<hex>``), parses it, awaits a
~1 ms simulated database call (``asyncio.sleep``) and answers JSON. Three variants of the same handler:

- ``plain``: no metrics;
- ``ours``: ``MetricsClient`` (request counter by outcome/signature, latency histogram by route template,
  body-size histogram, in-flight up/down counter, default process/GC/event-loop/host metrics), flushing
  every second, live, to the local stack's PostgreSQL on its background thread;
- ``prometheus``: the same measurements with prometheus_client (process, GC and platform collectors) and
  ``GET /metrics`` scraped every second by the benchmark (the same freshness as our 1 s flush).

Load: ``h2load`` (Debian ``nghttp2-client``, HTTP/1.1 via ``--h1``), chosen because it does both halves of the
issue in one tool: saturation (closed loop, ``-c`` connections) and a fixed rate (``--rps`` per connection), and
its ``--log-file`` records every request's latency, so p50/p99 are exact nearest-rank percentiles computed here
rather than a tool's own histogram. (Debian's ``wrk`` saturates too but has no fixed-rate mode without a Lua
hack; wrk2 and oha are not in Debian.) At the fixed rate, latency is measured from each request's actual start,
so the rate is chosen well below saturation (``--rate-fraction`` of the plain saturation throughput measured at
the start of the run) where the generator is never behind schedule (checked: achieved rate is reported).

Machine discipline (2 cores): the server runs alone on CPU 1 (``taskset -c 1``), the load generator, this
orchestrator and the local stack (PostgreSQL + the maintain loop that publishes live rollups) on CPU 0. Rounds
interleave the variants (order rotated per round), each variant a fresh server process: warm-up, saturation,
fixed rate. Figures are medians over rounds, ratios are taken per round (paired, same conditions) and their
median and spread [min, max] reported. The throughput and p99 goals are judged by a sign test over the paired
rounds (met, not met, or no verdict when the rounds' noise spans the goal; a median alone flips from run to
run), and ``benchmarks.load_tail`` judges p99 with the machine's drift paired out. The server's CPU is its
process tree's (user + system, the shipper process of ``--ours log-shipper`` included) over each load run.
``--gc-pauses`` records each server's full collections (per 1,000 requests, their pauses: 20-30 ms each here,
in every variant, and the fixed-rate p99 is where they land); ``--gc-freeze`` has every server call
``gc.freeze()`` after its warm-up.

In context (``--context-rounds`` fresh processes per variant, interleaved): the same three apps driven through
ASGI in process, ``--context-requests`` requests each, 16 at a time, CPU per request of the whole process (the
flush thread included). Without sockets and HTTP parsing the instrumentation's share stands out of the noise
that h2load's runs leave (their added CPU per request is a difference of two ~200 us figures), and unlike the
component rows (the calls in a warm loop of their own) it is paid with the caches as a real handler leaves them.

Counted (``benchmarks.load_instructions``, after the in-context runs; ``--skip-instructions`` to leave it out):
the same apps (and ``ours-bound`` / ``prometheus-bound``, whose handlers call children bound once, and
``ours-log``, whose handler feeds the client's request log instead of calling the instruments, and
``ours-log-shipper``, the same sending from a shipper process) under
``valgrind --tool=callgrind``: the instructions a request and a flush / a scrape cost, which the machine's load
does not move as it moves CPU time, reported with a flush and a scrape a second at plain's saturation
throughput and at the fixed rate of the h2load runs; and the throughput each keeps against the plain service's
whole request over HTTP, counted in uvicorn's plain and ``[standard]`` set-ups (``benchmarks.load_http``).

Also (separate processes, so RSS is the client's alone): client memory with 10,000 live series (5 counters and
5 histograms x 1,000 label sets, flushed live), against prometheus_client holding the same series; and a
cardinality explosion, 1,000,000 distinct label values on one counter: ours must stay bounded (cap + overflow
series), prometheus_client's growth is shown for comparison.

    .venv/bin/python -m benchmarks.load_webhook                  # ~4.5 minutes, 3 rounds x 3 variants x 10 s
    .venv/bin/python -m benchmarks.load_webhook --nice -10       # on a machine shared with other work (root)
    .venv/bin/python -m benchmarks.load_webhook --rounds 5 --seconds 30      # longer, less noise
    .venv/bin/python -m benchmarks.load_webhook --rounds 1 --seconds 3 --skip-memory   # smoke run
    .venv/bin/python -m benchmarks.load_webhook --ours log --prometheus bound --skip-instructions  # other handlers
    .venv/bin/python -m benchmarks.load_webhook --ours log-shipper --prometheus bound --rounds 8 --seconds 30 \
        --gc-pauses --skip-memory --skip-instructions                       # the timed goals, with the shipper

Goals (issue #14): <= 1 % throughput loss and <= 2 % p99 increase against uninstrumented; our added cost
<= 0.3x prometheus_client's. JSON: benchmarks/results/load_webhook.json (``figures``: the rows of the summary).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import hmac
import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import load_instructions
from benchmarks._report import paired_verdict, summary_row, verdict_text
from benchmarks._signals import stop_on_sigterm
from benchmarks.load_http import H2LOAD, free_port

VARIANTS = ("plain", "ours", "prometheus")  # the timed runs' services: labels given at every call
# the same two libraries with the children of the handler's fixed label sets bound once (``.labels(...)`` at
# start-up, the style both libraries document for hot paths); counted by ``benchmarks.load_instructions``
BOUND_VARIANTS = ("ours-bound", "prometheus-bound")
# ours with the client's request log: bare C appends instead of five calls (``client.request_log``)
LOGGED_VARIANTS = (
    "ours-log",
    "ours-log-shipper",
)  # -shipper: sent from a shipper process (``shipper="process"``)
KEY = b"whsec_" + b"k" * 32
ROUTE = "/api/hooks/[slug]"
DB_SECONDS = 0.001
GOAL_THROUGHPUT_RATIO = 0.99  # <= 1 % throughput loss
GOAL_P99_RATIO = 1.02  # <= 2 % p99 increase
GOAL_COST_RATIO = load_instructions.GOAL_COST_RATIO  # our added cost <= 0.3x prometheus_client's
EXPLOSION_GROWTH_MIB = 8.0
BUSY_CORES = 0.25  # other processes' CPU during the load runs above which the machine is flagged busy  # bounded: RSS growth between 100k and 1M distinct label values

_started = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def make_body() -> tuple[bytes, str]:
    rng = random.Random(1)
    items = [
        {
            "id": i,
            "name": "".join(rng.choices(string.ascii_letters, k=12)),
            "value": rng.random(),
            "tags": ["a", "b"],
            "ok": True,
        }
        for i in range(22)
    ]
    body = json.dumps(
        {"event": "workflow.step.completed", "id": "evt_123", "data": {"items": items}}
    ).encode()
    return body, "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()


def request_files(work: Path) -> dict[str, Path]:
    """The request h2load sends, written to ``work``: its body and its signature header's value."""
    body, signature = make_body()
    files = {"body": work / "body.json", "signature": work / "signature"}
    files["body"].write_bytes(body)
    files["signature"].write_text(signature)
    return files


def pin_cpus(args: argparse.Namespace) -> None:
    """``args.server_cpu`` / ``args.generator_cpu``: the servers alone on the last CPU, the generator on the
    first; this process, PostgreSQL and the maintain loop (children inherit) share the generator's CPUs.
    None for both with ``--no-pin`` or a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    args.server_cpu, args.generator_cpu = (cpus[-1], cpus[0]) if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, set(cpus[:-1]))


# -- the service ---------------------------------------------------------------------------------------------
def build_app(  # noqa: PLR0915
    variant: str,
    db_url: str,
    project: str,
    spool: str,
    background: bool = True,
    db_seconds: float = DB_SECONDS,
) -> Any:
    """The webhook receiver, one handler per variant (no shared indirection, so plain pays nothing);
    ``ours-bound`` and ``prometheus-bound`` call children bound once instead of passing the labels.
    ``app.state.tick`` is the variant's periodic work (ours: a flush; prometheus_client: a scrape's
    ``generate_latest``), for a driver that runs it by request count (``background=False``: no flush thread);
    ``db_seconds=0`` makes the simulated database call a bare yield to the loop, whose wake-ups then no longer
    depend on the clock."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    perf = time.perf_counter
    sleep = asyncio.sleep
    new_mac = hmac.new
    sha256 = hashlib.sha256
    compare = hmac.compare_digest
    loads = json.loads

    def check(body: bytes, request: Request) -> bool:
        expected = "sha256=" + new_mac(KEY, body, sha256).hexdigest()
        return compare(expected, request.headers.get("x-meshhook-signature", ""))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [Route("/healthz", healthz)]
    lifespan = None
    tick: Any = None

    if variant == "plain":

        async def hook(request: Request) -> Response:
            body = await request.body()
            if not check(body, request):
                return JSONResponse({"error": "invalid signature"}, status_code=401)
            event = loads(body)
            await sleep(db_seconds)  # the insert of the delivery row
            return JSONResponse({"accepted": True, "id": event["id"], "slug": request.path_params["slug"]})

    elif variant in ("ours", "ours-bound"):
        from meshhook_rt_metrics.client import MetricsClient

        requests_: Any = None
        duration: Any = None
        size: Any = None
        inflight: Any = None
        accepted: Any = None  # the children of the fixed label sets, for the "-bound" handler
        rejected: Any = None
        route_duration: Any = None
        any_size: Any = None

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> Any:  # created inside the running loop: event-loop lag monitored too
            nonlocal requests_, duration, size, inflight, accepted, rejected, route_duration, any_size
            client = MetricsClient(
                project_id=project,
                database_url=db_url,
                flush_interval=1.0,
                spool_dir=Path(spool),
                service_name="load-webhook",
                background=background,
                # counted by request (below): the host reading, one per host every 10 s of wall time, would
                # land on every flush of a run slowed down 50 times
                host_metrics=background,
            )
            app.state.tick = client.flush
            requests_ = client.counter(
                "meshhook_webhook_requests_total", "Webhook requests", labels=("outcome", "signature")
            )
            duration = client.histogram(
                "meshhook_webhook_duration_seconds", "Handler time", labels=("route",), unit="seconds"
            )
            size = client.histogram("meshhook_webhook_body_bytes", "Body size", unit="bytes")
            inflight = client.up_down_counter(
                "meshhook_webhook_inflight_requests", "Requests being handled"
            ).labels()
            if variant == "ours-bound":
                accepted = requests_.labels(outcome="accepted", signature="verified")
                rejected = requests_.labels(outcome="rejected", signature="invalid")
                route_duration = duration.labels(route=ROUTE)
                any_size = size.labels()
            try:
                yield
            finally:
                await asyncio.get_running_loop().run_in_executor(None, client.close)

        if variant == "ours":

            async def hook(request: Request) -> Response:
                start = perf()
                inflight.inc()
                try:
                    body = await request.body()
                    size.observe(len(body))
                    if not check(body, request):
                        requests_.inc(outcome="rejected", signature="invalid")
                        return JSONResponse({"error": "invalid signature"}, status_code=401)
                    event = loads(body)
                    await sleep(db_seconds)
                    requests_.inc(outcome="accepted", signature="verified")
                    return JSONResponse(
                        {"accepted": True, "id": event["id"], "slug": request.path_params["slug"]}
                    )
                finally:
                    inflight.dec()
                    duration.observe(perf() - start, route=ROUTE)

        else:

            async def hook(request: Request) -> Response:
                start = perf()
                inflight.inc()
                try:
                    body = await request.body()
                    any_size.observe(len(body))
                    if not check(body, request):
                        rejected.inc()
                        return JSONResponse({"error": "invalid signature"}, status_code=401)
                    event = loads(body)
                    await sleep(db_seconds)
                    accepted.inc()
                    return JSONResponse(
                        {"accepted": True, "id": event["id"], "slug": request.path_params["slug"]}
                    )
                finally:
                    inflight.dec()
                    route_duration.observe(perf() - start)

    elif variant in LOGGED_VARIANTS:
        shipper = "process" if variant == "ours-log-shipper" else "thread"
        hook, lifespan = _request_log_handler(project, db_url, spool, background, db_seconds, check, shipper)

    elif variant in ("prometheus", "prometheus-bound"):
        import prometheus_client as prom

        reg = prom.CollectorRegistry()
        prom.ProcessCollector(registry=reg)
        prom.GCCollector(registry=reg)
        prom.PlatformCollector(registry=reg)
        p_requests = prom.Counter(
            "meshhook_webhook_requests", "Webhook requests", ["outcome", "signature"], registry=reg
        )
        p_duration = prom.Histogram(
            "meshhook_webhook_duration_seconds", "Handler time", ["route"], registry=reg
        )
        p_size = prom.Histogram("meshhook_webhook_body_bytes", "Body size", registry=reg)
        p_inflight = prom.Gauge("meshhook_webhook_inflight_requests", "Requests being handled", registry=reg)

        if variant == "prometheus":

            async def hook(request: Request) -> Response:
                start = perf()
                p_inflight.inc()
                try:
                    body = await request.body()
                    p_size.observe(len(body))
                    if not check(body, request):
                        p_requests.labels(outcome="rejected", signature="invalid").inc()
                        return JSONResponse({"error": "invalid signature"}, status_code=401)
                    event = loads(body)
                    await sleep(db_seconds)
                    p_requests.labels(outcome="accepted", signature="verified").inc()
                    return JSONResponse(
                        {"accepted": True, "id": event["id"], "slug": request.path_params["slug"]}
                    )
                finally:
                    p_inflight.dec()
                    p_duration.labels(route=ROUTE).observe(perf() - start)

        else:
            accepted = p_requests.labels(outcome="accepted", signature="verified")
            rejected = p_requests.labels(outcome="rejected", signature="invalid")
            route_duration = p_duration.labels(route=ROUTE)

            async def hook(request: Request) -> Response:
                start = perf()
                p_inflight.inc()
                try:
                    body = await request.body()
                    p_size.observe(len(body))
                    if not check(body, request):
                        rejected.inc()
                        return JSONResponse({"error": "invalid signature"}, status_code=401)
                    event = loads(body)
                    await sleep(db_seconds)
                    accepted.inc()
                    return JSONResponse(
                        {"accepted": True, "id": event["id"], "slug": request.path_params["slug"]}
                    )
                finally:
                    p_inflight.dec()
                    route_duration.observe(perf() - start)

        async def metrics(request: Request) -> Response:
            return Response(prom.generate_latest(reg), media_type=prom.CONTENT_TYPE_LATEST)

        def tick() -> bytes:
            return prom.generate_latest(reg)

        routes.append(Route("/metrics", metrics))
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    routes.append(Route("/api/hooks/{slug}", hook, methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.tick = tick  # ours: set by the lifespan, which creates the client
    return app


def _request_log_handler(
    project: str, db_url: str, spool: str, background: bool, db_seconds: float, check: Any, shipper: str
) -> tuple[Any, Any]:
    """The handler with the client's request log (``client.request_log``): no metrics call at all, only
    ``start()``, the outcome's ``end`` and the two values' ``observe``, bare C appends; the flush folds them
    into the same four metrics the five calls feed, with the same values. Unlike the five calls, a request
    that raises counts as rejected, with the size read so far."""
    import asyncio

    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from meshhook_rt_metrics.client import MetricsClient

    perf, sleep, loads = time.perf_counter, asyncio.sleep, json.loads
    start: Any = None  # bound at start-up, like the "-bound" handlers' children
    accepted: Any = None
    rejected: Any = None
    took: Any = None
    sized: Any = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        nonlocal start, accepted, rejected, took, sized
        client = MetricsClient(
            project_id=project,
            database_url=db_url,
            flush_interval=1.0,
            spool_dir=Path(spool),
            service_name="load-webhook",
            background=background,
            host_metrics=background,
            shipper=shipper,
        )
        app.state.tick = client.flush
        count = client.counter(
            "meshhook_webhook_requests_total", "Webhook requests", labels=("outcome", "signature")
        )
        log = client.request_log(
            client.histogram(
                "meshhook_webhook_duration_seconds", "Handler time", labels=("route",), unit="seconds"
            ).labels(route=ROUTE),
            client.histogram("meshhook_webhook_body_bytes", "Body size", unit="bytes"),
            outcomes={
                "accepted": count.labels(outcome="accepted", signature="verified"),
                "rejected": count.labels(outcome="rejected", signature="invalid"),
            },
            in_flight=client.up_down_counter("meshhook_webhook_inflight_requests", "Requests being handled"),
        )
        start, accepted, rejected = log.start, log.end["accepted"], log.end["rejected"]
        took, sized = log.observe
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, client.close)

    async def hook(request: Request) -> Response:
        t0 = perf()
        start()
        end, size = rejected, 0
        try:
            body = await request.body()
            size = len(body)
            if not check(body, request):
                return JSONResponse({"error": "invalid signature"}, status_code=401)
            event = loads(body)
            await sleep(db_seconds)
            end = accepted
            return JSONResponse({"accepted": True, "id": event["id"], "slug": request.path_params["slug"]})
        finally:
            end()
            took(perf() - t0)
            sized(size)

    return hook, lifespan


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    project = args.project or str(uuid.uuid4())
    app = build_app(args.serve, args.db_url or "", project, args.spool or "")
    if args.freeze_route:
        _add_freeze_route(app)
    if args.pause_report:
        _recording_full_collection_pauses(Path(args.pause_report))
    if args.gc_report:
        app = _counting_full_collections(app, Path(args.gc_report))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        http=args.http,
        loop=args.loop,
    )
    uvicorn.Server(config).run()
    return 0


def _add_freeze_route(app: Any) -> None:
    """``POST /_bench/gc-freeze``: a full collection, then ``gc.freeze()``, what a service can do once it has
    started and warmed up (Python's recipe for long-lived heaps): every object alive then, its imports and the
    client's included, leaves the full collections that stall its event loop."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def freeze(request: Request) -> Response:
        gc.collect()
        gc.freeze()
        return JSONResponse({"frozen": gc.get_freeze_count()})

    app.router.routes.append(Route("/_bench/gc-freeze", freeze, methods=["POST"]))


def _recording_full_collection_pauses(report: Path) -> None:
    """Records how long each full collection holds the process, written to ``report`` (JSON) at exit: the
    event loop waits each one out, so it is a stall that every request in flight pays, a tail (p99) cost
    that a heap's size sets more than a request's instructions do. Younger generations' callbacks only
    compare an int."""
    import atexit

    clock = time.perf_counter
    pauses: list[float] = []
    began = 0.0

    def on_collection(phase: str, info: dict[str, int]) -> None:
        nonlocal began
        if info["generation"] == 2:
            if phase == "start":
                began = clock()
            else:
                pauses.append(clock() - began)

    gc.callbacks.append(on_collection)

    def write() -> None:  # whole or not at all: a server killed mid-write leaves no half a report
        partial = report.with_suffix(".partial")
        partial.write_text(json.dumps({"pauses_s": pauses}))
        os.replace(partial, report)

    atexit.register(write)


def full_collections(report: Path, requests: int) -> dict[str, Any] | None:
    """A server's full collections from its pause report: how often per 1,000 requests, how long."""
    if not report.exists():
        return None
    pauses = json.loads(report.read_text())["pauses_s"]
    report.unlink()
    return {
        "count": len(pauses),
        "per_1000_requests": len(pauses) / requests * 1000 if requests else float("nan"),
        "pause_median_ms": _median(pauses) * 1000,
        "pause_max_ms": max(pauses, default=float("nan")) * 1000,
    }


def _counting_full_collections(app: Any, report: Path) -> Any:
    """``app`` behind a counter of the requests it started, and the count at the end of each full collection,
    written to ``report`` (JSON) when the process exits (uvicorn re-raises the SIGINT it stopped on): how
    often the collector makes a full collection per request over HTTP, where a request allocates more than
    in process. The counter allocates nothing the collector tracks but the one coroutine a request."""
    import atexit

    served = 0
    full_at: list[int] = []

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_at.append(served)

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        nonlocal served
        if scope["type"] == "http":
            served += 1
        await app(scope, receive, send)

    gc.callbacks.append(on_collection)
    atexit.register(lambda: report.write_text(json.dumps({"served": served, "full_at": full_at})))
    return counted


# -- load generation -----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of the service and its children, live or reaped (a shipper the client replaced): a
    ``shipper="process"`` client's sends are the service's cost too."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _host_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def nearest_rank(q: float, n: int) -> int:
    """The rank (1-based) of the ``q`` quantile of ``n`` values: the smallest with at least ``q * n`` at or
    below it (ceil, with float error forgiven: 0.99 * 100 is 99.00000000000001)."""
    return max(1, min(n, math.ceil(q * n - 1e-9)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return sorted(values)[nearest_rank(q, len(values)) - 1]


class Server:
    """One variant's service process, pinned to its CPU; stopped on exit."""

    def __init__(
        self,
        variant: str,
        cpu: int | None,
        work: Path,
        db_url: str,
        project: str,
        http: str,
        nice: int = 0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.variant = variant
        self.port = free_port()
        argv = [sys.executable, "-m", "benchmarks.load_webhook", "--serve", variant, "--port", str(self.port)]
        argv += ["--db-url", db_url, "--project", project, "--spool", str(work / "spool"), "--http", http]
        argv += extra
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        self.log = (work / f"server-{variant}.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=_repo())
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        import httpx

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{variant} server exited; see {self.log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                raise RuntimeError(f"{variant} server not ready in 30 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGINT: uvicorn shuts down as on SIGTERM, then re-raises it, so atexit writes the pause report
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _repo() -> Path:
    return Path(__file__).resolve().parent.parent


class Scraper:
    """Scrapes prometheus_client's /metrics every ``interval`` s while a load runs (its equivalent of our flush)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.stop_event = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as http:
            while not self.stop_event.wait(self.interval):
                with contextlib.suppress(httpx.HTTPError):
                    http.get(self.url + "/metrics").raise_for_status()
                    self.scrapes += 1

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


def h2load(
    server: Server,
    cfg: argparse.Namespace,
    files: dict[str, Path],
    seconds: float,
    connections: int,
    rate: float | None,
    log: Path | None,
    keep: bool = False,
) -> dict[str, Any]:
    """One load run against ``server``: h2load pinned to the generator CPU; the server's CPU from /proc.
    ``keep``: the latencies (ms, from ``log``) and the requests' start times (s) too, for a caller that pools
    runs."""
    argv = [
        H2LOAD,
        "--h1",
        "-t",
        "1",
        "-c",
        str(connections),
        "-D",
        str(max(1, math.ceil(seconds))),
    ]  # whole seconds
    argv += ["-d", str(files["body"]), "-H", "content-type: application/json"]
    argv += ["-H", f"x-meshhook-signature: {files['signature'].read_text().strip()}"]
    if rate is not None:
        argv += ["--rps", f"{rate / connections:.3f}"]
    if log is not None:
        argv += ["--log-file", str(log)]
    argv.append(server.url + "/api/hooks/orders")
    if cfg.generator_cpu is not None:
        argv = ["taskset", "-c", str(cfg.generator_cpu), *argv]
    if cfg.nice:
        argv = ["nice", "-n", str(cfg.nice), *argv]
    host0, gen0 = _host_busy(), _children_cpu()
    cpu0, wall0 = cpu_seconds(server.proc.pid), time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu1, wall1 = cpu_seconds(server.proc.pid), time.monotonic()
    host1, gen1 = _host_busy(), _children_cpu()
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr[-2000:]}{out.stdout[-2000:]}")
    text = out.stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", text)
    finished = re.search(r"finished in ([\d.]+)(m?s)", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    if not (done and finished and codes):
        raise RuntimeError("cannot parse h2load output:\n" + text)
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok = int(codes.group(1))
    result: dict[str, Any] = {
        "requests": int(done.group(3)),
        "ok_2xx": ok,
        "failed": int(done.group(5)),
        "elapsed_s": elapsed,
        "throughput_rps": ok / elapsed if elapsed else 0.0,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
        "server_cpu_us_per_request": (cpu1 - cpu0) / ok * 1e6 if ok else float("nan"),
        "generator_cpu_share": (gen1 - gen0) / (wall1 - wall0),
        # what else kept the machine busy meanwhile (other processes: PostgreSQL, the flushes' ingest, ...)
        "other_cpu_share": max(0.0, (host1 - host0 - (cpu1 - cpu0) - (gen1 - gen0)) / (wall1 - wall0)),
        "loadavg_1m": os.getloadavg()[0],
    }
    if log is not None:
        lat, starts = [], []
        for line in log.read_text().splitlines():
            parts = line.split("\t")  # start (us since the epoch), status, latency (us)
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]) / 1000.0)  # ms
                starts.append(int(parts[0]) / 1e6)
        result["p50_ms"] = percentile(lat, 0.50)
        result["p99_ms"] = percentile(lat, 0.99)
        result["mean_ms"] = statistics.fmean(lat) if lat else float("nan")
        if keep:
            result["latencies_ms"], result["starts_s"] = lat, starts
        log.unlink()
    return result


STYLES = {
    "labels": "",
    "bound": "-bound",
    "log": "-log",
    "log-shipper": "-log-shipper",
}  # --ours / --prometheus: the handler a role serves


def served(role: str, cfg: argparse.Namespace) -> str:
    """The service that plays ``role`` (plain, ours, prometheus) in the timed and in-context runs: ours and
    prometheus_client in the handler style ``--ours`` and ``--prometheus`` chose (labels at every call by
    default)."""
    style = {"ours": cfg.ours, "prometheus": cfg.prometheus}.get(role)
    return role if style is None else role + STYLES[style]


def measure_variant(
    variant: str, cfg: argparse.Namespace, work: Path, files: dict[str, Path], db_url: str, rate: float
) -> dict[str, Any]:
    project = str(uuid.uuid4())
    pauses = work / f"pauses-{project}.json"
    extra: tuple[str, ...] = ("--pause-report", str(pauses)) if cfg.gc_pauses else ()
    extra += ("--freeze-route",) if cfg.gc_freeze else ()
    server = Server(served(variant, cfg), cfg.server_cpu, work, db_url, project, cfg.http, cfg.nice, extra)
    scraper = Scraper(server.url, cfg.scrape_interval) if variant == "prometheus" else None
    before: dict[str, Any] = {}
    try:
        warm = h2load(server, cfg, files, cfg.warmup, cfg.connections, None, None)
        if cfg.gc_freeze:
            import httpx

            httpx.post(server.url + "/_bench/gc-freeze", timeout=60).raise_for_status()
        if variant == "ours":
            before = warmed_up_report(db_url, project)
        sat = h2load(server, cfg, files, cfg.seconds, cfg.connections, None, work / "sat.log")
        fixed = h2load(server, cfg, files, cfg.seconds, cfg.rate_connections, rate, work / "fixed.log")
    finally:
        if scraper is not None:
            scraper.close()
        server.stop()
    result = {"saturation": sat, "fixed_rate": fixed, "scrapes": scraper.scrapes if scraper else None}
    result["full_collections"] = full_collections(pauses, sum(r["requests"] for r in (warm, sat, fixed)))
    if variant == "ours":
        result["client"] = steady_flush(before, client_self_report(db_url, project))
    return result


FLUSH_CPU = "meshhook_metrics_client_flush_cpu_seconds_total"


def warmed_up_report(db_url: str, project: str, wait: float = 10.0) -> dict[str, Any]:
    """The self-report once the warm-up's flushes have landed (the first flush imports the driver and
    connects, a cost paid once; the steady figure leaves it out)."""
    deadline = time.monotonic() + wait
    while True:
        report = client_self_report(db_url, project)
        if report.get(FLUSH_CPU, {}).get("count", 0) >= 2 or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def steady_flush(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``after`` with the flush CPU per flush between the two reports (the loads, not the start-up)."""
    first, last = before.get(FLUSH_CPU), after.get(FLUSH_CPU)
    if first and last and last["count"] > first["count"]:
        after["flush_cpu_ms_per_flush_steady"] = (
            (last["sum"] - first["sum"]) / (last["count"] - first["count"]) * 1e3
        )
        after["flushes_steady"] = last["count"] - first["count"]
    return after


def client_self_report(db_url: str, project: str) -> dict[str, Any]:
    """What the instrumented service shipped about itself (it reached the database live): the flush thread's
    CPU and the requests it counted, from ``metrics.series_totals``."""
    import psycopg

    sql = """select s.name, t.count, t.sum from metrics.series s join metrics.series_totals_current t on t.series_id = s.id
             where s.project_id = %s and s.name = any(%s)"""
    names = [
        "meshhook_metrics_client_flush_cpu_seconds_total",
        "meshhook_metrics_client_flush_duration_seconds",
        "meshhook_webhook_requests_total",
        "process_cpu_seconds_total",
    ]
    out: dict[str, Any] = {}
    with contextlib.suppress(psycopg.Error), psycopg.connect(db_url) as conn:
        for name, count, total in conn.execute(sql, (project, names)).fetchall():
            entry = out.setdefault(name, {"count": 0, "sum": 0.0})
            entry["count"] += count
            entry["sum"] += total
    cpu = out.get("meshhook_metrics_client_flush_cpu_seconds_total")
    proc = out.get("process_cpu_seconds_total")
    if cpu:
        out["flush_cpu_ms_per_flush"] = cpu["sum"] / max(1, cpu["count"]) * 1e3
        if proc and proc["sum"] > 0:
            out["flush_cpu_share_of_process"] = cpu["sum"] / proc["sum"]
    return out


# -- memory: 10,000 live series and a cardinality explosion (child processes) ---------------------------------
def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def child_series(kind: str, db_url: str, n_series: int, spool: str) -> dict[str, Any]:
    """RSS growth for ``n_series`` live series: half counters, half histograms (10 metrics)."""
    gc.collect()
    per_metric = n_series // 10
    if kind == "ours":
        from meshhook_rt_metrics.client import MetricsClient

        client = MetricsClient(
            project_id=str(uuid.uuid4()),
            database_url=db_url,
            flush_interval=1.0,
            spool_dir=Path(spool),
            max_label_sets=max(1000, per_metric),
        )
        time.sleep(1.5)  # first flush (process metrics) done: the idle client is the baseline
        gc.collect()
        before = rss()
        counters = [client.counter(f"bench_c{i}_total", "c", labels=("route", "status")) for i in range(5)]
        hists = [
            client.histogram(f"bench_h{i}_seconds", "h", labels=("route",), unit="seconds") for i in range(5)
        ]
        for _ in range(3):  # three intervals of traffic, each flushed live
            for c in counters:
                for j in range(per_metric):
                    c.inc(route=f"/api/r{j}", status="200")
            for h in hists:
                for j in range(per_metric):
                    h.observe(0.001 * (1 + j % 50), route=f"/api/r{j}")
            client.flush()
        gc.collect()
        after = rss()
        delivered = client.spool.pending == 0
        series = sum(len(m.children()) for m in (*counters, *hists))
        client.close()
        return {"rss_before": before, "rss_after": after, "series": series, "delivered": delivered}
    import prometheus_client as prom

    reg = prom.CollectorRegistry()
    before = rss()
    pc = [prom.Counter(f"bench_c{i}", "c", ["route", "status"], registry=reg) for i in range(5)]
    ph = [prom.Histogram(f"bench_h{i}_seconds", "h", ["route"], registry=reg) for i in range(5)]
    for _ in range(3):
        for pcn in pc:
            for j in range(per_metric):
                pcn.labels(route=f"/api/r{j}", status="200").inc()
        for phs in ph:
            for j in range(per_metric):
                phs.labels(route=f"/api/r{j}").observe(0.001 * (1 + j % 50))
        prom.generate_latest(reg)  # one scrape per interval, like the flush above
    gc.collect()
    after = rss()
    return {"rss_before": before, "rss_after": after, "series": n_series, "delivered": None}


def child_explosion(kind: str, db_url: str, n_values: int, spool: str) -> dict[str, Any]:
    """One counter, ``n_values`` distinct label values: RSS at checkpoints, series kept, time per call."""
    checkpoints = sorted({min(n_values, c) for c in (10_000, max(1, n_values // 10), n_values)})
    marks: dict[str, int] = {}
    if kind == "ours":
        from meshhook_rt_metrics.client import MetricsClient

        client = MetricsClient(
            project_id=str(uuid.uuid4()),
            database_url=db_url,
            flush_interval=1.0,
            spool_dir=Path(spool),
        )
        counter = client.counter("bench_exploding_total", "c", labels=("user_id",))
        inc = counter.inc
        time.sleep(1.5)
        gc.collect()
        marks["0"] = rss()
        start = time.perf_counter()
        i = 0
        for cp in checkpoints:
            while i < cp:
                inc(user_id=f"user-{i}")
                i += 1
            marks[str(cp)] = rss()
        elapsed = time.perf_counter() - start
        client.flush()
        series = len(counter.children())
        dropped = client.health.dropped_label_sets.labels(counter.name).cumulative()[1]
        delivered = client.spool.pending == 0
        client.close()
        return {
            "rss": marks,
            "series": series,
            "dropped_label_sets_counted": dropped,
            "delivered": delivered,
            "us_per_call": elapsed / n_values * 1e6,
        }
    import prometheus_client as prom

    reg = prom.CollectorRegistry()
    pcounter = prom.Counter("bench_exploding", "c", ["user_id"], registry=reg)
    gc.collect()
    marks["0"] = rss()
    start = time.perf_counter()
    i = 0
    for cp in checkpoints:
        while i < cp:
            pcounter.labels(user_id=f"user-{i}").inc()
            i += 1
        marks[str(cp)] = rss()
    elapsed = time.perf_counter() - start
    return {"rss": marks, "series": n_values, "us_per_call": elapsed / n_values * 1e6}


def run_child(mode: str, db_url: str, n: int, spool: Path, cpu: int | None = None) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.load_webhook",
        "--child",
        mode,
        "--db-url",
        db_url,
        "--n",
        str(n),
        "--spool",
        str(spool),
    ]
    if cpu is not None:  # alone on the server's CPU, as the HTTP server runs
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=_repo(), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {mode} failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- in context: the service's own handler, called in process -------------------------------------------------
_SPOOLS: list[tempfile.TemporaryDirectory[str]] = []


def temporary_spool() -> str:
    """A spool directory for a child's client, removed when the child exits (children used to leave one each)."""
    _SPOOLS.append(tempfile.TemporaryDirectory(prefix="meshhook-spool-"))
    return _SPOOLS[-1].name


def asgi_requester(app: Any) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    """One signed webhook POST through ``app`` in process (ASGI, no socket), and the list of the statuses
    its responses started with."""
    import asyncio

    body, signature = make_body()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/hooks/meshhook",
        "raw_path": b"/api/hooks/meshhook",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"x-meshhook-signature", signature.encode())],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("bench", 80),
        "client": ("bench", 1),
        "root_path": "",
        "app": app,
    }
    statuses: list[int] = []

    async def request() -> None:
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the handler read the body; nothing else arrives
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)

    return request, statuses


def child_in_context(variant: str, db_url: str, n: int, spool: str, concurrency: int = 16) -> dict[str, Any]:
    """CPU per request of the variant's whole app (Starlette routing, HMAC, JSON, the awaited database call,
    the instrumentation, and for ours the live flushes on their thread), driven through ASGI in process: no
    sockets or HTTP parsing, so the instrumentation's share is measured with far less noise than over
    h2load, and with the caches as cold as a real handler leaves them (the component rows measure the calls
    warm, in a loop of their own)."""
    import asyncio

    app = build_app(variant, db_url, str(uuid.uuid4()), spool)
    request, statuses = asgi_requester(app)

    async def drive() -> float:
        async with app.router.lifespan_context(app):
            warm_until = time.monotonic() + 2.5  # past the first flush, which imports the driver and connects
            while time.monotonic() < warm_until:
                await asyncio.gather(*(request() for _ in range(concurrency)))
            statuses.clear()
            cpu = cpu_seconds(os.getpid())  # a shipper process's too (``ours-log-shipper``)
            for _ in range(n // concurrency):
                await asyncio.gather(*(request() for _ in range(concurrency)))
            return cpu_seconds(os.getpid()) - cpu

    spent = asyncio.run(drive())
    if set(statuses) != {200}:
        raise RuntimeError(f"in-context requests failed: statuses {sorted(set(statuses))}")
    return {"cpu_us_per_request": spent / len(statuses) * 1e6, "requests": len(statuses)}


def in_context_costs(
    db_url: str, work: Path, rounds: int, n: int, cpu: int | None, services: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Each variant's in-context CPU per request, in a fresh process per run (on the server's CPU, away from
    PostgreSQL), variants interleaved; ``services`` names the service each role runs (default: its own)."""
    out: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(rounds):
        for variant in VARIANTS[i % 3 :] + VARIANTS[: i % 3]:
            name = (services or {}).get(variant, variant)
            got = run_child(f"{name}:in-context", db_url, n, work / f"spool-{variant}-context-{i}", cpu)
            out[variant].append(got["cpu_us_per_request"])
    say(
        "in context: "
        + ", ".join(
            f"{v} {_median(xs):.1f} us/request ({', '.join(f'{x:.1f}' for x in xs)})" for v, xs in out.items()
        )
    )
    return out


# -- component costs (in process, robust to other load on the machine) -----------------------------------------
def component_costs(repeat: int) -> dict[str, Any]:
    """The per-request instrumentation of each variant (the exact calls of the handlers above) and the
    background cost per second (ours: a flush, taken from the service's self-report; prometheus_client: one
    ``generate_latest`` of the service's registry, i.e. what a 1 s scrape costs the service): best time of
    ``repeat`` interleaved batches, which other processes on the machine can only slow down, never speed up."""
    import timeit

    import prometheus_client as prom

    from meshhook_rt_metrics.client import MetricsClient
    from meshhook_rt_metrics.client.sinks import MemorySink

    client = MetricsClient(
        project_id=str(uuid.uuid4()), sink=MemorySink(), background=False, system_metrics=False
    )
    requests_ = client.counter("meshhook_webhook_requests_total", "r", labels=("outcome", "signature"))
    duration = client.histogram("meshhook_webhook_duration_seconds", "d", labels=("route",), unit="seconds")
    size = client.histogram("meshhook_webhook_body_bytes", "b", unit="bytes")
    inflight = client.up_down_counter("meshhook_webhook_inflight_requests", "i").labels()
    reg = prom.CollectorRegistry()
    prom.ProcessCollector(registry=reg)
    prom.GCCollector(registry=reg)
    prom.PlatformCollector(registry=reg)
    p_requests = prom.Counter("meshhook_webhook_requests", "r", ["outcome", "signature"], registry=reg)
    p_duration = prom.Histogram("meshhook_webhook_duration_seconds", "d", ["route"], registry=reg)
    p_size = prom.Histogram("meshhook_webhook_body_bytes", "b", registry=reg)
    p_inflight = prom.Gauge("meshhook_webhook_inflight_requests", "i", registry=reg)
    n = 200

    def ours() -> None:
        for _ in range(n):
            inflight.inc()
            size.observe(2011)
            requests_.inc(outcome="accepted", signature="verified")
            inflight.dec()
            duration.observe(0.0031, route=ROUTE)

    def theirs() -> None:
        for _ in range(n):
            p_inflight.inc()
            p_size.observe(2011)
            p_requests.labels(outcome="accepted", signature="verified").inc()
            p_inflight.dec()
            p_duration.labels(route=ROUTE).observe(0.0031)

    def empty() -> None:
        for _ in range(n):
            pass

    timers = {"ours": timeit.Timer(ours), "prometheus": timeit.Timer(theirs), "loop": timeit.Timer(empty)}
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(1))
    scrape = min(timeit.repeat(lambda: prom.generate_latest(reg), number=1, repeat=max(20, repeat // 10)))
    client.close()
    return {
        "hot_path_us_per_request": {v: (best[v] - best["loop"]) / n * 1e6 for v in ("ours", "prometheus")},
        "prometheus_scrape_ms": scrape * 1e3,
        "repeat": repeat,
        "batch": n,
    }


# -- the local stack -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def local_stack(work: Path) -> Iterator[str]:
    """PostgreSQL (+ the maintain loop that rolls up and publishes live) in a throwaway state dir, or
    ``DATABASE_URL`` when set (then nothing is started)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from meshhook_rt_metrics.localstack.stack import LocalStack, Service

    class BenchStack(LocalStack):
        def services(self) -> list[Service]:
            return [s for s in super().services() if s.name == "maintain"]

    stack = BenchStack(work / "stack", db_port=0, fast=True)
    try:
        stack.up(lambda m: None if m.startswith("applying migration") else say(f"stack: {m}"))
        yield stack.database_url
    finally:
        stack.stop_services(lambda m: say(f"stack: {m}"))
        stack.postgres.destroy()
        say("stack: PostgreSQL stopped and removed")


# -- report -----------------------------------------------------------------------------------------------------
def _round_line(run: dict[str, Any]) -> str:
    s, fx, fc = run["saturation"], run["fixed_rate"], run.get("full_collections")
    line = (
        f"saturation {s['throughput_rps']:7.0f} req/s p99 {s['p99_ms']:6.2f} ms cpu "
        f"{s['server_cpu_us_per_request']:6.1f} us/req | fixed {fx['throughput_rps']:6.0f} req/s p50 "
        f"{fx['p50_ms']:5.2f} p99 {fx['p99_ms']:6.2f} ms cpu {fx['server_cpu_share']:.3f} "
        f"({fx['server_cpu_us_per_request']:6.1f} us/req)"
    )
    if fc:
        line += (
            f" | full collections {fc['per_1000_requests']:.2f}/1000 req, pause median "
            f"{fc['pause_median_ms']:.1f} ms max {fc['pause_max_ms']:.1f}"
        )
    return line


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float]) -> list[float]:
    return [min(values), max(values)] if values else []


def analyse(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per variant; paired per-round ratios (median and spread) against plain."""
    out: dict[str, Any] = {}
    metrics = {
        "saturation": ("throughput_rps", "p50_ms", "p99_ms", "server_cpu_us_per_request", "server_cpu_share"),
        "fixed_rate": ("throughput_rps", "p50_ms", "p99_ms", "server_cpu_us_per_request", "server_cpu_share"),
    }
    for load, keys in metrics.items():
        out[load] = {}
        for variant in VARIANTS:
            runs = [r[variant][load] for r in rounds]
            out[load][variant] = {
                k: {"median": _median([x[k] for x in runs]), "spread": _spread([x[k] for x in runs])}
                for k in keys
            }
        for variant in ("ours", "prometheus"):
            ratios: dict[str, dict[str, Any]] = {}
            for k in keys:
                per_round = [r[variant][load][k] / r["plain"][load][k] for r in rounds]
                ratios[k] = {
                    "median": _median(per_round),
                    "spread": _spread(per_round),
                    "per_round": per_round,
                }
            # the goals judged by the paired rounds (a sign test), not by their median alone
            ratios["throughput_rps"]["verdict"] = paired_verdict(
                ratios["throughput_rps"]["per_round"], GOAL_THROUGHPUT_RATIO, at_most=False
            )
            ratios["p99_ms"]["verdict"] = paired_verdict(
                ratios["p99_ms"]["per_round"], GOAL_P99_RATIO, at_most=True
            )
            out[load][f"{variant}/plain"] = ratios
        # added cost, ours vs prometheus_client: CPU per request above plain, paired per round
        added = {}
        for variant in ("ours", "prometheus"):
            added[variant] = [
                r[variant][load]["server_cpu_us_per_request"] - r["plain"][load]["server_cpu_us_per_request"]
                for r in rounds
            ]
        out[load]["added_cpu_us_per_request"] = {
            v: {"median": _median(a), "spread": _spread(a)} for v, a in added.items()
        }
        prom_added = _median(added["prometheus"])
        out[load]["added_cost_ratio"] = (
            _median(added["ours"]) / prom_added if prom_added > 0 else float("nan")
        )
        loss = {
            v: [1 - r[v][load]["throughput_rps"] / r["plain"][load]["throughput_rps"] for r in rounds]
            for v in ("ours", "prometheus")
        }
        out[load]["throughput_loss"] = {
            v: {"median": _median(x), "spread": _spread(x)} for v, x in loss.items()
        }
    out["full_collections"] = {
        v: {
            k: _median([r[v]["full_collections"][k] for r in rounds])
            for k in ("per_1000_requests", "pause_median_ms", "pause_max_ms")
        }
        for v in VARIANTS
        if all(r[v].get("full_collections") for r in rounds)
    }
    return out


def in_context_rows(costs: dict[str, list[float]], requests: int, styles: str = "") -> list[dict[str, Any]]:
    """The in-context rows: each instrumented variant's added CPU per request against the plain service's
    (medians over runs), and ours against prometheus_client's (the issue's 0.3 goal)."""
    plain = _median(costs["plain"])
    added = {v: _median(costs[v]) - plain for v in ("ours", "prometheus")}
    load = (
        f"{styles}whole app through ASGI in process, {requests:,} requests x {len(costs['plain'])} runs per "
        "variant"
    )

    def row(figure: str, value: float, baseline: float, goal: str, met: bool | None) -> dict[str, Any]:
        ratio = value / baseline if baseline else None
        return summary_row(f"[in context] {figure}", value, baseline, ratio, goal, met, load, "us")

    ratio = added["ours"] / added["prometheus"] if added["prometheus"] > 0 else float("inf")
    return [
        row("CPU per request, ours vs uninstrumented", _median(costs["ours"]), plain, "-", None),
        row(
            "CPU per request, prometheus_client vs uninstrumented",
            _median(costs["prometheus"]),
            plain,
            "-",
            None,
        ),
        row(
            "added CPU per request, ours vs prometheus_client",
            added["ours"],
            added["prometheus"],
            f"<= {GOAL_COST_RATIO}",
            ratio <= GOAL_COST_RATIO,
        ),
    ]


def figures(  # noqa: PLR0915
    a: dict[str, Any],
    load_desc: dict[str, str],
    memory: dict[str, Any] | None,
    rounds_raw: list[dict[str, Any]],
    components: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The summary rows: figure, value, baseline (same run), ratio, goal, met."""
    rows: list[dict[str, Any]] = []

    def add(
        figure: str,
        value: float,
        baseline: float | None,
        ratio: float | None,
        goal: str,
        met: bool | None,
        load: str,
        unit: str,
        spread: list[float] | None = None,
    ) -> None:
        if load.startswith("h2load"):
            figure = f"[{'saturation' if '--rps' not in load else 'fixed rate'}] {figure}"
        rows.append(summary_row(figure, value, baseline, ratio, goal, met, load, unit, spread))

    def judged(goal: str, verdict: bool | None) -> str:
        return f"{goal}; sign test, {len(rounds_raw)} rounds: {verdict_text(verdict)}"

    for load in ("saturation", "fixed_rate"):
        d = a[load]
        base = d["plain"]
        for variant, label in (("ours", "ours"), ("prometheus", "prometheus_client")):
            r = d[f"{variant}/plain"]
            goal_tp = variant == "ours" and load == "saturation"
            goal_p99 = variant == "ours"
            if load == "saturation":
                add(
                    f"throughput, {label} vs uninstrumented",
                    d[variant]["throughput_rps"]["median"],
                    base["throughput_rps"]["median"],
                    r["throughput_rps"]["median"],
                    judged(f">= {GOAL_THROUGHPUT_RATIO}", r["throughput_rps"]["verdict"]) if goal_tp else "-",
                    r["throughput_rps"]["verdict"] if goal_tp else None,
                    load_desc[load],
                    "req/s",
                    r["throughput_rps"]["spread"],
                )
            add(
                f"p50 latency, {label} vs uninstrumented",
                d[variant]["p50_ms"]["median"],
                base["p50_ms"]["median"],
                r["p50_ms"]["median"],
                "-",
                None,
                load_desc[load],
                "ms",
                r["p50_ms"]["spread"],
            )
            add(
                f"p99 latency, {label} vs uninstrumented",
                d[variant]["p99_ms"]["median"],
                base["p99_ms"]["median"],
                r["p99_ms"]["median"],
                judged(f"<= {GOAL_P99_RATIO}", r["p99_ms"]["verdict"]) if goal_p99 else "-",
                r["p99_ms"]["verdict"] if goal_p99 else None,
                load_desc[load],
                "ms",
                r["p99_ms"]["spread"],
            )
            add(
                f"server CPU per request, {label} vs uninstrumented",
                d[variant]["server_cpu_us_per_request"]["median"],
                base["server_cpu_us_per_request"]["median"],
                r["server_cpu_us_per_request"]["median"],
                "-",
                None,
                load_desc[load],
                "us",
                r["server_cpu_us_per_request"]["spread"],
            )
            if load == "fixed_rate":
                add(
                    f"server CPU share, {label} vs uninstrumented",
                    d[variant]["server_cpu_share"]["median"],
                    base["server_cpu_share"]["median"],
                    r["server_cpu_share"]["median"],
                    "-",
                    None,
                    load_desc[load],
                    "cores",
                    r["server_cpu_share"]["spread"],
                )
        added = d["added_cpu_us_per_request"]
        ratio = d["added_cost_ratio"]
        ratio = ratio if math.isfinite(ratio) else None
        add(
            "added CPU per request, ours vs prometheus_client",
            added["ours"]["median"],
            added["prometheus"]["median"],
            ratio,
            f"<= {GOAL_COST_RATIO}",
            None if ratio is None else ratio <= GOAL_COST_RATIO,
            load_desc[load],
            "us",
        )
        if load == "saturation":
            loss = d["throughput_loss"]
            # undefined when prometheus_client lost nothing measurable in this run (noise): reported, not judged
            lr = (
                loss["ours"]["median"] / loss["prometheus"]["median"]
                if loss["prometheus"]["median"] > 0
                else None
            )
            add(
                "throughput loss, ours vs prometheus_client",
                loss["ours"]["median"],
                loss["prometheus"]["median"],
                lr,
                f"<= {GOAL_COST_RATIO}",
                None if lr is None else lr <= GOAL_COST_RATIO,
                load_desc[load],
                "fraction",
            )
    if components:
        hot = components["hot_path_us_per_request"]
        add(
            "[component] instrumentation per request (the handler's 5 calls), ours vs prometheus_client",
            hot["ours"],
            hot["prometheus"],
            hot["ours"] / hot["prometheus"],
            "-",
            None,
            "in process, best of interleaved batches",
            "us",
        )
        per_flush = [
            r["ours"]["client"].get("flush_cpu_ms_per_flush_steady")
            for r in rounds_raw
            if "client" in r["ours"]
        ]
        per_flush = [x for x in per_flush if x is not None]
        if per_flush:
            flush_ms = _median(per_flush)
            scrape_ms = components["prometheus_scrape_ms"]
            add(
                "[component] background CPU per second: ours' flush (self-reported, after warm-up) vs a prometheus_client scrape",
                flush_ms,
                scrape_ms,
                flush_ms / scrape_ms if scrape_ms else None,
                "-",
                None,
                "one flush per second vs one scrape per second",
                "ms",
            )
            rate = components["fixed_rate_rps"]
            ours_total = hot["ours"] + flush_ms * 1e3 / rate
            prom_total = hot["prometheus"] + scrape_ms * 1e3 / rate
            ratio = ours_total / prom_total
            add(
                f"[component] added CPU per request at {rate:g} req/s (calls + background / rate), "
                "ours vs prometheus_client",
                ours_total,
                prom_total,
                ratio,
                f"<= {GOAL_COST_RATIO}",
                ratio <= GOAL_COST_RATIO,
                "estimate from the two rows above",
                "us",
            )
    shares = [
        r["ours"]["client"].get("flush_cpu_share_of_process") for r in rounds_raw if "client" in r["ours"]
    ]
    shares = [x for x in shares if x is not None]
    if shares:
        add(
            "ours: flush thread CPU / service process CPU (self-reported, shipped live)",
            _median(shares),
            None,
            None,
            "-",
            None,
            "whole server life: warm-up, saturation and fixed rate",
            "fraction",
        )
    collections = a.get("full_collections", {})
    if "plain" in collections:  # --gc-pauses: the stalls behind the tail, per variant against plain's
        base_fc = collections["plain"]
        for variant, label in (("ours", "ours"), ("prometheus", "prometheus_client")):
            if variant not in collections:
                continue
            for key, what, unit in (
                ("pause_median_ms", "full collection pause (median)", "ms"),
                ("per_1000_requests", "full collections per 1,000 requests", "count"),
            ):
                value, baseline = collections[variant][key], base_fc[key]
                add(
                    f"[diagnostic] {what}, {label} vs uninstrumented",
                    value,
                    baseline,
                    value / baseline if baseline else None,
                    "-",
                    None,
                    "every load run of a server",
                    unit,
                )
    if memory:
        s = memory["series"]
        ours_b = (s["ours"]["rss_after"] - s["ours"]["rss_before"]) / s["ours"]["series"]
        prom_b = (s["prometheus"]["rss_after"] - s["prometheus"]["rss_before"]) / s["prometheus"]["series"]
        add(
            f"client memory per live series ({s['ours']['series']:,} series), ours vs prometheus_client",
            ours_b,
            prom_b,
            ours_b / prom_b if prom_b > 0 else None,
            "- (reported)",
            None,
            "5 counters + 5 histograms x 1,000 label sets, flushed live",
            "bytes",
        )
        e = memory["explosion"]
        n = max(int(k) for k in e["ours"]["rss"])
        mid = str(max(1, n // 10)) if str(max(1, n // 10)) in e["ours"]["rss"] else str(n)
        growth = (e["ours"]["rss"][str(n)] - e["ours"]["rss"][mid]) / 2**20
        prom_growth = (
            (e["prometheus"]["rss"][str(n)] - e["prometheus"]["rss"][mid]) / 2**20
            if e.get("prometheus")
            else None
        )
        add(
            f"cardinality explosion: RSS growth from {int(mid):,} to {n:,} distinct label values",
            growth,
            prom_growth,
            growth / prom_growth if prom_growth else None,
            f"<= {EXPLOSION_GROWTH_MIB:g} MiB and series <= cap + 1",
            growth <= EXPLOSION_GROWTH_MIB and e["ours"]["series"] <= 1001,
            "one counter, label user_id",
            "MiB",
        )
        add(
            f"cardinality explosion: series kept of {n:,}",
            e["ours"]["series"],
            n,
            e["ours"]["series"] / n,
            "-",
            None,
            "one counter, label user_id",
            "series",
        )
    return rows


def print_figures(rows: list[dict[str, Any]]) -> None:
    from benchmarks._report import table

    def f(v: Any) -> Any:
        return "-" if v is None else v

    print(
        table(
            ["figure", "value", "baseline", "ratio", "goal", "met", "unit"],
            [
                [
                    r["figure"],
                    f(r["value"]),
                    f(r["baseline"]),
                    f(r["ratio"]),
                    r["goal"],
                    "-" if r["met"] is None else ("yes" if r["met"] else "NO"),
                    r["unit"],
                ]
                for r in rows
            ],
        )
    )


# -- main -------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; each runs every variant once (default 3)"
    )
    parser.add_argument(
        "--ours",
        choices=tuple(STYLES),
        default="labels",
        help="our handler in the timed and in-context runs: labels at every call (default), children bound "
        "once, the client's request log, or the request log sent from a shipper process",
    )
    parser.add_argument(
        "--prometheus",
        choices=("labels", "bound"),
        default="labels",
        help="prometheus_client's handler there: labels at every call (default) or children bound once",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up load per server start (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="connections at saturation (default 16)")
    parser.add_argument(
        "--rate", type=float, default=None, help="fixed rate, req/s (default: a fraction of plain)"
    )
    parser.add_argument(
        "--rate-fraction", type=float, default=0.5, help="fixed rate / plain saturation (0.5)"
    )
    parser.add_argument("--rate-connections", type=int, default=8, help="connections at the fixed rate (8)")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="prometheus /metrics scrape (1 s)")
    parser.add_argument(
        "--http",
        default="auto",
        choices=("auto", "h11", "httptools"),
        help="uvicorn HTTP implementation (auto: httptools when installed, as uvicorn picks, else h11)",
    )
    parser.add_argument("--series", type=int, default=10_000, help="live series of the memory test")
    parser.add_argument(
        "--explosion", type=int, default=1_000_000, help="distinct label values of the explosion"
    )
    parser.add_argument(
        "--component-repeat", type=int, default=300, help="interleaved batches of the in-process cost (300)"
    )
    parser.add_argument(
        "--context-rounds", type=int, default=5, help="runs per variant of the in-context measure (5)"
    )
    parser.add_argument(
        "--context-requests", type=int, default=30000, help="requests per in-context run (30000)"
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory and cardinality tests")
    parser.add_argument(
        "--skip-instructions",
        action="store_true",
        help="skip the instruction counts under callgrind (benchmarks.load_instructions, ~25 minutes)",
    )
    parser.add_argument(
        "--cache-sim", action="store_true", help="callgrind: simulate caches (cycle estimate)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of server and generator (e.g. -5 on a shared machine; root)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server / generator to CPUs")
    parser.add_argument(
        "--gc-pauses",
        action="store_true",
        help="record each server's full collections (how often, how long each stalls it) in the report",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="every server calls gc.freeze() after its warm-up, as a service can once started",
    )
    # internal modes
    parser.add_argument(
        "--serve", choices=VARIANTS + BOUND_VARIANTS + LOGGED_VARIANTS, help=argparse.SUPPRESS
    )
    parser.add_argument("--loop", default="auto", help=argparse.SUPPRESS)  # uvicorn's event loop
    parser.add_argument("--gc-report", help=argparse.SUPPRESS)  # see _counting_full_collections
    parser.add_argument("--pause-report", help=argparse.SUPPRESS)  # see _recording_full_collection_pauses
    parser.add_argument("--freeze-route", action="store_true", help=argparse.SUPPRESS)  # _add_freeze_route
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--spool", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)
    if args.child:
        kind, _, what = args.child.partition(":")
        if what == "in-context":
            print(json.dumps(child_in_context(kind, args.db_url, args.n, args.spool or temporary_spool())))
            return 0
        fn = child_series if what == "series" else child_explosion
        print(json.dumps(fn(kind, args.db_url, args.n, args.spool or temporary_spool())))
        return 0

    stop_on_sigterm()  # the orchestrator: a SIGTERM unwinds it, so its local stack is stopped
    if args.http == "auto":  # named in the report: uvicorn's own choice
        args.http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if shutil.which(H2LOAD) is None:
        print("h2load not found: apt-get install nghttp2-client (make system-deps)", file=sys.stderr)
        return 2
    if not args.skip_instructions and shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind (make system-deps)", file=sys.stderr)
        return 2
    pin_cpus(args)
    work = Path(tempfile.mkdtemp(prefix="meshhook-load-"))
    files = request_files(work)
    body = files["body"].read_bytes()
    result: dict[str, Any] = {}
    try:
        with local_stack(work) as db_url:
            # calibration: the fixed rate is a fraction of what the plain service sustains here
            rate = args.rate
            if rate is None:
                server = Server(
                    "plain", args.server_cpu, work, db_url, str(uuid.uuid4()), args.http, args.nice
                )
                try:
                    h2load(server, args, files, args.warmup, args.connections, None, None)
                    cal = h2load(
                        server, args, files, max(3.0, args.seconds / 2), args.connections, None, None
                    )
                finally:
                    server.stop()
                rate = round(cal["throughput_rps"] * args.rate_fraction)
                say(
                    f"calibration: plain saturates at {cal['throughput_rps']:.0f} req/s -> fixed rate {rate} req/s"
                )
            rounds: list[dict[str, dict[str, Any]]] = []
            for i in range(args.rounds):
                order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
                one: dict[str, dict[str, Any]] = {}
                for variant in order:
                    one[variant] = measure_variant(variant, args, work, files, db_url, rate)
                    say(f"round {i + 1} {variant:10s} {_round_line(one[variant])}")
                rounds.append(one)
            memory: dict[str, Any] | None = None
            if not args.skip_memory:
                memory = {"series": {}, "explosion": {}}
                for kind in ("ours", "prometheus"):
                    memory["series"][kind] = run_child(
                        f"{kind}:series", db_url, args.series, work / f"spool-{kind}-series"
                    )
                    say(f"memory {kind}: {memory['series'][kind]}")
                for kind in ("ours", "prometheus"):
                    memory["explosion"][kind] = run_child(
                        f"{kind}:explosion", db_url, args.explosion, work / f"spool-{kind}-explosion"
                    )
                    say(f"explosion {kind}: {memory['explosion'][kind]}")
            say(
                f"in context: {args.context_rounds} rounds x 3 variants x {args.context_requests:,} requests ..."
            )
            in_context = in_context_costs(
                db_url,
                work,
                args.context_rounds,
                args.context_requests,
                args.server_cpu,
                {v: served(v, args) for v in VARIANTS},
            )
            instructions = None
            if not args.skip_instructions:
                say("instructions under callgrind (benchmarks.load_instructions) ...")
                instructions = load_instructions.measure(
                    db_url, 1000, 4000, 4, args.cache_sim, args.server_cpu, repeats=1
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    say("component costs (in process) ...")
    components = component_costs(args.component_repeat)
    components["fixed_rate_rps"] = rate
    analysis = analyse(rounds)
    other = _median(
        [r[v][ld]["other_cpu_share"] for r in rounds for v in VARIANTS for ld in ("saturation", "fixed_rate")]
    )
    busy = f"; other processes busy {other:.2f} cores (median)" + (
        " - MACHINE BUSY" if other > BUSY_CORES else ""
    )
    styles = (
        ""
        if (args.ours, args.prometheus) == ("labels", "labels")
        else f"ours: {served('ours', args)}, prometheus_client: {served('prometheus', args)}; "
    )
    load_desc = {
        "saturation": f"{styles}uvicorn + {args.http}; h2load --h1 -c {args.connections}, {args.seconds:g} s x "
        f"{args.rounds} rounds{busy}",
        "fixed_rate": f"h2load --h1 -c {args.rate_connections} --rps (total {rate:g} req/s), "
        f"{args.seconds:g} s x {args.rounds} rounds{busy}",
    }
    rows = figures(analysis, load_desc, memory, rounds, components)
    rows[:0] = in_context_rows(in_context, args.context_requests, styles)
    if instructions is not None:  # the flush and the scrape once a second at the rates measured above
        saturated = _median([r["plain"]["saturation"]["throughput_rps"] for r in rounds])
        rates = {"plain's saturation": saturated, "the fixed rate": float(rate)}
        # the timed runs' server is uvicorn's plain set-up unless the project's venv has uvloop
        timed = "uvicorn" if args.http == "h11" and importlib.util.find_spec("uvloop") is None else None
        rows[:0] = load_instructions.rows(instructions, rates, {"plain's saturation": saturated}, timed)
    print_figures(rows)
    command = "python -m benchmarks.load_webhook " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "load": {
            "generator": subprocess.run(
                [H2LOAD, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "server": f"uvicorn (http={args.http}) + Starlette, 1 process",
            "server_cpu": args.server_cpu,
            "generator_cpu": args.generator_cpu,
            "connections": args.connections,
            "fixed_rate_rps": rate,
            "fixed_rate_connections": args.rate_connections,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "body_bytes": len(body),
            "simulated_db_s": DB_SECONDS,
            "prometheus_scrape_interval_s": args.scrape_interval,
            "nice": args.nice,
            "other_cpu_share_median": _median(
                [
                    r[v][ld]["other_cpu_share"]
                    for r in rounds
                    for v in VARIANTS
                    for ld in ("saturation", "fixed_rate")
                ]
            ),
            "description": load_desc,
        },
        "figures": rows,
        "components": components,
        "analysis": analysis,
        "rounds": rounds,
        "memory": memory,
        "in_context": in_context,
        "instructions": instructions,
    }
    from benchmarks._report import write

    path = write("load_webhook", command.strip(), result)
    met = [r["met"] for r in rows if r["met"] is not None]
    say(f"goals met: {sum(met)}/{len(met)}; written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
