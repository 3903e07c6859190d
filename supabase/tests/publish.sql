-- Live publish: a rollup pass sends at most one message per project and publish interval on its private
-- topic; a later pass sends the rest; big updates are split under publish_max_bytes; one bad minute
-- cannot block publishing.
begin;
set local client_min_messages = warning;
select plan(21);

-- a long interval makes the rate limit deterministic; B keeps the default
insert into metrics.projects (id, publish_interval) values ('0a000000-0000-4000-8000-00000000000a', '1 hour');
insert into metrics.projects (id) values ('0b000000-0000-4000-8000-00000000000b');

-- one ingest statement, then what the rollup pass does with it once committed (merge and queue)
create function pg_temp.ingest(p_project uuid, p_batch_id text, p_series integer default 1, p_value double precision default 1,
  p_node_type text default 'n', p_sum double precision default null)
returns text language plpgsql as $$
declare
  v_status text;
begin
  v_status := metrics.ingest(jsonb_build_object('project_id', p_project, 'source', 'w', 'batch_id', p_batch_id,
    'points', (select jsonb_agg(jsonb_build_object(
      'name', 'meshhook_workflow_step_duration_seconds', 'kind', 'histogram',
      'labels', jsonb_build_object('node_type', p_node_type || i), 'ts', extract(epoch from now() - interval '1 minute'),
      'count', 1, 'sum', coalesce(p_sum, p_value), 'min', p_value, 'max', p_value, 'sketch', metrics.sketch_from_values(array[p_value])))
      from generate_series(1, p_series) i))) ->> 'status';
  perform metrics.rollup_now();
  return v_status;
end
$$;
create function pg_temp.messages(p_project uuid) returns setof realtime.messages language sql as $$
  select * from realtime.messages where topic = metrics.topic(p_project) order by inserted_at, (payload ->> 'part')::integer
$$;
-- let the project's rate limit pass
create function pg_temp.interval_passes(p_project uuid) returns void language sql as $$
  update metrics.publish_state set last_sent_at = now() - interval '1 day' where project_id = p_project
$$;

select is(
  (select count(*) from generate_series(1, 5) i
   where pg_temp.ingest('0a000000-0000-4000-8000-00000000000a', 'a' || i, 1, i) = 'accepted'),
  5::bigint, 'setup: five ingest statements for A');
select is(pg_temp.ingest('0b000000-0000-4000-8000-00000000000b', 'b1'), 'accepted', 'setup: one for B');
select is((select count(*) from realtime.messages), 0::bigint, 'ingest itself publishes nothing');

select is(metrics.publish_pending(), 2, 'one pass sends one message per project with queued minutes');
select is((select count(*) from pg_temp.messages('0a000000-0000-4000-8000-00000000000a')), 1::bigint,
  'five ingest statements merged by one pass make one message for A');
select results_eq(
  $$select extension, event, private, payload ->> 'project_id', (payload ->> 'parts')::integer,
      (payload #>> '{series,0,count}')::integer
    from pg_temp.messages('0a000000-0000-4000-8000-00000000000a')$$,
  $$values ('broadcast'::text, 'rollup'::text, true, '0a000000-0000-4000-8000-00000000000a'::text, 1, 5)$$,
  'the message is a private broadcast "rollup" in one part with the five deltas merged');
select is(
  (select (payload #> '{series,0}') - 'series_id' - 'minute'
   from pg_temp.messages('0b000000-0000-4000-8000-00000000000b')),
  '{"name": "meshhook_workflow_step_duration_seconds", "labels": {"node_type": "n1"}, "kind": "histogram",
    "count": 1, "sum": 1, "min": 1, "max": 1, "p50": 1, "p90": 1, "p99": 1}'::jsonb,
  'the message carries the minute aggregate with its percentiles'
);

-- the sweep sends what the rate limit held back, once the interval has passed
select is(pg_temp.ingest('0a000000-0000-4000-8000-00000000000a', 'a6', 1, 6), 'accepted', 'setup: a sixth statement for A');
select is(metrics.publish_pending(), 0, 'the sweep respects the rate limit');
select is((select count(*) from metrics.publish_queue where project_id = '0a000000-0000-4000-8000-00000000000a'), 1::bigint,
  'the later changes of A wait in the queue');
select pg_temp.interval_passes('0a000000-0000-4000-8000-00000000000a');
select is(metrics.publish_pending(), 1, 'after the interval the sweep sends one message');
select is(
  (select (payload #>> '{series,0,count}')::integer from pg_temp.messages('0a000000-0000-4000-8000-00000000000a')
   order by (payload ->> 'seq')::integer desc limit 1),
  6, 'the trailing message carries the whole minute (six deltas merged)');

-- large updates are split into parts, each under publish_max_bytes
update metrics.config set publish_max_bytes = 10000;
select pg_temp.interval_passes('0a000000-0000-4000-8000-00000000000a');
select is(pg_temp.ingest('0a000000-0000-4000-8000-00000000000a', 'big', 300), 'accepted', 'setup: 300 series at once');
select cmp_ok(metrics.publish_pending(), '>', 1, 'setup: the sweep sends the 300-series update (in parts)');
select ok(
  (select count(*) > 1 and bool_and(octet_length(payload::text) <= 10000)
     and min((payload ->> 'parts')::integer) = count(*) and max((payload ->> 'parts')::integer) = count(*)
     and sum(jsonb_array_length(payload -> 'series')) = 300
   from pg_temp.messages('0a000000-0000-4000-8000-00000000000a') m
   where (payload ->> 'seq')::integer = (select max((payload ->> 'seq')::integer) from pg_temp.messages('0a000000-0000-4000-8000-00000000000a'))),
  'a 300-series update is split into parts of at most 10000 bytes that together carry every series');
update metrics.config set publish_max_bytes = default;

-- a histogram of values at the top of the double range must not block publishing (its sum at the most a point
-- may carry: metrics.max_point_sum(), migration 20261206001700)
select is(pg_temp.ingest('0a000000-0000-4000-8000-00000000000a', 'huge', 1, 1.7976931348623157e308, 'huge',
    metrics.max_point_sum()), 'accepted',
  'setup: a histogram point of the largest double is accepted (and queued)');
select pg_temp.interval_passes('0a000000-0000-4000-8000-00000000000a');
select is(metrics.publish_pending(), 1, 'a minute holding the largest double is published');
select is((select count(*) from metrics.publish_queue where project_id = '0a000000-0000-4000-8000-00000000000a'), 0::bigint,
  'and leaves the queue (a minute that cannot be published would block the project''s live updates for good)');

-- the next pass on a 1 s cadence is not skipped for a few milliseconds of jitter (B: the default 1 s interval)
select is(pg_temp.ingest('0b000000-0000-4000-8000-00000000000b', 'b2', 1, 2), 'accepted', 'setup: B changes again');
update metrics.publish_state set last_sent_at = clock_timestamp() - interval '800 milliseconds'
where project_id = '0b000000-0000-4000-8000-00000000000b';
select is(metrics.publish_project('0b000000-0000-4000-8000-00000000000b'), 0,
  'a message 0.8 s after the last is held back (1 s interval)');
update metrics.publish_state set last_sent_at = clock_timestamp() - interval '950 milliseconds'
where project_id = '0b000000-0000-4000-8000-00000000000b';
select is(metrics.publish_project('0b000000-0000-4000-8000-00000000000b'), 1,
  'one 0.95 s after it goes out (the interval less a tenth, at most 100 ms)');

select * from finish();
rollback;
