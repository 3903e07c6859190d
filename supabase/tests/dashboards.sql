-- Saved dashboards: members read, editors and admins write, nobody crosses projects; the spec rule
-- (metrics.dashboard_spec_problem) names the JSON path of each problem and binds every writer; every update
-- bumps the revision and a stale one is refused; metrics.my_projects lists the caller's projects with roles.
begin;
set local client_min_messages = warning;
select plan(54);

-- projects A and B; users: admin, editor and viewer of A, admin of B; C has members but no metrics yet
insert into metrics.projects (id, name) values
  ('0a000000-0000-4000-8000-00000000000a', 'Alpha'), ('0b000000-0000-4000-8000-00000000000b', null);
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ad', 'admin'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ed', 'editor'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ee', 'viewer'),
  ('0b000000-0000-4000-8000-00000000000b', 'bb000000-0000-4000-8000-0000000000ad', 'admin'),
  ('0b000000-0000-4000-8000-00000000000b', 'aa000000-0000-4000-8000-0000000000ee', 'editor');

create function pg_temp.claims(p_user uuid, p_role text default 'authenticated') returns void language sql as $$
  select set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', p_role)::text, true),
    set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true),
    set_config('request.jwt.claim.role', p_role, true)
$$;

-- a valid spec with every field, and a function that breaks one thing in it
create function pg_temp.spec() returns jsonb language sql as $$
  select '{"version": 1, "title": "MeshHook", "panels": [
    {"id": "webhooks", "title": "Webhook throughput", "type": "timeseries",
     "metric": "meshhook_webhook_requests_total", "agg": "rate", "by": ["outcome"], "match": ["outcome!=\"error\""],
     "quantiles": null, "unit": "reqps", "thresholds": [{"value": 0.05, "color": "warning"}, {"value": 0.2, "color": "critical"}],
     "width": 6, "height": 1},
    {"id": "errors", "title": "Error ratio", "type": "stat", "metric": "meshhook_webhook_requests_total", "agg": "rate",
     "by": [], "match": [], "ratio": {"numerator": ["outcome!=ok"], "denominator": []}, "unit": "percentunit"},
    {"id": "latency", "title": "Step latency", "type": "timeseries", "metric": "meshhook_workflow_step_duration_seconds",
     "agg": "p50", "by": null, "quantiles": ["p50", "p90", "p99.9"], "unit": "s", "width": 12, "height": 4},
    {"id": "alerts", "title": "Alerts", "type": "alerts"}
  ]}'::jsonb
$$;
create function pg_temp.problem(p_path text[], p_value jsonb) returns text language sql as $$
  select metrics.dashboard_spec_problem(jsonb_set(pg_temp.spec(), p_path, p_value))
$$;

-- the spec rule ------------------------------------------------------------------------------------------
select is(metrics.dashboard_spec_problem(pg_temp.spec()), null, 'a spec with every kind of panel and field is fine');
select is(metrics.dashboard_spec_problem('{"version": 1, "title": "", "panels": []}'), null, 'an empty dashboard is fine');
select is(metrics.dashboard_spec_problem(null), 'required', 'null: required');
select is(metrics.dashboard_spec_problem('[]'), 'must be an object {"version": 1, "title": string, "panels": [...]}',
  'not an object');
select is(metrics.dashboard_spec_problem(pg_temp.spec() || '{"theme": "dark"}'),
  'unknown field "theme" (allowed: version, title, panels)', 'unknown top-level field');
select is(pg_temp.problem('{version}', '2'), 'version: must be 1', 'version 2 is refused');
select is(pg_temp.problem('{title}', to_jsonb(repeat('t', 201))), 'title: required string of at most 200 characters',
  'title too long');
select is(metrics.dashboard_spec_problem(jsonb_build_object('version', 1, 'title', 'x', 'panels',
    (select jsonb_agg(jsonb_build_object('id', 'p' || i, 'title', '', 'type', 'alerts')) from generate_series(1, 49) i))),
  'panels: required array of at most 48 panels', 'at most 48 panels');
select is(metrics.dashboard_spec_problem(jsonb_build_object('version', 1, 'title', 'x', 'panels',
    (select jsonb_agg(jsonb_build_object('id', 'p' || i, 'title', repeat('t', 200), 'type', 'alerts',
       'match', jsonb_build_array(repeat('a', 1190) || '=1'))) from generate_series(1, 48) i))),
  'larger than 65536 bytes as JSON', 'at most 64 KiB');
select is(pg_temp.problem('{panels,2,agg}', '"foo"'),
  'panels[2].agg: unknown aggregation ''foo'' (use rate, sum, avg, min, max, last, count, pNN or quantile(q))',
  'the aggregation rule is metrics.aggregation_problem''s, at its path');
select is(pg_temp.problem('{panels,0,agg}', 'null'), 'panels[0].agg: required', 'agg is required for timeseries');
select is(pg_temp.problem('{panels,1,metric}', '"__name__"'),
  'panels[1].metric: required metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 200 characters, not starting with __)',
  'reserved metric names are refused');
select is(pg_temp.problem('{panels,3,agg}', '"median"'),
  'panels[3].agg: unknown aggregation ''median'' (use rate, sum, avg, min, max, last, count, pNN or quantile(q))',
  'an alerts panel needs no query, but what it gives is checked');
select is(pg_temp.problem('{panels,1,id}', '"webhooks"'),
  'panels[1].id: "webhooks" is the id of panels[0] too (ids are unique in a dashboard)', 'panel ids are unique');
select is(pg_temp.problem('{panels,0,id}', '"a b"'), 'panels[0].id: required, 1 to 64 characters A-Z a-z 0-9 _ -',
  'panel ids are [A-Za-z0-9_-]{1,64}');
select is(pg_temp.problem('{panels,0,type}', '"pie"'), 'panels[0].type: must be timeseries, stat or alerts', 'panel types');
select is(pg_temp.problem('{panels,0,colour}', '"red"'),
  'panels[0]: unknown field "colour" (allowed: id, title, type, metric, agg, by, match, quantiles, ratio, unit, thresholds, width, height)',
  'unknown panel field');
select is(pg_temp.problem('{panels,0,by}', '["outcome", "outcome"]'), 'panels[0].by: label names must not repeat',
  'by: metrics.label_names_problem');
select is(pg_temp.problem('{panels,0,by}', '[1]'), 'panels[0].by: must be null or an array of label names', 'by: strings');
select is(pg_temp.problem('{panels,0,match,1}', '"outcome"'),
  'panels[0].match[1]: expected label<op>value with op one of =, !=, =~, !~ (e.g. status=~"5..")', 'a matcher without operator');
select is(pg_temp.problem('{panels,0,match}', (select jsonb_agg('a=1'::text) from generate_series(1, 21))),
  'panels[0].match: at most 20 matchers', 'at most 20 matchers');
select is(pg_temp.problem('{panels,0,match,0}', to_jsonb('a=' || repeat('x', 1199))),
  'panels[0].match[0]: longer than 1200 characters', 'matchers of at most 1200 characters');
select is(pg_temp.problem('{panels,2,quantiles,1}', '"avg"'),
  'panels[2].quantiles[1]: must be a percentile pNN or pNN.N such as "p99"', 'quantiles are percentiles');
select is(pg_temp.problem('{panels,2,quantiles}', '["p50", "p50"]'), 'panels[2].quantiles: must not repeat',
  'quantiles do not repeat');
select is(pg_temp.problem('{panels,1,ratio}', '{"numerator": []}'),
  'panels[1].ratio.denominator: must be an array of matcher strings such as outcome!="error"', 'a ratio needs both sides');
select is(pg_temp.problem('{panels,1,ratio,numerator,0}', '"=x"'),
  'panels[1].ratio.numerator[0]: expected label<op>value with op one of =, !=, =~, !~ (e.g. status=~"5..")',
  'ratio matchers are checked like match');
select is(pg_temp.problem('{panels,0,unit}', '"furlongs"'),
  'panels[0].unit: must be one of short, percent, percentunit, s, ms, bytes, Bps, reqps, ops, none', 'units');
select is(pg_temp.problem('{panels,0,thresholds,1,color}', '"red"'),
  'panels[0].thresholds[1].color: must be ok, warning or critical', 'threshold colours');
select is(pg_temp.problem('{panels,0,thresholds,0,value}', '"1"'),
  'panels[0].thresholds[0].value: required number', 'threshold values are numbers');
select is(pg_temp.problem('{panels,0,width}', '13'), 'panels[0].width: must be an integer from 1 to 12', 'width 1..12');
select is(pg_temp.problem('{panels,0,height}', '1.5'), 'panels[0].height: must be an integer from 1 to 4', 'height: integers');

-- the editor of A writes ----------------------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select lives_ok(
  $$insert into metrics.dashboards (project_id, name, spec) values
    ('0a000000-0000-4000-8000-00000000000a', 'Overview', pg_temp.spec()),
    ('0a000000-0000-4000-8000-00000000000a', 'Second', '{"version": 1, "title": "2", "panels": []}')$$,
  'A''s editor creates dashboards');
select results_eq(
  $$select name, position, revision, created_by from metrics.dashboards order by position$$,
  $$values ('Overview', 0, 1, 'aa000000-0000-4000-8000-0000000000ed'::uuid),
           ('Second', 1, 1, 'aa000000-0000-4000-8000-0000000000ed'::uuid)$$,
  'new dashboards go last, at revision 1, created by the caller');
select throws_ok(
  $$insert into metrics.dashboards (project_id, name, spec) values
    ('0a000000-0000-4000-8000-00000000000a', 'Bad', jsonb_set(pg_temp.spec(), '{panels,2,agg}', '"foo"'))$$,
  '23514', 'spec: panels[2].agg: unknown aggregation ''foo'' (use rate, sum, avg, min, max, last, count, pNN or quantile(q))',
  'a bad spec is refused by the database, with its path');
select throws_ok(
  $$insert into metrics.dashboards (project_id, name, spec) values
    ('0a000000-0000-4000-8000-00000000000a', 'Overview', pg_temp.spec())$$,
  '23505', null, 'names are unique per project');
select throws_ok(
  $$insert into metrics.dashboards (project_id, name, spec) values
    ('0b000000-0000-4000-8000-00000000000b', 'Evil', pg_temp.spec())$$,
  '42501', null, 'A''s editor cannot create a dashboard in B');
select throws_ok(
  $$insert into metrics.dashboards (project_id, name, spec, revision) values
    ('0a000000-0000-4000-8000-00000000000a', 'Forged', pg_temp.spec(), 7)$$,
  '42501', null, 'signed-in users do not choose the revision of a new dashboard');
select results_eq(
  $$update metrics.dashboards set name = 'Overview 2' where name = 'Overview' returning revision$$,
  $$values (2)$$, 'every update bumps the revision');
select results_eq(
  $$update metrics.dashboards set spec = spec, revision = 2 where name = 'Overview 2' returning revision$$,
  $$values (3)$$, 'an update that names the current revision succeeds and bumps it');
select throws_ok(
  $$update metrics.dashboards set name = 'Lost update', revision = 2 where name = 'Overview 2'$$,
  '40001', null, 'an update that names a stale revision is refused');
select throws_ok(
  $$update metrics.dashboards set spec = '{"version": 1, "title": "x", "panels": [{"id": "a"}]}' where name = 'Second'$$,
  '23514', 'spec: panels[0].title: required string of at most 200 characters', 'updates are checked too');
reset role;

-- the viewer of A reads, and writes nothing -------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ee');
set local role authenticated;
select is((select count(*) from metrics.dashboards where project_id = '0a000000-0000-4000-8000-00000000000a'), 2::bigint,
  'A''s viewer sees A''s dashboards');
select throws_ok(
  $$insert into metrics.dashboards (project_id, name, spec) values
    ('0a000000-0000-4000-8000-00000000000a', 'Viewer''s', pg_temp.spec())$$,
  '42501', null, 'A''s viewer cannot create a dashboard');
select is_empty($$update metrics.dashboards set name = 'hijacked' returning id$$, 'A''s viewer changes nothing');
select is_empty($$delete from metrics.dashboards returning id$$, 'A''s viewer deletes nothing');
select results_eq($$select project_id, name, role from metrics.my_projects()$$,
  $$values ('0a000000-0000-4000-8000-00000000000a'::uuid, 'Alpha', 'viewer'),
           ('0b000000-0000-4000-8000-00000000000b'::uuid, null, 'editor')$$,
  'my_projects: the caller''s projects with the role in each (named first)');
reset role;

-- the admin of B: nothing of A ------------------------------------------------------------------------------
select pg_temp.claims('bb000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select is((select count(*) from metrics.dashboards), 0::bigint, 'B''s admin sees none of A''s dashboards');
select is_empty($$update metrics.dashboards set name = 'x' returning id$$, 'B''s admin changes none of A''s dashboards');
select is_empty($$delete from metrics.dashboards returning id$$, 'B''s admin deletes none of A''s dashboards');
select results_eq($$select project_id, role from metrics.my_projects()$$,
  $$values ('0b000000-0000-4000-8000-00000000000b'::uuid, 'admin')$$, 'my_projects of B''s admin: only B');
reset role;

-- the admin of A deletes; anon has nothing --------------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select isnt_empty($$delete from metrics.dashboards where name = 'Second' returning id$$, 'A''s admin deletes a dashboard');
reset role;
select pg_temp.claims(null, 'anon');
set local role anon;
select throws_ok($$select count(*) from metrics.dashboards$$, '42501', null, 'anon cannot read dashboards');
select throws_ok($$select * from metrics.my_projects()$$, '42501', null, 'anon cannot call my_projects');
reset role;
select pg_temp.claims(null, 'service_role');
set local role service_role;
select results_eq(
  $$select project_id, role from metrics.my_projects()
    where project_id in ('0a000000-0000-4000-8000-00000000000a', '0b000000-0000-4000-8000-00000000000b')$$,
  $$values ('0a000000-0000-4000-8000-00000000000a'::uuid, 'admin'), ('0b000000-0000-4000-8000-00000000000b'::uuid, 'admin')$$,
  'my_projects of the service role: every project, as admin');
reset role;

select * from finish();
rollback;
