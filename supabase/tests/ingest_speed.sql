-- The faster ingest path (migration 20261127000100): histogram buckets checked by casts still reject every
-- malformed sketch with the detailed error, one statement feeds rollups and totals alike, and quantiles
-- answered in one pass equal the ones asked for one by one.
begin;
set local client_min_messages = warning;
select plan(17);

create function pg_temp.hist(p_sketch jsonb, p_count integer default 2) returns text language sql as $$
  select format('select metrics.ingest(%L::jsonb)', jsonb_build_object(
    'project_id', '0b000000-0000-4000-8000-00000000000b', 'source', 's', 'batch_id', 'bad',
    'points', jsonb_build_array(
      jsonb_build_object('name', 'ok_total', 'kind', 'counter', 'ts', extract(epoch from now()), 'count', 1, 'sum', 1),
      jsonb_build_object('name', 'h', 'kind', 'histogram', 'ts', extract(epoch from now()), 'count', p_count,
        'sum', 2, 'min', 1, 'max', 1, 'sketch', p_sketch))))
$$;

-- bucket keys and counts no pattern is run on in the fast path: each gets the detailed error
select throws_ok(pg_temp.hist(t.sketch::jsonb), '22023',
  'points[1].sketch: bucket keys must be integers in [-1036, 35488] (no leading zeros) and counts positive integers',
  t.what)
from (values
  ('{"p": {"007": 2}}', 'a key with leading zeros is rejected'),
  ('{"p": {"-0": 2}}', 'the key -0 is rejected'),
  ('{"p": {"123456789012": 2}}', 'a key beyond integer range is rejected'),
  ('{"p": {"1": "2"}}', 'a count given as a string is rejected'),
  ('{"p": {"1": 2, "2": null}}', 'a null count is rejected'),
  ('{"p": {"1": [2]}}', 'a count in an array is rejected'),
  ('{"p": {"1": 1.5, "2": 0.5}}', 'fractional counts are rejected'),
  ('{"p": {"1": 3, "2": -1}}', 'negative counts are rejected'),
  ('{"p": {"1": 99999999999999999999}}', 'counts beyond bigint are rejected')
) as t (sketch, what);
select throws_ok(pg_temp.hist('{"z": 1, "n": {"4": 2}}', 2), '22023',
  'points[1].sketch: bucket counts must add up to the point''s count', 'zeros and negative buckets are counted');
select is((select count(*) from metrics.points where project_id = '0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'nothing of a rejected batch is stored');

-- one statement, two minutes of one histogram and a counter: rollups and totals from one rollup pass
select is(metrics.ingest(jsonb_build_object(
  'project_id', '0b000000-0000-4000-8000-00000000000b', 'source', 's', 'batch_id', 'two-minutes',
  'points', jsonb_build_array(
    jsonb_build_object('name', 'h', 'kind', 'histogram', 'ts', extract(epoch from date_trunc('minute', now()) - interval '90 seconds'),
      'count', 3, 'sum', 6, 'min', 1, 'max', 3, 'sketch', metrics.sketch_from_values(array[1, 2, 3])),
    jsonb_build_object('name', 'h', 'kind', 'histogram', 'ts', extract(epoch from date_trunc('minute', now()) - interval '80 seconds'),
      'count', 2, 'sum', -5, 'min', -5, 'max', 0, 'sketch', metrics.sketch_from_values(array[-5, 0])),
    jsonb_build_object('name', 'h', 'kind', 'histogram', 'ts', extract(epoch from date_trunc('minute', now()) - interval '20 seconds'),
      'count', 2, 'sum', 4, 'min', 2, 'max', 2, 'sketch', metrics.sketch_from_values(array[2, 2])),
    jsonb_build_object('name', 'c_total', 'kind', 'counter', 'ts', extract(epoch from now()) - 70, 'count', 1, 'sum', 4),
    jsonb_build_object('name', 'c_total', 'kind', 'counter', 'ts', extract(epoch from now()) - 10, 'count', 1, 'sum', 5)
  ))) ->> 'status', 'accepted', 'a batch spanning two minutes is accepted');
select metrics.rollup_now();
-- (on failure below: the fold watermark and what the rollup tables hold)
select diag(format('fold watermark %s, now %s, minutes %s, totals %s', s.totals_folded_before, now(),
  (select jsonb_agg(jsonb_build_object('bucket', r.bucket, 'count', r.count)) from metrics.rollup_1m r
   where r.project_id = '0b000000-0000-4000-8000-00000000000b'),
  (select count(*) from metrics.series_totals t where t.project_id = '0b000000-0000-4000-8000-00000000000b')))
from metrics.rollup_pass_state s
where not exists (select from metrics.series_totals_current c where c.project_id = '0b000000-0000-4000-8000-00000000000b');
select is(
  (select array_agg(r.count order by r.bucket) from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
   where s.project_id = '0b000000-0000-4000-8000-00000000000b' and s.name = 'h'),
  array[5, 2]::bigint[], 'minute rollups count each minute''s values');
select is(
  (select r.sketch from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
   where s.project_id = '0b000000-0000-4000-8000-00000000000b' and s.name = 'h' order by r.bucket limit 1),
  metrics.sketch_from_values(array[1, 2, 3, -5, 0]), 'a minute''s sketch is the sketch of all its values');
select is(
  (select metrics.series_total_sketch(t.series_id) from metrics.series_totals_current t join metrics.series s on s.id = t.series_id
   where s.project_id = '0b000000-0000-4000-8000-00000000000b' and s.name = 'h'),
  metrics.sketch_from_values(array[1, 2, 3, -5, 0, 2, 2]), 'the totals'' sketch holds every minute''s values');
select is(
  (select (t.count, t.sum) from metrics.series_totals_current t join metrics.series s on s.id = t.series_id
   where s.project_id = '0b000000-0000-4000-8000-00000000000b' and s.name = 'c_total'),
  (2::bigint, 9::double precision), 'counter totals add up across minutes');

-- quantiles: one pass answers them in any order, as asked one by one
select is(
  metrics.sketch_quantiles(metrics.sketch_from_values(array[-8, -3, 0, 0, 1, 2, 4, 8, 16, 32]), '{0.99, 2, 0.5, 0, -1, 1, 0.1}'),
  array(select metrics.sketch_quantile(metrics.sketch_from_values(array[-8, -3, 0, 0, 1, 2, 4, 8, 16, 32]), q)
        from unnest('{0.99, 2, 0.5, 0, -1, 1, 0.1}'::double precision[]) with ordinality as u (q, i) order by i),
  'quantiles asked together equal quantiles asked one by one, in the order asked');

select * from finish();
rollback;
