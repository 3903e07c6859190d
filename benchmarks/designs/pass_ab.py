"""Like-for-like cost of one rollup pass: metrics.rollup_pass() vs metrics.rollup_pass_lean() on the SAME
committed points, each call in a transaction that is rolled back, interleaved, CPU of the backend measured
with psutil (so the machine's other load does not count). Also checks that both write the same rollups.

    .venv/bin/python -m benchmarks.designs.pass_ab [--batches 20] [--batch-size 300] [--series 300] [--repeat 8]

The default is one second of the reference fleet (20 workers x 300 series, one flush each = 6,000 points).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import psutil
import psycopg

from benchmarks import ingest as bench

DIGEST = (
    "select md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s', series_id, bucket, count, round(sum::numeric, 6), min, max,"
    " sketch::text), ',' order by series_id, bucket)) from metrics.rollup_1m"
)


def timed(conn: psycopg.Connection[Any], proc: psutil.Process, fn: str) -> tuple[float, float, str]:
    conn.execute("begin")
    if fn.endswith("+nopublish"):  # the rate limit holds the live message back: the pass without publish
        fn = fn.removesuffix("+nopublish")
        conn.execute("update metrics.publish_state set last_sent_at = now() + interval '1 hour'")
    before = proc.cpu_times()
    t0 = time.perf_counter()
    row = conn.execute(f"select metrics.{fn}()").fetchone()
    wall = time.perf_counter() - t0
    after = proc.cpu_times()
    digest = conn.execute(DIGEST).fetchone()
    conn.execute("rollback")
    assert row and row[0].get("points"), row
    cpu = (after.user + after.system) - (before.user + before.system)
    return cpu, wall, str(digest[0] if digest else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=300)
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    settings = bench.Settings(args.batches, args.batch_size, args.series, 20, 1, 7)
    work = bench.build_workload(settings)
    design = bench.Design("B2", "B + lean pass", ("b_append_only.sql", "b2_pass_lean.sql"), deferred=True)
    with bench.database(None) as cluster:
        url = cluster.database_for(design, "ab")
        with psycopg.connect(url, autocommit=True) as conn:
            s, i, pts = work.warmup
            conn.execute(
                "select metrics.ingest(%s::jsonb)",
                (json.dumps({"project_id": str(work.project), "source": s, "batch_id": i, "points": pts}),),
            )
            # a few passes' worth already rolled up, so stored sketches have realistic sizes
            for payload, _ in work.payloads[: len(work.payloads) // 2]:
                bench.ingest_job(conn, (payload, 0))
            conn.execute("select metrics.rollup_pass()")
            points = 0
            for payload, n in work.payloads[len(work.payloads) // 2 :]:
                bench.ingest_job(conn, (payload, 0))
                points += n
            time.sleep(0.2)
            proc = psutil.Process(int(conn.execute("select pg_backend_pid()").fetchone()[0]))  # type: ignore[index]
            names = ("rollup_pass", "rollup_pass_lean", "rollup_pass+nopublish")
            results: dict[str, list[float]] = {name: [] for name in names}
            digests: dict[str, set[str]] = {name: set() for name in names}
            for _ in range(args.repeat):
                for fn in names:
                    cpu, _wall, digest = timed(conn, proc, fn)
                    results[fn].append(cpu)
                    digests[fn].add(digest)
        for fn, cpus in results.items():
            med = statistics.median(cpus)
            print(
                f"{fn:<18} {points} points: CPU median {1000 * med:.0f} ms = {1e6 * med / points:.1f} µs/point"
                f"  (min {1000 * min(cpus):.0f}, max {1000 * max(cpus):.0f} ms)"
            )
        same = digests["rollup_pass"] == digests["rollup_pass_lean"] and len(digests["rollup_pass"]) == 1
        print(f"same rollups from both: {same}")


if __name__ == "__main__":
    main()
