"""Ingest throughput: points/s through ``metrics.ingest`` vs a plain COPY of rows of the same shape.

Both are measured in ONE run on the SAME database, with the same batches and the same number of
concurrent connections, so the ratio does not depend on the machine:

- ingest: ``select metrics.ingest(batch)`` per batch (validation, series look-up, ledger, raw points), and
  the rollup pass that merges them (minute rollups, cumulative totals, late marks, the live publish);
- COPY: ``COPY ... FROM STDIN`` of the same points as rows with the columns of ``metrics.points``, into a
  plain table without index, trigger, partitioning or row-level security;
- floor: the same COPY plus, in the same transaction, an upsert of the batch into per-minute
  count/sum/min/max rows: the least a design that merges every ingest statement into minute rollups must
  do, without parsing, validation, sketches, totals or publish. Its ratio to COPY bounds the ingest ratio;
- floor+: the floor plus one aggregate summing the batch's histogram sketch buckets per series, minute
  and key (the least per-point sketch work, wherever a design does it).

Payloads are serialised before timing: only the database work and the wire are measured. Each batch is
its own transaction (autocommit) for both. Goal of issue 2: >= 100,000 points/s and >= 0.5 of COPY.
Issue 14 adds, per design and phase:

- ``--designs B,K``: each design runs in its own scratch database cloned from a migrated template (see
  DESIGNS), with its own COPY phase in the same database as the baseline of its ratio;
- DB CPU per point: user + system CPU of every PostgreSQL server process (psutil over the postmaster's
  tree, sampled every 0.1 s) over the phase; the phase lasts until the rollup pass
  has caught up (its time and CPU count), and the pass loop's share is reported apart;
- a loop like ``meshhook-metrics maintain --loop`` every ``--pass-interval``: ``rollup_pass(lane)`` on a
  connection and thread per lane of the pass (``metrics.rollup_lanes``);
- freshness: one-point probe batches during the ingest phase, commit -> value in its rollup_1m minute
  (what metrics.query reads) and -> on the live topic (the prober's backend is left out of the CPU);
- correctness: rollup_1m and series_totals against a recomputation from the raw points (CHECK_SQL), and the
  raw points' counts against every count sent (nothing lost or stored twice, whatever rows a design stores);
- ``--rate``: pace the ingest phase (the reference fleet: ``--batch-size 300 --sources 20 --series 300
  --workers 20 --rate 6000``);
- timestamps "live": stamped just before each design runs, from its start on (paced: on the schedule's own
  clock), so they fall in the minutes being written, as a fleet's do (the rollup pass folds closed minutes'
  minutes into the totals, metrics.fold_totals).

    .venv/bin/python -m benchmarks.ingest                      # the four workloads in turn (make bench)
    .venv/bin/python -m benchmarks.ingest --workload realistic --designs B,T,C,U
    .venv/bin/python -m benchmarks.ingest --workload fleet --designs K,M       # the merge-before-write prototype
    .venv/bin/python -m benchmarks.ingest --workload sustained --designs K     # the default workload, 100 batches
    .venv/bin/python -m benchmarks.ingest --workload default --designs S,K,S,K --no-floor   # the pass in a single lane, in two
    .venv/bin/python -m benchmarks.ingest --batch-size 300 --sources 20 --series 2000   # a custom workload
    DATABASE_URL=postgresql://postgres:...@host/db .venv/bin/python -m benchmarks.ingest --designs B

With DATABASE_URL, the database must carry the migrations and the role must ingest directly (a trusted
role such as ``postgres``); the benchmark writes into a random project and drops its COPY table after
(designs other than B and C change server state: use them only on a throwaway database).
Without it, a PostgreSQL cluster is created in a temporary directory with the server's DEFAULT durable
settings (fsync and synchronous_commit on; not the tests' fast mode) and destroyed at the end.
JSON results go to benchmarks/results/ingest-<workload>.json (a custom workload: ingest-custom-<time>.json,
which the summary leaves out).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import merged_ingest
from benchmarks._signals import stop_on_sigterm
from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
from meshhook_rt_metrics.client.sketch import Sketch
from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database, create_database
from meshhook_rt_metrics.localstack.postgres import LocalPostgres

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_POINTS_PER_SECOND = 100_000
GOAL_RATIO = 0.5
COPY_TABLE = "public.bench_ingest_copy"
FLOOR_TABLE = "public.bench_ingest_floor_points"
FLOOR_ROLLUP = "public.bench_ingest_floor_rollup"
SERVER_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "work_mem",
    "jit",
)


@dataclass(frozen=True)
class Series:
    name: str
    kind: str
    labels: dict[str, str]


@dataclass
class Settings:
    batches: int
    batch_size: int
    series: int
    sources: int
    workers: int
    seed: int
    database: str = "local"
    durability: str = "server defaults (fsync=on, synchronous_commit=on)"
    histogram_values_per_point: str = "5..200 lognormal latencies"


@dataclass
class Phase:
    name: str
    points: int = 0
    batches: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    writers_seconds: float = 0.0  # until the last batch committed (the rollup pass then catches up)
    cpu_seconds: float | None = None  # PostgreSQL server CPU (user + system, all processes) over the phase
    pass_cpu_seconds: float | None = None  # of which the pass loop's backend (rollup pass / publish sweep)

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.batch_seconds)
        return {
            "points": self.points,
            "batches": self.batches,
            "seconds": round(self.seconds, 4),
            "points_per_second": round(self.rate, 1),
            "batch_ms_p50": round(1000 * ordered[len(ordered) // 2], 2) if ordered else None,
            "batch_ms_max": round(1000 * ordered[-1], 2) if ordered else None,
            "writers_seconds": round(self.writers_seconds, 4),
            "writers_points_per_second": round(self.points / self.writers_seconds, 1)
            if self.writers_seconds
            else None,
            "db_cpu_seconds": round(self.cpu_seconds, 3) if self.cpu_seconds is not None else None,
            "db_cpu_us_per_point": round(1e6 * self.cpu_seconds / self.points, 2)
            if self.cpu_seconds is not None and self.points
            else None,
            "pass_loop_cpu_us_per_point": round(1e6 * self.pass_cpu_seconds / self.points, 2)
            if self.pass_cpu_seconds is not None and self.points
            else None,
        }


def say(message: str) -> None:
    print(message, flush=True)


# -- workload ---------------------------------------------------------------------------------------
def series_catalogue(total: int) -> list[Series]:
    """About 60 % counters, 25 % gauges, 15 % histograms with MeshHook-like names and labels."""
    routes = ["/api/hooks/[slug]", "/api/workflows/[id]/runs", "/api/projects/[id]", "/healthz"]
    node_types = ["http_call", "transform", "delay", "branch", "email", "slack", "code", "webhook"]
    out: list[Series] = []
    n_hist = max(1, total * 15 // 100)
    n_gauge = max(1, total * 25 // 100)
    n_counter = total - n_hist - n_gauge
    for i in range(n_counter):
        family = i % 3
        if family == 0:
            labels = {
                "outcome": ["accepted", "rejected", "error"][i % 3],
                "signature": ["valid", "invalid"][i % 2],
                "route": routes[i % len(routes)],
                "shard": str(i),
            }
            out.append(Series("meshhook_webhook_requests_total", "counter", labels))
        elif family == 1:
            labels = {"status": ["succeeded", "failed", "cancelled"][i % 3], "workflow": f"wf-{i}"}
            out.append(Series("meshhook_workflow_runs_completed_total", "counter", labels))
        else:
            labels = {
                "node_type": node_types[i % len(node_types)],
                "method": ["GET", "POST"][i % 2],
                "status_class": ["2xx", "4xx", "5xx"][i % 3],
                "target": f"t{i}",
            }
            out.append(Series("meshhook_http_client_requests_total", "counter", labels))
    for i in range(n_gauge):
        out.append(
            Series(
                "meshhook_queue_messages",
                "gauge",
                {"queue": f"q{i}", "state": ["ready", "inflight", "delayed"][i % 3]},
            )
        )
    for i in range(n_hist):
        out.append(
            Series(
                "meshhook_workflow_step_duration_seconds",
                "histogram",
                {
                    "node_type": node_types[i % len(node_types)],
                    "outcome": ["ok", "error"][i % 2],
                    "workflow": f"wf-{i}",
                },
            )
        )
    return out


def histogram_variants(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Pre-built histogram deltas (count, sum, min, max, sketch) to draw from."""
    variants = []
    for _ in range(count):
        values = [rng.lognormvariate(-2.5, 1.2) for _ in range(rng.randint(5, 200))]
        sketch = Sketch()
        sketch.extend(values)
        variants.append(
            {
                "count": len(values),
                "sum": sum(values),
                "min": min(values),
                "max": max(values),
                "sketch": sketch.to_wire(),
            }
        )
    return variants


def make_points(
    catalogue: list[Series],
    batch_no: int,
    size: int,
    rng: random.Random,
    variants: list[dict[str, Any]],
    seconds_per_batch: float | None = None,
) -> list[dict[str, Any]]:
    """One batch: successive flushes of every series (one delta row per series per flush). ``ts`` is an
    offset in seconds from the start of the phase (``Workload.stamped``): batch_no * ``seconds_per_batch``
    when paced (the schedule's own time), else the flush number modulo 240 (4 minutes)."""
    points = []
    for k in range(size):
        s = catalogue[(batch_no * size + k) % len(catalogue)]
        flush = (batch_no * size + k) // len(catalogue)
        offset = batch_no * seconds_per_batch if seconds_per_batch else flush % 240
        ts = round(offset, 3)
        point: dict[str, Any] = {"name": s.name, "kind": s.kind, "labels": s.labels, "ts": ts}
        if s.kind == "counter":
            n = rng.randint(1, 50)
            point.update(count=n, sum=n)
        elif s.kind == "gauge":
            a, b, c = (rng.randint(0, 500) for _ in range(3))
            point.update(count=3, sum=a + b + c, min=min(a, b, c), max=max(a, b, c), last=c)
        else:
            point.update(variants[rng.randrange(len(variants))])
        points.append(point)
    return points


def known_literals(points: list[dict[str, Any]], series_ids: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """The same points as metrics.ingest_known's array literals, as the client formats them."""
    literals = array_literals(points, point_series_ids(points, series_ids))
    assert literals is not None
    return literals


INGEST_KNOWN_JSONB = (
    "select metrics.ingest_known(%s, %s, %s, %s::bigint[], %s::float8[], %s::bigint[], %s::float8[],"
    " %s::float8[], %s::float8[], %s::float8[], %s::jsonb[])"
)
"""ingest_known's overload with sketches as jsonb (migration 20261206001000; kept for earlier producers)."""


def known_jsonb_literals(
    points: list[dict[str, Any]], series_ids: dict[tuple[str, str], int]
) -> tuple[str, ...]:
    """Design K0's literals: the numeric columns as the client formats them, and each sketch as a quoted
    element of a jsonb[] literal (the client's format before migration 20261206002200)."""
    numbers = known_literals(points, series_ids)[:7]

    def element(sketch: Any) -> str:
        if sketch is None:
            return "NULL"
        text = json.dumps(sketch, separators=(",", ":"))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (*numbers, "{" + ",".join(element(p.get("sketch")) for p in points) + "}")


def point_series_ids(points: list[dict[str, Any]], series_ids: dict[tuple[str, str], int]) -> list[int]:
    return [series_ids[(p["name"], json.dumps(p.get("labels") or {}, sort_keys=True))] for p in points]


def copy_text(
    project: uuid.UUID,
    points: list[dict[str, Any]],
    series_ids: dict[tuple[str, str], int],
    source: str,
    batch_id: str,
) -> bytes:
    """The same points as COPY text rows with the columns of metrics.points."""

    def field_(value: Any) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":")).replace("\\", "\\\\")
        return str(value)

    lines = []
    for p in points:
        sid = series_ids[(p["name"], json.dumps(p["labels"], sort_keys=True))]
        ts = datetime.fromtimestamp(p["ts"], UTC).isoformat()
        row = [
            str(project),
            sid,
            ts,
            source,
            batch_id,
            p["count"],
            p["sum"],
            p.get("min"),
            p.get("max"),
            p.get("last"),
            p.get("sketch"),
        ]
        lines.append("\t".join(field_(v) for v in row))
    return ("\n".join(lines) + "\n").encode()


# -- designs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """A way of ingesting the same points into the migrated schema."""

    name: str
    description: str
    trusted_copy: bool = (
        False  # the timed phase COPYs rows into metrics.points (ledger + COPY) instead of the RPC
    )
    validated: bool = False  # ... through metrics.begin_copy_batch / check_copied_points
    known: bool = False  # the timed phase calls metrics.ingest_known (the client's path for known series)
    known_jsonb: bool = False  # ... its overload with sketches as jsonb (before migration 20261206002200)
    merged: bool = False  # the timed phase goes through a merging service (benchmarks.merged_ingest)
    setup: str = ""  # SQL run in the design's database before its phases


DESIGNS: dict[str, Design] = {
    "B": Design(
        "B",
        "current (migration 20261206000500): append-only metrics.ingest + metrics.rollup_pass() every pass "
        "interval (xid watermark, set-based merge, publish)",
    ),
    "T": Design(
        "T",
        "B as before migration 20261206000700: every pass upserts the totals of each series it touches (a merge "
        "into the cumulative sketch for histograms; the fold watermark pinned at infinity, so every minute counts "
        "as folded and no fold runs)",
        setup="update metrics.rollup_pass_state set totals_folded_before = 'infinity'",
    ),
    "C": Design(
        "C",
        "B plus the validated COPY path (migration 20261206000800): metrics.begin_copy_batch (tenancy, ledger), COPY "
        "(text) of rows with resolved series ids into metrics.points, metrics.check_copied_points (ingest's rules) "
        "+ the same pass",
        trusted_copy=True,
        validated=True,
    ),
    "K": Design(
        "K",
        "B plus the known-series call (migration 20261206001000, PostgresSink's path once it knows its series): "
        "metrics.ingest_known with the batch as typed arrays (series ids, epoch seconds, count, sum, min, max, "
        "last, and since migration 20261206002200 each sketch's zeros and stores as integer arrays) in one "
        "statement: envelope, tenancy, ledger, ingest's rules, insert + the same pass",
        known=True,
    ),
    "K0": Design(
        "K0",
        "K as before migration 20261206002200: the sketches as jsonb (metrics.ingest_known's jsonb[] overload, "
        "kept for earlier producers), stored and merged as jsonb",
        known=True,
        known_jsonb=True,
    ),
    "S": Design(
        "S",
        "K with the rollup pass in a single lane, as before migration 20261207000300 (metrics.set_pass_lanes(1)): "
        "one backend merges every series",
        known=True,
        setup="select metrics.set_pass_lanes(1)",
    ),
    "M": Design(
        "M",
        "prototype (benchmarks/merged_ingest.py, not shipped): a service merges the sources' batches before "
        "writing; each batch checked by ingest's rules on its source's connection, then per window one "
        "transaction: every batch's ledger row + one row per series and minute + the same pass",
        merged=True,
        setup=merged_ingest.SETUP_SQL,
    ),
    "U": Design(
        "U",
        "B plus an unvalidated trusted COPY: ledger row + COPY of the same rows, no rule checked (the upper bound "
        "of any COPY path) + the same pass",
        trusted_copy=True,
    ),
}
"""Designs A (per-statement trigger rollups, replaced by B) and D (integer-array sketches, within noise of B)
were measured with prototype SQL under benchmarks/designs/ until B landed; their figures are in
docs/architecture.md ("Ingest: designs side by side ...") and their SQL in the git history."""


# -- database ---------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """Where the designs run: a local throwaway cluster (one scratch database per design) or DATABASE_URL."""

    url: str
    pg: LocalPostgres | None = None

    def database_for(self, design: Design, tag: str) -> str:
        if self.pg is None:
            return self.url
        name = f"bench_{tag}_{design.name.lower()}"
        with psycopg.connect(self.pg.admin_url(), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}"')
        create_database(self.pg, name, template="bench_template")
        return self.pg.url(database=name)


@contextlib.contextmanager
def database(url: str | None) -> Iterator[Cluster]:
    """DATABASE_URL as given, or a throwaway local cluster with durable default settings and a migrated
    template database that every design's scratch database is cloned from."""
    if url:
        migrator.migrate(url)
        yield Cluster(url)
        return
    state_dir = Path(tempfile.mkdtemp(prefix="meshhook-bench-ingest-"))
    pg = LocalPostgres(state_dir, port=0, fast=False)
    try:
        say(f"starting a local PostgreSQL in {state_dir} (durable defaults: fsync=on, synchronous_commit=on)")
        pg.init()
        pg.start()
        bootstrap_database(pg)  # the cluster's roles (Supabase look-alikes), then a template database
        create_database(pg, "bench_template")
        migrator.migrate(pg.url(database="bench_template"))
        steady_fold_watermark(pg.url(database="bench_template"))
        yield Cluster(pg.url(database="bench_template"), pg)
    finally:
        pg.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)


def steady_fold_watermark(url: str) -> None:
    """The totals' fold watermark where a long-running database has it: the current minute. A migration
    starts it after the next minute, for rows that may already exist; until it passes, every pass merges its
    minutes into the totals as late points, which a database running for more than two minutes never does
    (and which took the first designs of a run the first minute or two). The template holds no rollups yet,
    so any watermark is consistent."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "update metrics.rollup_pass_state set totals_folded_before = date_trunc('minute', now())"
        )


# -- PostgreSQL CPU ---------------------------------------------------------------------------------
class CpuMeter:
    """User + system CPU of every process of the PostgreSQL server (postmaster and all its children:
    backends, the pass loop's backend, autovacuum, WAL writer, checkpointer...), sampled every 0.1 s so
    that processes exiting during a phase are counted up to their last sample."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.available = False
        self.excluded: set[int] = set()  # backends left out (the freshness prober's: measuring is not ingest)
        self._latest: dict[tuple[int, float], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._postmaster: Any = None
        try:
            import psutil

            pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            self._postmaster = psutil.Process(pid).parent()
            name = self._postmaster.name() if self._postmaster else ""
            self.available = "postgres" in name or "postmaster" in name
        except Exception:
            self.available = False
        if self.available:
            self._sample()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        procs = [self._postmaster]
        with contextlib.suppress(Exception):
            procs += self._postmaster.children(recursive=True)
        seen: dict[tuple[int, float], float] = {}
        for p in procs:
            if p.pid in self.excluded:
                continue
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                seen[(p.pid, p.create_time())] = t.user + t.system
        with self._lock:
            self._latest.update(seen)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def mark(self) -> dict[tuple[int, float], float]:
        if not self.available:
            return {}
        self._sample()
        with self._lock:
            return dict(self._latest)

    def since(self, mark: dict[tuple[int, float], float], pids: set[int] | None = None) -> float | None:
        """CPU seconds since ``mark`` of all server processes, or only of the processes ``pids``."""
        if not self.available:
            return None
        now = self.mark()
        return sum(v - mark.get(k, 0.0) for k, v in now.items() if pids is None or k[0] in pids)

    def close(self) -> None:
        self._stop.set()


# -- phases -----------------------------------------------------------------------------------------
def run_phase(
    name: str,
    url: str,
    jobs: list[Any],
    workers: int,
    work: Callable[[psycopg.Connection[Any], Any], int],
    every: int,
    meter: CpuMeter | None = None,
    finish: Callable[[], None] | None = None,
    rate: float | None = None,
    points_per_job: int = 0,
    pass_pids: set[int] | None = None,
) -> Phase:
    """Run ``work`` over ``jobs`` on ``workers`` connections (one transaction per job); time the whole
    phase, including ``finish`` (the rollup pass's catch-up), and the server's CPU over it."""
    phase = Phase(name)
    todo: queue.Queue[Any] = queue.Queue()
    for k, job in enumerate(jobs):
        todo.put((k, job))
    lock = threading.Lock()
    errors: list[BaseException] = []
    connections = [psycopg.connect(url, autocommit=True) for _ in range(workers)]
    start_gate = threading.Barrier(workers + 1)

    def worker(conn: psycopg.Connection[Any]) -> None:
        start_gate.wait()
        while True:
            try:
                k, job = todo.get_nowait()
            except queue.Empty:
                return
            if rate:  # paced: job k starts no earlier than k batches' worth of points at ``rate``
                delay = started + k * points_per_job / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            t0 = time.perf_counter()
            try:
                n = work(conn, job)
            except BaseException as exc:  # surfaced after the phase
                errors.append(exc)
                return
            elapsed = time.perf_counter() - t0
            with lock:
                phase.points += n
                phase.batches += 1
                phase.batch_seconds.append(elapsed)
                if phase.batches % every == 0:
                    so_far = time.perf_counter() - started
                    say(
                        f"  {name:<8} {phase.batches:>4}/{len(jobs)} batches  {phase.points:>9,} points"
                        f"  {phase.points / so_far:>10,.0f} points/s"
                    )

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
    for t in threads:
        t.start()
    mark = meter.mark() if meter else {}
    started = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    phase.writers_seconds = time.perf_counter() - started
    if finish and not errors:
        finish()
    phase.seconds = time.perf_counter() - started
    phase.cpu_seconds = meter.since(mark) if meter else None
    if meter and pass_pids:
        phase.pass_cpu_seconds = meter.since(mark, pass_pids)
    for conn in connections:
        conn.close()
    if errors:
        raise errors[0]
    return phase


def ingest_job(conn: psycopg.Connection[Any], job: tuple[str, int]) -> int:
    payload, n = job
    row = conn.execute("select metrics.ingest(%s::jsonb)", (payload,)).fetchone()
    if not row or row[0]["status"] != "accepted":
        raise RuntimeError(f"ingest did not accept a batch: {row}")
    return n


def copy_job(conn: psycopg.Connection[Any], job: tuple[bytes, int]) -> int:
    data, n = job
    with conn.cursor() as cur, cur.copy(f"copy {COPY_TABLE} from stdin") as copy:
        copy.write(data)
    return n


POINT_COLUMNS = "project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch"


def trusted_copy_job(conn: psycopg.Connection[Any], job: tuple[bytes, int, str, str, str]) -> int:
    """Design U's timed work: the ledger row (exactly once) and a COPY of resolved rows into metrics.points,
    in one transaction; no parsing or validation in the database (the rows come from a trusted service)."""
    data, n, project, source, batch_id = job
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "insert into metrics.batches (project_id, source, batch_id, points) values (%s, %s, %s, %s)"
            " on conflict do nothing",
            (project, source, batch_id, n),
        )
        if cur.rowcount != 1:
            return 0
        with cur.copy(f"copy metrics.points ({POINT_COLUMNS}) from stdin") as copy:
            copy.write(data)
    return n


def validated_copy_job(conn: psycopg.Connection[Any], job: tuple[bytes, int, str, str, str]) -> int:
    """Design C's timed work, what a trusted producer runs per batch in one transaction: begin the batch
    (tenancy, ledger: false for a duplicate), COPY its rows, check them with ingest's rules."""
    data, n, project, source, batch_id = job
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select metrics.begin_copy_batch(%s, %s, %s, %s)", (project, source, batch_id, n))
        row = cur.fetchone()
        if not row or not row[0]:
            return 0
        with cur.copy(f"copy metrics.points ({POINT_COLUMNS}) from stdin") as copy:
            copy.write(data)
        cur.execute("select metrics.check_copied_points()")
    return n


def known_job(conn: psycopg.Connection[Any], job: tuple[tuple[str, ...], int, str, str, str]) -> int:
    """Design K's timed work: one call of metrics.ingest_known with the batch's array literals (formatted
    before the timing, as design C's COPY text is)."""
    literals, n, project, source, batch_id = job
    sql = INGEST_KNOWN_JSONB if len(literals) == 8 else INGEST_KNOWN  # K0's or K's literals
    row = conn.execute(sql, (project, source, batch_id, *literals)).fetchone()
    if not row or row[0]["status"] != "accepted":
        raise RuntimeError(f"ingest_known did not accept a batch: {row}")
    return n


def merged_jobs(
    merger: merged_ingest.Merger,
    work: Workload,
    knowns: list[tuple[tuple[str, ...], int, str, str, str]],
    series_ids: dict[tuple[str, str], int],
) -> tuple[list[Any], Callable[[psycopg.Connection[Any], Any], int]]:
    """Design M's jobs (aligned with the batches) and its timed work: a source's batch through the merger."""
    jobs = [
        (literals, merged_ingest.Batch(s, i, pts, point_series_ids(pts, series_ids)))
        for (literals, *_), (s, i, pts) in zip(knowns, work.batches, strict=True)
    ]

    def merged_job(conn: psycopg.Connection[Any], job: tuple[tuple[str, ...], merged_ingest.Batch]) -> int:
        literals, batch = job
        return merger.submit(conn, batch, literals)

    return jobs, merged_job


def timed_ingest(
    design: Design,
    work: Workload,
    payloads: list[tuple[str, int]],
    copies: list[tuple[bytes, int]],
    knowns: list[tuple[tuple[str, ...], int, str, str, str]],
    merged: tuple[list[Any], Callable[[psycopg.Connection[Any], Any], int]] | None = None,
) -> tuple[str, list[Any], Callable[[psycopg.Connection[Any], Any], int], str]:
    """A design's timed phase: its name, the jobs after the warm-up batch, the job and what it goes through."""
    if merged:
        return "merged", merged[0][1:], merged[1], "checked, then merged per window by one writer"
    if design.known:
        return "known", knowns[1:], known_job, "through metrics.ingest_known"
    if design.trusted_copy:
        jobs = [
            (data, n, str(work.project), s, i)
            for (data, n), (s, i, _) in zip(copies[1:], work.batches[1:], strict=True)
        ]
        job = validated_copy_job if design.validated else trusted_copy_job
        return "trusted", jobs, job, "ledger + COPY into metrics.points,"
    return "ingest", payloads[1:], ingest_job, "through metrics.ingest"


def floor_job(conn: psycopg.Connection[Any], job: tuple[bytes, int, str, str]) -> int:
    """The least any design with per-statement minute rollups must do: COPY the raw rows, then merge
    them into per-minute count/sum/min/max rows (no parsing, validation, sketches, totals or publish)."""
    return _copy_then(conn, job, FLOOR_UPSERT)


def floor_sketch_job(conn: psycopg.Connection[Any], job: tuple[bytes, int, str, str]) -> int:
    """The floor plus summing the batch's histogram buckets per series, minute and key: the least work
    any design that keeps mergeable sketches must do per point, whenever it does it."""
    return _copy_then(conn, job, FLOOR_UPSERT, FLOOR_SKETCH_CELLS)


def _copy_then(conn: psycopg.Connection[Any], job: tuple[bytes, int, str, str], *statements: str) -> int:
    """COPY a batch into the floor table, then run ``statements`` over it (source, batch_id), in one transaction."""
    data, n, source, batch_id = job
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"copy {FLOOR_TABLE} from stdin") as copy:
            copy.write(data)
        for statement in statements:
            cur.execute(statement, (source, batch_id))
    return n


FLOOR_UPSERT = (
    f"insert into {FLOOR_ROLLUP} as r (series_id, bucket, count, sum, min, max)"
    " select series_id, date_trunc('minute', ts), sum(count), sum(sum), min(min), max(max)"
    f" from {FLOOR_TABLE} where source = %s and batch_id = %s group by 1, 2 order by 1, 2"
    " on conflict (series_id, bucket) do update set count = r.count + excluded.count,"
    " sum = r.sum + excluded.sum, min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)"
)
FLOOR_SKETCH_CELLS = (
    "select count(*) from (select f.series_id, date_trunc('minute', f.ts), b.store, b.key, sum(b.c::bigint)"
    f" from {FLOOR_TABLE} f cross join lateral ("
    "  select 'p' as store, t.key, t.value as c from jsonb_each_text(f.sketch -> 'p') t"
    "  union all select 'n', t.key, t.value from jsonb_each_text(f.sketch -> 'n') t) b"
    " where f.source = %s and f.batch_id = %s and f.sketch is not null group by 1, 2, 3, 4) cells"
)

# Correctness: rollup_1m and series_totals against a recomputation from the raw points of the project.
# count, min, max, last and sketches must be equal; sums equal up to float rounding (deltas are added in
# a different order), i.e. a relative difference below 1e-9.
CHECK_SQL = """
with raw as (
  select series_id, date_trunc('minute', ts) as bucket, sum(count) as count, sum(sum) as sum,
    min(min) as min, max(max) as max,
    (max(array[extract(epoch from ts)::double precision, last]) filter (where last is not null))[2] as last,
    metrics.sketch_union(metrics.point_sketch(p)) as sketch
  from metrics.points p where project_id = %(p)s group by 1, 2
), minutes as (
  select count(*) as compared,
    count(*) filter (where r.series_id is null or x.series_id is null) as missing,
    count(*) filter (where r.count <> x.count) as count_diff,
    count(*) filter (where abs(r.sum - x.sum) > 1e-9 * greatest(abs(x.sum), 1)) as sum_diff,
    count(*) filter (where r.min is distinct from x.min or r.max is distinct from x.max) as minmax_diff,
    count(*) filter (where r.last is distinct from x.last) as last_diff,
    count(*) filter (where r.sketch is distinct from x.sketch
      and not (coalesce(r.sketch -> 'p', '{}') = coalesce(x.sketch -> 'p', '{}')
               and coalesce(r.sketch -> 'n', '{}') = coalesce(x.sketch -> 'n', '{}')
               and coalesce((r.sketch ->> 'z')::bigint, 0) = coalesce((x.sketch ->> 'z')::bigint, 0)))
      as sketch_diff
  from raw x full join (select * from metrics.rollup_1m where project_id = %(p)s) r using (series_id, bucket)
), per_series as (
  select series_id, sum(count) as count, sum(sum) as sum, metrics.sketch_union(sketch) as sketch
  from raw group by 1
), totals as (
  select count(*) as compared,
    count(*) filter (where t.series_id is null or x.series_id is null) as missing,
    count(*) filter (where t.count <> x.count) as count_diff,
    count(*) filter (where abs(t.sum - x.sum) > 1e-9 * greatest(abs(x.sum), 1)) as sum_diff,
    count(*) filter (where coalesce(t.sketch -> 'p', '{}') <> coalesce(x.sketch -> 'p', '{}')
      or coalesce(t.sketch -> 'n', '{}') <> coalesce(x.sketch -> 'n', '{}')
      or coalesce((t.sketch ->> 'z')::bigint, 0) <> coalesce((x.sketch ->> 'z')::bigint, 0)) as sketch_diff
  from per_series x full join (
    select t.series_id, t.count, t.sum, metrics.series_total_sketch(t.series_id) as sketch
    from metrics.series_totals_current t where t.project_id = %(p)s
  ) t using (series_id)
)
select jsonb_build_object(
  'rollup_1m', (select to_jsonb(m) from minutes m),
  'series_totals', (select to_jsonb(t) from totals t),
  'raw_points', (select count(*) from metrics.points where project_id = %(p)s),
  'publish_queue_left', (select count(*) from metrics.publish_queue where project_id = %(p)s))
"""


WORKLOADS: dict[str, dict[str, Any]] = {
    # the two workloads for the ratio, and the reference fleet for CPU per point and freshness
    "default": {
        "batches": 20,
        "batch_size": 5000,
        "series": 2000,
        "sources": 4,
        "workers": None,
        "rate": None,
    },
    "realistic": {
        "batches": 200,
        "batch_size": 300,
        "series": 300,
        "sources": 20,
        "workers": None,
        "rate": None,
    },
    "fleet": {"batches": 600, "batch_size": 300, "series": 300, "sources": 20, "workers": 20, "rate": 6000.0},
    # the default workload five times as long: 20 batches are written in ~1 s and the last pass then merges
    # most of them on one backend, so that ratio is a burst's; this one is what the database sustains
    "sustained": {
        "batches": 100,
        "batch_size": 5000,
        "series": 2000,
        "sources": 4,
        "workers": None,
        "rate": None,
    },
}
WORKLOAD_FLAGS = ("batches", "batch_size", "series", "sources", "workers", "rate")


def _describe(workload: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in workload.items() if v is not None)


def workload_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """``args`` with the named workload's values where no flag was given (workers: the CPU count)."""
    out = argparse.Namespace(**vars(args))
    for key, value in WORKLOADS[name].items():
        if getattr(out, key) is None:
            setattr(out, key, value)
    if out.workers is None:
        out.workers = os.cpu_count() or 1
    out.workload = name if not args.custom else "custom"
    out.no_floor = args.no_floor or name != "default"
    return out


def check_rollups(
    conn: psycopg.Connection[Any],
    work: Workload,
    series_ids: dict[tuple[str, str], int],
    probe_points: int,
) -> dict[str, Any]:
    """The rollups against a recomputation from the raw points, the raw points' counts against every count
    sent (the workload's and the probes': nothing lost or stored twice, whichever rows the design stores),
    and the minute rollups against the points as sent (check_as_sent)."""
    row = conn.execute(CHECK_SQL, {"p": work.project}).fetchone()
    assert row is not None
    out = dict(row[0])
    bad = sum(v for part in ("rollup_1m", "series_totals") for k, v in out[part].items() if k != "compared")
    sent = sum(p["count"] for _, _, pts in (work.warmup, *work.batches) for p in pts) + probe_points
    stored = conn.execute(
        "select sum(count) from metrics.points where project_id = %s", (work.project,)
    ).fetchone()
    out["count_sum"] = {"sent": sent, "stored": int(stored[0]) if stored and stored[0] else 0}
    out["as_sent"] = check_as_sent(conn, work, series_ids)
    out["ok"] = (
        bad == 0
        and out["count_sum"]["sent"] == out["count_sum"]["stored"]
        and out["as_sent"]["missing"] == out["as_sent"]["differ"] == 0
    )
    return out


def check_as_sent(
    conn: psycopg.Connection[Any], work: Workload, series_ids: dict[tuple[str, str], int]
) -> dict[str, int]:
    """rollup_1m against the points as the sources sent them (not as a design stored them): count, sum,
    min, max and last per series and minute, recomputed here."""
    want: dict[tuple[int, int], list[Any]] = {}
    for _, _, pts in (work.warmup, *work.batches):
        for sid, p in zip(point_series_ids(pts, series_ids), pts, strict=True):
            row = want.setdefault((sid, int(p["ts"] // 60)), [0, 0.0, math.inf, -math.inf, None])
            row[0] += p["count"]
            row[1] += p["sum"]
            row[2] = min(row[2], p.get("min", math.inf))
            row[3] = max(row[3], p.get("max", -math.inf))
            if p.get("last") is not None:
                row[4] = max(row[4] or (-math.inf, -math.inf), (p["ts"], p["last"]))
    got = {
        (int(sid), int(minute)): (count, total, lo, hi, last)
        for sid, minute, count, total, lo, hi, last in conn.execute(
            "select series_id, floor(extract(epoch from bucket) / 60), count, sum, min, max, last"
            " from metrics.rollup_1m where project_id = %s and series_id = any(%s)",
            (work.project, list(series_ids.values())),
        )
    }
    out = {"compared": len(want), "missing": len(want.keys() ^ got.keys()), "differ": 0}
    for key, (count, total, lo, hi, last) in want.items():
        stored = got.get(key)
        if stored is None:
            continue
        expected = (
            count,
            lo if lo < math.inf else None,
            hi if hi > -math.inf else None,
            last[1] if last else None,
        )
        if (stored[0], *stored[2:]) != expected or abs(stored[1] - total) > 1e-9 * max(abs(total), 1):
            out["differ"] += 1
    return out


# -- background pass loop and freshness probes ------------------------------------------------------
class PassLoop:
    """What pg_cron or `meshhook-metrics maintain --loop` does: a lane's pass (``lane_pass``) on every tick of
    ``interval`` seconds on a long-lived connection and thread per lane of the pass, and again at once while a
    lane's pass reports a backlog (``behind``)."""

    def __init__(self, url: str, interval: float) -> None:
        self.interval = interval
        self.lanes = pass_lanes(url)
        self.conns: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(self.lanes):
                self.conns.append(psycopg.connect(url, autocommit=True))
        except BaseException:
            for conn in self.conns:
                conn.close()
            raise
        self.pids = {int(c.execute("select pg_backend_pid()").fetchone()[0]) for c in self.conns}  # type: ignore[index]
        self.stop = threading.Event()
        # every lane's passes (list.append is atomic): the merge's seconds, points, series folded
        # (metrics.fold_totals); and lane 0's fold and publish's seconds apart, since they include waiting for
        # the other lanes' passes of the tick (up to 2 s each)
        self.passes: list[tuple[float, int, int]] = []
        self.publishes: list[float] = []
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(lane,), daemon=True) for lane in range(self.lanes)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, lane: int) -> None:
        while not self.stop.is_set():
            try:
                result = lane_pass(self.conns[lane], lane)
            except BaseException as exc:
                self.errors.append(exc)
                return
            if "publish_s" in result:
                self.publishes.append(result["publish_s"])
            if "points" in result:
                self.passes.append((result["merge_s"], int(result["points"]), int(result.get("folded") or 0)))
                if result.get("behind"):
                    continue
            self.stop.wait(self.interval - time.time() % self.interval)  # the lanes pass on the same ticks

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for conn in self.conns:
            conn.close()
        if self.errors:
            raise self.errors[0]

    def summary(self) -> dict[str, Any]:
        passes = list(self.passes)
        busy = [took for took, n, _ in passes if n > 0]
        counts = [n for _, n, _ in passes if n > 0]
        return {
            "interval_s": self.interval,
            "lanes": self.lanes,
            "passes_with_points": len(busy),
            "passes_that_folded": sum(1 for _, _, folded in passes if folded > 0),
            "series_folded": sum(folded for _, _, folded in passes),
            "pass_ms_p50": percentile_ms(busy, 0.5),
            "pass_ms_p95": percentile_ms(busy, 0.95),
            "pass_ms_max": percentile_ms(busy, 1.0),
            # lane 0's fold and live messages after its merge, waits for the other lanes included
            "publish_ms_p50": percentile_ms(self.publishes, 0.5),
            "publish_ms_p95": percentile_ms(self.publishes, 0.95),
            "points_per_pass_p50": sorted(counts)[min(len(counts) - 1, len(counts) // 2)] if counts else None,
        }


def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of durations in seconds, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def lane_pass(conn: psycopg.Connection[Any], lane: int) -> dict[str, Any]:
    """A lane's pass as `maintain --loop` runs it: its merge, and after lane 0's the fold and the live messages
    in a transaction of their own (``metrics.fold_and_publish``); ``merge_s`` and ``publish_s`` their seconds."""
    t0 = time.perf_counter()
    row = conn.execute("select metrics.rollup_pass(%s)", (lane,)).fetchone()
    t1 = time.perf_counter()
    result = (dict(row[0]) if row and row[0] else {}) | {"merge_s": t1 - t0}
    if lane == 0:  # waiting for the other lanes' passes of the tick, unless a backlog is left
        after = conn.execute("select metrics.fold_and_publish(%s)", (not result.get("behind"),)).fetchone()
        result |= (dict(after[0]) if after and after[0] else {}) | {"publish_s": time.perf_counter() - t1}
    return result


def pass_lanes(url: str) -> int:
    """The number of lanes the pass runs in (``metrics.rollup_lanes``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select count(*) from metrics.rollup_lanes").fetchone()
    return int(row[0]) if row else 1


LANE_LEFT = """
select count(*) from metrics.points p, metrics.rollup_lanes l
where l.lane = %(lane)s and p.xid >= l.xid_watermark and (%(lanes)s = 1 or p.series_id %% %(lanes)s = l.lane)
"""


def drain(url: str, pids: set[int] | None = None) -> Callable[[], None]:
    """The catch-up after a phase: every lane's pass, on a connection and thread per lane at once as the lanes
    run in the field, until no committed point is left behind its lane's watermark (their backends join
    ``pids``, whose CPU is reported as the pass's)."""

    def lane(k: int, lanes: int, errors: list[BaseException]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                if pids is not None:
                    pids.add(int(conn.execute("select pg_backend_pid()").fetchone()[0]))  # type: ignore[index]
                while True:
                    lane_pass(conn, k)
                    left = conn.execute(LANE_LEFT, {"lane": k, "lanes": lanes}).fetchone()
                    if left and left[0] == 0:
                        return
                    time.sleep(0.005)
        except BaseException as exc:  # surfaced by run()
            errors.append(exc)

    def run() -> None:
        lanes = pass_lanes(url)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=lane, args=(k, lanes, errors), daemon=True) for k in range(lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    return run


class Prober:
    """Freshness: a one-point gauge batch (last = a fresh number) every ``every`` seconds while a phase
    runs; after its ingest commits, polls (every 10 ms) until that value is in its rollup_1m minute (what
    metrics.query reads) and until a live message on the project's topic carries it."""

    def __init__(self, url: str, project: uuid.UUID, every: float) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.project = project
        self.every = every
        self.visible: list[float] = []
        self.published: list[float] = []
        self.timeouts = 0
        self.points = 0
        self.stop = threading.Event()
        self.n = 0
        self.series_id = self._send(time.time())[1]
        self.backend_pid = int(self.conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        self.thread: threading.Thread | None = None

    def _send(self, ts: float) -> tuple[int, int]:
        self.n += 1
        value = self.n
        batch = {
            "project_id": str(self.project),
            "source": "bench-probe",
            "batch_id": f"probe-{uuid.uuid4()}",
            "points": [
                {
                    "name": "bench_probe",
                    "kind": "gauge",
                    "labels": {},
                    "ts": ts,
                    "count": 1,
                    "sum": value,
                    "min": value,
                    "max": value,
                    "last": value,
                }
            ],
        }
        row = self.conn.execute("select metrics.ingest(%s::jsonb)", (json.dumps(batch),)).fetchone()
        assert row and row[0]["status"] == "accepted", row
        self.points += 1
        sid = self.conn.execute(
            "select id from metrics.series where project_id = %s and name = 'bench_probe'", (self.project,)
        ).fetchone()
        return value, int(sid[0])  # type: ignore[index]

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        topic = f"metrics:{self.project}"
        while not self.stop.is_set():
            ts = round(time.time(), 3)
            since = datetime.now(UTC).replace(tzinfo=None)
            value, _ = self._send(ts)
            committed = time.perf_counter()
            seen_at = sent_at = None
            item = json.dumps([{"series_id": self.series_id, "last": value}])
            while (seen_at is None or sent_at is None) and time.perf_counter() - committed < 15:
                row = self.conn.execute(
                    "select (select last from metrics.rollup_1m where series_id = %(s)s"
                    "          and bucket = date_trunc('minute', to_timestamp(%(ts)s))) = %(v)s,"
                    " exists (select from realtime.messages where topic = %(t)s"
                    "          and inserted_at >= %(since)s::timestamp - interval '60 seconds'"
                    "          and payload -> 'series' @> %(item)s::jsonb)",
                    # inserted_at is the publishing transaction's start (now()), which may precede this
                    # probe by seconds when an ingest waits on row locks: the window is wide on purpose
                    {"s": self.series_id, "ts": ts, "v": value, "t": topic, "since": since, "item": item},
                ).fetchone()
                now = time.perf_counter()
                if row and row[0] and seen_at is None:
                    seen_at = now
                if row and row[1] and sent_at is None:
                    sent_at = now
                time.sleep(0.01)
            if seen_at is None or sent_at is None:
                self.timeouts += 1
            if seen_at is not None:
                self.visible.append(seen_at - committed)
            if sent_at is not None:
                self.published.append(sent_at - committed)
            self.stop.wait(self.every)

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.conn.close()

    def summary(self) -> dict[str, Any]:
        pct = percentile_ms
        return {
            "probes": self.n - 1,
            "timeouts": self.timeouts,
            "visible_ms_p50": pct(self.visible, 0.5),
            "visible_ms_p95": pct(self.visible, 0.95),
            "visible_ms_max": pct(self.visible, 1.0),
            "published_ms_p50": pct(self.published, 0.5),
            "published_ms_p95": pct(self.published, 0.95),
            "published_ms_max": pct(self.published, 1.0),
        }


def server_facts(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in SERVER_SETTINGS:
        row = conn.execute("select current_setting(%s, true)", (name,)).fetchone()
        facts[name] = row[0] if row else None
    return facts


def code_version() -> dict[str, Any]:
    """Which migrations were measured: git commit (and whether the tree was dirty) and a hash of the files."""
    digest = hashlib.sha256()
    for migration in migrator.discover():
        digest.update(migration.path.name.encode() + b"\0" + migration.path.read_bytes())
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=RESULTS.parent.parent,
        check=False,
        capture_output=True,
        text=True,
    )
    return {"git": commit.stdout.strip() or None, "migrations_sha256": digest.hexdigest()}


def machine() -> dict[str, Any]:
    import psutil

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


# -- main -------------------------------------------------------------------------------------------
@dataclass
class Workload:
    """Points with ``ts`` relative to the phase start: ``stamped`` makes them absolute just before a design
    runs, so that they fall in the minutes being written (as a live fleet's do), not in minutes long closed."""

    project: uuid.UUID
    warmup: tuple[str, str, list[dict[str, Any]]]  # one point per series: creates every series (cold path)
    batches: list[
        tuple[str, str, list[dict[str, Any]]]
    ]  # (source, batch_id, points); [0] is the COPY warm-up

    def stamped(self, start: float) -> Workload:
        def shift(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**p, "ts": round(start + p["ts"], 3)} for p in points]

        return Workload(
            self.project,
            (*self.warmup[:2], shift(self.warmup[2])),
            [(s, i, shift(pts)) for s, i, pts in self.batches],
        )

    def payloads(self) -> list[tuple[str, int]]:
        """(ingest JSON, points), aligned with batches, serialised before timing."""
        return [
            (
                json.dumps({"project_id": str(self.project), "source": s, "batch_id": i, "points": pts}),
                len(pts),
            )
            for s, i, pts in self.batches
        ]


@dataclass
class DesignOutcome:
    design: Design
    cold_seconds: float
    ingest: Phase
    copy: Phase
    check: dict[str, Any]
    freshness: dict[str, Any]
    loop: dict[str, Any]
    messages: int
    floor: Phase | None = None
    floor_sketch: Phase | None = None
    storage: dict[str, Any] | None = None
    merger: dict[str, Any] | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        help="a named workload (flags below override its values); without it and without workload flags, "
        "all four run in turn, each written to benchmarks/results/ingest-<workload>.json: "
        + "; ".join(f"{k}: {_describe(v)}" for k, v in WORKLOADS.items()),
    )
    parser.add_argument("--batches", type=int, help="timed batches per phase (default workload: 20)")
    parser.add_argument("--batch-size", type=int, help="points per batch (default workload: 5000)")
    parser.add_argument("--series", type=int, help="distinct series (default workload: 2000)")
    parser.add_argument("--sources", type=int, help="sources (workers sending batches; default workload: 4)")
    parser.add_argument(
        "--workers", type=int, help="concurrent database connections in each phase (default: CPU count)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--designs",
        default="B,K",
        help="comma-separated designs to run side by side, each in its own scratch database: "
        + "; ".join(f"{d.name} = {d.description}" for d in DESIGNS.values())
        + " (default B,K: the client's two paths)",
    )
    parser.add_argument(
        "--pass-interval",
        type=float,
        default=1.0,
        help="seconds between rollup passes (1, as maintain --loop and pg_cron's metrics.run_rollup_passes since "
        "migration 20261206002000; 0.5 before)",
    )
    parser.add_argument(
        "--probe-every",
        type=float,
        default=0.2,
        help="seconds between freshness probes during the ingest phase",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="pace the ingest phase at this many points/s (e.g. 6000 = the reference fleet: 20 workers x 300 "
        "series at 1 s flush) to measure DB CPU per point at a given load instead of the maximum throughput",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor and floor+ phases")
    parser.add_argument(
        "--merge-window",
        type=float,
        default=0.5,
        help="design M: the longest a batch waits for others before the merged write (it goes as soon as "
        "every source has one waiting)",
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()
    args.custom = any(getattr(args, k) is not None for k in WORKLOAD_FLAGS)
    args.design_list = [d.strip().upper() for d in args.designs.split(",") if d.strip()]
    unknown = [d for d in args.design_list if d not in DESIGNS]
    if unknown:
        parser.error(f"unknown design(s) {unknown}; known: {sorted(DESIGNS)}")
    return args


def build_workload(settings: Settings, rate: float | None = None) -> Workload:
    """A warm-up batch with one point of every series, plus ``settings.batches`` + 1 batches (the first is
    the COPY warm-up); paced at ``rate`` points/s, batch b is stamped b * batch_size / rate seconds in."""
    say(
        f"building {settings.batches + 1} batches of {settings.batch_size:,} points over {settings.series:,} "
        f"series from {settings.sources} sources"
    )
    rng = random.Random(settings.seed)
    catalogue = series_catalogue(settings.series)
    variants = histogram_variants(rng, 64)
    project = uuid.uuid4()
    every = settings.batch_size / rate if rate else None
    # every series exists before the timed phases (a batch smaller than the catalogue would leave series
    # uncreated, and their COPY rows without an id: the KeyError of issue 14)
    warmup = ("bench-warmup", "series", make_points(catalogue, 0, len(catalogue), rng, variants))
    batches = [
        (
            f"bench-worker-{b % settings.sources}",
            f"batch-{b}",
            make_points(catalogue, b, settings.batch_size, rng, variants, every),
        )
        for b in range(settings.batches + 1)
    ]
    return Workload(project, warmup, batches)


def measure_design(  # noqa: PLR0915 - one design's phases, in order
    cluster: Cluster,
    design: Design,
    settings: Settings,
    work: Workload,
    args: argparse.Namespace,
    tag: str,
    with_floor: bool,
) -> DesignOutcome:
    url = cluster.database_for(design, tag)
    say(f"\n== design {design.name}: {design.description}")
    work = work.stamped(time.time())
    payloads = work.payloads()
    every = max(1, settings.batches // 8)
    with psycopg.connect(url, autocommit=True) as conn:
        if design.setup:  # before any point, so that the design holds from the first one
            conn.execute(design.setup)
        meter = CpuMeter(conn)
        t0 = time.perf_counter()
        s, i, pts = work.warmup
        ingest_job(
            conn,
            (json.dumps({"project_id": str(work.project), "source": s, "batch_id": i, "points": pts}), 0),
        )
        cold = time.perf_counter() - t0
        say(f"first batch (creates {settings.series:,} series, one point each): {1000 * cold:.0f} ms")
        series_ids = {
            (name, json.dumps(labels, sort_keys=True)): sid
            for sid, name, labels in conn.execute(
                "select id, name, labels from metrics.series where project_id = %s", (work.project,)
            )
        }
        create_scratch_tables(conn)
    copies = [(copy_text(work.project, pts, series_ids, s, i), len(pts)) for s, i, pts in work.batches]
    knowns = [
        (
            (known_jsonb_literals if design.known_jsonb else known_literals)(pts, series_ids),
            len(pts),
            str(work.project),
            s,
            i,
        )
        for s, i, pts in work.batches
    ]
    drain(url)()
    loop = PassLoop(url, args.pass_interval)
    prober = Prober(url, work.project, args.probe_every)
    meter.excluded.add(prober.backend_pid)
    floor = floor_sketch = None
    merger = merged = None
    workers = settings.workers
    if design.merged:  # every source has its batch in flight, as each worker process would
        merger = merged_ingest.Merger(url, str(work.project), args.merge_window, settings.sources)
        merged = merged_jobs(merger, work, knowns, series_ids)
        workers = settings.sources
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            copy_job(conn, copies[0])  # warm-up, not timed
            if merged:
                merged[1](conn, merged[0][0])
            elif design.known:
                known_job(conn, knowns[0])
            elif design.trusted_copy:
                copy_batch = validated_copy_job if design.validated else trusted_copy_job
                copy_batch(conn, (copies[0][0], copies[0][1], str(work.project), *work.batches[0][:2]))
            else:
                ingest_job(conn, payloads[0])
        prober.start()
        pass_pids = set(loop.pids)
        finish = drain(url, pass_pids)
        phase, jobs, job, via = timed_ingest(design, work, payloads, copies, knowns, merged)
        say(f"ingest: {settings.batches} batches {via} on {workers} connection(s)")
        ingest = run_phase(
            phase,
            url,
            jobs,
            workers,
            job,
            every,
            meter,
            finish,
            args.rate,
            settings.batch_size,
            pass_pids,
        )
        prober.close()
        if merger:
            merger.close()
        say(
            f"COPY:   {settings.batches} batches into an unindexed, untriggered table on {settings.workers} connection(s)"
        )
        copy = run_phase("copy", url, copies[1:], settings.workers, copy_job, every, meter)
        if with_floor:
            say("floor:  the same COPY plus a per-minute count/sum/min/max upsert in the same transaction")
            floors = [(data, n, s, i) for (data, n), (s, i, _) in zip(copies, work.batches, strict=True)]
            floor = run_phase("floor", url, floors[1:], settings.workers, floor_job, every, meter)
            say("floor+: the floor plus summing the batch's histogram buckets per series, minute and key")
            floors = [(data, n, s, f"{i}+") for data, n, s, i in floors]
            floor_sketch = run_phase(
                "floor+", url, floors[1:], settings.workers, floor_sketch_job, every, meter
            )
    finally:
        prober.close()
        if merger:
            merger.close()
        loop.close()
        meter.close()
        with psycopg.connect(url, autocommit=True) as conn:
            drop_scratch_tables(conn)
    with psycopg.connect(url, autocommit=True) as conn:
        drain(url)()
        conn.execute("select metrics.publish_pending()")
        check = check_rollups(conn, work, series_ids, prober.points)
        counted = conn.execute(
            "select count(*) from realtime.messages where topic = metrics.topic(%s)", (work.project,)
        ).fetchone()
        messages = int(counted[0]) if counted else 0
        storage = storage_per_row(conn)
    return DesignOutcome(
        design,
        cold,
        ingest,
        copy,
        check,
        prober.summary(),
        loop.summary(),
        messages,
        floor,
        floor_sketch,
        storage,
        merger.summary() if merger else None,
    )


def storage_per_row(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Bytes on disk per raw point and per minute rollup row (heap, indexes, TOAST: small runs overstate it by
    their partly filled pages), and the average row size by metric kind (``pg_column_size``, which does not
    depend on the run's size), for docs/capacity.md."""
    row = conn.execute(
        "select (select coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) from pg_inherits i"
        "        where i.inhparent = 'metrics.points'::regclass),"
        " (select count(*) from metrics.points),"
        " pg_total_relation_size('metrics.rollup_1m'), (select count(*) from metrics.rollup_1m)"
    ).fetchone()
    assert row is not None
    points_bytes, points, minute_bytes, minutes = (int(v) for v in row)
    by_kind = {
        f"{table}:{kind}": float(size)
        for table, kind, size in conn.execute(
            "select 'points', f.kind, round(avg(pg_column_size(p.*)), 1) from metrics.points p"
            " join metrics.series s on s.id = p.series_id"
            " join metrics.families f on f.project_id = s.project_id and f.name = s.name group by 2"
            " union all"
            " select 'rollup_1m', f.kind, round(avg(pg_column_size(r.*)), 1) from metrics.rollup_1m r"
            " join metrics.series s on s.id = r.series_id"
            " join metrics.families f on f.project_id = s.project_id and f.name = s.name group by 2"
        )
    }
    return {
        "bytes_per_point": round(points_bytes / points, 1) if points else None,
        "bytes_per_minute_row": round(minute_bytes / minutes, 1) if minutes else None,
        "row_bytes_by_kind": by_kind,
        "points": points,
        "minute_rows": minutes,
    }


def create_scratch_tables(conn: psycopg.Connection[Any]) -> None:
    """The COPY target (like metrics.points, no index) and the floor phase's points and minute rollups."""
    drop_scratch_tables(conn)
    conn.execute(f"create table {COPY_TABLE} as select {POINT_COLUMNS} from metrics.points with no data")
    conn.execute(f"create table {FLOOR_TABLE} as select {POINT_COLUMNS} from metrics.points with no data")
    # the floor reads back its own batch: without an index that read scans every earlier batch (quadratic
    # in the run's length, which made floor/floor+ of small-batch workloads look far too slow)
    conn.execute(f"create index on {FLOOR_TABLE} (source, batch_id)")
    conn.execute(
        f"create table {FLOOR_ROLLUP} (series_id bigint, bucket timestamptz, count bigint not null,"
        " sum double precision not null, min double precision, max double precision,"
        " primary key (series_id, bucket)) with (fillfactor = 70)"
    )


def drop_scratch_tables(conn: psycopg.Connection[Any]) -> None:
    for table in (COPY_TABLE, FLOOR_TABLE, FLOOR_ROLLUP):
        conn.execute(f"drop table if exists {table}")


def us_per_point(phase: Phase | None) -> float | None:
    if phase is None or phase.cpu_seconds is None or not phase.points:
        return None
    return 1e6 * phase.cpu_seconds / phase.points


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workload is None and not args.custom:
        for name, values in WORKLOADS.items():
            say(f"\n==== workload {name}: {_describe(values)}")
            run(workload_args(args, name), argv)
        return 0
    run(workload_args(args, args.workload or "default"), argv)
    return 0


def run(args: argparse.Namespace, argv: list[str] | None) -> None:
    """One workload, every design of ``args``, written to benchmarks/results."""
    settings = Settings(args.batches, args.batch_size, args.series, args.sources, args.workers, args.seed)
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        settings.database = "DATABASE_URL"
        settings.durability = "as configured on that server"
    load_before = os.getloadavg()[0]
    work = build_workload(settings, args.rate)
    tag = uuid.uuid4().hex[:6]
    outcomes: list[DesignOutcome] = []
    with database(env_url) as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            facts = server_facts(conn)
        say(
            f"PostgreSQL {facts['server_version']}: fsync={facts['fsync']} "
            f"synchronous_commit={facts['synchronous_commit']} shared_buffers={facts['shared_buffers']}"
        )
        for k, name in enumerate(args.design_list):
            outcomes.append(
                measure_design(
                    cluster,
                    DESIGNS[name],
                    settings,
                    work,
                    args,
                    tag,
                    with_floor=(k == 0 and not args.no_floor),
                )
            )
    load_after = os.getloadavg()[0]

    say("")
    say(
        f"{'design':<8}{'pts/s':>10}{'xCOPY':>7}{'COPY':>10}{'µs CPU/pt':>11}{'pass µs':>9}{'COPY µs':>9}"
        f"{'fresh p50/p95 ms':>18}{'live p50/p95 ms':>17}  check"
    )
    results = []
    for out in outcomes:
        ratio = out.ingest.rate / out.copy.rate if out.copy.rate else math.nan
        fr = out.freshness
        say(
            f"{out.design.name:<8}{out.ingest.rate:>10,.0f}{ratio:>7.3f}{out.copy.rate:>10,.0f}"
            f"{us_per_point(out.ingest) or math.nan:>11.1f}"
            f"{out.ingest.summary()['pass_loop_cpu_us_per_point'] or math.nan:>9.1f}"
            f"{us_per_point(out.copy) or math.nan:>9.1f}"
            f"{str(fr['visible_ms_p50']) + '/' + str(fr['visible_ms_p95']):>18}"
            f"{str(fr['published_ms_p50']) + '/' + str(fr['published_ms_p95']):>17}  "
            f"{'ok' if out.check['ok'] else 'MISMATCH ' + json.dumps(out.check)}"
        )
        entry: dict[str, Any] = {
            "design": out.design.name,
            "description": out.design.description,
            "first_batch_ms": round(1000 * out.cold_seconds, 1),
            "ingest": out.ingest.summary(),
            "copy": out.copy.summary(),
            "ratio": round(ratio, 4),
            "freshness": out.freshness,
            "pass_loop": out.loop,
            "check": out.check,
            "live_messages": out.messages,
            "storage": out.storage,
        }
        if out.merger:
            entry["merger"] = out.merger
            say(f"  (design {out.design.name}) merger: {json.dumps(out.merger)}")
        if out.floor and out.floor_sketch:
            entry["floor"] = out.floor.summary()
            entry["floor_ratio"] = round(out.floor.rate / out.copy.rate, 4)
            entry["floor_sketch"] = out.floor_sketch.summary()
            entry["floor_sketch_ratio"] = round(out.floor_sketch.rate / out.copy.rate, 4)
            say(
                f"  (design {out.design.name}'s database) floor {out.floor.rate:,.0f} pts/s "
                f"({entry['floor_ratio']:.3f}, {us_per_point(out.floor) or math.nan:.1f} µs/pt), floor+ "
                f"{out.floor_sketch.rate:,.0f} ({entry['floor_sketch_ratio']:.3f}, "
                f"{us_per_point(out.floor_sketch) or math.nan:.1f} µs/pt)"
            )
        results.append(entry)
    say(f"load average (1 min) before/after: {load_before:.2f}/{load_after:.2f} on {os.cpu_count()} CPUs")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / (
        f"ingest-{args.workload}.json" if args.workload != "custom" else f"ingest-custom-{stamp}.json"
    )
    result = {
        "benchmark": "ingest",
        "workload": args.workload,
        "command": " ".join(["python -m benchmarks.ingest", *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "server": facts,
        "settings": asdict(settings),
        "pass_interval_s": args.pass_interval,
        "paced_rate_points_per_second": args.rate,
        "designs": results,
        "load_average_1m": {"before": load_before, "after": load_after},
        "goals": {
            "ratio": 0.25,
            "ratio_north_star": GOAL_RATIO,
            "db_cpu_us_per_point": 17,
            "freshness_p95_ms": 1500,
        },
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
