-- Hardening (issue #15, migration 20261206000200): JWT claims are believed only from the role they name,
-- scrape tokens cannot be forged or revived, the batch ledger outlives the widest window ever configured,
-- quotas of alert rules and silences, one family per metric name in the all-projects exposition, partitions
-- attached without ACCESS EXCLUSIVE on metrics.points.
begin;
set local client_min_messages = warning;
select plan(31);

-- projects A and B; an editor and an admin of A
insert into metrics.projects (id) values
  ('0a000000-0000-4000-8000-00000000000a'), ('0b000000-0000-4000-8000-00000000000b');
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ed', 'editor'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ad', 'admin');

create function pg_temp.batch(p_project uuid, p_batch_id text, p_ago interval default '1 minute') returns jsonb
language sql as $$
  select jsonb_build_object('project_id', p_project, 'source', 'worker', 'batch_id', p_batch_id,
    'points', jsonb_build_array(jsonb_build_object('name', 'meshhook_jobs_total', 'kind', 'counter',
      'ts', extract(epoch from now() - p_ago), 'count', 1, 'sum', 1)))
$$;
create function pg_temp.claims(p_user uuid, p_role text default 'authenticated') returns void language sql as $$
  select set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', p_role)::text, true),
    set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true),
    set_config('request.jwt.claim.role', p_role, true)
$$;
create function pg_temp.no_claims() returns void language sql as $$
  select set_config('request.jwt.claims', '', true), set_config('request.jwt.claim.sub', '', true),
    set_config('request.jwt.claim.role', '', true)
$$;

-- 4: creating a partition does not take ACCESS EXCLUSIVE on metrics.points ------------------------------------------
select ok(metrics.ensure_points_partition(current_date + 40), 'setup: a partition is created');
select is_empty($$select mode from pg_locks where pid = pg_backend_pid() and locktype = 'relation'
    and relation = 'metrics.points'::regclass and mode = 'AccessExclusiveLock'$$,
  'creating it took no ACCESS EXCLUSIVE lock on metrics.points (ingest goes on)');

-- 2: a role claim counts only from a session acting as that role ------------------------------------------------
select pg_temp.claims(null, 'service_role');
set local role authenticated;
select throws_ok($$select metrics.ingest(pg_temp.batch('0b000000-0000-4000-8000-00000000000b', 'forged'))$$,
  '42501', null, 'a session acting as authenticated cannot ingest into any project by claiming service_role');
select is_empty($$select * from metrics.query_horizon('0b000000-0000-4000-8000-00000000000b', now() - interval '1 hour', now())$$,
  'nor read the query horizon of a project it is no member of');
select is_empty($$select * from metrics.my_projects()$$, 'nor get every project as admin from my_projects');
select is(metrics.request_role(), null, 'request_role() does not believe the claim');
reset role;

set local role service_role;
select is(metrics.ingest(pg_temp.batch('0b000000-0000-4000-8000-00000000000b', 'service')) ->> 'status', 'accepted',
  'the service role (SET ROLE service_role + the claim, as the Data API does) still ingests into any project');
select isnt_empty($$select * from metrics.query_horizon('0b000000-0000-4000-8000-00000000000b', now() - interval '1 hour', now())$$,
  'and reads any project''s query horizon');
reset role;

select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select is(metrics.request_role(), 'authenticated', 'a signed-in user''s claim is believed');
select is(metrics.ingest(pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'editor')) ->> 'status', 'accepted',
  'an editor still ingests into their project');
select throws_ok($$select metrics.ingest(pg_temp.batch('0b000000-0000-4000-8000-00000000000b', 'editor'))$$,
  '42501', null, 'and not into another');
reset role;

-- 11: scrape tokens ------------------------------------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select throws_ok($$insert into metrics.scrape_tokens (project_id, name, token_hash, token_prefix)
    values ('0a000000-0000-4000-8000-00000000000a', 'forged', sha256('weak'), 'mhm_weak')$$,
  '42501', null, 'an admin cannot choose a token''s hash and prefix');
select throws_ok($$insert into metrics.scrape_tokens (project_id, name, created_by)
    values ('0a000000-0000-4000-8000-00000000000a', 'forged', 'aa000000-0000-4000-8000-0000000000ed')$$,
  '42501', null, 'nor its author');
create temporary table issued on commit drop as
  select * from metrics.create_scrape_token('0a000000-0000-4000-8000-00000000000a', 'prometheus');
select ok((select token ~ '^mhm_[0-9a-f]{64}$' and token_prefix = left(token, 12) from issued),
  'create_scrape_token still returns a fresh token once');
reset role;
select pg_temp.no_claims();
select ok((select t.token_hash = sha256(convert_to(i.token, 'UTF8')) and t.created_by = 'aa000000-0000-4000-8000-0000000000ad'
           from metrics.scrape_tokens t join issued i on i.id = t.id),
  'the stored hash is the returned token''s, the author the caller');
select metrics.rollup_now();
select isnt_empty($$select * from metrics.scrape((select token from issued))$$, 'the token scrapes');
select is(current_setting('metrics.issued_scrape_token', true), '', 'the secret does not linger in the session');
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select ok(metrics.revoke_scrape_token((select id from issued)), 'the admin revokes it');
select throws_ok($$update metrics.scrape_tokens set revoked_at = null where id = (select id from issued)$$,
  '42501', null, 'a revoked token cannot be revived');
reset role;
select pg_temp.no_claims();
select throws_ok($$update metrics.scrape_tokens set revoked_at = null where id = (select id from issued)$$,
  '42501', null, 'not even by the owner or the service role');
select throws_ok($$update metrics.scrape_tokens set token_hash = sha256('weak') where id = (select id from issued)$$,
  '42501', null, 'a token''s hash is never rewritten');
select throws_ok($$select * from metrics.scrape((select token from issued))$$, '28000', null,
  'the revoked token stays refused');

select pg_temp.no_claims();

-- 12: the batch ledger is kept for the widest timestamp window ever configured -----------------------------------
update metrics.config set max_past = '3 days';
select is(metrics.ingest(pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'old', '2 days')) ->> 'status',
  'accepted', 'setup: a batch of points two days old, under a 3-day window');
update metrics.batches set received_at = now() - interval '2 days 1 hour' where batch_id = 'old';
update metrics.config set max_past = '1 hour';
select is((select max_past_high_water from metrics.config), '3 days'::interval,
  'lowering max_past keeps its high-water mark');
select is((metrics.apply_retention() ->> 'batches_forgotten')::integer, 0,
  'retention under the narrow window keeps the batch id (the widest window ever is 3 days)');
update metrics.config set max_past = '3 days';
select is(metrics.ingest(pg_temp.batch('0a000000-0000-4000-8000-00000000000a', 'old', '2 days')) ->> 'status',
  'duplicate', 'so resending it after max_past is raised again is a duplicate, not counted twice');

-- 17: quotas -------------------------------------------------------------------------------------------------------
update metrics.projects set alert_rules_quota = 2, alert_silences_quota = 1
where id = '0a000000-0000-4000-8000-00000000000a';
insert into metrics.alert_rules (project_id, name, metric, op, threshold) values
  ('0a000000-0000-4000-8000-00000000000a', 'r1', 'meshhook_jobs_total', '>', 1),
  ('0a000000-0000-4000-8000-00000000000a', 'r2', 'meshhook_jobs_total', '>', 2);
select throws_ok($$insert into metrics.alert_rules (project_id, name, metric, op, threshold)
    values ('0a000000-0000-4000-8000-00000000000a', 'r3', 'meshhook_jobs_total', '>', 3)$$,
  '23514', 'quota: the project has 2 alert rules, the most allowed (alert_rules_quota)',
  'a project''s rules stop at its quota (23514, message "quota: ...")');
insert into metrics.alert_silences (project_id, starts_at, ends_at) values
  ('0a000000-0000-4000-8000-00000000000a', now() - interval '2 hours', now() - interval '1 hour'),
  ('0a000000-0000-4000-8000-00000000000a', now(), now() + interval '1 hour');
select throws_ok($$insert into metrics.alert_silences (project_id, ends_at)
    values ('0a000000-0000-4000-8000-00000000000a', now() + interval '2 hours')$$,
  '23514', 'quota: the project has 1 silences that have not ended, the most allowed (alert_silences_quota)',
  'silences that have not ended stop at the quota; ended ones do not count');

-- 8: one family per metric name -------------------------------------------------------------------------------------
-- the victim registered shared_total first as a counter; a project whose id sorts first sends it as a gauge
insert into metrics.projects (id) values ('00000000-0000-4000-8000-000000000001'), ('ff000000-0000-4000-8000-0000000000ff');
select metrics.ingest(jsonb_build_object('project_id', 'ff000000-0000-4000-8000-0000000000ff', 'source', 'w',
  'batch_id', 'v', 'points', jsonb_build_array(jsonb_build_object('name', 'shared_total', 'kind', 'counter',
    'ts', extract(epoch from now()), 'count', 1, 'sum', 5, 'help', 'Jobs done'))));
update metrics.families set created_at = now() - interval '1 day' where name = 'shared_total';
select metrics.ingest(jsonb_build_object('project_id', '00000000-0000-4000-8000-000000000001', 'source', 'w',
  'batch_id', 'a', 'points', jsonb_build_array(jsonb_build_object('name', 'shared_total', 'kind', 'gauge',
    'ts', extract(epoch from now()), 'count', 1, 'sum', 7, 'min', 7, 'max', 7, 'last', 7, 'help', 'hijacked'))));
select metrics.rollup_now();
select results_eq($$select kind, help, project_id from metrics.exposition_rows() where name = 'shared_total'$$,
  $$values ('counter', 'Jobs done', 'ff000000-0000-4000-8000-0000000000ff'::uuid)$$,
  'the all-projects exposition keeps the oldest family''s kind and HELP; the other kind is left out');
select is_empty($$select * from metrics.exposition_rows(p_kinds => '{gauge}') where name = 'shared_total'$$,
  'also when the gauges are fetched on their own');
select results_eq($$select name, project_id, kind, exported_kind from metrics.exposition_conflicts()$$,
  $$values ('shared_total', '00000000-0000-4000-8000-000000000001'::uuid, 'gauge', 'counter')$$,
  'exposition_conflicts reports the family left out');

select * from finish();
rollback;
