-- HTTP ingest (issue #16, migration 20261206000600): ingest tokens (admins only, hashed, irreversible revocation,
-- one project), metrics.ingest_http (token or own rights), cumulative -> delta state kept with the batch ledger.
begin;
set local client_min_messages = warning;
select plan(51);

insert into metrics.projects (id) values
  ('0a000000-0000-4000-8000-00000000000a'), ('0b000000-0000-4000-8000-00000000000b');
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ed', 'editor'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ad', 'admin');

create function pg_temp.claims(p_user uuid, p_role text default 'authenticated') returns void language sql as $$
  select set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', p_role)::text, true),
    set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true),
    set_config('request.jwt.claim.role', p_role, true)
$$;
create function pg_temp.batch(p_batch_id text, p_points jsonb, p_project uuid default null) returns jsonb
language sql as $$
  select jsonb_strip_nulls(jsonb_build_object('project_id', p_project, 'source', 'otlp/worker', 'batch_id', p_batch_id,
    'points', p_points))
$$;
create function pg_temp.counter(p_value double precision, p_start text, p_ago interval default '1 minute',
  p_name text default 'meshhook_jobs_total') returns jsonb
language sql as $$
  select jsonb_build_array(jsonb_build_object('name', p_name, 'kind', 'counter', 'labels', jsonb_build_object('queue', 'q'),
    'ts', extract(epoch from now() - p_ago), 'count', 1, 'sum', p_value,
    'cumulative', jsonb_build_object('stream', p_name || '{queue=q}', 'start', p_start)))
$$;
create function pg_temp.total(p_project uuid, p_name text) returns double precision language sql as $$
  select coalesce(sum(p.sum), 0) from metrics.points p join metrics.series s on s.id = p.series_id
  where s.project_id = p_project and s.name = p_name
$$;
grant execute on function pg_temp.batch(text, jsonb, uuid), pg_temp.counter(double precision, text, interval, text)
  to anon, authenticated, service_role;
create temporary table tokens (who text primary key, id uuid, token text);
grant all on tokens to anon, authenticated, service_role;

-- tokens: admins only, shown once ------------------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
insert into tokens select 'a', t.id, t.token from metrics.create_ingest_token('0a000000-0000-4000-8000-00000000000a', 'node workers') t;
select matches((select token from tokens where who = 'a'), '^mhi_[0-9a-f]{64}$', 'an admin creates an ingest token (mhi_ + 256 bits hex)');
select is((select count(*)::integer from metrics.list_ingest_tokens('0a000000-0000-4000-8000-00000000000a')), 1,
  'the admin lists it');
select is((select token_prefix from metrics.list_ingest_tokens('0a000000-0000-4000-8000-00000000000a')),
  (select left(token, 12) from tokens where who = 'a'), 'the listing shows the prefix only');
select throws_ok($$select metrics.create_ingest_token('0b000000-0000-4000-8000-00000000000b')$$, '42501', null,
  'an admin of A cannot create a token of B');
select throws_ok($$select * from metrics.ingest_tokens$$, '42501', null,
  'signed-in users cannot read the token table itself');
reset role;
select is((select encode(token_hash, 'hex') from metrics.ingest_tokens),
  (select encode(sha256(convert_to(token, 'UTF8')), 'hex') from tokens where who = 'a'),
  'only the sha256 of the token is stored');

select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select throws_ok($$select metrics.create_ingest_token('0a000000-0000-4000-8000-00000000000a')$$, '42501', null,
  'an editor cannot create ingest tokens');
select is_empty($$select * from metrics.list_ingest_tokens('0a000000-0000-4000-8000-00000000000a')$$,
  'an editor lists no tokens');
select is((select metrics.revoke_ingest_token(id) from tokens where who = 'a'), false, 'nor revokes one');
reset role;

select pg_temp.claims(null, 'service_role');
set local role service_role;
insert into tokens select 'b', t.id, t.token from metrics.create_ingest_token('0b000000-0000-4000-8000-00000000000b') t;
select is((select count(*)::integer from tokens where who = 'b'), 1, 'the service role creates tokens for any project');
reset role;

-- ingest with a token (as anon, as the edge function does for an mhi_ bearer) -----------------------------------
select pg_temp.claims(null, 'anon');
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('b1', pg_temp.counter(10, '100')), (select token from tokens where who = 'a')) ->> 'status',
  'accepted', 'anon with the token of A ingests into A (project from the token)');
select throws_ok(format($$select metrics.ingest_http(pg_temp.batch('x1', pg_temp.counter(1, '1', '1 minute', 'meshhook_evil_total'),
    '0b000000-0000-4000-8000-00000000000b'), %L)$$, (select token from tokens where who = 'a')),
  '42501', null, 'the token of A cannot write B');
select throws_ok($$select metrics.ingest_http(pg_temp.batch('x2', pg_temp.counter(1, '1', '1 minute', 'meshhook_evil_total'),
    '0b000000-0000-4000-8000-00000000000b'))$$, '42501', null, 'anon without a token cannot write');
select throws_ok($$select metrics.ingest_http(pg_temp.batch('x3', pg_temp.counter(1, '1')), 'mhi_0000')$$,
  '28000', 'invalid ingest token', 'an unknown token is refused');
select throws_ok($$select metrics.ingest(pg_temp.batch('x4', pg_temp.counter(1, '1'), '0a000000-0000-4000-8000-00000000000a'))$$,
  '42501', null, 'the grant of a token does not outlive the call: a later plain ingest in the transaction is refused');
reset role;
select is(pg_temp.total('0b000000-0000-4000-8000-00000000000b', 'meshhook_evil_total'), 0::double precision,
  'nothing reached B');
select is((select count(*)::integer from metrics.ingest_grants), 0, 'no grant is left behind');
select is(pg_temp.total('0a000000-0000-4000-8000-00000000000a', 'meshhook_jobs_total'), 10::double precision,
  'the first cumulative value is the first delta');
select isnt((select last_used_at from metrics.ingest_tokens where id = (select id from tokens where who = 'a')), null,
  'the token''s last use is recorded');

-- cumulative -> delta, duplicates, resets -----------------------------------------------------------------------
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('b2', pg_temp.counter(15, '100', '50 seconds')), (select token from tokens where who = 'a')) ->> 'status',
  'accepted', 'a later cumulative value of the same start');
select is(metrics.ingest_http(pg_temp.batch('b2', pg_temp.counter(15, '100', '50 seconds')), (select token from tokens where who = 'a')) ->> 'status',
  'duplicate', 'the same batch again is a duplicate');
select is(metrics.ingest_http(pg_temp.batch('b3', pg_temp.counter(15, '100', '50 seconds')), (select token from tokens where who = 'a')) ->> 'status',
  'accepted', 'the same export under another batch id is accepted ...');
select is(metrics.ingest_http(pg_temp.batch('b4', pg_temp.counter(12, '100', '55 seconds')), (select token from tokens where who = 'a')) ->> 'points',
  '0', 'a late export older than the state stores nothing');
reset role;
select is(pg_temp.total('0a000000-0000-4000-8000-00000000000a', 'meshhook_jobs_total'), 15::double precision,
  '... and adds nothing: 10 + 5, the duplicate neither stored nor advanced the state');
select is((select sum from metrics.ingest_streams where stream = 'meshhook_jobs_total{queue=q}'), 15::double precision,
  'the state holds the last cumulative value');
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('b5', pg_temp.counter(3, '200', '40 seconds')), (select token from tokens where who = 'a')) ->> 'status',
  'accepted', 'a restarted exporter (new start time)');
select is(metrics.ingest_http(pg_temp.batch('b6', pg_temp.counter(2, '200', '30 seconds')), (select token from tokens where who = 'a')) ->> 'status',
  'accepted', 'a counter that went down under the same start');
reset role;
select is(pg_temp.total('0a000000-0000-4000-8000-00000000000a', 'meshhook_jobs_total'), 20::double precision,
  'resets count the whole new value: 15 + 3 + 2, never negative');

-- cumulative histograms: bucket-wise differences ------------------------------------------------------------------
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('h1', jsonb_build_array(jsonb_build_object('name', 'meshhook_step_seconds', 'kind', 'histogram',
    'ts', extract(epoch from now() - interval '20 seconds'), 'count', 3, 'sum', 6, 'min', 1, 'max', 3,
    'sketch', '{"z": 0, "p": {"0": 1, "35": 1, "55": 1}}'::jsonb, 'cumulative', '{"stream": "h", "start": "1"}'::jsonb))),
  (select token from tokens where who = 'a')) ->> 'status', 'accepted', 'a cumulative histogram');
select is(metrics.ingest_http(pg_temp.batch('h2', jsonb_build_array(jsonb_build_object('name', 'meshhook_step_seconds', 'kind', 'histogram',
    'ts', extract(epoch from now() - interval '10 seconds'), 'count', 5, 'sum', 12, 'min', 1, 'max', 3,
    'sketch', '{"z": 0, "p": {"0": 1, "35": 3, "55": 1}}'::jsonb, 'cumulative', '{"stream": "h", "start": "1"}'::jsonb))),
  (select token from tokens where who = 'a')) ->> 'status', 'accepted', 'its next state');
reset role;
select is((select jsonb_build_object('count', p.count, 'sum', p.sum, 'sketch', p.sketch) from metrics.points p
    join metrics.series s on s.id = p.series_id where s.name = 'meshhook_step_seconds' order by p.ts desc limit 1),
  '{"count": 2, "sum": 6, "sketch": {"z": 0, "p": {"35": 2}, "n": {}}}'::jsonb, 'the stored delta is the bucket-wise difference');
select ok((select p.min >= 1.9 and p.max <= 2.02 from metrics.points p join metrics.series s on s.id = p.series_id
    where s.name = 'meshhook_step_seconds' order by p.ts desc limit 1), 'with min and max from its buckets');

-- exponential histograms convert in their own bucket space: a rescale (scale 10 -> 3) is no reset -----------------
-- 10 values near 1 at scale 10 (index 0, sketch key 1), then one value 1000: the SDK rescales to 3, index 0 holds
-- the 10 (sketch key 3 there), index 79 the 1000 (sketch key 345)
select is(metrics.exp_buckets_delta(
    '{"scale": 0, "z": 1, "p": {"-1": [6, "p", -17], "3": [1, "p", 139]}, "n": {}}',
    '{"scale": 1, "z": 1, "p": {"-1": [2, "p", -9], "-2": [3, "p", -26]}, "n": {}}'),
  '{"z": 0, "p": {"-17": 1, "139": 1}, "n": {}}'::jsonb,
  'exp_buckets_delta downscales the older state (index -1 and -2 at scale 1 are -1 at scale 0) before subtracting');
select is(metrics.exp_buckets_delta('{"scale": 2, "z": 0, "p": {"0": [5, "p", 4]}}', '{"scale": 1, "z": 0, "p": {"0": [1, "p", 9]}}'),
  null, 'a higher scale than the state''s is a reset');
select is(metrics.exp_buckets_delta('{"scale": 1, "z": 0, "p": {"0": [5, "p", 9]}}', '{"scale": 1, "z": 0, "p": {"0": [1, "p", 9], "7": [1, "p", 90]}}'),
  null, 'a bucket of the state missing from the newer export is a reset');
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('x1', jsonb_build_array(jsonb_build_object('name', 'meshhook_exp_seconds', 'kind', 'histogram',
    'ts', extract(epoch from now() - interval '20 seconds'), 'count', 10, 'sum', 10, 'min', 1, 'max', 1,
    'sketch', '{"z": 0, "p": {"1": 10}, "n": {}}'::jsonb, 'cumulative', jsonb_build_object('stream', 'hx', 'start', '5',
      'buckets', '{"scale": 10, "z": 0, "p": {"0": [10, "p", 1]}, "n": {}}'::jsonb)))),
  (select token from tokens where who = 'a')) ->> 'status', 'accepted', 'a cumulative exponential histogram at scale 10');
select is(metrics.ingest_http(pg_temp.batch('x2', jsonb_build_array(jsonb_build_object('name', 'meshhook_exp_seconds', 'kind', 'histogram',
    'ts', extract(epoch from now() - interval '10 seconds'), 'count', 11, 'sum', 1010, 'min', 1, 'max', 1000,
    'sketch', '{"z": 0, "p": {"3": 10, "345": 1}, "n": {}}'::jsonb, 'cumulative', jsonb_build_object('stream', 'hx', 'start', '5',
      'buckets', '{"scale": 3, "z": 0, "p": {"0": [10, "p", 3], "79": [1, "p", 345]}, "n": {}}'::jsonb)))),
  (select token from tokens where who = 'a')) ->> 'points', '1', 'its next state, rescaled to 3');
reset role;
select is((select jsonb_build_object('count', sum(p.count), 'sum', sum(p.sum)) from metrics.points p
    join metrics.series s on s.id = p.series_id where s.name = 'meshhook_exp_seconds'),
  '{"count": 11, "sum": 1010}'::jsonb, 'the rescale stored 11 values in all, not 21');
select is((select p.sketch from metrics.points p join metrics.series s on s.id = p.series_id
    where s.name = 'meshhook_exp_seconds' order by p.ts desc limit 1),
  '{"z": 0, "p": {"345": 1}, "n": {}}'::jsonb, 'the delta is the one new value, in the sketch bucket of the new scale');

-- start times compare as numbers; an older start is a late export of an earlier process life ----------------------
set local role anon;
select is(metrics.ingest_http(pg_temp.batch('s1', pg_temp.counter(7, '30', '20 seconds')), (select token from tokens where who = 'a')) ->> 'points',
  '0', 'an export with an older start (30 < 200, though ''30'' > ''200'' as text) is stale: nothing stored');
select is(metrics.ingest_http(pg_temp.batch('s2', pg_temp.counter(1, '1000', '15 seconds')), (select token from tokens where who = 'a')) ->> 'points',
  '1', 'a newer start (1000 > 200, though ''1000'' < ''200'' as text) is a reset');
reset role;
select is(pg_temp.total('0a000000-0000-4000-8000-00000000000a', 'meshhook_jobs_total'), 21::double precision,
  'the stale export added nothing, the reset its whole value: 20 + 1');

-- a cumulative point is validated before its conversion ------------------------------------------------------------
set local role anon;
select throws_ok(format($$select metrics.ingest_http(pg_temp.batch('v1', (pg_temp.counter(30, '1000', '5 seconds') #- '{0,ts}')), %L)$$,
  (select token from tokens where who = 'a')), '22023', 'points[0].ts: required number (epoch seconds)',
  'a cumulative point without ts is refused, not silently dropped');
select throws_ok(format($$select metrics.ingest_http(pg_temp.batch('v2', jsonb_set(pg_temp.counter(30, '1000', '5 seconds'), '{0,cumulative,start}', '"12a"')), %L)$$,
  (select token from tokens where who = 'a')), '22023', null, 'a start that is not decimal digits is refused');
reset role;

-- revocation is for good ------------------------------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select is((select metrics.revoke_ingest_token(id) from tokens where who = 'a'), true, 'the admin revokes the token');
reset role;
select pg_temp.claims(null, 'anon');
set local role anon;
select throws_ok(format($$select metrics.ingest_http(pg_temp.batch('r1', pg_temp.counter(30, '200')), %L)$$,
  (select token from tokens where who = 'a')), '28000', 'invalid ingest token', 'a revoked token is refused');
reset role;
select throws_ok($$update metrics.ingest_tokens set revoked_at = null$$, '42501', null,
  'not even the owner revives a revoked token');

-- a user JWT (editor) and the batch's project, without token ----------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select is(metrics.ingest_http(pg_temp.batch('e1', pg_temp.counter(4, '9', '1 minute', 'meshhook_editor_total'),
  '0a000000-0000-4000-8000-00000000000a')) ->> 'status', 'accepted', 'an editor ingests with the batch''s project_id');
select throws_ok($$select metrics.ingest_http(pg_temp.batch('e2', pg_temp.counter(4, '9', '1 minute', 'meshhook_editor_total'),
  '0b000000-0000-4000-8000-00000000000b'))$$, '42501', null, 'but not into a project of which it is no editor');
reset role;

-- the maintenance run prunes conversion state idle for longer than the widest accepted past window ----------------
update metrics.ingest_streams set updated_at = now() - (select max_past_high_water from metrics.config) - interval '1 minute'
where stream = 'meshhook_jobs_total{queue=q}';
select is((metrics.maintain() ->> 'ingest_streams_pruned')::integer, 1,
  'maintain() prunes the stream idle past the widest past window');
select ok(exists (select from metrics.ingest_streams) and not exists (
    select from metrics.ingest_streams where stream = 'meshhook_jobs_total{queue=q}'),
  'and keeps the others');

select * from finish();
rollback;
