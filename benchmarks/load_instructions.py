"""The load test's services counted in instructions: what each instrumentation adds to a request, under
``valgrind --tool=callgrind``, which the load of a shared VM does not move as it moves CPU time.

Why: on a 2-core VM the CPU a request costs moves by ±10 % between runs of the same code, more than the few
microseconds the instrumentation adds, so the in-context CPU figures of ``benchmarks.load_webhook`` swing
between runs (its ratio against prometheus_client was 0.35x-1.05x over several runs of unchanged code).
Instructions retired do not depend on the machine's load. With ``--cache-sim`` callgrind also simulates the
caches and gives an estimate of cycles (``Ir + 10 x L1 misses + 100 x last-level misses``, callgrind's own
weighting), which counts what cold caches cost a call in a handler, the effect warm loops hide.

How: each variant's whole app (``load_webhook.build_app``, the same handlers) is driven through ASGI in process,
16 requests at a time, as the in-context measure does. Nothing may depend on the clock, because under valgrind a
request takes ~50 times as long: a once-a-second job would be charged to 50 times fewer requests, and a 1 ms
timer would wake the loop a varying number of times. So there is no flush thread (``background=False``); the
variant's periodic work, ``tick`` (ours: a flush to PostgreSQL; prometheus_client: one ``generate_latest``, what
a scrape costs the service), runs by request count on the handler's thread. The simulated 1 ms database call
stays a timer: under valgrind a request takes ~30 ms, so every one has expired when the loop looks (repeats
agree within ~0.2 %). Our event-loop lag monitor's timer (4 a second) runs by the clock too, and would be charged
~50 times too often: it is stopped before each window and its second priced from two idle windows of different
lengths, then added to the tick (a second of periodic work). Four runs per variant after the same warm-up
(which includes the first flush, that imports the driver and connects): ``n1`` and ``n2`` requests without a
tick, whose difference over ``n2 - n1`` is a request's cost, ``n2`` requests with ``--ticks`` ticks, whose
excess is a tick's cost, and ``n1`` requests followed by two full collections, which price one.

Full collections are charged at their steady rate rather than counted in the windows: one falls every
~2,100-2,300 requests in these services and costs ~350 instructions per object the process tracks (7 to 17
million instructions), so whether a 3,000-request window caught one or two moved a variant's figure by
thousands of instructions a request. Each window starts from a full collection and the collector makes none of
its own in it (its young generations run as ever); how often each variant's collector makes one, without ticks
and with them, is counted over ``--gc-requests`` requests at native speed, between the first and the last (the
collector runs by allocation counts, not by the clock, so valgrind would only take longer). The report puts it
all together for a service that flushes (and is scraped) once a second at each of ``--rates`` requests a
second: ``request + tick / rate``. Hash seeds are fixed; repeats agree within ~0.2 %.

Two handler styles per library: the labels passed at every call (``ours``, ``prometheus``: what most code
does) and the children of the handler's fixed label sets bound once at start-up (``ours-bound``,
``prometheus-bound``: what both libraries advise for hot paths); each of ours is paired with prometheus_client
in the same style. A third of ours: the client's request log (``ours-log``: four bare C appends a request
instead of five calls), paired with prometheus_client's children bound once, its cheapest style; and a fourth,
the request log sending from a shipper process (``ours-log-shipper``: ``shipper="process"``, the service never
imports the driver). The shipper runs natively, outside the count: its CPU a flush is reported beside it
(``shipper_cpu_ms_per_tick``, when the four flushes of a run reach the clock's 10 ms resolution).

The throughput goal (<= 1 % lost at saturation) is a share of the whole request over HTTP, which the
in-process count leaves out (the sockets, the event loop's transports, HTTP parsing: the instrumentation touches
none of them). ``benchmarks.load_http`` counts the plain service's whole request under uvicorn, in its plain
set-up (h11, asyncio) and its ``[standard]`` one (httptools, uvloop: ``make bench`` installs them), and how often
each variant makes a full collection per request there; each variant's throughput is reported as ``plain's
HTTP request / (plain's HTTP request + the variant's addition)``, since a saturated service serves requests in
inverse proportion to their cost. ``--rates`` are taken as the saturation rates (the flush's share of a
request); ``benchmarks.load_webhook`` passes the one it measured.

    .venv/bin/python -m benchmarks.load_instructions                        # ~70 minutes on 2 cores
    .venv/bin/python -m benchmarks.load_instructions --repeats 1 --rates 2500  # ~25 minutes
    .venv/bin/python -m benchmarks.load_instructions --variants plain,ours --setups none   # ~8 minutes
    .venv/bin/python -m benchmarks.load_instructions --cache-sim            # a cycle estimate too, ~2x longer

``benchmarks.load_webhook`` runs it after its own measures (``--skip-instructions`` to leave it out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import load_http
from benchmarks._report import summary_row, write
from benchmarks._signals import stop_on_sigterm

# load_webhook's services: labels passed at every call, then the children of the fixed label sets bound once,
# then ours with the client's request log (bare C appends instead of five calls)
VARIANTS = ("plain", "ours", "prometheus", "ours-bound", "prometheus-bound", "ours-log", "ours-log-shipper")
# ours against prometheus_client: in the same style, then our request log against its children bound once
PAIRS = (
    ("ours", "prometheus"),
    ("ours-bound", "prometheus-bound"),
    ("ours-log", "prometheus-bound"),
    ("ours-log-shipper", "prometheus-bound"),
)
GOAL_THROUGHPUT_LOSS = 0.01  # issue #14: <= 1 % throughput loss against the uninstrumented service
GOAL_COST_RATIO = 0.3  # issue #14: our added cost <= 0.3x prometheus_client's
CONCURRENCY = load_http.CONCURRENCY  # requests in flight, in process as over HTTP
MIN_HTTP_GC_REQUESTS = 10_000  # fewer give uvicorn[standard]'s services too few full collections for a rate


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the child: one variant, n requests, a tick every ``every`` requests -----------------------------------------
NO_FULL = 10**9  # a threshold of the oldest generation no window reaches: no automatic full collection


def drive(
    variant: str,
    db_url: str,
    n: int,
    every: int,
    collections: int = 0,
    automatic: bool = False,
    idle: float = 0.0,
) -> dict[str, Any]:
    """Run ``n`` measured requests after the warm-up, then ``collections`` full collections. Every window
    starts from a full collection; without ``automatic`` the collector makes no full collection of its
    own in it (its young generations run as ever), so a window's count does not depend on whether one of
    those rare, heavy collections fell into it: the parent charges them at their steady rate instead.
    Our event-loop lag monitor runs by the clock (4 timers a second), so it is stopped before the window
    and priced apart: with ``idle`` the window serves no request and waits that many seconds instead, with
    the monitor firing every ``PRICING_INTERVAL`` (many timers, so the runs' own noise of a few million
    instructions is small against them). ``monitor_ticks``: the monitor's timers in the window."""
    from benchmarks.load_webhook import asgi_requester, build_app, temporary_spool

    app = build_app(variant, db_url, str(uuid.uuid4()), temporary_spool(), background=False)
    request, statuses = asgi_requester(app)

    async def requests(count: int) -> int:
        """``count`` requests, the tick after every ``every`` of them; returns the ticks run."""
        ticks = 0
        for k in range(0, count, CONCURRENCY):
            await asyncio.gather(*(request() for _ in range(CONCURRENCY)))
            if (k + CONCURRENCY) % every < CONCURRENCY and app.state.tick is not None:
                app.state.tick()
                ticks += 1
        return ticks

    window: dict[str, Any] = {}
    full_at: list[int] = []  # requests served when each full collection of the window ran

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2 and "objects" in window:
            full_at.append(len(statuses))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(2):  # warm-up; its ticks import the database driver and connect
                await requests(20 * CONCURRENCY)
                if app.state.tick is not None:
                    app.state.tick()
            statuses.clear()
            gc.collect()
            window["objects"] = len(gc.get_objects())
            before = [g["collections"] for g in gc.get_stats()]
            _stop_lag_monitors(app, restart=PRICING_INTERVAL if idle else None)
            await asyncio.sleep(0)  # a stop cancels the monitor's timer from the loop
            monitored, shipped = _lag_observations(app), _shipper_cpu(app)
            await asyncio.sleep(idle)
            window["ticks"] = 0 if idle else await requests(n)
            window["shipper_cpu_s"] = _shipper_cpu(app) - shipped
            window["monitor_ticks"] = _lag_observations(app) - monitored
            after = [g["collections"] for g in gc.get_stats()]
            window["full_collections"] = after[2] - before[2]
            window["middle_collections"] = after[1] - before[1]  # of the middle generation
            window["full_at"] = list(full_at)
            window["objects_after"] = len(gc.get_objects())
            for _ in range(collections):
                gc.collect()

    thresholds = gc.get_threshold()
    if not automatic:
        gc.set_threshold(thresholds[0], thresholds[1], NO_FULL)
    gc.callbacks.append(on_collection)
    try:
        asyncio.run(run())
    finally:
        gc.callbacks.remove(on_collection)
        gc.set_threshold(*thresholds)
    if set(statuses) != ({200} if n and not idle else set()):
        raise RuntimeError(f"requests failed: statuses {sorted(set(statuses))}")
    return {"requests": len(statuses), **window}


def _client(app: Any) -> Any:
    """Our variants' ``MetricsClient`` (their tick is its ``flush``), else None."""
    return getattr(app.state.tick, "__self__", None)


def _shipper_cpu(app: Any) -> float:
    """CPU seconds our client's shipper process has used (0 without one): work done outside the counted
    process, reported beside its instructions."""
    import psutil

    pid = getattr(getattr(_client(app), "_sink", None), "pid", None)
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _stop_lag_monitors(app: Any, restart: float | None = None) -> None:
    """Stop our client's lag monitors; with ``restart``, start one that fires every ``restart`` seconds."""
    client = _client(app)
    if client is None:
        return
    for monitor in client._monitors:
        monitor.stop()
    if restart is not None:
        client.monitor_event_loop(interval=restart)


def _lag_observations(app: Any) -> int:
    """How many times our client's event-loop lag monitor has fired (0 for the other variants)."""
    client = _client(app)
    metric = client.registry.get("asyncio_event_loop_lag_seconds") if client is not None else None
    return sum(child.cumulative()[0] for child in metric.children()) if metric is not None else 0


# -- the parent: each variant twice under callgrind ----------------------------------------------------------
EVENTS = re.compile(r"^events: (.+)$", re.MULTILINE)
SUMMARY = re.compile(r"^(?:summary|totals): (.+)$", re.MULTILINE)


def events_of(out_prefix: Path) -> dict[str, int]:
    """Every event's total over the run's files (one per thread)."""
    total: dict[str, int] = {}
    for path in sorted(out_prefix.parent.glob(out_prefix.name + "*")):
        text = path.read_text(errors="replace")
        names, values = EVENTS.search(text), SUMMARY.search(text)
        if not names or not values:
            continue  # the empty file callgrind leaves for the process itself
        counts = values.group(1).split()
        for k, name in enumerate(names.group(1).split()):  # callgrind leaves trailing zero counts out
            total[name] = total.get(name, 0) + (int(counts[k]) if k < len(counts) else 0)
    if not total:
        raise RuntimeError(f"callgrind wrote no totals under {out_prefix}")
    return total


def cycles(events: dict[str, int]) -> int | None:
    """KCachegrind's cycle estimate, when the caches were simulated."""
    if "I1mr" not in events:
        return None
    e = events.get
    return (
        e("Ir", 0)
        + 10 * (e("I1mr", 0) + e("D1mr", 0) + e("D1mw", 0))
        + 100 * (e("ILmr", 0) + e("DLmr", 0) + e("DLmw", 0))
    )


def _child_argv(
    variant: str, db_url: str, n: int, every: int, collections: int, automatic: bool, idle: float = 0.0
) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.load_instructions", "--child", variant, "--db-url", db_url]
    argv += ["--n", str(n), "--every", str(every), "--collections", str(collections), "--idle", str(idle)]
    return argv + (["--automatic"] if automatic else [])


def _run_child(argv: list[str], what: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=3600, cwd=_repo(), env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    ran: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return ran


def run_once(
    variant: str,
    db_url: str,
    n: int,
    every: int,
    work: Path,
    cache_sim: bool,
    cpu: int | None,
    collections: int = 0,
    idle: float = 0.0,
) -> dict[str, Any]:
    """One window under callgrind, without automatic full collections (see ``drive``)."""
    out = work / f"{variant}-{n}-{every}-{next(_RUN)}.callgrind"  # a name per run: no file of another
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=yes"]
    if cache_sim:
        argv.append("--cache-sim=yes")
    argv += _child_argv(variant, db_url, n, every, collections, automatic=False, idle=idle)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    started = time.monotonic()
    ran = _run_child(argv, f"{variant} under callgrind")
    ran["events"] = events_of(out)
    ran["seconds"] = round(time.monotonic() - started, 1)
    return ran


def full_collection_rate(variant: str, db_url: str, n: int, every: int) -> dict[str, Any]:
    """How often the collector makes a full collection of its own in the variant's steady state: ``n``
    requests at native speed (the collector runs by allocation counts, not by the clock, so valgrind
    would change nothing but the time), the variant's tick every ``every`` requests. The rate is taken
    between the first and the last collection (not over the window, which starts right after one)."""
    ran = _run_child(_child_argv(variant, db_url, n, every, 0, automatic=True), f"{variant} natively")
    if ran["requests"] != n:
        raise RuntimeError(f"{variant} natively served {ran['requests']} requests, not {n}")
    at = ran["full_at"]
    if len(at) < 3 or at[-1] <= at[0]:
        raise RuntimeError(f"{variant}: {len(at)} full collections in {n:,} requests; raise --gc-requests")
    ran["per_request"] = (len(at) - 1) / (at[-1] - at[0])
    return ran


def monitor_price(
    variant: str, db_url: str, work: Path, cache_sim: bool, cpu: int | None
) -> dict[str, float]:
    """What our event-loop lag monitor costs a second at native speed, in each event: two idle windows
    under callgrind (``IDLE_SECONDS``, the monitor firing every ``PRICING_INTERVAL``), their difference over
    the timers it fired between them, times the timers a second of the client's default
    (``LAG_TIMERS_A_SECOND``). An idle timer pays a loop iteration of its own, which a busy loop would share:
    a little more than the monitor costs a busy service (against us)."""
    short, long_ = (
        run_once(variant, db_url, 0, NO_TICK, work, cache_sim, cpu, idle=seconds) for seconds in IDLE_SECONDS
    )
    fired = long_["monitor_ticks"] - short["monitor_ticks"]
    if fired < MIN_TIMERS:
        raise RuntimeError(
            f"the lag monitor fired {fired} times more in the longer idle window, fewer than {MIN_TIMERS}: "
            "too few to price one"
        )
    price: dict[str, float] = {"timers": fired}
    for key in ("instructions", "cycles_estimate"):
        a, b = _count(key, short["events"]), _count(key, long_["events"])
        if a is not None and b is not None:
            price[key] = (b - a) / fired * LAG_TIMERS_A_SECOND
    return price


IDLE_SECONDS = (1.0, 4.0)
PRICING_INTERVAL = 0.001  # the monitor's interval in the idle windows that price it (~1,000 timers more)
MIN_TIMERS = 100
LAG_TIMERS_A_SECOND = 4.0  # the client's default: a timer every 0.25 s
NO_TICK = 10**9  # "every" that no run reaches
FULL_SAMPLES = 2  # full collections made at the end of a window, to price one
_RUN = itertools.count()


def measure(
    db_url: str,
    n1: int,
    n2: int,
    ticks: int = 4,
    cache_sim: bool = False,
    cpu: int | None = None,
    repeats: int = 3,
    gc_requests: int = 40_000,
    variants: tuple[str, ...] = VARIANTS,
    setups: tuple[str, ...] | None = None,
    http_gc_requests: int = load_http.GC_REQUESTS,
) -> dict[str, Any]:
    """Per variant and repeat, in instructions (and estimated cycles): the cost of a request without the
    periodic work, from two runs' difference (``n1`` and ``n2`` requests, no tick); the cost of one tick,
    from a third run of ``n2`` requests with ``ticks`` ticks; and full collections at their steady rate
    (``gc_requests`` requests at native speed) times the price of one (a fourth run of ``n1`` requests and
    ``FULL_SAMPLES`` collections). The variants interleaved, their order rotated per repeat. Then, in each of
    ``setups`` (default: every one installed), the plain service's whole request over HTTP and the idle
    server's clock-driven work under callgrind, and each variant's full collections per request over HTTP
    natively (``http_gc_requests`` requests, ``benchmarks.load_http``): what the throughput rows need."""
    known = set(VARIANTS)
    if "plain" not in variants or set(variants) - known or len(set(variants)) != len(variants):
        raise ValueError(f"variants: 'plain' and any of {', '.join(VARIANTS[1:])}; got {', '.join(variants)}")
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind not found: apt-get install valgrind (make system-deps)")
    every = -(-n2 // ticks)  # ceil: ``ticks`` ticks within n2 requests
    out: dict[str, Any] = {
        "n1": n1,
        "n2": n2,
        "ticks": ticks,
        "cache_sim": cache_sim,
        "repeats": repeats,
        "gc_requests": gc_requests,
        "http_gc_requests": http_gc_requests,
        "full_collections": {v: full_collection_rate(v, db_url, gc_requests, NO_TICK) for v in variants},
        "full_collections_ticking": {
            v: full_collection_rate(v, db_url, gc_requests, every) for v in variants if v != "plain"
        },
        "variants": {v: [] for v in variants},
    }
    ours = [v for v in variants if v.startswith("ours")]
    for variant, steady in out["full_collections"].items():
        ticking = out["full_collections_ticking"].get(variant)
        say(
            f"  {variant:<16} natively: a full collection every {1 / steady['per_request']:,.0f} requests"
            + (f" ({1 / ticking['per_request']:,.0f} with a tick every {every:,})" if ticking else "")
            + f"; objects tracked {steady['objects']:,} -> {steady['objects_after']:,} over {gc_requests:,}"
        )
    with tempfile.TemporaryDirectory(prefix="meshhook-callgrind-") as tmp:
        if ours:
            out["monitor"] = monitor_price(ours[0], db_url, Path(tmp), cache_sim, cpu)
            say(f"  our event-loop lag monitor: {out['monitor']['instructions']:,.0f} instructions a second")
        for r in range(repeats):
            k = r % len(variants)
            for variant in variants[k:] + variants[:k]:
                out["variants"][variant].append(
                    _measure_variant(variant, db_url, n1, n2, every, Path(tmp), cache_sim, cpu, out)
                )
                say(f"  repeat {r + 1}/{repeats} {variant:<16} " + _describe(out["variants"][variant][-1]))
        chosen = load_http.available_setups() if setups is None else setups
        _count_over_http(out, chosen, variants, db_url, Path(tmp), cpu, http_gc_requests)
    return out


def _count_over_http(
    out: dict[str, Any],
    setups: tuple[str, ...],
    variants: tuple[str, ...],
    db_url: str,
    work: Path,
    cpu: int | None,
    gc_requests: int,
) -> None:
    """``out["http"][setup]`` for each set-up; one that fails is recorded in ``out["http_failed"]`` and
    gets no throughput rows, and the counts already made stand (a load test's run is not thrown away)."""
    out["http"] = {}
    for setup in setups:
        try:
            out["http"][setup] = _over_http(setup, variants, db_url, work, cpu, gc_requests)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            out.setdefault("http_failed", {})[setup] = str(e)[-2000:]
            say(f"  over HTTP ({setup}) FAILED, no throughput rows for it: {str(e)[-500:]}")


def _over_http(
    setup: str, variants: tuple[str, ...], db_url: str, work: Path, cpu: int | None, gc_requests: int
) -> dict[str, Any]:
    counted = load_http.request_instructions(setup, load_http.HTTP_N1, load_http.HTTP_N2, work, cpu)
    got = load_http.at_native_speed(counted, load_http.idle_instructions(setup, work, cpu))
    say(
        f"  plain over HTTP ({setup}): {got['request']:,.0f} instructions a request ({got['request_counted']:,.0f} "
        f"counted, of which {got['clock_per_request']:,.0f} the idle server's clock-driven work under callgrind)"
    )
    got["full_collections"] = {}
    for variant in variants:
        rate = load_http.full_collection_rates(variant, setup, db_url, work, cpu, gc_requests)
        got["full_collections"][variant] = rate
        say(
            f"  {variant:<16} over HTTP ({setup}), natively: a full collection every {1 / rate['per_request']:,.0f} requests"
        )
    return got


def _measure_variant(
    variant: str,
    db_url: str,
    n1: int,
    n2: int,
    every: int,
    work: Path,
    cache_sim: bool,
    cpu: int | None,
    out: dict[str, Any],
) -> dict[str, Any]:
    a = run_once(variant, db_url, n1, NO_TICK, work, cache_sim, cpu)
    b = run_once(variant, db_url, n2, NO_TICK, work, cache_sim, cpu)
    c = run_once(variant, db_url, n2, every, work, cache_sim, cpu) if variant != "plain" else None
    d = run_once(variant, db_url, n1, NO_TICK, work, cache_sim, cpu, collections=FULL_SAMPLES)
    rate = out["full_collections"][variant]["per_request"]
    ticking = out["full_collections_ticking"].get(variant, {}).get("per_request", rate)
    # full collections a tick brings on (its objects, promoted); a difference of two measured rates, whose
    # noise is charged to the variant but never credited to it
    by_tick = max(0.0, (ticking - rate) * every)
    monitor = out.get("monitor", {}) if variant.startswith("ours") else {}
    costs = {
        key: _costs(key, a, b, c, d, rate, by_tick, monitor.get(key, 0.0))
        for key in ("instructions", "cycles_estimate")
    }
    got: dict[str, Any] = {key: value for key, value in costs.items() if value is not None}
    got["objects"] = a["objects"]
    if c is not None and c["ticks"] and c.get("shipper_cpu_s"):  # the send's share, run natively elsewhere
        got["shipper_cpu_ms_per_tick"] = round(1000 * c["shipper_cpu_s"] / c["ticks"], 3)
    return got


def _describe(got: dict[str, Any]) -> str:
    v = got["instructions"]
    return (
        f"{v['request']:,.0f} instructions a request, of which full collections {v['full']:,.0f} "
        f"({got['objects']:,} objects tracked, {v['full_collection']:,.0f} a full collection)"
        + (f"; {v['tick']:,.0f} a tick" if v["tick"] else "")
        + (
            f" (its shipper process: {got['shipper_cpu_ms_per_tick']} ms CPU)"
            if "shipper_cpu_ms_per_tick" in got
            else ""
        )
    )


def _costs(
    key: str,
    a: dict[str, Any],
    b: dict[str, Any],
    c: dict[str, Any] | None,
    d: dict[str, Any],
    full_per_request: float,
    full_per_tick: float = 0.0,
    monitor_second: float = 0.0,
) -> dict[str, float] | None:
    """A request's and a tick's cost in ``key`` (``None`` when that event was not recorded). The runs made
    no full collection of their own: ``d``, ``a`` plus ``FULL_SAMPLES`` of them, prices one (the walk over
    the objects alive; the garbage a full collection would have freed is freed at the runs' exit, in
    ``b - a``), charged at the variant's steady rates: ``full_per_request`` without ticks, and the extra
    ``full_per_tick`` a tick brings on. A tick stands for a second of periodic work: it takes
    ``monitor_second`` too (our lag monitor's second at native speed, stopped in the windows)."""
    counts = [_count(key, run["events"]) if run else None for run in (a, b, c, d)]
    ca, cb, cc, cd = counts
    if ca is None or cb is None or cd is None:
        return None
    if any(run["full_collections"] for run in (a, b, c, d) if run):
        raise RuntimeError("a window made a full collection of its own: automatic full collections were on")
    if d["requests"] != a["requests"]:
        raise RuntimeError("the run pricing a full collection served other requests than the short one")
    between = (cb - ca) / (b["requests"] - a["requests"])
    full_collection = (cd - ca) / FULL_SAMPLES
    tick = tick_full = 0.0
    if c is not None and cc is not None:
        if c["requests"] != b["requests"] or not c["ticks"]:
            raise RuntimeError(
                "the run with ticks served other requests than the one without, or had no tick"
            )
        tick_full = full_per_tick * full_collection
        tick = (cc - cb) / c["ticks"] + tick_full + monitor_second
    if any(run.get("monitor_ticks", 0) for run in (a, b, c, d) if run):
        raise RuntimeError("the lag monitor fired in a window: it was not stopped")
    full = full_per_request * full_collection
    return {
        "request": between + full,
        "between": between,
        "full": full,
        "full_collection": full_collection,
        "tick": tick,
        "tick_full": tick_full,  # the full collections a tick brings on, in ``tick``
        "monitor_second": monitor_second,  # our lag monitor's second, in ``tick``
    }


def _count(key: str, events: dict[str, int]) -> int | None:
    return events.get("Ir") if key == "instructions" else cycles(events)


def added_at(result: dict[str, Any], key: str, rate: float) -> dict[str, list[float]]:
    """Each instrumented variant's addition to a request, per repeat, when its periodic work runs once a
    second at ``rate`` requests a second: (request - plain's request) + tick / rate."""
    v = result["variants"]
    plain = [run[key]["request"] for run in v["plain"]]
    return {
        name: [
            run[key]["request"] - p + run[key]["tick"] / rate for run, p in zip(v[name], plain, strict=True)
        ]
        for name in v
        if name != "plain"
    }


STYLE = {  # how a variant's handler calls its library (what its rows' labels add to the library's name)
    "ours": "",
    "prometheus": "",
    "ours-bound": ", children bound once",
    "prometheus-bound": ", children bound once",
    "ours-log": ", request log",
    "ours-log-shipper": ", request log, shipper process",
}
LIBRARY = {
    "ours": "ours",
    "ours-bound": "ours",
    "ours-log": "ours",
    "ours-log-shipper": "ours",
    "prometheus": "prometheus_client",
    "prometheus-bound": "prometheus_client",
}


def rows(
    result: dict[str, Any],
    rates: dict[str, float],
    saturation: dict[str, float] | None = None,
    saturation_setup: str | None = None,
) -> list[dict[str, Any]]:
    """The summary rows, for each named rate (requests a second; a flush and a scrape a second): ours'
    addition to a request against prometheus_client's in each handler style, paired per repeat (the median,
    with the spread); then, in each server set-up counted over HTTP, the throughput each variant keeps at
    each ``saturation`` rate (default: ``rates``). A rate measured in ``saturation_setup`` is scaled to the
    other set-ups by their plain requests' costs (a saturated server's rate is inverse to its request's)."""
    v = result["variants"]
    out = []
    for key, unit in (("instructions", "instructions"), ("cycles_estimate", "cycles (estimate)")):
        if key not in v["plain"][0]:
            continue
        plain = statistics.median(run[key]["request"] for run in v["plain"])
        for label, rate in rates.items():
            added = added_at(result, key, rate)
            for ours, theirs in PAIRS:
                if ours in added and theirs in added:
                    out.append(_cost_row(result, added, ours, theirs, unit, label, rate, plain))
    http = result.get("http", {})
    for setup, got in http.items():
        scale = http[saturation_setup]["request"] / got["request"] if saturation_setup in http else 1.0
        for label, rate in (rates if saturation is None else saturation).items():
            for variant in v:
                if variant != "plain":
                    out.append(_throughput_row(result, variant, setup, label, rate * scale))
    return out


def added_over_http(result: dict[str, Any], variant: str, setup: str, rate: float) -> list[float]:
    """The variant's addition to a request over HTTP in ``setup``, per repeat: what it adds between full
    collections in process, its full collections at their rate over HTTP (a request there allocates more, so
    they come more often per request) less plain's, and its tick (flush or scrape) once a second at ``rate``,
    less the full collections the tick brings on in process (the rate over HTTP, counted with ours' flush
    thread running, has them already)."""
    v, rates = result["variants"], result["http"][setup]["full_collections"]

    def request(run: dict[str, Any], name: str) -> float:
        ins = run["instructions"]
        return float(ins["between"] + rates[name]["per_request"] * ins["full_collection"])

    def tick(run: dict[str, Any]) -> float:
        return float(run["instructions"]["tick"] - run["instructions"].get("tick_full", 0.0))

    return [
        request(run, variant) - request(p, "plain") + tick(run) / rate
        for run, p in zip(v[variant], v["plain"], strict=True)
    ]


def _versus(ours: str, theirs: str) -> str:
    """The pair's label: ours against prometheus_client, with each handler's style (once when they share it)."""
    if STYLE[ours] == STYLE[theirs]:
        return f"ours vs prometheus_client{STYLE[ours]}"
    return f"ours{STYLE[ours]} vs prometheus_client{STYLE[theirs]}"


def _cost_row(
    result: dict[str, Any],
    added: dict[str, list[float]],
    ours: str,
    theirs: str,
    unit: str,
    label: str,
    rate: float,
    plain: float,
) -> dict[str, Any]:
    if min(added[theirs]) <= 0:  # no ratio to take (and no Infinity in the JSON)
        raise RuntimeError(f"prometheus_client added nothing at {label}: {added[theirs]}")
    ratios = [a / b for a, b in zip(added[ours], added[theirs], strict=True)]
    ratio = statistics.median(ratios)
    load = (
        f"callgrind, whole app through ASGI in process, {label}: {rate:,.0f} requests/s, a flush / a scrape "
        f"a second; {result['n2'] - result['n1']:,} requests a variant x {result['repeats']} repeats; "
        f"plain {plain:,.0f} {unit} a request; full collections at each variant's steady rate"
    )
    return summary_row(
        f"[callgrind] added {unit} per request, {_versus(ours, theirs)} ({label})",
        statistics.median(added[ours]),
        statistics.median(added[theirs]),
        ratio,
        f"<= {GOAL_COST_RATIO}",
        ratio <= GOAL_COST_RATIO,
        load,
        unit,
        spread=[min(ratios), max(ratios)],
    )


def _throughput_row(
    result: dict[str, Any], variant: str, setup: str, label: str, rate: float
) -> dict[str, Any]:
    """A saturated service serves requests in inverse proportion to their cost: requests per 10^9
    instructions, the variant's (plain's whole request over HTTP plus its addition) against plain's."""
    http = result["http"][setup]
    plain = http["request"]
    added = added_over_http(result, variant, setup, rate)
    ratios = [plain / (plain + a) for a in added]
    ratio = statistics.median(ratios)
    goal = variant.startswith("ours")  # the client as shipped, in each style
    style = STYLE[variant]
    return summary_row(
        f"[callgrind] throughput over HTTP ({setup}), {LIBRARY[variant]}{style} vs uninstrumented ({label})",
        1e9 / plain * ratio,  # the median ratio's (value / baseline = ratio, for any number of repeats)
        1e9 / plain,
        ratio,
        f">= {1 - GOAL_THROUGHPUT_LOSS:g}" if goal else "-",
        ratio >= 1 - GOAL_THROUGHPUT_LOSS if goal else None,
        f"callgrind: plain's whole request over HTTP ({plain:,.0f} instructions; h2load, {CONCURRENCY} "
        f"connections, {http['n2'] - http['n1']:,} requests) plus the variant's addition in process at "
        f"{rate:,.0f} requests/s with a flush / a scrape a second and its full collections at their rate over "
        f"HTTP ({result['repeats']} repeats, median); user-space instructions",
        "requests per 10^9 instructions",
        spread=[min(ratios), max(ratios)],
    )


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def database(url: str | None) -> Any:
    """``url`` as given, or the load test's local stack (PostgreSQL + migrations) for the flushes."""
    if url:
        yield url
        return
    from benchmarks.load_webhook import local_stack

    work = Path(tempfile.mkdtemp(prefix="meshhook-instructions-"))
    try:
        with local_stack(work) as db_url:
            yield db_url
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _setups(parser: argparse.ArgumentParser, given: str | None) -> tuple[str, ...]:
    """``--setups``: those installed by default; a named one that is not installed is an error."""
    if given is None:
        return load_http.available_setups()
    if given.strip() == "none":
        return ()
    named = tuple(p.strip() for p in given.split(",") if p.strip())
    if not named or len(set(named)) != len(named) or set(named) - set(load_http.SETUPS):
        parser.error(f"--setups: any of {', '.join(load_http.SETUPS)} (each once) or 'none'; got {given!r}")
    missing = [p for p in named if p not in load_http.available_setups()]
    if missing:
        parser.error(f"--setups: {', '.join(missing)} not installed (make bench installs them)")
    return named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n1", type=int, default=1000, help="requests of the shorter run (1000)")
    parser.add_argument("--n2", type=int, default=4000, help="requests of the longer runs (4000)")
    parser.add_argument("--ticks", type=int, default=4, help="flushes / scrapes in the run that has them (4)")
    parser.add_argument(
        "--rates",
        default="1000,3000,5000",
        help="requests a second of the service (a flush and a scrape a second) to report at (1000,3000,5000)",
    )
    parser.add_argument("--every", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved (3)")
    parser.add_argument("--cache-sim", action="store_true", help="simulate the caches: a cycle estimate too")
    parser.add_argument("--db-url", help="PostgreSQL for our flushes (default: a local stack of its own)")
    parser.add_argument("--cpu", type=int, default=None, help="pin the runs to this CPU")
    parser.add_argument(
        "--gc-requests",
        type=int,
        default=40_000,
        help="requests at native speed per variant that give its rate of full collections (40000)",
    )
    parser.add_argument(
        "--http-gc-requests",
        type=int,
        default=load_http.GC_REQUESTS,
        help=f"requests over HTTP per variant and set-up whose full collections give its rate there "
        f"({load_http.GC_REQUESTS}; uvicorn[standard]'s plain service makes ~6 in them: more steadies the rate)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"services to count, plain among them ({','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--setups",
        default=None,
        help=f"server set-ups counted over HTTP for the throughput ({', '.join(load_http.SETUPS)}; "
        "default: those installed; 'none' to skip)",
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--collections", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--automatic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        ran = drive(
            args.child, args.db_url or "", args.n, args.every, args.collections, args.automatic, args.idle
        )
        print(json.dumps(ran))
        return 0
    if not 0 < args.n1 < args.n2 or args.ticks < 1 or args.n2 // args.ticks < 2 * CONCURRENCY:
        parser.error("need 0 < --n1 < --n2, --ticks >= 1 and at least 32 requests between ticks")
    if args.http_gc_requests < MIN_HTTP_GC_REQUESTS:
        parser.error(
            f"--http-gc-requests: at least {MIN_HTTP_GC_REQUESTS} (a rate needs 3 full collections; "
            "uvicorn[standard]'s plain service makes ~6 in 60,000 requests)"
        )
    if args.gc_requests < args.n2 or args.gc_requests % CONCURRENCY:
        parser.error(
            f"--gc-requests: at least --n2 and a multiple of {CONCURRENCY} (the requests go {CONCURRENCY} at a time)"
        )
    try:
        rates = {f"{float(r):,.0f} requests/s": float(r) for r in args.rates.split(",")}
    except ValueError:
        parser.error(f"--rates: numbers separated by commas, got {args.rates!r}")
    if not rates or min(rates.values()) <= 0:
        parser.error("--rates: positive numbers")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    known = set(VARIANTS)
    if "plain" not in variants or set(variants) - known or len(set(variants)) != len(variants):
        parser.error(
            f"--variants: plain and any of {','.join(VARIANTS[1:])}, each once; got {args.variants!r}"
        )
    setups = _setups(parser, args.setups)
    stop_on_sigterm()
    with database(args.db_url) as db_url:
        say(
            f"callgrind: {', '.join(variants)}; {args.n1:,} and {args.n2:,} requests, and {args.ticks} ticks; "
            f"over HTTP: {', '.join(setups) or 'none'} ..."
        )
        result = measure(
            db_url,
            args.n1,
            args.n2,
            args.ticks,
            args.cache_sim,
            args.cpu,
            args.repeats,
            args.gc_requests,
            variants,
            setups,
            args.http_gc_requests,
        )
    table_rows = rows(result, rates)
    for row in table_rows:
        say(
            f"{row['figure']}: {row['value']:,.0f} vs {row['baseline']:,.0f} = {row['ratio']:.3f} (goal {row['goal']})"
        )
    command = "python -m benchmarks.load_instructions " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write("load_instructions", command.strip(), {"result": result, "figures": table_rows})
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
