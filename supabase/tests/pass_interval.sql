-- The rollup pass's interval kept across rescheduling (migration 20261207000500, issue #14):
-- metrics.schedule_rollup_passes(p_every => s) sets every lane's job; without p_every it keeps the interval lane
-- 0's job runs with, read by metrics.pass_interval_of. The jobs themselves need pg_cron: tests/test_cli.py.
begin;
set local client_min_messages = warning;
select plan(13);

select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 1, 0)'), 1::double precision,
  'the interval of a job this function writes');
select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 0.5, 3)'), 0.5::double precision,
  'a fractional interval, another lane');
select is(metrics.pass_interval_of('  CALL metrics.run_rollup_passes( 50 , 2.25 ) ; '), 2.25::double precision,
  'an earlier version''s command (no lane), other spacing and case');
select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 0.05, 0)'), null::double precision,
  'an interval run_rollup_passes refuses is not kept');
select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 61, 0)'), null::double precision,
  'nor one above a minute');
select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 1, 0); select 1'), null::double precision,
  'a command with more in it is not one of ours');
select is(metrics.pass_interval_of(null), null::double precision, 'no job, no interval');
select is(metrics.pass_interval_of('call metrics.run_rollup_passes(55, 0.30000000000000004, 1)'),
  0.30000000000000004::double precision, 'a double''s shortest exact form is read back');

select throws_ok($$select metrics.schedule_rollup_passes(true, 0.05)$$, '22023',
  'schedule_rollup_passes: p_every must be in [0.1, 60] seconds, got 0.05', 'too short an interval is refused');
select throws_ok($$select metrics.schedule_rollup_passes(p_every => 'NaN')$$, '22023',
  'schedule_rollup_passes: p_every must be in [0.1, 60] seconds, got NaN', 'NaN is refused');

select is(
  array(
    select o from unnest(array['metrics.pass_interval_of(text)', 'metrics.schedule_rollup_passes(boolean,double precision)']) as o
    where obj_description(o::regprocedure, 'pg_proc') is null
  ),
  '{}'::text[], 'the new functions have comments');
select is(
  array(
    select o from unnest(array['metrics.pass_interval_of(text)', 'metrics.schedule_rollup_passes(boolean,double precision)']) as o
    where has_function_privilege('authenticated', o, 'execute') or has_function_privilege('anon', o, 'execute')
  ),
  '{}'::text[], 'closed to signed-in users and anon');
select ok(has_function_privilege('service_role', 'metrics.schedule_rollup_passes(boolean,double precision)', 'execute'),
  'the service role may reschedule');

select * from finish();
rollback;
