-- metrics.query_horizon and metrics.rollup_revisions: what the service's cache of settled steps relies on.
begin;
set local client_min_messages = warning;
select plan(7);

create function pg_temp.ingest(p_project uuid, p_batch text, p_ts timestamptz) returns text language sql as $$
  select metrics.ingest(jsonb_build_object('project_id', p_project, 'source', 'w', 'batch_id', p_batch,
    'points', jsonb_build_array(jsonb_build_object('name', 'depth', 'kind', 'gauge', 'labels', '{}'::jsonb,
      'ts', extract(epoch from p_ts), 'count', 1, 'sum', 1, 'min', 1, 'max', 1, 'last', 1)))) ->> 'status'
$$;
create function pg_temp.horizon(p_project uuid) returns table (revision bigint, settled_until timestamptz)
language sql as $$
  select h.revision, h.settled_until from metrics.query_horizon(p_project, now() - interval '1 hour', now()) h
$$;

select is(pg_temp.ingest('0c000000-0000-4000-8000-00000000000c', 'a', now() - interval '20 minutes'), 'accepted',
  'setup: project C');
select is(pg_temp.ingest('0d000000-0000-4000-8000-00000000000d', 'a', now() - interval '20 minutes'), 'accepted',
  'setup: project D');
-- as if maintenance had rolled up everything before ten minutes ago: the points above are late
update metrics.maintenance_state set five_minute_watermark = metrics.five_minute_window(now() - interval '10 minutes');
insert into metrics.late_five_minutes (series_id, bucket)
select s.id, metrics.five_minute_window(now() - interval '20 minutes') from metrics.series s
where s.project_id in ('0c000000-0000-4000-8000-00000000000c', '0d000000-0000-4000-8000-00000000000d');

set local role service_role;
select set_config('request.jwt.claims', '{"role": "service_role"}', true);
select is((select settled_until from pg_temp.horizon('0c000000-0000-4000-8000-00000000000c')),
  metrics.five_minute_window(now() - interval '20 minutes'), 'a pending late window holds settled_until back');
select is((select revision from pg_temp.horizon('0c000000-0000-4000-8000-00000000000c')), 0::bigint,
  'no revision before a late window is recomputed');
reset role;

-- maintenance recomputes project C's window only
delete from metrics.late_five_minutes l using metrics.series s
where s.id = l.series_id and s.project_id = '0c000000-0000-4000-8000-00000000000c';

set local role service_role;
select set_config('request.jwt.claims', '{"role": "service_role"}', true);
select results_eq($$select revision > 0 from pg_temp.horizon('0c000000-0000-4000-8000-00000000000c')
  union all select revision > 0 from pg_temp.horizon('0d000000-0000-4000-8000-00000000000d')$$,
  $$values (true), (false)$$, 'clearing late marks moves the revision of their project only');
select is((select settled_until from pg_temp.horizon('0c000000-0000-4000-8000-00000000000c')),
  metrics.five_minutes_complete_until(), 'with no late marks, settled_until is the rolled-up end');
set local role authenticated;
select set_config('request.jwt.claims', '{"role": "authenticated", "sub": "0e000000-0000-4000-8000-00000000000e"}', true);
select is_empty($$select * from pg_temp.horizon('0c000000-0000-4000-8000-00000000000c')$$,
  'a user who is not a member gets no horizon');

select * from finish();
rollback;
