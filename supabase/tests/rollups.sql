-- Rollups: after many batches from several sources (resends and a direct multi-row insert included), every
-- minute rollup equals the aggregate of its raw points, and every hour rollup that of its closed minutes.
begin;
set local client_min_messages = warning;
select plan(8);

create function pg_temp.ts(p_source integer, p_batch integer) returns table (ts timestamptz) language sql stable as $$
  select date_trunc('hour', now()) - interval '2 hours' + make_interval(mins => 1 + p_batch % 3) + make_interval(secs => p_batch % 2)
$$;

-- batch p_batch of source p_source: 2 counters, 2 gauges (equal timestamps across sources: ties), 1 histogram,
-- spread over 3 minutes of a closed hour (two hours back), integer values so that sums are exact
create function pg_temp.batch(p_source integer, p_batch integer) returns jsonb language sql stable as $$
  select jsonb_build_object('project_id', '0a000000-0000-4000-8000-00000000000a', 'source', 's' || p_source,
    'batch_id', 'b' || p_batch, 'points', jsonb_agg(p))
  from (
    select jsonb_build_object('name', 'meshhook_workflow_runs_completed_total', 'kind', 'counter',
      'labels', jsonb_build_object('status', i::text), 'ts', extract(epoch from t.ts), 'count', p_batch, 'sum', p_batch * p_source) as p
    from pg_temp.ts(p_source, p_batch) t, generate_series(1, 2) i
    union all
    select jsonb_build_object('name', 'meshhook_queue_messages', 'kind', 'gauge', 'labels', jsonb_build_object('queue', i::text),
      'ts', extract(epoch from t.ts), 'count', 1, 'sum', v, 'min', v, 'max', v, 'last', v)
    from pg_temp.ts(p_source, p_batch) t, generate_series(1, 2) i, lateral (select (p_source * 3 + p_batch + i) % 5 as v) as g
    union all
    select jsonb_build_object('name', 'meshhook_workflow_step_duration_seconds', 'kind', 'histogram',
      'ts', extract(epoch from t.ts), 'count', 3, 'sum', 2 * (p_source + p_batch),
      'min', least(p_source, p_batch), 'max', p_source + p_batch,
      'sketch', metrics.sketch_from_values(array[p_source, p_batch, p_source + p_batch]::double precision[]))
    from pg_temp.ts(p_source, p_batch) t
  ) as points
$$;
-- rollups recomputed from raw points / closed minutes, in the trigger's rules (last: latest ts, ties to the larger)
create view pg_temp.minutes_from_points as
  select series_id, date_trunc('minute', ts) as bucket, sum(count)::bigint as count, sum(sum) as sum,
    min(min) as min, max(max) as max,
    (array_agg(last order by ts desc, last desc) filter (where last is not null))[1] as last,
    metrics.sketch_union(sketch) as sketch
  from metrics.points group by 1, 2;
create view pg_temp.hours_from_minutes as
  select series_id, date_trunc('hour', bucket) as bucket, sum(count)::bigint as count, sum(sum) as sum,
    min(min) as min, max(max) as max,
    (array_agg(last order by last_ts desc, last desc) filter (where last_ts is not null))[1] as last,
    metrics.sketch_union(sketch) as sketch
  from metrics.rollup_1m where bucket < date_trunc('minute', now()) group by 1, 2;

select is(
  (select count(*) from generate_series(1, 4) b, generate_series(1, 3) s, pg_temp.batch(s, b) as batch
   where metrics.ingest(batch) ->> 'status' = 'accepted'),
  12::bigint, 'setup: 12 batches from 3 sources accepted');
select is(
  (select count(*) from generate_series(1, 4) b, pg_temp.batch(1, b) as batch
   where metrics.ingest(batch) ->> 'status' = 'duplicate'),
  4::bigint, 'setup: 4 resends ignored');
-- a trusted direct insert of several rows is merged by the same pass
insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last)
select s.project_id, s.id, date_trunc('hour', now()) - interval '2 hours' + interval '2 minutes' + make_interval(secs => g), 'direct', 'd1',
  1, g, g, g, g
from metrics.series s, generate_series(1, 3) g where s.name = 'meshhook_queue_messages';
select metrics.rollup_now();

select results_eq(
  $$select series_id, bucket, count, sum, min, max, last, sketch from metrics.rollup_1m order by 1, 2$$,
  $$select series_id, bucket, count, sum, min, max, last, sketch from pg_temp.minutes_from_points order by 1, 2$$,
  'every minute rollup equals the aggregate of its raw points'
);
select is((select sum(count) from metrics.rollup_1m), (select sum(count) from metrics.points),
  'no event is lost or counted twice');

select cmp_ok(metrics.rollup_hours(), '>', 0, 'setup: hourly rollups');
select results_eq(
  $$select series_id, bucket, count, sum, min, max, last, sketch from metrics.rollup_1h order by 1, 2$$,
  $$select series_id, bucket, count, sum, min, max, last, sketch from pg_temp.hours_from_minutes order by 1, 2$$,
  'every hour rollup equals the aggregate of its closed minutes'
);
select lives_ok('select metrics.rollup_hours()', 'the hourly rollup runs again');
select results_eq(
  $$select series_id, bucket, count, sum, min, max, last, sketch from metrics.rollup_1h order by 1, 2$$,
  $$select series_id, bucket, count, sum, min, max, last, sketch from pg_temp.hours_from_minutes order by 1, 2$$,
  're-running the hourly rollup changes nothing'
);

select * from finish();
rollback;
