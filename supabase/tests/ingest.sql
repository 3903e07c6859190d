-- Ingest: a valid batch is stored (points, series, families, ledger, project) and a resend changes nothing.
begin;
set local client_min_messages = warning;
select plan(20);

create function pg_temp.batch(p_source text, p_batch_id text) returns jsonb language sql as $$
  select jsonb_build_object(
    'project_id', '0a000000-0000-4000-8000-00000000000a', 'source', p_source, 'batch_id', p_batch_id,
    'sent_at', extract(epoch from now()),
    'points', jsonb_build_array(
      jsonb_build_object('name', 'meshhook_webhook_requests_total', 'kind', 'counter',
        'labels', jsonb_build_object('outcome', 'ok', 'signature', 'valid'),
        'ts', extract(epoch from now() - interval '1 minute'), 'count', 3, 'sum', 3, 'help', 'Webhook requests.'),
      jsonb_build_object('name', 'meshhook_webhook_requests_total', 'kind', 'counter',
        'labels', jsonb_build_object('outcome', 'error', 'signature', 'invalid'),
        'ts', extract(epoch from now() - interval '1 minute'), 'count', 1, 'sum', 1),
      jsonb_build_object('name', 'meshhook_queue_messages', 'kind', 'gauge',
        'labels', jsonb_build_object('queue', 'default', 'state', 'ready'),
        'ts', extract(epoch from now() - interval '1 minute'), 'count', 2, 'sum', 10, 'min', 4, 'max', 6, 'last', 6),
      jsonb_build_object('name', 'meshhook_workflow_step_duration_seconds', 'kind', 'histogram',
        'labels', jsonb_build_object('node_type', 'http', 'outcome', 'ok'), 'unit', 'seconds',
        'ts', extract(epoch from now() - interval '1 minute'), 'count', 3, 'sum', 0.75, 'min', 0.125, 'max', 0.5,
        'sketch', metrics.sketch_from_values(array[0.125, 0.125, 0.5]))
    )
  )
$$;

create temporary table results (n integer generated always as identity, res jsonb);
insert into results (res) select metrics.ingest(pg_temp.batch('worker-1', 'b-1'));

select is((select res from results where n = 1),
  '{"status": "accepted", "points": 4, "series_created": 4, "overflowed": 0}'::jsonb,
  'a valid batch is accepted and creates its series');
select is((select count(*) from metrics.points where batch_id = 'b-1'), 4::bigint, 'its 4 points are stored');
select results_eq(
  $$select s.name, s.labels, p.count, p.sum, p.min, p.max, p.last, p.sketch from metrics.points p
    join metrics.series s on s.id = p.series_id where s.name = 'meshhook_queue_messages'$$,
  $$values ('meshhook_queue_messages'::text, '{"queue": "default", "state": "ready"}'::jsonb, 2::bigint,
    10::double precision, 4::double precision, 6::double precision, 6::double precision, null::jsonb)$$,
  'a gauge point is stored with its series identity and all its fields'
);
select is(
  (select p.sketch from metrics.points p join metrics.series s on s.id = p.series_id
   where s.name = 'meshhook_workflow_step_duration_seconds'),
  metrics.sketch_from_values(array[0.125, 0.125, 0.5]),
  'a histogram point keeps its sketch'
);
select results_eq(
  $$select name, kind, unit, help from metrics.families order by name$$,
  $$values ('meshhook_queue_messages'::text, 'gauge'::text, ''::text, ''::text),
    ('meshhook_webhook_requests_total', 'counter', '', 'Webhook requests.'),
    ('meshhook_workflow_step_duration_seconds', 'histogram', 'seconds', '')$$,
  'families record kind, unit and help'
);
select is((select count(*) from metrics.projects where id = '0a000000-0000-4000-8000-00000000000a'), 1::bigint,
  'the project row is created on its first batch');
select is((select points from metrics.batches where source = 'worker-1' and batch_id = 'b-1'), 4,
  'the batch ledger records (source, batch_id)');
select is((select count(*) from metrics.rollup_1m), 0::bigint, 'ingest only appends: the rollup pass merges');
select is((metrics.rollup_now() ->> 'points')::integer, 4, 'the pass merges the transaction''s 4 points');
select is((select sum(count) from metrics.rollup_1m), 9::numeric, 'the rollups saw all 9 events');

-- resending the same (source, batch_id) changes nothing
insert into results (res) select metrics.ingest(pg_temp.batch('worker-1', 'b-1'));
select is((select res from results where n = 2),
  '{"status": "duplicate", "points": 0, "series_created": 0, "overflowed": 0}'::jsonb,
  'a resent batch is reported as a duplicate');
select is((select count(*) from metrics.points), 4::bigint, 'a resent batch stores no points');
select is((metrics.rollup_now() ->> 'points')::integer, 0, 'a resent batch leaves nothing to merge');
select is((select sum(count) from metrics.rollup_1m), 9::numeric, 'a resent batch does not change the rollups');
select is((select count(*) from metrics.batches), 1::bigint, 'a resent batch adds no ledger row');

-- the idempotency key is (project, source, batch_id): other sources and batch ids are new batches
insert into results (res) select metrics.ingest(pg_temp.batch('worker-2', 'b-1'));
select is((select res ->> 'status' from results where n = 3), 'accepted', 'the same batch_id from another source is accepted');
select is((select (res ->> 'series_created')::integer from results where n = 3), 0, 'known series are reused');
insert into results (res) select metrics.ingest(pg_temp.batch('worker-1', 'b-2'));
select is((select res ->> 'status' from results where n = 4), 'accepted', 'a new batch_id from the same source is accepted');
select is((metrics.rollup_now() ->> 'points')::integer, 8, 'merging again takes only the points not merged yet');
select is((select sum(count) from metrics.rollup_1m), 27::numeric, 'three accepted batches, three times the events');

select * from finish();
rollback;
