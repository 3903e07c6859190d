-- Issue #14: the rollup pass's merge keeps its plan when the statistics are older than its points, and streams
-- its sketch buckets.
--
-- 1. A pass merges the newest points, whose transaction ids lie beyond the statistics ANALYZE last took of the
--    points table: the planner then estimates the pass's range at a row or two. With such estimates it joined
--    the minutes to the sketch points with a nested loop (sketch points x minutes), which grows with the square
--    of a pass's points. Found in benchmarks.ingest, whose later designs' passes took 7-10 s once autovacuum had
--    analyzed their points mid-run; reproduced on the default workload's burst (statistics taken after its first
--    10,000 points, the next 90,000 merged in one pass): 7.6-10.0 s before, 1.1-1.6 s now. The merge now runs
--    with hash joins only (enable_nestloop and enable_mergejoin off for the function: every join in it is an
--    equi-join, so a hash join is always possible) and without JIT: compiling this statement took ~2 s when its
--    estimated cost passed jit_above_cost (a lateral join, which only a nested loop can run, carried the cost
--    that disabling nested loops adds), and large true estimates would pass it as well.
-- 2. Every bucket of every sketch point became a row through ROWS FROM (unnest(keys), unnest(counts)) in FROM, a
--    Function Scan that copies each call's rows into a tuplestore before returning the first; the same calls in
--    the select list run as a ProjectSet, which streams (the burst's 1.28 million bucket rows: 830-880 ms before,
--    250-415 ms now). The jsonb sketches of earlier producers are unnested in the select list too: their
--    lateral join could only run as a nested loop (jsonb_each_text still fills a tuplestore per call).
-- Measured on that burst, the same points in cloned databases, interleaved, statistics as they come (none for
-- the new points): 1.11-1.27 s a merge against 1.43-1.62 s before. Rollups identical (an md5 over every minute
-- row), in both cases.

create or replace function metrics.rollup_points(p_from xid8, p_to xid8)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
  -- hash joins only, whatever the estimates (see this migration's head); no JIT, whose compiling of this
  -- statement took longer than running it
  set enable_nestloop = off set enable_mergejoin = off set jit = off
as $$
declare
  v_points bigint;
  v_minutes bigint;
  -- minutes before it are folded into the totals: this range's points of such minutes (late ones) join them
  -- here; the later, open minutes stay in rollup_1m until metrics.fold_totals()
  v_folded timestamptz := (select s.totals_folded_before from metrics.rollup_pass_state s);
begin
  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch,
      p.sketch_zeros, p.sketch_pos_keys, p.sketch_pos_counts, p.sketch_neg_keys, p.sketch_neg_counts
    from metrics.points p
    where p.xid >= p_from and p.xid < p_to
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum(coalesce((n.sketch ->> 'z')::bigint, n.sketch_zeros))::bigint as zeros,
      count(n.sketch) + count(n.sketch_zeros) as sketches,
      count(n.sketch_zeros) as array_sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch,
      count(*) as points,
      pg_catalog.row_number() over () as minute_no  -- the cells' key below
    from new_points n
    group by 1, 2, 3
  ),
  sketch_points as materialized (
    -- the sketches to sum: every one of a minute with more than one or with one as arrays (a minute with a
    -- single jsonb sketch keeps it as it is)
    select m.minute_no, n.sketch, n.sketch_pos_keys, n.sketch_pos_counts, n.sketch_neg_keys,
      n.sketch_neg_counts
    from new_points n
    join minutes m on m.series_id = n.series_id and m.bucket = pg_catalog.date_trunc('minute', n.ts)
    where (n.sketch is not null or n.sketch_zeros is not null) and (m.sketches > 1 or m.array_sketches > 0)
  ),
  -- every bucket of those sketches summed once per series, minute and key, one object per store: one
  -- aggregation level each, whichever form a point's sketch has, grouped by the minute's number and the key (a
  -- tenth cheaper than by series, minute and key; not packed into one bigint, whose hash folds its two halves
  -- together: (minute << 32) + key collided so often that rollup_points took 60 % longer), the object written as json text and cast to jsonb once (cheaper than jsonb_object_agg's
  -- pair-by-pair jsonb; keys are unique within a group, so the cast keeps every one)
  positive_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        -- set-returning functions in the select list (a ProjectSet), not in FROM: no lateral join, which only
        -- a nested loop can run, and unnest streams where a Function Scan copies each call's rows into a
        -- tuplestore first; equal-length arrays are zipped by position, a null sketch or array gives no row
        select x.minute_no, (x.b).key::integer, (x.b).value::bigint
        from (select s.minute_no, pg_catalog.jsonb_each_text(s.sketch -> 'p') as b from sketch_points s) as x
        union all
        select s.minute_no, pg_catalog.unnest(s.sketch_pos_keys), pg_catalog.unnest(s.sketch_pos_counts)
        from sketch_points s
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  negative_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        -- set-returning functions in the select list (a ProjectSet), not in FROM: no lateral join, which only
        -- a nested loop can run, and unnest streams where a Function Scan copies each call's rows into a
        -- tuplestore first; equal-length arrays are zipped by position, a null sketch or array gives no row
        select x.minute_no, (x.b).key::integer, (x.b).value::bigint
        from (select s.minute_no, pg_catalog.jsonb_each_text(s.sketch -> 'n') as b from sketch_points s) as x
        union all
        select s.minute_no, pg_catalog.unnest(s.sketch_neg_keys), pg_catalog.unnest(s.sketch_neg_counts)
        from sketch_points s
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      case
        when m.sketches = 1 and m.array_sketches = 0 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches >= 1 then metrics.sketch_from_cells(m.zeros, pg_catalog.jsonb_build_object(
          'p', coalesce(pc.cells, '{}'::jsonb), 'n', coalesce(nc.cells, '{}'::jsonb)))
      end as sketch
    from minutes m
    left join positive_cells pc on pc.minute_no = m.minute_no
    left join negative_cells nc on nc.minute_no = m.minute_no
  ),
  rolled as (
    insert into metrics.rollup_1m as r (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
    from minute_rows m
    order by m.series_id, m.bucket
    on conflict (series_id, bucket) do update set
      count = r.count + excluded.count,
      sum = r.sum + excluded.sum,
      min = least(r.min, excluded.min),
      max = greatest(r.max, excluded.max),
      last = metrics.later_last(r.last, r.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(r.last_ts, excluded.last_ts),
      sketch = metrics.sketch_merge(r.sketch, excluded.sketch),
      updated_at = now()
    returning 1
  ),
  totals as (
    insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
    select m.series_id, m.project_id, sum(m.count), sum(m.sum),
      (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2],
      max(m.last_ts),
      metrics.sketch_union(m.sketch)
    from minute_rows m
    where m.bucket < v_folded
    group by m.series_id, m.project_id
    order by m.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sketch = case when excluded.sketch is null then t.sketch else metrics.sketch_merge(t.sketch, excluded.sketch) end,
      updated_at = now()
    returning 1
  ),
  queued as (
    -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
    -- (matters for metrics.rollup_now(), whose transaction may stay open after this statement)
    insert into metrics.publish_queue as q (project_id, series_id, bucket)
    select m.project_id, m.series_id, m.bucket from minute_rows m
    order by 2, 3
    on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket
    returning 1
  ),
  late_hours as (
    insert into metrics.late_hours (series_id, hour)
    select distinct m.series_id, pg_catalog.date_trunc('hour', m.bucket)
    from minute_rows m
    where m.bucket < (select ms.hour_watermark from metrics.maintenance_state ms)
    on conflict do nothing
    returning 1
  ),
  late_five_minutes as (
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct m.series_id, metrics.five_minute_window(m.bucket)
    from minute_rows m
    where m.bucket < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing
    returning 1
  )
  -- (data-modifying CTEs run to completion whether or not the outer query reads them)
  select coalesce(sum(m.points), 0), count(*) into v_points, v_minutes from minute_rows m;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes);
end
$$;

comment on function metrics.rollup_points(xid8, xid8) is
  'Merges the raw points of the transactions p_from <= xid < p_to into the minute rollups, the totals (only '
  'the points of minutes already folded: metrics.fold_totals), the publish queue and the late hour / '
  '5-minute marks, set-based: sketch buckets summed once per series, minute, store and key, from sketches '
  'stored as jsonb or as arrays (migration 20261206002200); hash joins only and buckets unnested in the select '
  'list, whatever the statistics say of the range (migration 20261207000100). The caller guarantees that no '
  'range is merged twice (metrics.rollup_pass, metrics.rollup_now).';
