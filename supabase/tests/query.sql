-- metrics.query: aggregations, label matchers, grouping, resolution and argument checks on known data.
begin;
set local client_min_messages = warning;
select plan(27);

-- t0 = the start of the minute 10 minutes ago; everything below sits in [t0, t0 + 2 minutes)
create function pg_temp.t0() returns timestamptz language sql stable as $$
  select date_trunc('minute', now()) - interval '10 minutes'
$$;
create function pg_temp.pt(p_name text, p_kind text, p_labels jsonb, p_offset interval, p_count integer,
  p_sum double precision, p_extra jsonb default '{}') returns jsonb language sql stable as $$
  select jsonb_build_object('name', p_name, 'kind', p_kind, 'labels', p_labels,
    'ts', extract(epoch from pg_temp.t0() + p_offset), 'count', p_count, 'sum', p_sum) || p_extra
$$;
-- one ingest statement, merged as the rollup pass merges it once committed
create function pg_temp.ingest(p_batch_id text, variadic p_points jsonb[]) returns text language plpgsql as $$
declare
  v_status text;
begin
  v_status := metrics.ingest(jsonb_build_object('project_id', '0a000000-0000-4000-8000-00000000000a', 'source', 'w',
    'batch_id', p_batch_id, 'points', to_jsonb(p_points))) ->> 'status';
  perform metrics.rollup_now();
  return v_status;
end
$$;
-- one query's (labels, minute offset from t0, value) rows
create function pg_temp.q(p_metric text, p_agg text, p_matchers jsonb default '[]', p_by text[] default null)
returns table (labels jsonb, minute integer, value double precision) language sql as $$
  select q.labels, (extract(epoch from q.ts - pg_temp.t0()) / 60)::integer, q.value
  from metrics.query('0a000000-0000-4000-8000-00000000000a', p_metric, pg_temp.t0(), pg_temp.t0() + interval '3 minutes',
    p_matchers, interval '1 minute', p_agg, p_by) as q
$$;

select is(pg_temp.ingest('b-1',
  pg_temp.pt('meshhook_webhook_requests_total', 'counter', '{"outcome": "ok", "route": "/api/hooks/[slug]"}', '10 s', 3, 3),
  pg_temp.pt('meshhook_webhook_requests_total', 'counter', '{"outcome": "ok", "route": "/api/hooks/[slug]"}', '70 s', 5, 5),
  pg_temp.pt('meshhook_webhook_requests_total', 'counter', '{"outcome": "error", "route": "/api/hooks/[slug]"}', '10 s', 1, 1),
  pg_temp.pt('meshhook_webhook_requests_total', 'counter', '{"outcome": "ok", "route": "/healthz"}', '10 s', 2, 2),
  pg_temp.pt('meshhook_queue_messages', 'gauge', '{"queue": "default"}', '10 s', 2, 10, '{"min": 4, "max": 6, "last": 6}'),
  pg_temp.pt('meshhook_workflow_step_duration_seconds', 'histogram', '{"node_type": "http"}', '10 s', 100, 5050,
    jsonb_build_object('min', 1, 'max', 100,
      'sketch', metrics.sketch_from_values(array(select generate_series(1, 100)::double precision))))
), 'accepted', 'setup: first batch');
select is(pg_temp.ingest('b-2',
  pg_temp.pt('meshhook_queue_messages', 'gauge', '{"queue": "default"}', '40 s', 1, 3, '{"min": 3, "max": 3, "last": 3}')
), 'accepted', 'setup: second batch');

-- aggregations
select results_eq(
  $$select minute, value from pg_temp.q('meshhook_webhook_requests_total', 'sum',
    '[{"label": "outcome", "op": "=", "value": "ok"}, {"label": "route", "op": "=", "value": "/api/hooks/[slug]"}]')$$,
  $$values (0, 3::double precision), (1, 5)$$, 'sum per minute of one series');
select results_eq(
  $$select minute, value from pg_temp.q('meshhook_webhook_requests_total', 'rate',
    '[{"label": "outcome", "op": "=", "value": "ok"}, {"label": "route", "op": "=", "value": "/api/hooks/[slug]"}]')$$,
  $$values (0, 3 / 60.0::double precision), (1, 5 / 60.0::double precision)$$, 'rate of a counter is its sum per second');
select results_eq($$select minute, value from pg_temp.q('meshhook_queue_messages', 'avg')$$,
  $$values (0, 13 / 3.0::double precision)$$, 'avg of a gauge merges both batches of the minute');
select results_eq($$select minute, value from pg_temp.q('meshhook_queue_messages', 'min')$$, $$values (0, 3::double precision)$$, 'min');
select results_eq($$select minute, value from pg_temp.q('meshhook_queue_messages', 'max')$$, $$values (0, 6::double precision)$$, 'max');
select results_eq($$select minute, value from pg_temp.q('meshhook_queue_messages', 'last')$$, $$values (0, 3::double precision)$$,
  'last is the value with the latest timestamp');
select results_eq($$select minute, value from pg_temp.q('meshhook_queue_messages', 'count')$$, $$values (0, 3::double precision)$$, 'count');
select ok((select abs(value / 50 - 1) <= 0.01 from pg_temp.q('meshhook_workflow_step_duration_seconds', 'p50')),
  'p50 of a histogram is within 1 % of the exact median');
select ok((select abs(value / 99 - 1) <= 0.01 from pg_temp.q('meshhook_workflow_step_duration_seconds', 'quantile(0.99)')),
  'quantile(0.99) is within 1 % of the exact value');

-- grouping and matchers
select results_eq($$select minute, value from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[]', '{}')$$,
  $$values (0, 6::double precision), (1, 5)$$, 'p_by = {} merges every series');
select results_eq($$select labels, minute, value from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[]', '{outcome}')$$,
  $$values ('{"outcome": "error"}'::jsonb, 0, 1::double precision), ('{"outcome": "ok"}', 0, 5), ('{"outcome": "ok"}', 1, 5)$$,
  'p_by = {outcome} merges by that label');
select results_eq(
  $$select labels ->> 'outcome', value from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[{"label": "outcome", "op": "!=", "value": "ok"}]')$$,
  $$values ('error'::text, 1::double precision)$$, 'matcher !=');
select is((select count(*) from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[{"label": "route", "op": "=~", "value": "/api/.*"}]')),
  3::bigint, 'matcher =~ (two series of the hook route, one of them in two minutes)');
select is((select count(*) from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[{"label": "outcome", "op": "=~", "value": "o"}]')),
  0::bigint, 'regex matchers are fully anchored');
select is((select count(*) from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[{"label": "outcome", "op": "!~", "value": "ok|error"}]')),
  0::bigint, 'matcher !~');
select is((select count(*) from pg_temp.q('meshhook_webhook_requests_total', 'sum', '[{"label": "absent", "op": "=", "value": ""}]')),
  4::bigint, 'a missing label matches ""');

-- hour resolution: whole-hour steps over complete hours read the hourly rollups (minutes deleted to prove it)
select is(metrics.ingest(jsonb_build_object('project_id', '0a000000-0000-4000-8000-00000000000a', 'source', 'w',
    'batch_id', 'old', 'points', jsonb_build_array(
      jsonb_build_object('name', 'meshhook_old_total', 'kind', 'counter', 'ts', extract(epoch from date_trunc('hour', now()) - interval '2 hours' + interval '10 minutes'),
        'count', 4, 'sum', 4),
      jsonb_build_object('name', 'meshhook_old_total', 'kind', 'counter', 'ts', extract(epoch from date_trunc('hour', now()) - interval '2 hours' + interval '20 minutes'),
        'count', 7, 'sum', 7)))) ->> 'status', 'accepted', 'setup: points in the hour before last (closed)');
select metrics.rollup_now();
select cmp_ok(metrics.rollup_hours(), '>', 0, 'setup: hourly rollups');
delete from metrics.rollup_1m r using metrics.series s where s.id = r.series_id and s.name = 'meshhook_old_total';
select is(
  (select sum(q.value) from metrics.query('0a000000-0000-4000-8000-00000000000a', 'meshhook_old_total',
    date_trunc('hour', now()) - interval '3 hours', date_trunc('hour', now()) - interval '1 hour', '[]', interval '1 hour', 'sum') q),
  11::double precision, 'an hour step over complete hours reads the hourly rollups');

select is(
  (select count(*) from metrics.query('0a000000-0000-4000-8000-00000000000a', 'meshhook_old_total',
    date_trunc('hour', now()) - interval '2 hours', date_trunc('hour', now()) - interval '90 minutes', '[]', interval '1 hour', 'sum') q),
  0::bigint, 'half an hour at an hour step is not answered by the whole hour''s rollup (its minutes are gone)');

-- argument checks
select throws_ok($$select * from pg_temp.q('meshhook_queue_messages', 'median')$$, '22023',
  'p_agg: unknown aggregation ''median'' (use rate, sum, avg, min, max, last, count, pNN or quantile(q))', 'unknown aggregation');
select throws_ok(format($$select * from pg_temp.q('meshhook_queue_messages', 'sum', %L)$$,
    jsonb_build_array(jsonb_build_object('label', 'queue', 'op', '=~', 'value', repeat('a', 257)))),
  '22023', 'p_matchers: [0].value: regex longer than 256 characters', 'regex length is bounded');
select throws_ok($$select * from pg_temp.q('meshhook_queue_messages', 'sum', '[{"label": "queue", "op": "=~", "value": "("}]')$$,
  '22023', null, 'an invalid regex is an invalid argument');
select throws_ok($$select * from pg_temp.q('meshhook_queue_messages', 'sum', '[{"label": "queue", "op": "==", "value": "a"}]')$$,
  '22023', 'p_matchers: [0].op: unknown operator ''=='' (use =, !=, =~, !~)', 'unknown matcher operator');
select throws_ok($$select * from metrics.query('0a000000-0000-4000-8000-00000000000a', 'm', now(), now() - interval '1 hour')$$,
  '22023', 'p_from: p_from and p_to are required and p_from must be before p_to', 'p_from must be before p_to');

select * from finish();
rollback;
