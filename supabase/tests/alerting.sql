-- Alerting tables: receivers only for admins (secret write-only), rules and silences for members (editors
-- write), history read-only for members; no cross-tenant access; every check constraint refuses bad input.
begin;
set local client_min_messages = warning;
select plan(142);

-- projects A and B; users: admin, editor and viewer of A, admin of B
insert into metrics.projects (id) values
  ('0a000000-0000-4000-8000-00000000000a'), ('0b000000-0000-4000-8000-00000000000b');
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ad', 'admin'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ed', 'editor'),
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ee', 'viewer'),
  ('0b000000-0000-4000-8000-00000000000b', 'bb000000-0000-4000-8000-0000000000ad', 'admin');

create function pg_temp.claims(p_user uuid, p_role text default 'authenticated') returns void language sql as $$
  select set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', p_role)::text, true),
    set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true),
    set_config('request.jwt.claim.role', p_role, true)
$$;

-- B's configuration and history, written by the trusted owner connection
insert into metrics.alert_receivers (id, project_id, name, kind, target, secret) values
  ('b1000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-00000000000b', 'b-hook', 'webhook',
   'https://b.example/hook', 'b-secret');
insert into metrics.alert_rules (id, project_id, name, metric, op, threshold) values
  ('b2000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-00000000000b', 'b-rule',
   'meshhook_webhook_requests_total', '>', 1);
insert into metrics.alert_silences (id, project_id, ends_at) values
  ('b3000000-0000-4000-8000-000000000001', '0b000000-0000-4000-8000-00000000000b', now() + interval '1 hour');
insert into metrics.alert_events (project_id, rule_id, rule_name, state, value) values
  ('0b000000-0000-4000-8000-00000000000b', 'b2000000-0000-4000-8000-000000000001', 'b-rule', 'firing', 5);
-- A's receiver, rules, silences and event (signed-in users cannot choose ids: those rows come from here)
insert into metrics.alert_receivers (id, project_id, name, kind, target, secret) values
  ('a1000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-00000000000a', 'a-hook', 'webhook',
   'https://a.example/hook', 'a-secret');
insert into metrics.alert_rules (id, project_id, name, metric, matchers, agg, group_by, window_length, op,
    threshold, for_duration, severity, annotations) values
  ('a2000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-00000000000a', 'a-rule',
   'meshhook_webhook_requests_total', '[]', 'sum', null, '5 minutes', '>', 1, '0', 'warning', '{}'),
  ('a2000000-0000-4000-8000-000000000002', '0a000000-0000-4000-8000-00000000000a', 'errors',
   'meshhook_webhook_requests_total', '[{"label": "outcome", "op": "=~", "value": "err.*"}]', 'rate',
   '{route}', '5 minutes', '>', 0.5, '2 minutes', 'critical', '{"summary": "errors"}');
insert into metrics.alert_silences (id, project_id, starts_at, ends_at) values
  ('a3000000-0000-4000-8000-000000000001', '0a000000-0000-4000-8000-00000000000a',
   now() - interval '1 hour', now() + interval '1 hour'),
  ('a3000000-0000-4000-8000-000000000002', '0a000000-0000-4000-8000-00000000000a',
   now() + interval '1 hour', now() + interval '2 hours');
insert into metrics.alert_events (project_id, rule_id, rule_name, state, value) values
  ('0a000000-0000-4000-8000-00000000000a', 'a2000000-0000-4000-8000-000000000001', 'a-rule', 'pending', 2);

-- the admin of A: receivers, the secret column ------------------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select lives_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target, secret) values
    ('0a000000-0000-4000-8000-00000000000a', 'a-hook-2', 'webhook', 'https://a.example/hook2', 'a-secret-2')$$,
  'A''s admin creates a receiver with a secret');
select is(
  (select array[has_secret::text, created_by::text] from metrics.alert_receivers where name = 'a-hook-2'),
  array['true', 'aa000000-0000-4000-8000-0000000000ad'],
  'A''s admin sees has_secret; created_by defaults to auth.uid()');
select throws_ok(
  $$insert into metrics.alert_receivers (id, project_id, name, kind, target) values
    ('a1000000-0000-4000-8000-0000000000ff', '0a000000-0000-4000-8000-00000000000a', 'x', 'webhook', 'https://a.example/')$$,
  '42501', null, 'signed-in users cannot choose ids');
select throws_ok($$select secret from metrics.alert_receivers$$, '42501', null,
  'authenticated cannot select receivers.secret, not even an admin');
select throws_ok($$select * from metrics.alert_receivers$$, '42501', null,
  'select * is refused too (it includes the secret)');
select lives_ok(
  $$update metrics.alert_receivers set secret = 'rotated' where id = 'a1000000-0000-4000-8000-000000000001'$$,
  'A''s admin can rotate (write) the secret');
select is((select count(*) from metrics.alert_receivers where project_id = '0b000000-0000-4000-8000-00000000000b'),
  0::bigint, 'A''s admin does not see B''s receivers');
select throws_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target) values
    ('0b000000-0000-4000-8000-00000000000b', 'evil', 'webhook', 'https://evil.example/')$$,
  '42501', null, 'A''s admin cannot add a receiver to B');
select is_empty(
  $$update metrics.alert_receivers set target = 'https://evil.example/' where id = 'b1000000-0000-4000-8000-000000000001'
    returning id$$, 'A''s admin cannot change B''s receiver');
select is_empty(
  $$delete from metrics.alert_receivers where id = 'b1000000-0000-4000-8000-000000000001' returning id$$,
  'A''s admin cannot delete B''s receiver');
select throws_ok(
  $$update metrics.alert_receivers set project_id = '0b000000-0000-4000-8000-00000000000b'
    where id = 'a1000000-0000-4000-8000-000000000001'$$,
  '42501', null, 'a receiver cannot be moved to another project (no update grant on project_id)');
select throws_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target, created_by) values
    ('0a000000-0000-4000-8000-00000000000a', 'forged', 'webhook', 'https://a.example/', 'bb000000-0000-4000-8000-0000000000ad')$$,
  '42501', null, 'created_by cannot be forged');
reset role;

-- the editor of A: rules, links, silences; no receivers --------------------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select is((select count(*) from metrics.alert_receivers), 0::bigint, 'A''s editor sees no receivers (admins only)');
select throws_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target) values
    ('0a000000-0000-4000-8000-00000000000a', 'e', 'webhook', 'https://a.example/')$$,
  '42501', null, 'A''s editor cannot add receivers');
select lives_ok(
  $$insert into metrics.alert_rules (project_id, name, metric, matchers, agg, group_by, window_length, op,
      threshold, for_duration, severity, annotations) values
    ('0a000000-0000-4000-8000-00000000000a', 'errors-2',
     'meshhook_webhook_requests_total', '[{"label": "outcome", "op": "!=", "value": "ok"}]', 'p99.9',
     '{}', '1 minute', '<=', -3, '1 day', 'info', '{"runbook": "https://wiki/x"}')$$,
  'A''s editor creates a rule');
select is((select created_by from metrics.alert_rules where name = 'errors-2'),
  'aa000000-0000-4000-8000-0000000000ed'::uuid, 'a rule''s created_by is the caller');
select is(
  metrics.set_alert_rule_receivers('a2000000-0000-4000-8000-000000000002', array['a1000000-0000-4000-8000-000000000001'::uuid]),
  array['a1000000-0000-4000-8000-000000000001'::uuid], 'A''s editor links A''s receiver to A''s rule');
select throws_ok(
  $$select metrics.set_alert_rule_receivers('a2000000-0000-4000-8000-000000000002',
    array['b1000000-0000-4000-8000-000000000001'::uuid])$$,
  '23503', 'receiver_ids[0]: b1000000-0000-4000-8000-000000000001 is not a receiver of project 0a000000-0000-4000-8000-00000000000a',
  'A''s editor cannot link B''s receiver to A''s rule');
select throws_ok(
  $$insert into metrics.alert_rule_receivers (project_id, rule_id, receiver_id) values
    ('0a000000-0000-4000-8000-00000000000a', 'a2000000-0000-4000-8000-000000000002', 'b1000000-0000-4000-8000-000000000001')$$,
  '23503', null, 'nor by writing the link table directly (composite foreign key)');
select throws_ok(
  $$select metrics.set_alert_rule_receivers('b2000000-0000-4000-8000-000000000001',
    array['a1000000-0000-4000-8000-000000000001'::uuid])$$,
  '42501', null, 'A''s editor cannot change the receivers of B''s rule');
select is(
  metrics.set_alert_rule_receivers('a2000000-0000-4000-8000-000000000002', '{}'),
  '{}'::uuid[], 'an empty list unlinks every receiver');
select throws_ok(
  $$insert into metrics.alert_rules (project_id, name, metric, op, threshold) values
    ('0b000000-0000-4000-8000-00000000000b', 'evil', 'x', '>', 1)$$,
  '42501', null, 'A''s editor cannot create a rule in B');
select is(
  array[(select count(*) from metrics.alert_rules where project_id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.alert_silences where project_id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.alert_events where project_id = '0b000000-0000-4000-8000-00000000000b'),
        (select count(*) from metrics.alert_rule_receivers where project_id = '0b000000-0000-4000-8000-00000000000b')],
  array[0, 0, 0, 0]::bigint[], 'A''s editor sees none of B''s rules, silences, events or links');
select is_empty(
  $$update metrics.alert_rules set threshold = 99 where id = 'b2000000-0000-4000-8000-000000000001' returning id$$,
  'A''s editor cannot change B''s rule');
select is_empty($$delete from metrics.alert_rules where id = 'b2000000-0000-4000-8000-000000000001' returning id$$,
  'A''s editor cannot delete B''s rule');
select is_empty($$delete from metrics.alert_silences where id = 'b3000000-0000-4000-8000-000000000001' returning id$$,
  'A''s editor cannot delete B''s silence');
select is(metrics.end_alert_silence('b3000000-0000-4000-8000-000000000001'), false,
  'ending B''s silence: not found for A''s editor');
select throws_ok(
  $$update metrics.alert_rules set project_id = '0b000000-0000-4000-8000-00000000000b'
    where id = 'a2000000-0000-4000-8000-000000000002'$$,
  '42501', null, 'a rule cannot be moved to another project');
select throws_ok(
  $$insert into metrics.alert_silences (project_id, rule_id, ends_at) values
    ('0a000000-0000-4000-8000-00000000000a', 'b2000000-0000-4000-8000-000000000001', now() + interval '1 hour')$$,
  '23503', null, 'a silence of A cannot point at B''s rule');
select lives_ok(
  $$insert into metrics.alert_silences (project_id, rule_id, matchers, ends_at, comment) values
    ('0a000000-0000-4000-8000-00000000000a',
     'a2000000-0000-4000-8000-000000000002', '[{"label": "route", "op": "=", "value": "/api/hooks/[slug]"}]',
     now() + interval '1 hour', 'deploy')$$,
  'A''s editor creates a silence');
select is(metrics.end_alert_silence('a3000000-0000-4000-8000-000000000001'), true, 'A''s editor ends a running silence');
select is((select ends_at from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000001'), now(),
  'ending sets ends_at to now');
select is(metrics.end_alert_silence('a3000000-0000-4000-8000-000000000002'), true, 'and a silence that has not started');
select is((select count(*) from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000002'), 0::bigint,
  'a silence that had not started is deleted');
select is(metrics.end_alert_silence('a3000000-0000-4000-8000-000000000001'), true, 'ending an ended silence is a no-op');
select throws_ok(
  $$insert into metrics.alert_events (project_id, state) values ('0a000000-0000-4000-8000-00000000000a', 'firing')$$,
  '42501', null, 'signed-in users cannot write history');
select throws_ok(
  $$update metrics.alert_events set state = 'resolved'$$, '42501', null, 'nor change it');
select throws_ok($$delete from metrics.alert_events$$, '42501', null, 'nor delete it');
reset role;

-- the viewer of A: reads rules, silences, history; writes nothing ----------------------------------------
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ee');
set local role authenticated;
select is(
  array[(select count(*) from metrics.alert_rules), (select count(*) from metrics.alert_silences),
        (select count(*) from metrics.alert_events), (select count(*) from metrics.alert_receivers)],
  array[3, 2, 1, 0]::bigint[], 'A''s viewer reads A''s rules, silences and history, but no receivers');
select throws_ok(
  $$insert into metrics.alert_rules (project_id, name, metric, op, threshold) values
    ('0a000000-0000-4000-8000-00000000000a', 'viewer', 'x', '>', 1)$$,
  '42501', null, 'A''s viewer cannot create rules');
select is_empty(
  $$update metrics.alert_rules set threshold = 99 where id = 'a2000000-0000-4000-8000-000000000001' returning id$$,
  'A''s viewer cannot change rules');
select is_empty($$delete from metrics.alert_rules where id = 'a2000000-0000-4000-8000-000000000001' returning id$$,
  'A''s viewer cannot delete rules');
select throws_ok(
  $$select metrics.set_alert_rule_receivers('a2000000-0000-4000-8000-000000000002', '{}')$$,
  '42501', null, 'A''s viewer cannot relink receivers');
select throws_ok(
  $$insert into metrics.alert_silences (project_id, ends_at) values ('0a000000-0000-4000-8000-00000000000a', now() + interval '1 hour')$$,
  '42501', null, 'A''s viewer cannot create silences');
select throws_ok(
  format('select metrics.end_alert_silence(%L)', (select id from metrics.alert_silences where comment = 'deploy')),
  '42501', format('not allowed to end silence %s', (select id from metrics.alert_silences where comment = 'deploy')),
  'A''s viewer cannot end silences');
reset role;

-- the admin of B sees B only -----------------------------------------------------------------------------
select pg_temp.claims('bb000000-0000-4000-8000-0000000000ad');
set local role authenticated;
select is(
  array[(select count(*) from metrics.alert_rules), (select count(*) from metrics.alert_receivers),
        (select count(*) from metrics.alert_silences), (select count(*) from metrics.alert_events)],
  array[1, 1, 1, 1]::bigint[], 'B''s admin sees B''s rule, receiver, silence and event only');
reset role;

-- anon: nothing --------------------------------------------------------------------------------------------
select pg_temp.claims(null, 'anon');
set local role anon;
select throws_ok($$select count(*) from metrics.alert_rules$$, '42501', null, 'anon cannot read rules');
select throws_ok($$select count(*) from metrics.alert_events$$, '42501', null, 'anon cannot read history');
reset role;

-- the service role (the alert worker) reads secrets and writes history ------------------------------------
select pg_temp.claims(null, 'service_role');
set local role service_role;
select is((select secret from metrics.alert_receivers where id = 'a1000000-0000-4000-8000-000000000001'), 'rotated',
  'the service role reads the secret');
select lives_ok(
  $$insert into metrics.alert_events (project_id, rule_id, rule_name, labels, state, value) values
    ('0a000000-0000-4000-8000-00000000000a', 'a2000000-0000-4000-8000-000000000002', 'errors', '{"route": "/x"}', 'firing', 0.9)$$,
  'the service role appends history');
reset role;

-- deleting a rule: links and silences go, history stays ---------------------------------------------------
select lives_ok(
  $$select metrics.set_alert_rule_receivers('a2000000-0000-4000-8000-000000000002', array['a1000000-0000-4000-8000-000000000001'::uuid])$$,
  'setup: link again (as the owner)');
delete from metrics.alert_rules where id = 'a2000000-0000-4000-8000-000000000002';
select is(
  array[(select count(*) from metrics.alert_rule_receivers where rule_id = 'a2000000-0000-4000-8000-000000000002'),
        (select count(*) from metrics.alert_silences where rule_id = 'a2000000-0000-4000-8000-000000000002')],
  array[0, 0]::bigint[], 'a deleted rule takes its receiver links and silences along');
select is(
  (select array[count(*), count(rule_id)] from metrics.alert_events where rule_name = 'errors'), array[1, 0]::bigint[],
  'a deleted rule''s history stays, with rule_id null');
delete from metrics.alert_receivers where id = 'b1000000-0000-4000-8000-000000000001';
select is((select count(*) from metrics.alert_rules where id = 'b2000000-0000-4000-8000-000000000001'), 1::bigint,
  'deleting a receiver keeps the rules that used it');

-- updated_at -------------------------------------------------------------------------------------------------
update metrics.alert_rules set updated_at = '2000-01-01' where id = 'a2000000-0000-4000-8000-000000000001';
select is((select updated_at from metrics.alert_rules where id = 'a2000000-0000-4000-8000-000000000001'), now(),
  'updating a rule sets updated_at (the trigger overrides any value)');

-- check constraints: every one refuses bad input ------------------------------------------------------------
select throws_ok(
  pg_catalog.format(
    $f$insert into metrics.alert_rules (project_id, name, metric, op, threshold%s) values
       ('0a000000-0000-4000-8000-00000000000a', %s, %s, %s, %s%s)$f$,
    case when c.col in ('name', 'metric', 'op', 'threshold') then '' else ', ' || quote_ident(c.col) end,
    case when c.col = 'name' then c.val else $$'c-' || md5(random()::text)$$ end,
    case when c.col = 'metric' then c.val else $$'meshhook_x_total'$$ end,
    case when c.col = 'op' then c.val else $$'>'$$ end,
    case when c.col = 'threshold' then c.val else '1' end,
    case when c.col in ('name', 'metric', 'op', 'threshold') then '' else ', ' || c.val end),
  '23514', null, 'alert_rules refuses ' || c.col || ' = ' || c.val)
from (values
  ('name', $$''$$), ('name', $$repeat('n', 201)$$), ('name', $$E'deploy\r\nBcc: x@example.com'$$),
  ('name', $$'a' || chr(133) || 'b'$$), ('description', $$repeat('d', 2001)$$),
  ('metric', $$'1abc'$$), ('metric', $$'__reserved'$$), ('metric', $$repeat('m', 201)$$),
  ('matchers', $$'{}'$$), ('matchers', $$'[{"label": "a", "op": "=>", "value": "x"}]'$$),
  ('matchers', $$'[{"label": "a", "op": "=~", "value": "("}]'$$), ('matchers', $$'[{"label": "1a", "op": "=", "value": "x"}]'$$),
  ('matchers', $$'[{"label": "a", "op": "=", "value": 1}]'$$), ('matchers', $$'[{"label": "a", "op": "=", "value": "x", "extra": 1}]'$$),
  ('agg', $$'p999x'$$), ('agg', $$'median'$$), ('agg', $$'quantile(2)'$$),
  ('group_by', $$'{1bad}'$$), ('group_by', $$'{a,a}'$$),
  ('window_length', $$'0 seconds'$$), ('window_length', $$'59 seconds'$$), ('window_length', $$'25 hours'$$),
  ('op', $$'=>'$$), ('threshold', $$'NaN'$$), ('threshold', $$'Infinity'$$), ('threshold', $$'-Infinity'$$),
  ('for_duration', $$'-1 second'$$), ('for_duration', $$'2 days'$$),
  ('severity', $$'fatal'$$),
  ('annotations', $$'[]'$$), ('annotations', $$'{"a": 1}'$$), ('annotations', $$'{"bad key": "x"}'$$),
  ('annotations', $$jsonb_build_object('big', repeat('x', 17000))$$)
) as c (col, val);
select throws_ok(
  pg_catalog.format(
    $f$insert into metrics.alert_receivers (project_id, name, kind, target, secret) values
       ('0a000000-0000-4000-8000-00000000000a', %s, %L, %L, %s)$f$, c.name, c.kind, c.target, c.secret),
  '23514', null, 'alert_receivers refuses ' || c.why)
from (values
  ($$''$$, 'webhook', 'https://a.example/', 'null', 'an empty name'),
  ($$'x'$$, 'pager', 'https://a.example/', 'null', 'an unknown kind'),
  ($$'x'$$, 'webhook', 'ftp://a.example/', 'null', 'a non-http URL'),
  ($$'x'$$, 'webhook', 'https://user:pw@a.example/', 'null', 'credentials in the URL'),
  ($$'x'$$, 'webhook', 'https://a.example/a b', 'null', 'a URL with a space'),
  ($$'x'$$, 'alertmanager', 'a.example:9093', 'null', 'a URL without scheme'),
  ($$'x'$$, 'slack', 'http://hooks.slack.com/services/T/B/X', 'null', 'a non-https Slack URL'),
  ($$'x'$$, 'email', 'not-an-address', 'null', 'an invalid e-mail address'),
  ($$'x'$$, 'email', 'https://a.example/', 'null', 'a URL for email'),
  ($$E'x\ny'$$, 'webhook', 'https://a.example/', 'null', 'a name with a line break'),
  ($$'x'$$, 'webhook', 'https://a.example:65536/', 'null', 'a port above 65535'),
  ($$'x'$$, 'alertmanager', 'http://am:0', 'null', 'port 0'),
  ($$'x'$$, 'webhook', 'https://a.example/', $$''$$, 'an empty secret'),
  ($$'x'$$, 'webhook', 'https://a.example/', $$repeat('s', 1025)$$, 'a secret over 1024 characters')
) as c (name, kind, target, secret, why);
select lives_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target) values
    ('0a000000-0000-4000-8000-00000000000a', 'ok-am', 'alertmanager', 'http://alertmanager:9093'),
    ('0a000000-0000-4000-8000-00000000000a', 'ok-port', 'webhook', 'https://a.example:65535/hook'),
    ('0a000000-0000-4000-8000-00000000000a', 'ok-mail', 'email', 'oncall+metrics@example.co.uk'),
    ('0a000000-0000-4000-8000-00000000000a', 'ok-slack', 'slack', 'https://hooks.slack.com/services/T0/B0/XYZ')$$,
  'valid targets of each kind are accepted');
select throws_ok(
  $$insert into metrics.alert_receivers (project_id, name, kind, target) values
    ('0a000000-0000-4000-8000-00000000000a', 'ok-am', 'webhook', 'https://a.example/')$$,
  '23505', null, 'receiver names are unique per project');
select throws_ok(
  $$insert into metrics.alert_rules (project_id, name, metric, op, threshold) values
    ('0a000000-0000-4000-8000-00000000000a', 'a-rule', 'm', '>', 1)$$,
  '23505', null, 'rule names are unique per project');
select throws_ok(
  pg_catalog.format(
    $f$insert into metrics.alert_silences (project_id, matchers, starts_at, ends_at, comment) values
       ('0a000000-0000-4000-8000-00000000000a', %s, %s, %s, %s)$f$, c.matchers, c.starts_at, c.ends_at, c.comment),
  '23514', null, 'alert_silences refuses ' || c.why)
from (values
  ($$'[]'$$, 'now()', $$now() - interval '1 minute'$$, $$''$$, 'ends before it starts'),
  ($$'[]'$$, 'now()', 'now()', $$''$$, 'an empty period'),
  ($$'[]'$$, 'now()', $$now() + interval '91 days'$$, $$''$$, 'more than 90 days'),
  ($$'[{"label": "a", "op": "~", "value": "x"}]'$$, 'now()', $$now() + interval '1 hour'$$, $$''$$, 'a bad matcher'),
  ($$'[]'$$, 'now()', $$now() + interval '1 hour'$$, $$repeat('c', 2001)$$, 'a comment over 2000 characters')
) as c (matchers, starts_at, ends_at, comment, why);
select throws_ok(
  pg_catalog.format(
    $f$insert into metrics.alert_events (project_id, labels, state, value) values
       ('0a000000-0000-4000-8000-00000000000a', %s, %s, %s)$f$, c.labels, c.state, c.value),
  '23514', null, 'alert_events refuses ' || c.why)
from (values
  ($$'{}'$$, $$'burning'$$, '1', 'an unknown state'),
  ($$'[]'$$, $$'firing'$$, '1', 'labels that are not an object'),
  ($$'{}'$$, $$'firing'$$, $$'NaN'$$, 'a NaN value'),
  ($$'{}'$$, $$'firing'$$, $$'Infinity'$$, 'an infinite value')
) as c (labels, state, value, why);
select throws_ok(
  $$insert into metrics.alert_events (project_id, rule_name, state) values
    ('0a000000-0000-4000-8000-00000000000a', repeat('r', 201), 'firing')$$,
  '23514', null, 'alert_events refuses a rule_name over 200 characters');
select is(
  array[metrics.aggregation_problem('p99'), metrics.aggregation_problem('p99.9'), metrics.aggregation_problem('quantile(0.5)'),
        metrics.aggregation_problem('quantile(1)'), metrics.aggregation_problem('rate'), metrics.aggregation_problem('count')],
  array[null, null, null, null, null, null]::text[], 'aggregation_problem accepts the forms metrics.query accepts');

-- a lower regex limit does not freeze stored rules and silences (the check constraints have a fixed bound;
-- the configured limit binds new or changed matchers only) ---------------------------------------------------
create temporary table long_regex as
  select pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'label', 'route', 'op', '=~', 'value', '(' || repeat('a|', 99) || 'a)')) as m;  -- a 201-character regex
grant select on long_regex to authenticated;
insert into metrics.alert_rules (id, project_id, name, metric, matchers, op, threshold)
  select 'a2000000-0000-4000-8000-000000000003', '0a000000-0000-4000-8000-00000000000a', 'long-regex', 'm', m, '>', 1
  from long_regex;
insert into metrics.alert_silences (id, project_id, matchers, starts_at, ends_at)
  select 'a3000000-0000-4000-8000-000000000010', '0a000000-0000-4000-8000-00000000000a', m,
    now() - interval '1 hour', now() + interval '1 hour'
  from long_regex;
update metrics.config set regex_max_length = 100;
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select lives_ok(
  $$update metrics.alert_rules set name = 'long-regex-2', enabled = false where id = 'a2000000-0000-4000-8000-000000000003'$$,
  'after regex_max_length drops, A''s editor still renames and disables a rule with a longer regex');
select is((select name || ':' || enabled from metrics.alert_rules where id = 'a2000000-0000-4000-8000-000000000003'),
  'long-regex-2:false', 'the rule was changed');
select is(metrics.end_alert_silence('a3000000-0000-4000-8000-000000000010'), true,
  'and ends a silence with a longer regex');
select throws_ok(
  $$update metrics.alert_rules set matchers = '[{"label": "route", "op": "=~", "value": "(b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|z|aa|bb|cc|dd|ee|ff|gg|hh|ii|jj|kk|ll|mm|nn|oo|pp|qq|rr|ss)"}]'
    where id = 'a2000000-0000-4000-8000-000000000003'$$,
  '23514', 'matchers: [0].value: regex longer than 100 characters', 'changed matchers meet the new limit');
select throws_ok(
  $$insert into metrics.alert_rules (project_id, name, metric, matchers, op, threshold)
    select '0a000000-0000-4000-8000-00000000000a', 'new-long', 'm', m, '>', 1 from long_regex$$,
  '23514', 'matchers: [0].value: regex longer than 100 characters', 'a new rule meets the new limit');
select throws_ok(
  $$insert into metrics.alert_silences (project_id, matchers, ends_at)
    select '0a000000-0000-4000-8000-00000000000a', m, now() + interval '1 hour' from long_regex$$,
  '23514', 'matchers: [0].value: regex longer than 100 characters', 'so does a new silence');
select is(metrics.matchers_problem((select m from long_regex)), '[0].value: regex longer than 100 characters',
  'matchers_problem(jsonb) applies the configured limit');
select is(metrics.matchers_problem((select m from long_regex), 1024), null,
  'matchers_problem(jsonb, integer) applies the bound it is given');
reset role;
update metrics.config set regex_max_length = 256;
select is(
  array(select p.provolatile::text from pg_catalog.pg_proc p
        where p.proname = 'matchers_problem' and p.pronamespace = 'metrics'::regnamespace order by p.pronargs),
  array['s', 'i'], 'matchers_problem(jsonb) is stable (reads the limit), matchers_problem(jsonb, integer) immutable');

-- a silence is a record: editors writing the table directly cannot extend, revive or erase one -------------
insert into metrics.alert_silences (id, project_id, starts_at, ends_at) values
  ('a3000000-0000-4000-8000-000000000011', '0a000000-0000-4000-8000-00000000000a',
   now() - interval '1 hour', now() + interval '1 hour'),
  ('a3000000-0000-4000-8000-000000000012', '0a000000-0000-4000-8000-00000000000a',
   now() - interval '2 hours', now() - interval '1 hour'),
  ('a3000000-0000-4000-8000-000000000013', '0a000000-0000-4000-8000-00000000000a',
   now() + interval '1 hour', now() + interval '2 hours'),
  ('a3000000-0000-4000-8000-000000000014', '0a000000-0000-4000-8000-00000000000a',
   now() - interval '1 hour', now() + interval '1 hour');
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ed');
set local role authenticated;
select throws_ok(
  $$update metrics.alert_silences set ends_at = now() + interval '30 days' where id = 'a3000000-0000-4000-8000-000000000011'$$,
  '42501', null, 'A''s editor cannot extend an active silence');
select throws_ok(
  $$update metrics.alert_silences set ends_at = now() + interval '1 hour' where id = 'a3000000-0000-4000-8000-000000000012'$$,
  '42501', null, 'nor revive an expired one');
select throws_ok(
  $$update metrics.alert_silences set ends_at = now() - interval '1 minute' where id = 'a3000000-0000-4000-8000-000000000014'$$,
  '42501', null, 'nor move its end into the past');
select lives_ok(
  $$update metrics.alert_silences set ends_at = now() + interval '10 minutes' where id = 'a3000000-0000-4000-8000-000000000014'$$,
  'but may shorten an active silence');
select is((select ends_at from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000014'),
  now() + interval '10 minutes', 'the silence was shortened');
select is_empty($$delete from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000011' returning id$$,
  'A''s editor cannot delete an active silence');
select is_empty($$delete from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000012' returning id$$,
  'nor an expired one');
select lives_ok($$delete from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000013'$$,
  'deleting a silence that has not started');
select is((select count(*) from metrics.alert_silences where id = 'a3000000-0000-4000-8000-000000000013'), 0::bigint,
  'removes it');
select throws_ok(
  $$insert into metrics.alert_silences (project_id, starts_at, ends_at) values
    ('0a000000-0000-4000-8000-00000000000a', '10000-01-01 00:00:00+00', '10000-01-02 00:00:00+00')$$,
  '23514', null, 'a silence cannot start in year 10000 (clients could not read it back)');
select throws_ok(
  $$insert into metrics.alert_silences (project_id, starts_at, ends_at) values
    ('0a000000-0000-4000-8000-00000000000a', '1999-12-31 00:00:00+00', '2000-01-02 00:00:00+00')$$,
  '23514', null, 'nor before 2000');
select is(metrics.end_alert_silence('a3000000-0000-4000-8000-000000000012'), true,
  'ending an expired silence is a no-op for an editor');
reset role;
select pg_temp.claims('aa000000-0000-4000-8000-0000000000ee');
set local role authenticated;
select throws_ok($$select metrics.end_alert_silence('a3000000-0000-4000-8000-000000000012')$$,
  '42501', 'not allowed to end silence a3000000-0000-4000-8000-000000000012',
  'but 42501 for a viewer, even though it would change nothing');
reset role;
select throws_ok(
  $$update metrics.alert_silences set ends_at = ends_at + interval '1 day' where id = 'a3000000-0000-4000-8000-000000000011'$$,
  '42501', null, 'the rule binds every role: not even the owner extends a silence');

-- documentation: every policy, trigger and explicitly created index of the alerting tables has a comment ----
select is(
  array(select p.polname::text from pg_catalog.pg_policy p
        where p.polrelid in ('metrics.alert_receivers'::regclass, 'metrics.alert_rules'::regclass,
          'metrics.alert_rule_receivers'::regclass, 'metrics.alert_silences'::regclass, 'metrics.alert_events'::regclass)
          and pg_catalog.obj_description(p.oid, 'pg_policy') is null order by 1),
  '{}'::text[], 'every alerting policy has a comment');
select is(
  array(select t.tgname::text from pg_catalog.pg_trigger t
        where not t.tgisinternal and t.tgrelid in ('metrics.alert_receivers'::regclass, 'metrics.alert_rules'::regclass)
          and pg_catalog.obj_description(t.oid, 'pg_trigger') is null order by 1),
  '{}'::text[], 'every alerting trigger has a comment');
select is(
  array(select i.indexrelid::regclass::text from pg_catalog.pg_index i
        where i.indrelid in ('metrics.alert_rule_receivers'::regclass, 'metrics.alert_silences'::regclass,
          'metrics.alert_events'::regclass)
          and not exists (select from pg_catalog.pg_constraint c where c.conindid = i.indexrelid)
          and pg_catalog.obj_description(i.indexrelid, 'pg_class') is null order by 1),
  '{}'::text[], 'every explicitly created alerting index has a comment');

select * from finish();
rollback;
