-- The SQL sketch: bucket keys and values on known values, merging, counting and quantiles.
begin;
select plan(23);

-- keys: ceil(ln(v) * 49.998333288886556), identical to meshhook_rt_metrics.client.sketch.key
select is(metrics.sketch_key(1), 0, 'key(1) = 0');
select is(metrics.sketch_key(2), 35, 'key(2) = 35');
select is(metrics.sketch_key(10), 116, 'key(10) = 116');
select is(metrics.sketch_key(100), 231, 'key(100) = 231');
select is(metrics.sketch_key(0.5), -34, 'key(0.5) = -34');
select is(metrics.sketch_key(1e-9), -1036, 'key(1e-9) = -1036, the smallest key a valid sketch holds');

select ok(
  (select bool_and(abs(metrics.sketch_value(metrics.sketch_key(v)) - v) <= 0.01 * v)
   from (select 10 ^ (e / 7.0) as v from pg_catalog.generate_series(-60, 60) as e) as t),
  'value(key(v)) is within 1 % of v from 1e-9 to 1e9'
);
select ok(
  abs(metrics.sketch_value(231) - 100.49456770856702) < 1e-9,
  'value(231) = exp(231 / 49.998...) * 2 / (1 + gamma), as the Python client computes it'
);
select lives_ok(
  $$select metrics.sketch_value(metrics.sketch_key(1.7976931348623157e308))$$,
  'the bucket of the largest finite double has a finite representative value'
);
select lives_ok(
  $$select metrics.sketch_quantile(metrics.sketch_from_values(array[1.7e308, 1.79e308]), 1)$$,
  'quantiles work at the top of the double range'
);

-- building, counting and merging
select is(
  metrics.sketch_from_values(array[1, 1, 2, 0, -2]),
  '{"z": 1, "p": {"0": 2, "35": 1}, "n": {"35": 1}}'::jsonb,
  'sketch_from_values: zero, positive and negative buckets'
);
select is(metrics.sketch_count(metrics.sketch_from_values(array[1, 1, 2, 0, -2])), 5::bigint, 'sketch_count counts every bucket');
select is(metrics.sketch_count('{}'::jsonb), 0::bigint, 'an empty sketch counts 0');
select is(
  metrics.sketch_merge('{"z": 1, "p": {"0": 2}, "n": {}}', '{"z": 2, "p": {"0": 1, "35": 4}, "n": {"1": 1}}'),
  '{"z": 3, "p": {"0": 3, "35": 4}, "n": {"1": 1}}'::jsonb,
  'sketch_merge adds bucket counts key by key'
);
select is(metrics.sketch_merge(null, '{"z": 1, "p": {}, "n": {}}'), '{"z": 1, "p": {}, "n": {}}'::jsonb, 'null is the empty sketch');
select is(
  (select metrics.sketch_union(s) from (values
     (metrics.sketch_from_values(array[1, 2])), (null), (metrics.sketch_from_values(array[2, 0]))) as t (s)),
  metrics.sketch_from_values(array[1, 2, 2, 0]),
  'sketch_union of parts equals the sketch of all values'
);

-- quantiles (rank q * (n - 1), as DDSketch)
select ok(
  abs(metrics.sketch_quantile(metrics.sketch_from_values(array(select pg_catalog.generate_series(1, 100)::double precision)), 0.5) / 50 - 1) <= 0.01,
  'p50 of 1..100 is within 1 % of 50'
);
select ok(
  abs(metrics.sketch_quantile(metrics.sketch_from_values(array(select pg_catalog.generate_series(1, 100)::double precision)), 0.99) / 99 - 1) <= 0.01,
  'p99 of 1..100 is within 1 % of 99'
);
select is(
  metrics.sketch_quantile(metrics.sketch_from_values(array(select pg_catalog.generate_series(1, 100)::double precision)), 1, 1, 100),
  100::double precision,
  'p100 is clamped to the known max'
);
select is(
  metrics.sketch_quantile(metrics.sketch_from_values(array[-5, 0, 0, 5]), 0.5), 0::double precision,
  'zeros: p50 of {-5, 0, 0, 5} is 0'
);
select ok(
  abs(metrics.sketch_quantile(metrics.sketch_from_values(array[-5, 0, 0, 5]), 0) / -5 - 1) <= 0.01,
  'negative values: p0 of {-5, 0, 0, 5} is -5 within 1 %'
);
select is(metrics.sketch_quantile('{"z": 0, "p": {}, "n": {}}', 0.5), null, 'an empty sketch has no quantile');
select is(metrics.sketch_quantile(metrics.sketch_from_values(array[1]), 1.5), null, 'q outside [0, 1] gives null');

select * from finish();
rollback;
