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
a scrape costs the service), runs by request count on the handler's thread; and the simulated database call is
a bare yield to the loop (``db_seconds=0``, for every variant). Four runs per variant after the same warm-up
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

    .venv/bin/python -m benchmarks.load_instructions                        # ~30 minutes on 2 cores
    .venv/bin/python -m benchmarks.load_instructions --repeats 1 --rates 2500  # ~10 minutes
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

from benchmarks._report import summary_row, write

VARIANTS = ("plain", "ours", "prometheus")
GOAL_COST_RATIO = 0.3  # issue #14: our added cost <= 0.3x prometheus_client's
CONCURRENCY = 16


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the child: one variant, n requests, a tick every ``every`` requests -----------------------------------------
NO_FULL = 10**9  # a threshold of the oldest generation no window reaches: no automatic full collection


def drive(
    variant: str, db_url: str, n: int, every: int, collections: int = 0, automatic: bool = False
) -> dict[str, Any]:
    """Run ``n`` measured requests after the warm-up, then ``collections`` full collections. Every window
    starts from a full collection; without ``automatic`` the collector makes no full collection of its
    own in it (its young generations run as ever), so a window's count does not depend on whether one of
    those rare, heavy collections fell into it: the parent charges them at their steady rate instead."""
    from benchmarks.load_webhook import asgi_requester, build_app

    app = build_app(
        variant, db_url, str(uuid.uuid4()), tempfile.mkdtemp(prefix="meshhook-spool-"), background=False
    )
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
            window["ticks"] = await requests(n)
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
    if set(statuses) != {200}:
        raise RuntimeError(f"requests failed: statuses {sorted(set(statuses))}")
    return {"requests": len(statuses), **window}


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
    variant: str, db_url: str, n: int, every: int, collections: int, automatic: bool
) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.load_instructions", "--child", variant, "--db-url", db_url]
    argv += ["--n", str(n), "--every", str(every), "--collections", str(collections)]
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
) -> dict[str, Any]:
    """One window under callgrind, without automatic full collections (see ``drive``)."""
    out = work / f"{variant}-{n}-{every}-{next(_RUN)}.callgrind"  # a name per run: no file of another
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=yes"]
    if cache_sim:
        argv.append("--cache-sim=yes")
    argv += _child_argv(variant, db_url, n, every, collections, automatic=False)
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
) -> dict[str, Any]:
    """Per variant and repeat, in instructions (and estimated cycles): the cost of a request without the
    periodic work, from two runs' difference (``n1`` and ``n2`` requests, no tick); the cost of one tick,
    from a third run of ``n2`` requests with ``ticks`` ticks; and full collections at their steady rate
    (``gc_requests`` requests at native speed) times the price of one (a fourth run of ``n1`` requests and
    ``FULL_SAMPLES`` collections). The variants interleaved, their order rotated per repeat."""
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
        "full_collections": {v: full_collection_rate(v, db_url, gc_requests, NO_TICK) for v in VARIANTS},
        "full_collections_ticking": {
            v: full_collection_rate(v, db_url, gc_requests, every) for v in VARIANTS if v != "plain"
        },
        "variants": {v: [] for v in VARIANTS},
    }
    for variant, steady in out["full_collections"].items():
        ticking = out["full_collections_ticking"].get(variant)
        say(
            f"  {variant:<10} natively: a full collection every {1 / steady['per_request']:,.0f} requests"
            + (f" ({1 / ticking['per_request']:,.0f} with a tick every {every:,})" if ticking else "")
            + f"; objects tracked {steady['objects']:,} -> {steady['objects_after']:,} over {gc_requests:,}"
        )
    with tempfile.TemporaryDirectory(prefix="meshhook-callgrind-") as tmp:
        for r in range(repeats):
            for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
                out["variants"][variant].append(
                    _measure_variant(variant, db_url, n1, n2, every, Path(tmp), cache_sim, cpu, out)
                )
                say(f"  repeat {r + 1}/{repeats} {variant:<10} " + _describe(out["variants"][variant][-1]))
    return out


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
    costs = {key: _costs(key, a, b, c, d, rate, by_tick) for key in ("instructions", "cycles_estimate")}
    got: dict[str, Any] = {key: value for key, value in costs.items() if value is not None}
    got["objects"] = a["objects"]
    return got


def _describe(got: dict[str, Any]) -> str:
    v = got["instructions"]
    return (
        f"{v['request']:,.0f} instructions a request, of which full collections {v['full']:,.0f} "
        f"({got['objects']:,} objects tracked, {v['full_collection']:,.0f} a full collection)"
        + (f"; {v['tick']:,.0f} a tick" if v["tick"] else "")
    )


def _costs(
    key: str,
    a: dict[str, Any],
    b: dict[str, Any],
    c: dict[str, Any] | None,
    d: dict[str, Any],
    full_per_request: float,
    full_per_tick: float = 0.0,
) -> dict[str, float] | None:
    """A request's and a tick's cost in ``key`` (``None`` when that event was not recorded). The runs made
    no full collection of their own: ``d``, ``a`` plus ``FULL_SAMPLES`` of them, prices one (the walk over
    the objects alive; the garbage a full collection would have freed is freed at the runs' exit, in
    ``b - a``), charged at the variant's steady rates: ``full_per_request`` without ticks, and the extra
    ``full_per_tick`` a tick brings on."""
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
    tick = 0.0
    if c is not None and cc is not None:
        if c["requests"] != b["requests"] or not c["ticks"]:
            raise RuntimeError(
                "the run with ticks served other requests than the one without, or had no tick"
            )
        tick = (cc - cb) / c["ticks"] + full_per_tick * full_collection
    full = full_per_request * full_collection
    return {
        "request": between + full,
        "between": between,
        "full": full,
        "full_collection": full_collection,
        "tick": tick,
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
        for name in ("ours", "prometheus")
    }


def rows(result: dict[str, Any], rates: dict[str, float]) -> list[dict[str, Any]]:
    """The summary rows, for each named rate (requests a second; a flush and a scrape a second): ours'
    addition to a request against prometheus_client's, paired per repeat (the median, with the spread)."""
    v = result["variants"]
    out = []
    for key, unit in (("instructions", "instructions"), ("cycles_estimate", "cycles (estimate)")):
        if key not in v["plain"][0]:
            continue
        plain = statistics.median(run[key]["request"] for run in v["plain"])
        for label, rate in rates.items():
            added = added_at(result, key, rate)
            if min(added["prometheus"]) <= 0:  # no ratio to take (and no Infinity in the JSON)
                raise RuntimeError(f"prometheus_client added nothing at {label}: {added['prometheus']}")
            ratios = [a / b for a, b in zip(added["ours"], added["prometheus"], strict=True)]
            ratio = statistics.median(ratios)
            load = (
                f"callgrind, whole app through ASGI in process, {label}: {rate:,.0f} requests/s, a flush / a scrape "
                f"a second; {result['n2'] - result['n1']:,} requests a variant x {result['repeats']} repeats; "
                f"plain {plain:,.0f} {unit} a request; full collections at each variant's steady rate"
            )
            out.append(
                summary_row(
                    f"[callgrind] added {unit} per request, ours vs prometheus_client ({label})",
                    statistics.median(added["ours"]),
                    statistics.median(added["prometheus"]),
                    ratio,
                    f"<= {GOAL_COST_RATIO}",
                    ratio <= GOAL_COST_RATIO,
                    load,
                    unit,
                    spread=[min(ratios), max(ratios)],
                )
            )
    return out


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
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--collections", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--automatic", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        ran = drive(args.child, args.db_url or "", args.n, args.every, args.collections, args.automatic)
        print(json.dumps(ran))
        return 0
    if not 0 < args.n1 < args.n2 or args.ticks < 1 or args.n2 // args.ticks < 2 * CONCURRENCY:
        parser.error("need 0 < --n1 < --n2, --ticks >= 1 and at least 32 requests between ticks")
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
    with database(args.db_url) as db_url:
        say(
            f"callgrind: {', '.join(VARIANTS)}; {args.n1:,} and {args.n2:,} requests, and {args.ticks} ticks ..."
        )
        result = measure(
            db_url, args.n1, args.n2, args.ticks, args.cache_sim, args.cpu, args.repeats, args.gc_requests
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
