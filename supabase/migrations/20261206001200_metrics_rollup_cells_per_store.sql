-- Issue #14: the rollup pass's sketch buckets summed with less work. The pass (metrics.rollup_points) summed
-- every bucket of a minute's sketches through one (store, key) aggregation, then built each store's object
-- with jsonb_object_agg and the sketch with a second jsonb_object_agg over the stores. Now each store is
-- aggregated on its own (one level, no store column, no union) and its object is written by json_object_agg
-- and cast to jsonb once. Same rows (rollup_1m, series_totals, publish_queue, late marks compared in a
-- rolled-back transaction on identical data); the merge statement's CPU on 15,000 points of the default
-- benchmark workload 569 -> 483 ms (-15 %), on 3,000 of the realistic one 89 -> 77 ms (-14 %). Nothing else
-- changes: the guarantees are the pass's (tests/db/test_rollup_pass.py, the recomputation property test).

create or replace function metrics.rollup_points(p_from xid8, p_to xid8)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
as $$
declare
  v_points bigint;
  v_minutes bigint;
  -- minutes before it are folded into the totals: this range's points of such minutes (late ones) join them
  -- here; the later, open minutes stay in rollup_1m until metrics.fold_totals()
  v_folded timestamptz := (select s.totals_folded_before from metrics.rollup_pass_state s);
begin
  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch
    from metrics.points p
    where p.xid >= p_from and p.xid < p_to
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum((n.sketch ->> 'z')::bigint)::bigint as zeros,
      count(n.sketch) as sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch,
      count(*) as points
    from new_points n
    group by 1, 2, 3
  ),
  sketch_points as materialized (
    -- the sketches of minutes with more than one (a minute with one keeps it as it is)
    select n.series_id, m.bucket, n.sketch
    from new_points n
    join minutes m on m.series_id = n.series_id and m.bucket = pg_catalog.date_trunc('minute', n.ts)
    where n.sketch is not null and m.sketches > 1
  ),
  -- every bucket of those sketches summed once per series, minute and key, one object per store: one
  -- aggregation level each, the object written as json text and cast to jsonb once (cheaper than
  -- jsonb_object_agg's pair-by-pair jsonb; keys are unique within a group, so the cast keeps every one)
  positive_cells as (
    select c.series_id, c.bucket, pg_catalog.json_object_agg(c.key, c.cnt)::jsonb as cells
    from (
      select s.series_id, s.bucket, t.k as key, sum(t.c::bigint) as cnt
      from sketch_points s cross join lateral pg_catalog.jsonb_each_text(s.sketch -> 'p') as t (k, c)
      group by 1, 2, 3
    ) as c
    group by 1, 2
  ),
  negative_cells as (
    select c.series_id, c.bucket, pg_catalog.json_object_agg(c.key, c.cnt)::jsonb as cells
    from (
      select s.series_id, s.bucket, t.k as key, sum(t.c::bigint) as cnt
      from sketch_points s cross join lateral pg_catalog.jsonb_each_text(s.sketch -> 'n') as t (k, c)
      group by 1, 2, 3
    ) as c
    group by 1, 2
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      case
        when m.sketches = 1 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches > 1 then metrics.sketch_from_cells(m.zeros, pg_catalog.jsonb_build_object(
          'p', coalesce(pc.cells, '{}'::jsonb), 'n', coalesce(nc.cells, '{}'::jsonb)))
      end as sketch
    from minutes m
    left join positive_cells pc on pc.series_id = m.series_id and pc.bucket = m.bucket
    left join negative_cells nc on nc.series_id = m.series_id and nc.bucket = m.bucket
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
  '5-minute marks, set-based: sketch buckets summed once per series, minute, store and key. The caller '
  'guarantees that no range is merged twice (metrics.rollup_pass, metrics.rollup_now).';
