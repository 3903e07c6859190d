"""Design B vs design D: the cost of one rollup pass on IDENTICAL committed points, and D's correctness.

Two scratch databases (B = b_append_only.sql, D = B + d_int_sketch.sql) get the same batches: the warm-up,
the first half of the batches, one pass (so stored minute and total sketches have realistic sizes), then
the second half, left for the timed pass. Each timed call runs in a transaction that is rolled back, B and D
interleaved, CPU of each database's backend measured with psutil (the machine's other load does not count).
Also timed in D: the steps of its pass alone (to say where its CPU goes), and the same in B.

Checks: after a real (committed) pass in both, rollup_1m and series_totals must be equal (D's read through
its jsonb views) and sketch_quantiles over D's arrays must equal sketch_quantiles over B's jsonb for every
minute and total, at many quantiles, clamped and unclamped.

    .venv/bin/python -m benchmarks.designs.pass_bd [--batches 20] [--batch-size 300] [--series 300] [--repeat 8]

The default timed pass is one second of the reference fleet (20 workers x 300 series, one flush each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks import ingest as bench

DIGEST_1M = (
    "select md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s', series_id, bucket, count, round(sum::numeric, 6), min, max,"
    " sketch::text), ',' order by series_id, bucket)) from metrics.rollup_1m"
)
DIGEST_TOT = (
    "select md5(string_agg(format('%s|%s|%s|%s', series_id, count, round(sum::numeric, 6), sketch::text), ','"
    " order by series_id)) from metrics.series_totals"
)
QS = "{0,0.001,0.01,0.1,0.25,0.5,0.75,0.9,0.95,0.99,0.999,1}"
QUANTILES_B = {
    "1m": f"select series_id, bucket::text, metrics.sketch_quantiles(sketch, '{QS}', min, max)::text,"
    f" metrics.sketch_quantiles(sketch, '{QS}')::text from metrics.rollup_1m where sketch is not null order by 1, 2",
    "totals": f"select series_id, '', metrics.sketch_quantiles(sketch, '{QS}')::text,"
    f" metrics.sketch_quantiles(sketch, '{QS}', 0.001, 5)::text from metrics.series_totals where sketch is not null order by 1",
}
QUANTILES_D = {
    "1m": f"select series_id, bucket::text, metrics.sketch_quantiles(sk_keys, sk_counts, '{QS}', min, max)::text,"
    f" metrics.sketch_quantiles(sk_keys, sk_counts, '{QS}')::text from metrics.rollup_1m_store"
    " where sk_keys is not null order by 1, 2",
    "totals": f"select series_id, '', metrics.sketch_quantiles(sk_keys, sk_counts, '{QS}')::text,"
    f" metrics.sketch_quantiles(sk_keys, sk_counts, '{QS}', 0.001, 5)::text from metrics.series_totals_store"
    " where sk_keys is not null order by 1",
}

# steps of a pass, each timed alone on the pass's range [W, T) (filled in as literals, as the pass's
# PL/pgSQL variables are): cumulative, so each step's cost is the difference to the one before
NP = "with np as materialized (select p.* from metrics.points p where p.xid >= '{w}'::xid8 and p.xid < '{t}'::xid8)"
CELLS = (
    ", cells as materialized (select np.series_id, date_trunc('minute', np.ts) as bucket, b.k, sum(b.c)::bigint as c"
    " from np cross join lateral (select -200000 - t.k::integer as k, t.c::bigint as c from"
    " jsonb_each_text(np.sketch -> 'n') as t (k, c) union all select -100000, (np.sketch ->> 'z')::bigint"
    " where (np.sketch ->> 'z')::bigint > 0 union all select t.k::integer, t.c::bigint from"
    " jsonb_each_text(np.sketch -> 'p') as t (k, c)) b where np.sketch is not null group by 1, 2, 3)"
)
MINUTE_SK = (
    ", msk as materialized (select x.series_id, x.bucket, array_agg(x.k order by x.k) as keys, array_agg(x.c order by x.k)"
    " as counts from (select a.series_id, a.bucket, a.k, sum(a.c)::bigint as c from (select c.series_id, c.bucket, c.k,"
    " c.c from cells c union all select r.series_id, r.bucket, u.k, u.c from (select distinct c.series_id, c.bucket"
    " from cells c) as t join metrics.rollup_1m_store r on r.series_id = t.series_id and r.bucket = t.bucket"
    " cross join lateral unnest(r.sk_keys, r.sk_counts) as u (k, c)) as a group by 1, 2, 3) as x group by 1, 2)"
)
TOTAL_SK = (
    ", tsk as materialized (select x.series_id, array_agg(x.k order by x.k) as keys, array_agg(x.c order by x.k) as counts"
    " from (select a.series_id, a.k, sum(a.c)::bigint as c from (select c.series_id, c.k, c.c from cells c union all"
    " select t.series_id, u.k, u.c from (select distinct c.series_id from cells c) as s join metrics.series_totals_store t"
    " on t.series_id = s.series_id cross join lateral unnest(t.sk_keys, t.sk_counts) as u (k, c)) as a group by 1, 2)"
    " as x group by 1)"
)
MINUTES = (
    ", minutes as materialized (select series_id, date_trunc('minute', ts), sum(count), sum(sum), min(min), max(max),"
    " (max(array[extract(epoch from ts)::double precision, last]) filter (where last is not null))[2],"
    " max(ts) filter (where last is not null) from np group by 1, 2)"
)
# the same merges with one sort of the (series, minute, key) sums instead of an ordered aggregate per group
MINUTE_SK_SORTED = (
    ", msk as materialized (select x.series_id, x.bucket, array_agg(x.k) as keys, array_agg(x.c) as counts"
    " from (select a.series_id, a.bucket, a.k, sum(a.c)::bigint as c from (select c.series_id, c.bucket, c.k,"
    " c.c from cells c union all select r.series_id, r.bucket, u.k, u.c from (select distinct c.series_id, c.bucket"
    " from cells c) as t join metrics.rollup_1m_store r on r.series_id = t.series_id and r.bucket = t.bucket"
    " cross join lateral unnest(r.sk_keys, r.sk_counts) as u (k, c)) as a group by 1, 2, 3 order by 1, 2, 3) as x"
    " group by 1, 2)"
)
TOTAL_SK_SORTED = (
    ", tsk as materialized (select x.series_id, array_agg(x.k) as keys, array_agg(x.c) as counts"
    " from (select a.series_id, a.k, sum(a.c)::bigint as c from (select c.series_id, c.k, c.c from cells c union all"
    " select t.series_id, u.k, u.c from (select distinct c.series_id from cells c) as s join metrics.series_totals_store t"
    " on t.series_id = s.series_id cross join lateral unnest(t.sk_keys, t.sk_counts) as u (k, c)) as a group by 1, 2"
    " order by 1, 2) as x group by 1)"
)
STEPS_B = {
    "1 scan points (xid index)": NP + " select count(*) from np",
    "2 + minute aggregates": NP
    + MINUTES
    + " select (select count(*) from np), (select count(*) from minutes)",
    "3 + expand buckets, sum per (series, minute, key)": NP
    + MINUTES
    + CELLS
    + " select (select count(*) from minutes), (select count(*) from cells)",
}
STEPS_D = dict(STEPS_B)
STEPS_D.update(
    {
        "4 + stored minute arrays merged (unnest, group, array_agg)": NP
        + MINUTES
        + CELLS
        + MINUTE_SK
        + " select (select count(*) from minutes), (select count(*) from msk)",
        "5 + stored total arrays merged": NP
        + MINUTES
        + CELLS
        + MINUTE_SK
        + TOTAL_SK
        + " select (select count(*) from minutes), (select count(*) from msk), (select count(*) from tsk)",
        "4s + stored minute arrays merged, sorted once": NP
        + MINUTES
        + CELLS
        + MINUTE_SK_SORTED
        + " select (select count(*) from minutes), (select count(*) from msk)",
        "5s + stored total arrays merged, sorted once": NP
        + MINUTES
        + CELLS
        + MINUTE_SK_SORTED
        + TOTAL_SK_SORTED
        + " select (select count(*) from minutes), (select count(*) from msk), (select count(*) from tsk)",
    }
)


def cpu_of(proc: psutil.Process) -> float:
    # /proc/<pid>/schedstat: time on CPU in ns (psutil's cpu_times tick at 10 ms, too coarse for one pass)
    with open(f"/proc/{proc.pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def timed(conn: psycopg.Connection[Any], proc: psutil.Process, sql: str, nopublish: bool = False) -> float:
    conn.execute("begin")
    if nopublish:  # the rate limit holds the live message back: the pass without publish
        conn.execute("update metrics.publish_state set last_sent_at = now() + interval '1 hour'")
    before = cpu_of(proc)
    conn.execute(sql).fetchall()
    cpu = cpu_of(proc) - before
    conn.execute("rollback")
    return cpu


def prepare(url: str, work: bench.Workload) -> tuple[psycopg.Connection[Any], psutil.Process, int]:
    conn = psycopg.connect(url, autocommit=True)
    s, i, pts = work.warmup
    conn.execute(
        "select metrics.ingest(%s::jsonb)",
        (json.dumps({"project_id": str(work.project), "source": s, "batch_id": i, "points": pts}),),
    )
    for payload, _ in work.payloads[: len(work.payloads) // 2]:
        bench.ingest_job(conn, (payload, 0))
    conn.execute("select metrics.rollup_pass()")
    points = 0
    for payload, n in work.payloads[len(work.payloads) // 2 :]:
        bench.ingest_job(conn, (payload, 0))
        points += n
    proc = psutil.Process(int(conn.execute("select pg_backend_pid()").fetchone()[0]))  # type: ignore[index]
    return conn, proc, points


# -- the ingest RPC, step by step ------------------------------------------------------------------------------
MIGRATION = (
    Path(__file__).resolve().parents[2] / "supabase/migrations/20261127000100_metrics_ingest_speed.sql"
)
MARK_FN = """
create or replace function metrics._d_mark(p_label text) returns void language sql volatile as $m$
  select set_config('d.marks', coalesce(current_setting('d.marks', true), '') || p_label || '='
    || split_part(pg_read_file('/proc/self/schedstat'), ' ', 1) || ','
    || (extract(epoch from clock_timestamp()) * 1e6)::bigint || ';', false)
$m$"""
# (anchor in metrics.ingest, label of the segment that ends there)
ANCHORS = [
    ("  select * into strict v_cfg from metrics.config;\n\n  -- envelope", "start"),
    ("  -- exactly once: a resent batch", "envelope + tenant check"),
    ("  -- parse into typed rows", "ledger (batches row)"),
    (
        "  if exists (\n    select from pg_catalog.unnest(v_rows) p\n    where not p.shape_ok",
        "parse points into rows",
    ),
    ("  -- every histogram's buckets in one pass", "validate points"),
    (
        "  select * into v_conflict from metrics.kind_conflict(v_project, v_rows);\n  if found then\n    perform metrics.reject(pg_catalog.format('points[%s].kind', v_conflict.idx),\n      pg_catalog.format('metric %s is a %s, not a %s', v_conflict.name, v_conflict.expected, v_conflict.kind));\n  end if;\n\n  -- series",
        "validate sketch buckets",
    ),
    ("  -- series: resolve", "kind conflict check"),
    ("  -- store: partitions exist", "series look-up"),
    ("  return pg_catalog.jsonb_build_object(\n    'status', 'accepted'", "insert raw points (+ xid index)"),
]


def probed_ingest_sql() -> str:
    text = MIGRATION.read_text()
    body = text[text.index("create or replace function metrics.ingest(batch jsonb)") :]
    body = body[: body.index("\n$$;\n") + 5]
    body = body.replace("function metrics.ingest(batch jsonb)", "function metrics.ingest_probed(batch jsonb)")
    for anchor, label in ANCHORS:
        assert body.count(anchor) == 1, anchor
        body = body.replace(anchor, f"  perform metrics._d_mark('{label}');\n{anchor}")
    return body


def ingest_breakdown(
    conn: psycopg.Connection[Any],
    proc: psutil.Process,
    work: bench.Workload,
    other: tuple[psycopg.Connection[Any], psutil.Process],
) -> None:
    conn.execute(MARK_FN)
    conn.execute(probed_ingest_sql().encode())
    payloads = work.payloads[1:]
    totals: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    n_points = 0
    for k, (original, n) in enumerate(payloads):
        n_points += n
        batch = json.loads(original)
        batch["batch_id"] = f"breakdown-{k}"  # new to the ledger (every call is rolled back anyway)
        payload = json.dumps(batch)
        # the argument's JSON text -> jsonb (what the RPC's parameter cast costs), alone
        before = cpu_of(proc)
        conn.execute("select jsonb_typeof(%s::jsonb)", (payload,)).fetchone()
        conn.execute("select 1").fetchone()
        base = cpu_of(proc)
        conn.execute("select 1").fetchone()
        trivial = cpu_of(proc) - base
        totals.setdefault("JSON text -> jsonb (+ a round trip)", []).append(base - before - trivial)
        for fn in ("ingest", "ingest_probed"):
            conn.execute("begin")
            conn.execute("select set_config('d.marks', '', false)")
            before = cpu_of(proc)
            row = conn.execute(f"select metrics.{fn}(%s::jsonb)", (payload,)).fetchone()
            cpu = cpu_of(proc) - before
            marks = conn.execute("select current_setting('d.marks')").fetchone()[0]  # type: ignore[index]
            conn.execute("rollback")
            assert row and row[0]["status"] == "accepted", row
            if fn == "ingest":  # the same batch through D2's ingest (buckets also gathered into arrays)
                o_conn, o_proc = other
                o_conn.execute("begin")
                o_before = cpu_of(o_proc)
                o_row = o_conn.execute("select metrics.ingest(%s::jsonb)", (payload,)).fetchone()
                totals.setdefault("D2: metrics.ingest() whole call (rolled back, no commit)", []).append(
                    cpu_of(o_proc) - o_before
                )
                o_conn.execute("rollback")
                assert o_row and o_row[0]["status"] == "accepted", o_row
            totals.setdefault(f"metrics.{fn}() whole call (rolled back, no commit)", []).append(cpu)
            if fn == "ingest_probed":
                prev = None
                for item in marks.strip(";").split(";"):
                    label, ns_us = item.split("=")
                    ns, us = (int(x) for x in ns_us.split(","))
                    if prev is not None:
                        totals.setdefault(f"  {label}", []).append((ns - prev[0]) / 1e9)
                        walls.setdefault(f"  {label}", []).append((us - prev[1]) / 1e6)
                    prev = (ns, us)
    print(
        f"\ningest RPC on {len(payloads)} batches of {n_points // len(payloads)} points (D database; CPU of its backend):"
    )
    print(
        "  (steps inside the function: CPU read from /proc/self/schedstat, which the kernel updates at ticks and"
        " context switches, so a sample; and wall time from clock_timestamp())"
    )
    for label, cpus in totals.items():
        wall = f"   wall {1e6 * sum(walls[label]) / n_points:6.2f}" if label in walls else ""
        print(f"{label:<62} {1e6 * sum(cpus) / n_points:6.2f} µs/point{wall}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=300)
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    settings = bench.Settings(args.batches, args.batch_size, args.series, 20, 1, 7)
    work = bench.build_workload(settings)
    with bench.database(None) as cluster:
        conns = {}
        for name in ("B", "D", "D2"):
            conns[name] = prepare(cluster.database_for(bench.DESIGNS[name], "bd"), work)
        points = conns["B"][2]
        assert points == conns["D"][2] == conns["D2"][2]
        row = (
            conns["B"][0]
            .execute(
                "select count(*) from metrics.points p, metrics.rollup_pass_state s,"
                " lateral (select jsonb_object_keys(p.sketch -> 'p') union all select jsonb_object_keys(p.sketch -> 'n')) k"
                " where p.xid >= s.xid_watermark and p.sketch is not null"
            )
            .fetchone()
        )
        assert row is not None
        buckets = int(row[0])
        time.sleep(0.2)
        names = ("B", "D", "D2")
        cases = [(f"{n} rollup_pass", n, "select metrics.rollup_pass()", False) for n in names] + [
            (f"{n} rollup_pass (no publish)", n, "select metrics.rollup_pass()", True) for n in names
        ]
        range_sql = "select s.xid_watermark::text, pg_snapshot_xmin(pg_current_snapshot())::text from metrics.rollup_pass_state s"
        rng = conns["B"][0].execute(range_sql).fetchone()
        rng_d = conns["D"][0].execute(range_sql).fetchone()
        assert rng is not None and rng_d is not None
        cases += [(f"B step {k}", "B", sql.format(w=rng[0], t=rng[1]), False) for k, sql in STEPS_B.items()]
        cases += [
            (f"D step {k}", "D", sql.format(w=rng_d[0], t=rng_d[1]), False) for k, sql in STEPS_D.items()
        ]
        results: dict[str, list[float]] = {c[0]: [] for c in cases}
        for _ in range(args.repeat):
            for label, name, sql, nopub in cases:
                conn, proc, _ = conns[name]
                results[label].append(timed(conn, proc, sql, nopub))
        print(f"\ntimed pass: {points} points, {buckets} sketch buckets ({buckets / points:.1f} per point)")
        for label, cpus in results.items():
            med = statistics.median(cpus)
            print(
                f"{label:<62} CPU median {1000 * med:6.1f} ms = {1e6 * med / points:5.1f} µs/point"
                f"  (min {1e6 * min(cpus) / points:5.1f}, max {1e6 * max(cpus) / points:5.1f})"
            )
        # correctness: a real pass in both, then compare
        out: dict[str, Any] = {}
        for name in names:
            conn = conns[name][0]
            conn.execute("select metrics.rollup_pass()")
            out[name] = {
                "1m": conn.execute(DIGEST_1M).fetchone()[0],  # type: ignore[index]
                "totals": conn.execute(DIGEST_TOT).fetchone()[0],  # type: ignore[index]
                "q": {
                    k: conn.execute((QUANTILES_B if name == "B" else QUANTILES_D)[k]).fetchall()
                    for k in ("1m", "totals")
                },
                "check": bench.check_rollups(conn, work.project),
            }
        d_self = (
            conns["D"][0]
            .execute(
                f"select count(*), count(*) filter (where metrics.sketch_quantiles(sk_keys, sk_counts, '{QS}', min, max)"
                f" is distinct from metrics.sketch_quantiles(metrics.isketch_jsonb(sk_keys, sk_counts), '{QS}', min, max))"
                " from metrics.rollup_1m_store where sk_keys is not null"
            )
            .fetchone()
        )
        for d in ("D", "D2"):
            print(
                f"{d} vs B: rollup_1m digest equal: {out['B']['1m'] == out[d]['1m']}; series_totals digest equal:"
                f" {out['B']['totals'] == out[d]['totals']}"
            )
            for k in ("1m", "totals"):
                qb, qd = out["B"]["q"][k], out[d]["q"][k]
                print(
                    f"  quantiles {k}: {len(qb)} sketches x 12 q x (clamped, unclamped): equal = {qb == qd}"
                )
        print(f"D arrays vs D's own jsonb view, rollup_1m quantiles: {d_self[0]} rows, {d_self[1]} differ")  # type: ignore[index]
        print(
            "CHECK_SQL (rollups vs raw recomputation): "
            + ", ".join(f"{n} ok={out[n]['check']['ok']}" for n in names)
        )
        # the probes read /proc/self/schedstat of the backend (benchmark cluster only: granted by its superuser)
        role = conns["D"][0].execute("select current_user").fetchone()[0]  # type: ignore[index]
        assert cluster.pg is not None
        dbname = conns["D"][0].execute("select current_database()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(cluster.pg.admin_url(database=dbname), autocommit=True) as admin:
            admin.execute(f'grant pg_read_server_files to "{role}"')
            admin.execute(f'grant execute on function pg_read_file(text) to "{role}"')
        ingest_breakdown(conns["D"][0], conns["D"][1], work, (conns["D2"][0], conns["D2"][1]))
        for conn, _, _ in conns.values():
            conn.close()


if __name__ == "__main__":
    main()
