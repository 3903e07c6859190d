-- Sketches as integer arrays (migration 20261206002200): metrics.ingest_known's overload stores them as arrays,
-- the rule refuses bad ones naming the point, a key given twice is one bucket, and the pass merges the arrays
-- and jsonb sketches of one minute into the sketch of both.
begin;
set local client_min_messages = warning;
select plan(9);

select is(metrics.sketch_from_arrays(2, '{-115,3,-115}', '{1,4,2}', '{}', '{}'),
  '{"z": 2, "p": {"-115": 3, "3": 4}, "n": {}}'::jsonb, 'a key given twice is one bucket, its counts added');
select is(metrics.sketch_from_arrays(null, '{1}', '{1}', '{}', '{}'), null, 'no zeros: no sketch');

-- a series, through the RPC: its point keeps its sketch as jsonb
select is(metrics.ingest(jsonb_build_object('project_id', '0d000000-0000-4000-8000-00000000000d', 'source', 'w',
  'batch_id', 'rpc', 'points', jsonb_build_array(jsonb_build_object('name', 'step_seconds', 'kind', 'histogram',
  'ts', extract(epoch from now()), 'count', 2, 'sum', 0.5, 'min', 0.1, 'max', 0.4,
  'sketch', '{"z": 0, "p": {"-115": 1, "-45": 1}}'::jsonb)))) ->> 'status', 'accepted', 'setup: a histogram series');

create temporary table the_series on commit drop as
  select id from metrics.series where project_id = '0d000000-0000-4000-8000-00000000000d';

select is(metrics.ingest_known('0d000000-0000-4000-8000-00000000000d', 'w', 'arrays',
    array[(select id from the_series)], array[extract(epoch from now())::float8], '{3}', '{0.9}', '{0}', '{0.4}',
    '{NULL}', '{1}', array['{-45,-45}'], array['{1,1}'], array['{}'], array['{}']) ->> 'status',
  'accepted', 'a batch with its sketch as arrays');
select is((select metrics.point_sketch(p) from metrics.points p where p.batch_id = 'arrays'),
  '{"z": 1, "p": {"-45": 2}, "n": {}}'::jsonb, 'stored as arrays, read back as the sketch');
select is((select p.sketch from metrics.points p where p.batch_id = 'arrays'), null, 'and not as jsonb');

select throws_ok($$select metrics.ingest_known('0d000000-0000-4000-8000-00000000000d', 'w', 'range',
    array[(select id from the_series)], array[extract(epoch from now())::float8], '{1}', '{1}', '{1}', '{1}',
    '{NULL}', '{0}', array['{35489}'], array['{1}'], array['{}'], array['{}'])$$,
  '22023', 'points[0].sketch: bucket keys must be integers in [-1036, 35488] (no leading zeros) and counts positive integers',
  'a key out of range: the RPC''s error');
select throws_ok($$select metrics.ingest_known('0d000000-0000-4000-8000-00000000000d', 'w', 'shape',
    array[(select id from the_series)], array[extract(epoch from now())::float8], '{1}', '{1}', '{1}', '{1}',
    '{NULL}', '{0}', array['{5,6}'], array['{1}'], array['{}'], array['{}'])$$,
  '22023', 'points[0].sketch: each store''s keys and counts must be one-dimensional arrays of equal length (at most 36525), without nulls',
  'keys without counts: named');

-- the transaction's own points, merged as a pass would merge them: the jsonb and the arrays sketch of one minute
select metrics.rollup_now();
select is((select r.sketch from metrics.rollup_1m r where r.series_id = (select id from the_series)),
  '{"z": 1, "p": {"-115": 1, "-45": 3}, "n": {}}'::jsonb, 'one minute of both forms: the buckets of both');

select * from finish();
rollback;
