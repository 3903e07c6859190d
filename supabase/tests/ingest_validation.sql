-- Ingest validation: a bad batch is rejected whole with SQLSTATE 22023 naming the point and field, and
-- nothing of it is stored.
begin;
set local client_min_messages = warning;
select plan(44);

-- one valid counter point, overridden field by field
create function pg_temp.pt(p_override jsonb) returns jsonb language sql as $$
  select jsonb_build_object('name', 'm', 'kind', 'counter', 'ts', extract(epoch from now()), 'count', 1, 'sum', 1)
    || p_override
$$;
-- a batch of the given points, as text for throws_ok
create function pg_temp.b(variadic p_points jsonb[]) returns text language sql as $$
  select format('select metrics.ingest(%L::jsonb)', jsonb_build_object(
    'project_id', '0a000000-0000-4000-8000-00000000000a', 'source', 's', 'batch_id', 'bad',
    'points', to_jsonb(p_points)))
$$;
create function pg_temp.envelope(p_batch jsonb) returns text language sql as $$
  select format('select metrics.ingest(%L::jsonb)', p_batch)
$$;

-- the envelope
select throws_ok(pg_temp.envelope('[]'), '22023', 'batch: must be a JSON object', 'batch must be an object');
select throws_ok(
  pg_temp.envelope('{"project_id": "0a000000-0000-4000-8000-00000000000a", "source": "s", "batch_id": "x", "points": [], "extra": 1}'),
  '22023', 'batch.extra: unknown field', 'unknown batch fields are rejected');
select throws_ok(pg_temp.envelope('{"project_id": "nope", "source": "s", "batch_id": "x", "points": [{}]}'),
  '22023', 'batch.project_id: required uuid', 'project_id must be a uuid');
select throws_ok(
  pg_temp.envelope('{"project_id": "0a000000-0000-4000-8000-00000000000a", "source": "", "batch_id": "x", "points": [{}]}'),
  '22023', 'batch.source: required string of 1 to 200 characters', 'source must not be empty');
select throws_ok(
  pg_temp.envelope('{"project_id": "0a000000-0000-4000-8000-00000000000a", "source": "s", "batch_id": 5, "points": [{}]}'),
  '22023', 'batch.batch_id: required string of 1 to 100 characters', 'batch_id must be a string');
select throws_ok(
  pg_temp.envelope('{"project_id": "0a000000-0000-4000-8000-00000000000a", "source": "s", "batch_id": "x", "points": {}}'),
  '22023', 'batch.points: required array', 'points must be an array');
select throws_ok(
  pg_temp.envelope('{"project_id": "0a000000-0000-4000-8000-00000000000a", "source": "s", "batch_id": "x", "points": []}'),
  '22023', 'batch.points: must not be empty', 'points must not be empty');
update metrics.config set max_points_per_batch = 2;
select throws_ok(pg_temp.b(pg_temp.pt('{}'), pg_temp.pt('{}'), pg_temp.pt('{}')),
  '22023', 'batch.points: 3 points, more than the limit of 2', 'the points-per-batch limit holds');
update metrics.config set max_points_per_batch = default;

-- names and kinds
select throws_ok(pg_temp.b('5'), '22023', 'points[0]: must be an object', 'a point must be an object');
select throws_ok(pg_temp.b(pg_temp.pt('{"value": 1}')), '22023', 'points[0].value: unknown field', 'unknown point fields are rejected');
select throws_ok(pg_temp.b(pg_temp.pt('{"name": "1bad"}')), '22023',
  'points[0].name: invalid metric name ''1bad'' (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)', 'Prometheus metric name rules');
select throws_ok(pg_temp.b(pg_temp.pt('{"name": "__m"}')), '22023',
  'points[0].name: names starting with "__" are reserved', 'reserved metric names');
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "summary"}')), '22023',
  'points[0].kind: must be "counter", "gauge" or "histogram"', 'unknown kinds');

-- labels
select throws_ok(pg_temp.b(pg_temp.pt('{"labels": {"a-b": "x"}}')), '22023',
  'points[0].labels.a-b: invalid label name (allowed: [a-zA-Z_][a-zA-Z0-9_]*)', 'Prometheus label name rules');
select throws_ok(pg_temp.b(pg_temp.pt('{"labels": {"__x": "x"}}')), '22023',
  'points[0].labels.__x: label names starting with "__" are reserved', 'reserved label names');
select throws_ok(pg_temp.b(pg_temp.pt('{"labels": {"a": 1}}')), '22023',
  'points[0].labels.a: label values must be strings', 'label values are strings');
select throws_ok(pg_temp.b(pg_temp.pt(jsonb_build_object('labels', jsonb_build_object('a', repeat('x', 1025))))),
  '22023', 'points[0].labels.a: label value longer than 1024 characters', 'label value length is bounded');
select throws_ok(
  pg_temp.b(pg_temp.pt((select jsonb_build_object('labels', jsonb_object_agg('l' || i, 'v')) from generate_series(1, 33) i))),
  '22023', 'points[0].labels: more than 32 labels', 'label count is bounded');
select throws_ok(pg_temp.b(pg_temp.pt('{"labels": ["a"]}')), '22023',
  'points[0].labels: must be an object of name: string', 'labels must be an object');

-- timestamps
select throws_ok(pg_temp.b(pg_temp.pt('{"ts": "now"}')), '22023', 'points[0].ts: required number (epoch seconds)', 'ts is a number');
select throws_ok(pg_temp.b(pg_temp.pt(jsonb_build_object('ts', extract(epoch from now() - interval '25 hours')))),
  '22023', 'points[0].ts: older than the accepted window of 24:00:00', 'ts not older than max_past');
select throws_ok(pg_temp.b(pg_temp.pt(jsonb_build_object('ts', extract(epoch from now() + interval '6 minutes')))),
  '22023', 'points[0].ts: more than 00:05:00 in the future', 'ts not further ahead than max_future');
select throws_ok(pg_temp.b(pg_temp.pt('{"ts": 1e20}')), '22023', null,
  'a ts beyond the timestamp range is an invalid batch (22023), not an internal error');
select throws_ok(pg_temp.b(pg_temp.pt('{"ts": 1e400}')), '22023', null,
  'a ts beyond the double range is an invalid batch (22023), not an internal error');

-- numbers
select throws_ok(pg_temp.b(pg_temp.pt('{"count": 0}')), '22023', 'points[0].count: required integer >= 1', 'count >= 1');
select throws_ok(pg_temp.b(pg_temp.pt('{"count": 1.5}')), '22023', 'points[0].count: required integer >= 1', 'count is an integer');
select throws_ok(pg_temp.b(pg_temp.pt('{"sum": "1"}')), '22023', 'points[0].sum: required finite number', 'sum is a number');
select throws_ok(pg_temp.b(pg_temp.pt('{"sum": 1e309}')), '22023', 'points[0].sum: required finite number', 'sum is finite');
select throws_ok(pg_temp.b(pg_temp.pt('{"sum": 1e-400}')), '22023', null,
  'a sum that underflows a double is an invalid batch (22023), not an internal error');
select throws_ok(pg_temp.b(pg_temp.pt('{"sum": -1}')), '22023',
  'points[0].sum: counter increments must not be negative', 'counter deltas are not negative');
select throws_ok(pg_temp.b(pg_temp.pt('{"min": "x"}')), '22023', 'points[0].min: must be a finite number', 'min is a number');
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "gauge", "min": 1, "max": 1}')), '22023',
  'points[0].last: required for gauge', 'gauges carry their last value');
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "gauge", "min": 2, "max": 1, "last": 1}')), '22023',
  'points[0].min: greater than max', 'min <= max');

-- sketches
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "histogram", "min": 1, "max": 1}')), '22023',
  'points[0].sketch: required for histogram', 'histograms carry a sketch');
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "histogram", "min": 1, "max": 1, "sketch": {"z": 0, "p": {"0": 2}, "n": {}}}')),
  '22023', 'points[0].sketch: bucket counts must add up to the point''s count', 'sketch counts add up to count');
select throws_ok(pg_temp.b(pg_temp.pt('{"kind": "histogram", "min": 1, "max": 1, "sketch": {"p": {"99999": 1}}}')),
  '22023', 'points[0].sketch: bucket keys must be integers in [-1036, 35488] (no leading zeros) and counts positive integers',
  'sketch keys are bounded');
select throws_ok(pg_temp.b(pg_temp.pt('{"sketch": {"z": 1}}')), '22023',
  'points[0].sketch: only histograms carry a sketch', 'counters carry no sketch');
select throws_ok(pg_temp.b(pg_temp.pt('{"unit": 5}')), '22023', 'points[0].unit: must be a string', 'unit is a string');

-- the first bad point is named; a metric keeps its kind within a batch and across batches
select throws_ok(pg_temp.b(pg_temp.pt('{"name": "good"}'), pg_temp.pt('{"name": "bad-name"}')), '22023',
  'points[1].name: invalid metric name ''bad-name'' (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)',
  'the offending point is named by its index');
select throws_ok(
  pg_temp.b(pg_temp.pt('{"name": "k"}'), pg_temp.pt('{"name": "k", "kind": "gauge", "min": 1, "max": 1, "last": 1}')),
  '22023', 'points[1].kind: metric k is a counter, not a gauge', 'a metric keeps its kind within a batch');
select lives_ok(
  format('select metrics.ingest(%L::jsonb)', jsonb_build_object('project_id', '0a000000-0000-4000-8000-00000000000a',
    'source', 's', 'batch_id', 'first', 'points', jsonb_build_array(pg_temp.pt('{"name": "stored"}')))),
  'a valid batch stores metric "stored" as a counter');
select throws_ok(pg_temp.b(pg_temp.pt('{"name": "stored", "kind": "gauge", "min": 1, "max": 1, "last": 1}')), '22023',
  'points[0].kind: metric stored is a counter, not a gauge', 'a metric keeps its kind across batches');

-- nothing of a rejected batch was stored; its batch_id stays usable
select is(
  array[(select count(*) from metrics.batches where batch_id <> 'first'),
        (select count(*) from metrics.series where name <> 'stored'),
        (select count(*) from metrics.families where name <> 'stored'),
        (select count(*) from metrics.points where batch_id <> 'first')],
  array[0, 0, 0, 0]::bigint[],
  'rejected batches left no ledger row, series, family or point'
);
select is(metrics.ingest(jsonb_build_object('project_id', '0a000000-0000-4000-8000-00000000000a', 'source', 's',
    'batch_id', 'bad', 'points', jsonb_build_array(pg_temp.pt('{"name": "good"}')))) ->> 'status',
  'accepted', 'the batch_id of a rejected batch is accepted once the batch is fixed');

select * from finish();
rollback;
