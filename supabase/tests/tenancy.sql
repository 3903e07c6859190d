-- Tenancy: a signed-in user of project A (role authenticated + request.jwt.claims, as the Data API sets
-- them) sees nothing of project B and cannot write into it; viewers cannot ingest; anon sees nothing.
begin;
set local client_min_messages = warning;
select plan(25);

-- projects A and B; users: editor and viewer of A, admin of B
insert into metrics.projects (id) values
  ('0a000000-0000-4000-8000-00000000000a'), ('0b000000-0000-4000-8000-00000000000b');
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ed', 'editor'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ee', 'viewer'),
  ('0b000000-0000-4000-8000-00000000000b', 'bb000000-0000-4000-8000-0000000000ad', 'admin');

create function pg_temp.batch(p_project uuid, p_batch_id text) returns jsonb language sql as $$
  select jsonb_build_object('project_id', p_project, 'source', 'worker', 'batch_id', p_batch_id,
    'points', jsonb_build_array(
      jsonb_build_object('name', 'meshhook_webhook_requests_total', 'kind', 'counter', 'labels', '{"outcome": "ok"}'::jsonb,
        'ts', extract(epoch from date_trunc('hour', now()) - interval '2 hours' + interval '2 minutes'), 'count', 2, 'sum', 2),
      jsonb_build_object('name', 'meshhook_workflow_step_duration_seconds', 'kind', 'histogram',
        'ts', extract(epoch from date_trunc('hour', now()) - interval '2 hours' + interval '2 minutes'), 'count', 1, 'sum', 0.5, 'min', 0.5, 'max', 0.5,
        'sketch', metrics.sketch_from_values(array[0.5]))))
$$;
-- act as a signed-in user for the rest of the transaction (until the next call)
create function pg_temp.claims(p_user uuid, p_role text default 'authenticated') returns void language sql as $$
  select set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', p_role)::text, true),
    set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true),
    set_config('request.jwt.claim.role', p_role, true)
$$;

-- data of both projects, ingested through the trusted direct connection
select is(metrics.ingest(pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'a-1')) ->> 'status', 'accepted',
  'setup: A''s batch is accepted');
select is(metrics.ingest(pg_temp.batch('0b000000-0000-4000-8000-00000000000b', 'b-1')) ->> 'status', 'accepted',
  'setup: B''s batch is accepted');
select metrics.rollup_now();
select is(metrics.rollup_hours(), 4, 'setup: hourly rollups of both projects');

-- the editor of A
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select is((select count(*) from metrics.series where project_id = '0a000000-0000-4000-8000-00000000000a'), 2::bigint,
  'A''s editor sees A''s series');
select is((select count(*) from metrics.series where project_id = '0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'A''s editor does not see B''s series');
select is((select count(*) from metrics.rollup_1m where project_id = '0a000000-0000-4000-8000-00000000000a'), 2::bigint,
  'A''s editor sees A''s minute rollups');
select is((select count(*) from metrics.rollup_1m where project_id = '0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'A''s editor does not see B''s minute rollups');
select is((select count(*) from metrics.rollup_1h where project_id = '0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'A''s editor does not see B''s hour rollups');
select is((select count(*) from metrics.points where project_id = '0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'A''s editor does not see B''s raw points');
select is(
  array[(select count(*) from metrics.families where project_id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.batches where project_id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.projects where id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.project_members where project_id = '0b000000-0000-4000-8000-00000000000b')],
  array[0, 0, 0, 0]::bigint[],
  'A''s editor sees none of B''s families, batches, settings or members'
);
select is_empty(
  $$select * from metrics.query('0b000000-0000-4000-8000-00000000000b', 'meshhook_webhook_requests_total',
    now() - interval '3 hours', now())$$,
  'metrics.query returns nothing of B to A''s editor'
);
select isnt_empty(
  $$select * from metrics.query('0a000000-0000-4000-8000-00000000000a', 'meshhook_webhook_requests_total',
    now() - interval '3 hours', now())$$,
  'metrics.query returns A''s series to A''s editor'
);
select throws_ok(
  format('select metrics.ingest(%L::jsonb)', pg_temp.batch('0b000000-0000-4000-8000-00000000000b', 'a-into-b')),
  '42501', 'not allowed to write metrics of project 0b000000-0000-4000-8000-00000000000b',
  'A''s editor cannot ingest into B'
);
select is(metrics.ingest(pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'a-2')) ->> 'status', 'accepted',
  'A''s editor can ingest into A');
select throws_ok($$insert into metrics.series (project_id, name) values ('0b000000-0000-4000-8000-00000000000b', 'x')$$,
  '42501', null, 'A''s editor cannot write tables directly');
select is_empty(
  $$update metrics.projects set name = 'pwned' where id = '0b000000-0000-4000-8000-00000000000b' returning id$$,
  'A''s editor cannot rename B');
select throws_ok(
  $$insert into metrics.project_members (project_id, user_id, role)
    values ('0b000000-0000-4000-8000-00000000000b', 'aa000000-0000-4000-8000-0000000000ed', 'admin')$$,
  '42501', null, 'A''s editor cannot make itself a member of B');
select throws_ok($$select * from metrics.membership('bb000000-0000-4000-8000-0000000000ad')$$, '42501', null,
  'A''s editor cannot list the memberships of other users');
select throws_ok($$select metrics.maintain()$$, '42501', null, 'A''s editor cannot run maintenance');
select throws_ok($$select metrics.ensure_points_partition('2031-01-01')$$, '42501', null,
  'A''s editor cannot create partitions');
reset role;

-- the viewer of A reads but cannot ingest
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ee');
set local role authenticated;
select is((select count(*) from metrics.rollup_1m where project_id = '0a000000-0000-4000-8000-00000000000a'), 2::bigint,
  'A''s viewer sees A''s minute rollups');
select throws_ok(
  format('select metrics.ingest(%L::jsonb)', pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'viewer')),
  '42501', null, 'A''s viewer cannot ingest into A');
reset role;

-- the admin of B sees B only
select pg_temp.claims('bb000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select is((select array_agg(distinct project_id) from metrics.series), array['0b000000-0000-4000-8000-00000000000b']::uuid[],
  'B''s admin sees only B''s series');
reset role;

-- anon: no table access, no membership enumeration
select pg_temp.claims(null, 'anon');
set local role anon;
select throws_ok($$select count(*) from metrics.series$$, '42501', null, 'anon cannot read series');
select throws_ok($$select * from metrics.membership('bb000000-0000-4000-8000-0000000000ad')$$, '42501', null,
  'anon cannot list anyone''s memberships');
reset role;

select * from finish();
rollback;
