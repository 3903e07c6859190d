"""Ingest throughput: points/s through ``metrics.ingest`` vs a plain COPY of rows of the same shape.

Both are measured in ONE run on the SAME database, with the same batches and the same number of
concurrent connections, so the ratio does not depend on the machine:

- ingest: ``select metrics.ingest(batch)`` per batch (validation, series look-up, ledger, raw points,
  the statement triggers: minute rollups, cumulative totals and the coalesced live publish);
- COPY: ``COPY ... FROM STDIN`` of the same points as rows with the columns of ``metrics.points``, into a
  plain table without index, trigger, partitioning or row-level security;
- floor: the same COPY plus, in the same transaction, an upsert of the batch into per-minute
  count/sum/min/max rows: the least a design that merges every ingest statement into minute rollups must
  do, without parsing, validation, sketches, totals or publish. Its ratio to COPY bounds the ingest ratio;
- floor+: the floor plus one aggregate summing the batch's histogram sketch buckets per series, minute
  and key (the least per-point sketch work, wherever a design does it).

Payloads are serialised before timing: only the database work and the wire are measured. Each batch is
its own transaction (autocommit) for both. Goal of issue 2: >= 100,000 points/s and >= 0.5 of COPY.

    .venv/bin/python -m benchmarks.ingest                  # throwaway local PostgreSQL, durable settings
    DATABASE_URL=postgresql://postgres:...@host/db .venv/bin/python -m benchmarks.ingest

With DATABASE_URL, the database must carry the migrations and the role must ingest directly (a trusted
role such as ``postgres``); the benchmark writes into a random project and drops its COPY table after.
Without it, a PostgreSQL cluster is created in a temporary directory with the server's DEFAULT durable
settings (fsync and synchronous_commit on; not the tests' fast mode) and destroyed at the end.
JSON results go to benchmarks/results/ingest-<timestamp>.json.
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

from meshhook_rt_metrics.client.sketch import Sketch
from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database
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
    base_ts: float,
    rng: random.Random,
    variants: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One batch: successive flushes of every series (one delta row per series per flush)."""
    points = []
    for k in range(size):
        s = catalogue[(batch_no * size + k) % len(catalogue)]
        flush = (batch_no * size + k) // len(catalogue)
        ts = round(base_ts + (flush % 240), 3)
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


# -- database ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """DATABASE_URL as given, or a throwaway local cluster with durable default settings."""
    if url:
        migrator.migrate(url)
        yield url
        return
    state_dir = Path(tempfile.mkdtemp(prefix="meshhook-bench-ingest-"))
    pg = LocalPostgres(state_dir, port=0, fast=False)
    try:
        say(f"starting a local PostgreSQL in {state_dir} (durable defaults: fsync=on, synchronous_commit=on)")
        pg.init()
        pg.start()
        bootstrap_database(pg)
        migrator.migrate(pg.url())
        yield pg.url()
    finally:
        pg.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)


def run_phase(
    name: str,
    url: str,
    jobs: list[Any],
    workers: int,
    work: Callable[[psycopg.Connection[Any], Any], int],
    every: int,
) -> Phase:
    """Run ``work`` over ``jobs`` on ``workers`` connections (one transaction per job); time the whole phase."""
    phase = Phase(name)
    todo: queue.Queue[Any] = queue.Queue()
    for job in jobs:
        todo.put(job)
    lock = threading.Lock()
    errors: list[BaseException] = []
    connections = [psycopg.connect(url, autocommit=True) for _ in range(workers)]
    start_gate = threading.Barrier(workers + 1)

    def worker(conn: psycopg.Connection[Any]) -> None:
        start_gate.wait()
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
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
                        f"  {name:<6} {phase.batches:>4}/{len(jobs)} batches  {phase.points:>9,} points"
                        f"  {phase.points / so_far:>10,.0f} points/s"
                    )

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
    for t in threads:
        t.start()
    started = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - started
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
    project: uuid.UUID
    batches: list[tuple[str, str, list[dict[str, Any]]]]  # (source, batch_id, points)
    payloads: list[tuple[str, int]]  # (ingest JSON, points)


@dataclass
class Outcome:
    facts: dict[str, Any]
    cold_seconds: float
    ingest: Phase
    copy: Phase
    floor: Phase
    floor_sketch: Phase
    messages: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per phase (default 20)")
    parser.add_argument("--batch-size", type=int, default=5000, help="points per batch (default 5000)")
    parser.add_argument("--series", type=int, default=2000, help="distinct series (default 2000)")
    parser.add_argument("--sources", type=int, default=4, help="sources (workers sending batches; default 4)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="concurrent database connections in each phase (default: CPU count)",
    )
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def build_workload(settings: Settings) -> Workload:
    """One warm-up batch plus ``settings.batches`` timed ones, serialised up front."""
    say(
        f"building {settings.batches + 1} batches of {settings.batch_size:,} points over {settings.series:,} "
        f"series from {settings.sources} sources"
    )
    rng = random.Random(settings.seed)
    catalogue = series_catalogue(settings.series)
    variants = histogram_variants(rng, 64)
    project = uuid.uuid4()
    base_ts = time.time() - 300
    batches = [
        (
            f"bench-worker-{b % settings.sources}",
            f"batch-{b}",
            make_points(catalogue, b, settings.batch_size, base_ts, rng, variants),
        )
        for b in range(settings.batches + 1)
    ]
    payloads = [
        (json.dumps({"project_id": str(project), "source": s, "batch_id": i, "points": pts}), len(pts))
        for s, i, pts in batches
    ]
    return Workload(project, batches, payloads)


def measure(url: str, settings: Settings, work: Workload) -> Outcome:
    """Cold first batch, then the timed ingest, COPY and floor phases over the same points."""
    with psycopg.connect(url, autocommit=True) as conn:
        facts = server_facts(conn)
        say(
            f"PostgreSQL {facts['server_version']}: fsync={facts['fsync']} "
            f"synchronous_commit={facts['synchronous_commit']} shared_buffers={facts['shared_buffers']}"
        )
        # the first batch creates the series (cold path): timed apart, not part of the rate
        t0 = time.perf_counter()
        ingest_job(conn, work.payloads[0])
        cold = time.perf_counter() - t0
        say(f"first batch (creates {settings.series:,} series): {1000 * cold:.0f} ms")
        series_ids = {
            (name, json.dumps(labels, sort_keys=True)): sid
            for sid, name, labels in conn.execute(
                "select id, name, labels from metrics.series where project_id = %s", (work.project,)
            )
        }
        create_scratch_tables(conn)
    copies = [(copy_text(work.project, pts, series_ids, s, i), len(pts)) for s, i, pts in work.batches]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            copy_job(conn, copies[0])  # warm-up, not timed
        every = max(1, settings.batches // 8)
        say(f"ingest: {settings.batches} batches through metrics.ingest on {settings.workers} connection(s)")
        ingest = run_phase("ingest", url, work.payloads[1:], settings.workers, ingest_job, every)
        say(
            f"COPY:   {settings.batches} batches into an unindexed, untriggered table "
            f"on {settings.workers} connection(s)"
        )
        copy = run_phase("copy", url, copies[1:], settings.workers, copy_job, every)
        say(
            "floor:  the same COPY plus a per-minute count/sum/min/max upsert in the same transaction "
            "(what any per-statement rollup design must at least do)"
        )
        floors = [(data, n, s, i) for (data, n), (s, i, _) in zip(copies, work.batches, strict=True)]
        floor = run_phase("floor", url, floors[1:], settings.workers, floor_job, every)
        say("floor+: the floor plus summing the batch's histogram buckets per series, minute and key")
        floors = [(data, n, s, f"{i}+") for data, n, s, i in floors]
        floor_sketch = run_phase("floor+", url, floors[1:], settings.workers, floor_sketch_job, every)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "select (select coalesce(sum(count), 0) from metrics.rollup_1m where project_id = %(p)s),"
                " (select coalesce(sum(count), 0) from metrics.points where project_id = %(p)s),"
                " (select count(*) from realtime.messages where topic = metrics.topic(%(p)s))",
                {"p": work.project},
            ).fetchone()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            drop_scratch_tables(conn)
    assert row is not None
    if int(row[0]) != int(row[1]):
        raise RuntimeError(f"rollups hold {row[0]} events, raw points {row[1]}")
    return Outcome(facts, cold, ingest, copy, floor, floor_sketch, int(row[2]))


def create_scratch_tables(conn: psycopg.Connection[Any]) -> None:
    """The COPY target (like metrics.points, no index) and the floor phase's points and minute rollups."""
    drop_scratch_tables(conn)
    conn.execute(f"create table {COPY_TABLE} (like metrics.points)")
    conn.execute(f"create table {FLOOR_TABLE} (like metrics.points)")
    conn.execute(
        f"create table {FLOOR_ROLLUP} (series_id bigint, bucket timestamptz, count bigint not null,"
        " sum double precision not null, min double precision, max double precision,"
        " primary key (series_id, bucket)) with (fillfactor = 70)"
    )


def drop_scratch_tables(conn: psycopg.Connection[Any]) -> None:
    for table in (COPY_TABLE, FLOOR_TABLE, FLOOR_ROLLUP):
        conn.execute(f"drop table if exists {table}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(args.batches, args.batch_size, args.series, args.sources, args.workers, args.seed)
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        settings.database = "DATABASE_URL"
        settings.durability = "as configured on that server"
    load_before = os.getloadavg()[0]
    work = build_workload(settings)
    with database(env_url) as url:
        out = measure(url, settings, work)
    load_after = os.getloadavg()[0]

    ratio = out.ingest.rate / out.copy.rate if out.copy.rate else math.nan
    floor_ratio = out.floor.rate / out.copy.rate if out.copy.rate else math.nan
    floor_sketch_ratio = out.floor_sketch.rate / out.copy.rate if out.copy.rate else math.nan
    say("")
    say(f"ingest  {out.ingest.rate:>12,.0f} points/s  (goal >= {GOAL_POINTS_PER_SECOND:,})")
    say(f"COPY    {out.copy.rate:>12,.0f} points/s")
    say(f"ratio   {ratio:>12.3f}  (goal >= {GOAL_RATIO})")
    say(
        f"floor   {out.floor.rate:>12,.0f} points/s, ratio {floor_ratio:.3f}: COPY + minute upsert only, "
        "the ceiling of any design that rolls up per statement"
    )
    say(
        f"floor+  {out.floor_sketch.rate:>12,.0f} points/s, ratio {floor_sketch_ratio:.3f}: the floor plus summing "
        "the sketch buckets, the ceiling of any design with mergeable sketches"
    )
    say(f"live messages published during the run: {out.messages}; rollups verified against raw points")
    say(f"load average (1 min) before/after: {load_before:.2f}/{load_after:.2f} on {os.cpu_count()} CPUs")

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ingest-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    result = {
        "benchmark": "ingest",
        "command": " ".join(["python -m benchmarks.ingest", *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "server": out.facts,
        "settings": asdict(settings),
        "first_batch_ms": round(1000 * out.cold_seconds, 1),
        "ingest": out.ingest.summary(),
        "copy": out.copy.summary(),
        "ratio": round(ratio, 4),
        "floor": out.floor.summary(),
        "floor_ratio": round(floor_ratio, 4),
        "floor_sketch": out.floor_sketch.summary(),
        "floor_sketch_ratio": round(floor_sketch_ratio, 4),
        "live_messages": out.messages,
        "load_average_1m": {"before": load_before, "after": load_after},
        "goals": {
            "points_per_second": GOAL_POINTS_PER_SECOND,
            "ratio": GOAL_RATIO,
            "points_per_second_met": out.ingest.rate >= GOAL_POINTS_PER_SECOND,
            "ratio_met": ratio >= GOAL_RATIO,
        },
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
