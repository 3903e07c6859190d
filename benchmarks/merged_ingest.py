"""Design M of ``benchmarks.ingest``, a prototype (not shipped): a service in front of the database merges
the deltas of many sources before it writes them.

Every SQL-only design pays per raw point to sum its sketch buckets in the rollup pass (docs/architecture.md,
"the bound, for every SQL-only design"); a fleet of workers that report the same series sends each series
once per worker and flush. M writes one row per series and minute for all the sources of a window instead:

1. each source's batch is checked by the database with ingest's rules (``metrics.check_ingest_rows``, one
   read-only statement on the source's own connection: nothing stored yet);
2. it is handed to one merger, which waits up to ``window`` seconds (or until every source has a batch
   waiting) and then, in ONE transaction, opens every batch in the ledger (``metrics.open_batch``:
   duplicates are skipped, exactly once) and inserts the merged rows of the batches opened;
3. each source is answered after that commit, so nothing is acknowledged before it is durable.

The merged rows carry the same counts, sums, min/max, last value (latest time, ties to the larger value, as
``metrics.later_last``) and summed sketch buckets as the points they replace, so the minute rollups are the
same; the raw points table holds one row per series, minute and window instead of one per source.

The prototype's SQL (schema ``bench_m``) exists only in the design's scratch database. What it would take to
ship: an HTTP endpoint with the Data API's authentication, a sink for it, its own crash tests, and splitting a
merged row whose count passes ``metrics.max_point_count()``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import psycopg

from meshhook_rt_metrics.client.known_series import array_literals

SETUP_SQL = """
create schema bench_m;

create function bench_m.check_known(
  p_project_id uuid, p_series_ids bigint[], p_ts double precision[], p_count bigint[], p_sum double precision[],
  p_min double precision[], p_max double precision[], p_last double precision[], p_zeros bigint[],
  p_pos_keys text[], p_pos_counts text[], p_neg_keys text[], p_neg_counts text[]
)
returns void
language plpgsql stable set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_rows metrics.ingest_row[];
  v_sketches metrics.sketch_arrays[];
  v_stray integer;
begin
  select * into strict v_cfg from metrics.config;
  -- the rows as metrics.ingest_known builds them, sketches as arrays beside them (prototype: its select,
  -- without the ledger and the insert)
  select pg_catalog.array_agg(row(
      u.i - 1, s.name, f.kind, s.labels,
      case when abs(u.ts) < 'infinity' then pg_catalog.to_timestamp(least(greatest(u.ts, -1e11), 1e11)) end,
      u.count, u.sum, u.min, u.max, u.last, null, null, null, true, u.series_id
    )::metrics.ingest_row order by u.i),
    pg_catalog.array_agg(row(
      u.zeros, u.pos_keys::integer[], u.pos_counts::integer[], u.neg_keys::integer[], u.neg_counts::integer[]
    )::metrics.sketch_arrays order by u.i),
    min(u.i) filter (where s.id is null)
  into v_rows, v_sketches, v_stray
  from rows from (
    pg_catalog.unnest(p_series_ids), pg_catalog.unnest(p_ts), pg_catalog.unnest(p_count), pg_catalog.unnest(p_sum),
    pg_catalog.unnest(p_min), pg_catalog.unnest(p_max), pg_catalog.unnest(p_last), pg_catalog.unnest(p_zeros),
    pg_catalog.unnest(p_pos_keys), pg_catalog.unnest(p_pos_counts), pg_catalog.unnest(p_neg_keys),
    pg_catalog.unnest(p_neg_counts)
  ) with ordinality as u (series_id, ts, count, sum, min, max, last, zeros, pos_keys, pos_counts, neg_keys, neg_counts, i)
  left join metrics.series s on s.id = u.series_id and s.project_id = p_project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;
  if v_stray is not null then
    perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray - 1), 'not a series of the project');
  end if;
  perform metrics.check_ingest_rows(v_rows, null, v_cfg, v_sketches);
end
$$;

create function bench_m.open_batches(p_project_id uuid, p_sources text[], p_batch_ids text[], p_points integer[])
returns boolean[]
language plpgsql volatile set search_path = ''
as $$
declare
  v_cfg metrics.config;
begin
  select * into strict v_cfg from metrics.config;
  return (
    select pg_catalog.array_agg(metrics.open_batch(p_project_id, u.source, u.batch_id, u.points, v_cfg) order by u.i)
    from rows from (pg_catalog.unnest(p_sources), pg_catalog.unnest(p_batch_ids), pg_catalog.unnest(p_points))
      with ordinality as u (source, batch_id, points, i)
  );
end
$$;

create function bench_m.insert_merged(
  p_project_id uuid, p_source text, p_batch_id text, p_series_ids bigint[], p_ts double precision[],
  p_count bigint[], p_sum double precision[], p_min double precision[], p_max double precision[],
  p_last double precision[], p_zeros bigint[], p_pos_keys text[], p_pos_counts text[], p_neg_keys text[],
  p_neg_counts text[]
)
returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_day date;
begin
  for v_day in select distinct (pg_catalog.to_timestamp(t) at time zone 'UTC')::date from pg_catalog.unnest(p_ts) t loop
    perform metrics.ensure_points_partition(v_day);
  end loop;
  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last,
    sketch_zeros, sketch_pos_keys, sketch_pos_counts, sketch_neg_keys, sketch_neg_counts)
  select p_project_id, u.series_id, pg_catalog.to_timestamp(u.ts), p_source, p_batch_id, u.count, u.sum, u.min,
    u.max, u.last, u.zeros, u.pos_keys::integer[], u.pos_counts::integer[], u.neg_keys::integer[],
    u.neg_counts::integer[]
  from rows from (
    pg_catalog.unnest(p_series_ids), pg_catalog.unnest(p_ts), pg_catalog.unnest(p_count), pg_catalog.unnest(p_sum),
    pg_catalog.unnest(p_min), pg_catalog.unnest(p_max), pg_catalog.unnest(p_last), pg_catalog.unnest(p_zeros),
    pg_catalog.unnest(p_pos_keys), pg_catalog.unnest(p_pos_counts), pg_catalog.unnest(p_neg_keys),
    pg_catalog.unnest(p_neg_counts)
  ) as u (series_id, ts, count, sum, min, max, last, zeros, pos_keys, pos_counts, neg_keys, neg_counts);
end
$$;
"""

CHECK = "select bench_m.check_known(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
OPEN = "select bench_m.open_batches(%s, %s, %s, %s)"
INSERT = "select bench_m.insert_merged(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


@dataclass
class Batch:
    """A source's batch as the merger receives it (already checked)."""

    source: str
    batch_id: str
    points: list[dict[str, Any]]
    series_ids: list[int]
    arrived: float = field(default_factory=time.perf_counter)
    done: Future[bool] = field(default_factory=Future)


def merge(batches: list[Batch]) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per series and minute: counts and sums added, min/max, the last value of the latest time
    (ties to the larger value), sketch buckets summed per store and key."""
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for batch in batches:
        for sid, p in zip(batch.series_ids, batch.points, strict=True):
            key = (sid, int(p["ts"] // 60))
            row = rows.get(key)
            if row is None:
                rows[key] = _fresh(p)
            else:
                _add(row, p)
    ids = [sid for sid, _ in rows]
    return [_finished(r) for r in rows.values()], ids


def _fresh(p: dict[str, Any]) -> dict[str, Any]:
    row = {k: p.get(k) for k in ("ts", "count", "sum", "min", "max", "last")}
    row["last_ts"] = p["ts"]  # the time of the point that gave ``last`` (the rollup's last_ts)
    sketch = p.get("sketch")
    if sketch is not None:
        row["z"] = sketch.get("z", 0)
        row["p"] = Counter(sketch.get("p", {}))
        row["n"] = Counter(sketch.get("n", {}))
    return row


def _add(row: dict[str, Any], p: dict[str, Any]) -> None:
    row["count"] += p["count"]
    row["sum"] += p["sum"]
    for name, pick in (("min", min), ("max", max)):
        if p.get(name) is not None:
            row[name] = p[name] if row[name] is None else pick(row[name], p[name])
    if p.get("last") is not None and (
        row["last"] is None or (p["ts"], p["last"]) > (row["last_ts"], row["last"])
    ):
        row["last"], row["last_ts"] = p["last"], p["ts"]
    row["ts"] = max(row["ts"], p["ts"])
    sketch = p.get("sketch")
    if sketch is not None:
        row["z"] += sketch.get("z", 0)
        row["p"].update(sketch.get("p", {}))
        row["n"].update(sketch.get("n", {}))


def _finished(row: dict[str, Any]) -> dict[str, Any]:
    # one time per row: the last value's, so that the rollup's last_ts is that point's (same minute either way)
    last_ts = row.pop("last_ts")
    if row["last"] is not None:
        row["ts"] = last_ts
    if "p" not in row:
        return row
    zeros, positive, negative = row.pop("z"), row.pop("p"), row.pop("n")
    row["sketch"] = {"z": zeros, "p": dict(positive), "n": dict(negative)}  # the client's wire form
    return row


class Merger:
    """The service's writer: one connection, windows of batches merged into one transaction each."""

    def __init__(self, url: str, project: str, window: float, sources: int) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.project = project
        self.window = window
        self.sources = sources
        self.todo: queue.Queue[Batch] = queue.Queue()
        self.stop = threading.Event()
        self.cpu_seconds = 0.0
        self.points_in = 0
        self.rows_out = 0
        self.writes = 0
        self.waits: list[float] = []
        self.backend_pid = int(self.conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def submit(self, conn: psycopg.Connection[Any], batch: Batch, literals: tuple[str, ...]) -> int:
        """A source's call: its batch checked on its own connection, then merged; returns once durable."""
        conn.execute(CHECK, (self.project, *literals))
        batch.arrived = time.perf_counter()
        self.todo.put(batch)
        return len(batch.points) if batch.done.result() else 0

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                first = self.todo.get(timeout=0.05)
            except queue.Empty:
                continue
            window = [first]
            while (
                len(window) < self.sources and (left := first.arrived + self.window - time.perf_counter()) > 0
            ):
                try:
                    window.append(self.todo.get(timeout=left))
                except queue.Empty:
                    break
            try:
                self._write(window)
            except BaseException as exc:  # every source of the window hears of it
                for batch in window:
                    batch.done.set_exception(exc)

    def _write(self, window: list[Batch]) -> None:
        cpu = time.thread_time()
        with self.conn.transaction():
            opened = self.conn.execute(
                OPEN,
                (
                    self.project,
                    [b.source for b in window],
                    [b.batch_id for b in window],
                    [len(b.points) for b in window],
                ),
            ).fetchone()[0]  # type: ignore[index]
            fresh = [b for b, ok in zip(window, opened, strict=True) if ok]
            rows, ids = merge(fresh)
            literals = array_literals(rows, ids)
            assert literals is not None
            self.cpu_seconds += time.thread_time() - cpu
            if rows:
                self.conn.execute(INSERT, (self.project, "merger", f"merge-{self.writes}", *literals))
        now = time.perf_counter()
        self.writes += 1
        self.points_in += sum(len(b.points) for b in fresh)
        self.rows_out += len(rows)
        for batch, ok in zip(window, opened, strict=True):
            self.waits.append(now - batch.arrived)
            batch.done.set_result(ok)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()

    def summary(self) -> dict[str, Any]:
        waits = sorted(self.waits)

        def pct(q: float) -> float | None:
            return round(1000 * waits[min(len(waits) - 1, int(q * len(waits)))], 1) if waits else None

        return {
            "window_s": self.window,
            "writes": self.writes,
            "points_in": self.points_in,
            "rows_out": self.rows_out,
            "merge_factor": round(self.points_in / self.rows_out, 2) if self.rows_out else None,
            "merger_cpu_us_per_point": round(1e6 * self.cpu_seconds / self.points_in, 2)
            if self.points_in
            else None,
            "wait_ms_p50": pct(0.5),
            "wait_ms_p95": pct(0.95),
        }
