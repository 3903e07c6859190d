-- metrics.list_series checks its matchers itself (issue #15, migration 20261206000400): a caller of the Data
-- API (RPC as authenticated) gets metrics.query's error for an invalid matcher (22023 "p_matchers: ..."),
-- whether or not a series would reach it, instead of a raw regex error or an empty answer.
begin;
set local client_min_messages = warning;
select plan(10);

insert into metrics.projects (id) values ('0c000000-0000-4000-8000-00000000000c');
insert into metrics.project_members (project_id, user_id, role) values
  ('0c000000-0000-4000-8000-00000000000c', 'cc000000-0000-4000-8000-0000000000e1', 'viewer');
select is(metrics.ingest(jsonb_build_object('project_id', '0c000000-0000-4000-8000-00000000000c', 'source', 'w',
  'batch_id', 'ls-1', 'points', jsonb_build_array(
    jsonb_build_object('name', 'meshhook_webhook_requests_total', 'kind', 'counter',
      'labels', jsonb_build_object('outcome', 'ok'), 'ts', extract(epoch from now() - interval '1 minute'), 'count', 1, 'sum', 1),
    jsonb_build_object('name', 'meshhook_webhook_requests_total', 'kind', 'counter',
      'labels', jsonb_build_object('outcome', 'error'), 'ts', extract(epoch from now() - interval '1 minute'), 'count', 1, 'sum', 1)
  ))) ->> 'status', 'accepted', 'setup: two series');

-- the error of a call as SQLSTATE and message (null: no error)
create function pg_temp.failure(p_sql text) returns text language plpgsql as $$
begin
  execute p_sql;
  return null;
exception when others then
  return sqlstate || ' ' || sqlerrm;
end
$$;
grant execute on function pg_temp.failure(text) to authenticated;

-- as a member through the Data API: role authenticated with the claims PostgREST sets
select set_config('request.jwt.claims', '{"sub": "cc000000-0000-4000-8000-0000000000e1", "role": "authenticated"}', true);
select set_config('request.jwt.claim.sub', 'cc000000-0000-4000-8000-0000000000e1', true);
select set_config('request.jwt.claim.role', 'authenticated', true);
set local role authenticated;

select results_eq(
  $$select labels ->> 'outcome' from metrics.list_series('0c000000-0000-4000-8000-00000000000c',
    'meshhook_webhook_requests_total', '[{"label": "outcome", "op": "=~", "value": "o.*"}]')$$,
  $$values ('ok')$$, 'valid matchers: the matching series, as before');
select results_eq(
  $$select count(*)::integer from metrics.list_series('0c000000-0000-4000-8000-00000000000c', null, null)$$,
  $$values (2)$$, 'null matchers: none (every series), as metrics.query takes them');

select throws_like(
  $$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', 'meshhook_webhook_requests_total',
    '[{"label": "outcome", "op": "=", "value": "ok"}, {"label": "outcome", "op": "=~", "value": "("}]')$$,
  'p_matchers: [1].value: invalid regex: %', 'an invalid regex that series reach: the clear error, not 2201B');
select is(pg_temp.failure($$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c',
    'meshhook_webhook_requests_total', '[{"label": "outcome", "op": "=~", "value": "("}]')$$) like '22023 %',
  true, 'invalid matchers are SQLSTATE 22023 (HTTP 400 through the Data API), as in metrics.query');
select throws_like(
  $$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', 'meshhook_no_such_metric',
    '[{"label": "outcome", "op": "=~", "value": "("}]')$$,
  'p_matchers: [0].value: invalid regex: %', 'an invalid regex no series reaches: an error, not an empty answer');
select throws_like(
  $$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', null,
    jsonb_build_array(jsonb_build_object('label', 'outcome', 'op', '=~', 'value', repeat('a', 300))))$$,
  'p_matchers: [0].value: regex longer than 256 characters', 'the configured regex limit applies');
select throws_like(
  $$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', null, '{"label": "outcome"}')$$,
  'p_matchers: must be an array%', 'matchers of the wrong shape are refused');
select throws_like(
  $$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', null,
    '[{"label": "outcome", "op": "=~", "value": "***=ok"}]')$$,
  'p_matchers: [0].value: invalid regex: %', 'checked as it runs (anchored), as migration 20261206000300 made the rule');

-- the same error as metrics.query for the same matchers: one rule, one message
select is(
  pg_temp.failure($$select * from metrics.list_series('0c000000-0000-4000-8000-00000000000c', null,
    '[{"label": "route", "op": "!~", "value": "[z-a]"}]')$$),
  pg_temp.failure($$select * from metrics.query('0c000000-0000-4000-8000-00000000000c', 'meshhook_webhook_requests_total',
    now() - interval '1 hour', now(), '[{"label": "route", "op": "!~", "value": "[z-a]"}]')$$),
  'list_series and metrics.query answer invalid matchers with the same SQLSTATE and message');

reset role;
select * from finish();
rollback;
