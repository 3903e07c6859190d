-- Retention deletes only what the tiers built from it have taken (migration 20261207000600, issue #14): no raw
-- point the rollup pass has not merged, no minute the totals' fold has not folded, none of an hour a late point
-- may still reach or marked late. Single-session facts (the transaction's own points are not merged until
-- rollup_now()); the pass, the fold and the partition drop across sessions: tests/db/test_maintenance.py.
begin;
set local client_min_messages = warning;
select plan(11);

insert into metrics.projects (id, raw_retention, minute_retention)
values ('0d000000-0000-4000-8000-00000000000d', '1 hour', '1 second');
-- the fold a day back (no minute of this database is folded twice: the transaction rolls back)
update metrics.rollup_pass_state set totals_folded_before = now() - interval '1 day';
select is(metrics.ingest(jsonb_build_object('project_id', '0d000000-0000-4000-8000-00000000000d', 'source', 'w',
  'batch_id', 'r1', 'points', jsonb_build_array(jsonb_build_object('name', 'old_total', 'kind', 'counter',
  'ts', extract(epoch from now() - interval '5 hours'), 'count', 1, 'sum', 7)))) ->> 'status', 'accepted',
  'setup: a point past its project''s raw retention');

select is((metrics.apply_row_retention() ->> 'points_deleted')::integer, 0, 'a point not merged is kept');
select is((metrics.rollup_now() ->> 'points')::integer, 1, 'the point merged');
select is((select count(*) from metrics.rollup_1m where project_id = '0d000000-0000-4000-8000-00000000000d'),
  1::bigint, 'its minute');

-- only the fold holds the minute back now: its hour counts as rolled up, late points reach back one hour
update metrics.maintenance_state set hour_watermark = date_trunc('hour', now());
update metrics.config set max_past = '1 hour';
select is(metrics.apply_row_retention() - array['five_minutes_deleted', 'five_minute_groups_deleted',
    'hours_deleted', 'batches_forgotten'],
  '{"points_deleted": 1, "minutes_deleted": 0}'::jsonb,
  'merged: the point goes; its minute, past the minute retention but not folded, stays');

select ok(metrics.fold_totals() >= 1, 'the fold takes it');
update metrics.maintenance_state set hour_watermark = date_trunc('hour', now() - interval '6 hours');
select is((metrics.apply_row_retention() ->> 'minutes_deleted')::integer, 0,
  'folded, but its hour not rolled up (retention run alone, before rollup_hours): it stays');
update metrics.maintenance_state set hour_watermark = date_trunc('hour', now());
insert into metrics.late_hours (series_id, hour)
select series_id, date_trunc('hour', bucket) from metrics.rollup_1m
where project_id = '0d000000-0000-4000-8000-00000000000d';
select is((metrics.apply_row_retention() ->> 'minutes_deleted')::integer, 0,
  'folded, but its hour marked late: it stays for the hour''s recomputation');
delete from metrics.late_hours;
select is((metrics.apply_row_retention() ->> 'minutes_deleted')::integer, 1, 'folded and taken: deleted');
select is((select sum(sum) from metrics.series_totals_current
  where project_id = '0d000000-0000-4000-8000-00000000000d'), 7::double precision, 'the total has it');

select is(
  array(
    select o from unnest(array['metrics.apply_row_retention()',
      'metrics.maintain_points_partitions(boolean,boolean,interval,integer)',
      'metrics.points_partition_unmerged(text)', 'metrics.drop_merged_points_partition(date,interval,integer)']) as o
    where obj_description(o::regprocedure, 'pg_proc') is null
      or has_function_privilege('authenticated', o, 'execute') or has_function_privilege('anon', o, 'execute')
  ),
  '{}'::text[], 'the functions are documented and closed to signed-in users and anon');

select * from finish();
rollback;
