-- metrics.rollup_status() reports the totals' fold (migration 20261207000700, issue #14): its watermark, and
-- fold_stalled when a minute that ended more than five minutes ago is not folded. The fold watermark is moved by
-- hand here (the transaction rolls back).
begin;
set local client_min_messages = warning;
select plan(6);

select is((select fold_stalled from metrics.rollup_status()), false, 'a fresh database: the fold keeps up');
select is((select totals_folded_before from metrics.rollup_status()),
  (select totals_folded_before from metrics.rollup_pass_state), 'the fold watermark');

select is(metrics.ingest(jsonb_build_object('project_id', '0e000000-0000-4000-8000-00000000000e', 'source', 'w',
  'batch_id', 'f1', 'points', jsonb_build_array(jsonb_build_object('name', 'jobs_total', 'kind', 'counter',
  'ts', extract(epoch from now() - interval '8 minutes'), 'count', 1, 'sum', 1)))) ->> 'status', 'accepted',
  'setup: a point eight minutes old');
select metrics.rollup_now();
update metrics.rollup_pass_state set totals_folded_before = date_trunc('minute', now() - interval '10 minutes');
select is((select fold_stalled from metrics.rollup_status()), true,
  'its minute, ended more than five minutes ago, not folded: stalled');
update metrics.rollup_pass_state set totals_folded_before = date_trunc('minute', now() - interval '6 minutes');
select is((select fold_stalled from metrics.rollup_status()), false, 'folded: not stalled');

select is(
  array(select o from unnest(array['metrics.rollup_status()']) as o
    where obj_description(o::regprocedure, 'pg_proc') is null
      or has_function_privilege('authenticated', o, 'execute') or has_function_privilege('anon', o, 'execute')),
  '{}'::text[], 'documented, and closed to signed-in users and anon');

select * from finish();
rollback;
