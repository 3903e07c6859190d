"""The load test's service over HTTP, for the throughput goal: the whole request's instructions, and how often
the collector makes a full collection per request there.

The throughput a saturated service loses (issue #14: <= 1 %) is the instrumentation's cost over the whole
request, and the in-process counts of ``benchmarks.load_instructions`` leave out what the instrumentation does
not touch: the sockets, the event loop's transports, HTTP parsing. So the plain service (``load_webhook``'s
app, unchanged) is also run under uvicorn, h2load keeping 16 connections busy, in two server set-ups:

- ``uvicorn``: h11 and asyncio's loop, what ``pip install uvicorn`` runs (pure Python);
- ``uvicorn[standard]``: httptools and uvloop, the C parser and loop ``pip install 'uvicorn[standard]'`` adds,
  which most deployments run. ``make bench`` installs them (``benchmarks/requirements.txt``, pinned) into
  ``.venv/bench-site``, which only these servers see, so the project's own servers and tests keep h11.

Counted (``request_instructions``): the plain service under callgrind, two runs of ``n1`` and ``n2`` requests
after the same warm-up; their difference over ``n2 - n1`` is a request. Readiness is polled by TCP connects, not
requests, so the runs differ by their measured requests only. User-space instructions: the kernel's share of a
request (its socket calls) is not counted, which makes the denominator smaller and the loss reported larger.
Under valgrind a request takes ~50 times as long, so uvicorn's clock-driven work (its loop's tick every
0.1 s) is charged to 50 times fewer requests than at native speed; ``idle_instructions`` measures it so the
report can say how much of a request it is.

Natively (``full_collection_rates``): each variant of the service under uvicorn (ours with its flush thread
running, as in production; nothing scrapes prometheus_client there, whose scrape brought on no full collection
in process), ``GC_REQUESTS`` requests after the warm-up; the requests served at the end of each full collection
give its rate between the first and the last, as ``load_instructions`` does in process. A request over HTTP
allocates differently than in process (h11 more, httptools and uvloop less), so full collections come at
another rate per request, and each one of ours walks the client's imports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 16
H2LOAD = "h2load"
SETUPS = {"uvicorn": ("h11", "asyncio"), "uvicorn[standard]": ("httptools", "uvloop")}  # (http, loop)
BENCH_SITE = Path(sys.prefix) / "bench-site"  # benchmarks/requirements.txt, installed by ``make bench``
WARMUP = 20 * CONCURRENCY  # requests before each run's measured ones
GC_REQUESTS = 60_000  # requests whose full collections give a rate (uvicorn[standard]'s plain: ~6 of them)
HTTP_N1, HTTP_N2 = 500, 2500  # the two counted runs' requests
IDLE_SECONDS = (5.0, 25.0)  # two idle runs under callgrind: their difference is the clock-driven work


def available_setups() -> tuple[str, ...]:
    """The set-ups whose modules the servers can import (the bench site first, then the project's own)."""

    def importable(module: str) -> bool:
        return (BENCH_SITE / module).is_dir() or importlib.util.find_spec(module) is not None

    return tuple(name for name, modules in SETUPS.items() if all(importable(m) for m in modules))


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def _server_argv(variant: str, setup: str, port: int, db_url: str, spool: Path) -> list[str]:
    http, loop = SETUPS[setup]
    argv = [sys.executable, "-m", "benchmarks.load_webhook", "--serve", variant, "--port", str(port)]
    return [*argv, "--http", http, "--loop", loop, "--db-url", db_url, "--spool", str(spool)]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(BENCH_SITE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run


def free_port() -> int:
    """A port free now (the server binds it a moment later: one benchmark at a time)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(argv: list[str], log: Path, cpu: int | None) -> Any:
    """A service process, stopped by SIGINT at the end (uvicorn's graceful shutdown; it then re-raises the
    signal, the exit callgrind and the GC report are written at), killed if it does not stop."""
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=_repo(), env=_env())
        try:
            yield proc
            proc.send_signal(signal.SIGINT)
            if proc.wait(timeout=600) not in (0, -signal.SIGINT):
                raise RuntimeError(f"the service exited with {proc.returncode}: {_tail(log)}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited before listening ({proc.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the service did not listen within {timeout:.0f} s: {_tail(log)}")


def _h2load(port: int, n: int, work: Path) -> None:
    from benchmarks.load_webhook import make_body

    body, signature = make_body()
    (work / "body.json").write_bytes(body)
    argv = [H2LOAD, "--h1", "-t", "1", "-c", str(CONCURRENCY), "-n", str(n), "-d", str(work / "body.json")]
    argv += ["-H", "content-type: application/json", "-H", f"x-meshhook-signature: {signature}"]
    argv.append(f"http://127.0.0.1:{port}/api/hooks/orders")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    if f"status codes: {n} 2xx" not in done.stdout:
        raise RuntimeError(
            f"h2load: not every request succeeded:\n{done.stdout[-2000:]}{done.stderr[-1000:]}"
        )


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--separate-threads=yes"]


_RUNS = itertools.count()


def _counted_run(
    setup: str, n: int | None, work: Path, cpu: int | None, idle: float = 0.0
) -> tuple[int, float]:
    """The plain service under callgrind: its instructions for the warm-up and ``n`` requests (``None``:
    none at all, ``idle`` seconds of waiting instead), and the seconds the ``n`` requests took."""
    from benchmarks.load_instructions import events_of

    port = free_port()
    out = work / f"http-{re.sub(r'[^a-z]+', '-', setup)}-{next(_RUNS)}.callgrind"  # no glob pattern in it
    log = work / "serve-http.log"
    seconds = 0.0
    with _server(_callgrind(out) + _server_argv("plain", setup, port, "", work / "spool"), log, cpu) as proc:
        _wait_listening(proc, port, log)
        if n is None:
            time.sleep(idle)
        else:
            _h2load(port, WARMUP, work)
            started = time.monotonic()
            _h2load(port, n, work)
            seconds = time.monotonic() - started
    return events_of(out)["Ir"], seconds


def request_instructions(setup: str, n1: int, n2: int, work: Path, cpu: int | None) -> dict[str, Any]:
    """Instructions of the plain service's whole request over HTTP in ``setup`` (see the module's doc), with
    the seconds a request took under callgrind (what charges it the clock-driven work)."""
    if not 0 < n1 < n2:
        raise ValueError(f"need 0 < n1 < n2, got {n1}, {n2}")
    (a, sa), (b, sb) = (_counted_run(setup, n, work, cpu) for n in (n1, n2))
    return {
        "setup": setup,
        "n1": n1,
        "n2": n2,
        "request_counted": (b - a) / (n2 - n1),
        "seconds_per_request": (sb - sa) / (n2 - n1),
    }


def idle_instructions(setup: str, work: Path, cpu: int | None) -> float:
    """Instructions a second the idle plain service spends under callgrind (uvicorn's tick, ...)."""
    short, long_ = IDLE_SECONDS
    (a, _), (b, _) = (_counted_run(setup, None, work, cpu, idle) for idle in (short, long_))
    return (b - a) / (long_ - short)


def at_native_speed(got: dict[str, Any], idle_per_second: float) -> dict[str, Any]:
    """``got`` (``request_instructions``) with the clock-driven work it was charged under callgrind taken out:
    at native speed a request lasts ~50 times less, and that work is spread over 50 times more requests."""
    clock = max(0.0, idle_per_second * got["seconds_per_request"])
    return {
        **got,
        "idle_per_second": idle_per_second,
        "clock_per_request": clock,
        "request": got["request_counted"] - clock,
    }


def full_collection_rates(
    variant: str, setup: str, db_url: str, work: Path, cpu: int | None, n: int = GC_REQUESTS
) -> dict[str, Any]:
    """Full collections per request of ``variant`` over HTTP in ``setup``, natively, between the first and
    the last one after the warm-up."""
    port = free_port()
    report, log = work / f"gc-{variant}-{next(_RUNS)}.json", work / f"serve-{variant}.log"
    argv = [
        *_server_argv(variant, setup, port, db_url, work / f"spool-{variant}"),
        "--gc-report",
        str(report),
    ]
    with _server(argv, log, cpu) as proc:
        _wait_listening(proc, port, log, timeout=60)
        for count in (WARMUP, n):
            _h2load(port, count, work)
    return rate_of(json.loads(report.read_text()), variant, setup, n)


def rate_of(got: dict[str, Any], variant: str, setup: str, n: int) -> dict[str, Any]:
    """The rate from a service's report (``served``, and the requests served at each full collection's end):
    between the first and the last full collection after the warm-up and before the shutdown (whose final
    flush may make one)."""
    if got["served"] != WARMUP + n:
        raise RuntimeError(f"{variant} over HTTP served {got['served']:,} requests, not {WARMUP + n:,}")
    at = [k for k in got["full_at"] if WARMUP < k < got["served"]]
    if len(at) < 3 or at[-1] <= at[0]:
        raise RuntimeError(
            f"{variant} over HTTP: {len(at)} full collections in {n:,} requests; too few for a rate "
            "(raise --http-gc-requests)"
        )
    return {
        "variant": variant,
        "setup": setup,
        "requests": n,
        "full_at": at,
        "per_request": (len(at) - 1) / (at[-1] - at[0]),
    }
