-- The rollup pass in lanes (migration 20261207000300, issue #14): metrics.rollup_lanes holds a watermark per lane,
-- two lanes by default; metrics.set_pass_lanes(n) (1 to 16) aligns every lane to the furthest watermark and cuts
-- the lanes anew; metrics.rollup_watermark() is the lowest lane's. Single-session facts only (the lanes at
-- once: tests/db/test_pass_lanes.py).
begin;
set local client_min_messages = warning;
select plan(21);

select is((select array_agg(lane order by lane) from metrics.rollup_lanes), '{0,1}'::integer[],
  'two lanes by default, numbered 0 and 1');
select is((select count(distinct xid_watermark) from metrics.rollup_lanes), 1::bigint,
  'the lanes start from one watermark');
select hasnt_column('metrics', 'rollup_pass_state', 'xid_watermark',
  'the single pass''s watermark moved to the lanes');
select has_column('metrics', 'rollup_pass_state', 'totals_folded_before', 'the fold''s watermark stays');

-- refused numbers of lanes ---------------------------------------------------------------------------------------
create temp table lanes_before as select * from metrics.rollup_lanes;
select throws_ok($$select metrics.set_pass_lanes(0)$$, '22023',
  'set_pass_lanes(0): the rollup pass runs in 1 to 16 lanes', 'no fewer than one lane');
select throws_ok($$select metrics.set_pass_lanes(17)$$, '22023',
  'set_pass_lanes(17): the rollup pass runs in 1 to 16 lanes', 'no more than 16 lanes');
select throws_ok($$select metrics.set_pass_lanes(null)$$, '22023',
  'set_pass_lanes(null): the rollup pass runs in 1 to 16 lanes', 'a number of lanes is required');
select results_eq($$select * from metrics.rollup_lanes order by lane$$,
  $$select * from lanes_before order by lane$$, 'a refused call changes nothing');
select throws_ok($$select metrics.rollup_lane(16)$$, '22023',
  'rollup pass lane 16: a lane is a number from 0 to 15', 'a lane is a number from 0 to 15');

-- the lowest lane's watermark; changes align every lane to the furthest -----------------------------------------
update metrics.rollup_lanes set xid_watermark = (xid_watermark::text::numeric + 1)::text::xid8 where lane = 0;
select is(metrics.rollup_watermark(), (select xid_watermark from metrics.rollup_lanes where lane = 1),
  'rollup_watermark() is the lowest lane''s');
select isnt(metrics.rollup_watermark(), (select max(xid_watermark) from metrics.rollup_lanes),
  'setup: the lanes'' watermarks differ');
create temp table furthest as select max(xid_watermark) as w from metrics.rollup_lanes;

select is(metrics.set_pass_lanes(3) - 'scheduled', '{"lanes": 3, "previous": 2, "points": 0}'::jsonb,
  'three lanes (nothing to merge in aligning them)');
select is((select array_agg(lane order by lane) from metrics.rollup_lanes), '{0,1,2}'::integer[],
  'a row per lane');
select is((select array_agg(distinct xid_watermark::text) from metrics.rollup_lanes),
  (select array[w::text] from furthest), 'every lane at the furthest watermark');

select is(metrics.set_pass_lanes(2) - 'scheduled', '{"lanes": 2, "previous": 3, "points": 0}'::jsonb,
  'back to two lanes');
select is((select array_agg(lane order by lane) from metrics.rollup_lanes), '{0,1}'::integer[],
  'the third lane''s row is gone');
select is((select array_agg(distinct xid_watermark::text) from metrics.rollup_lanes),
  (select array[w::text] from furthest), 'the lanes left share one watermark');

-- documented and closed to signed-in users -----------------------------------------------------------------------
select is(
  array(
    select o from unnest(array[
      'metrics.rollup_watermark()', 'metrics.rollup_lane(integer)', 'metrics.rollup_pass(integer)',
      'metrics.set_pass_lanes(integer)', 'metrics.merge_lane_range(xid8,xid8,integer,integer)',
      'metrics.fold_and_publish(boolean)', 'metrics.schedule_rollup_passes(boolean,double precision)', 'metrics.capped_lock_timeout(interval)',
      'metrics.run_rollup_passes(double precision,double precision,integer)',
      'metrics.pass_cut(xid8,xid8,integer,integer,integer)', 'metrics.rollup_points(xid8,xid8,integer,integer)'
    ]) as o
    where obj_description(o::regprocedure, 'pg_proc') is null
    union all
    select 'metrics.rollup_lanes' where obj_description('metrics.rollup_lanes'::regclass, 'pg_class') is null
    union all
    select 'metrics.rollup_lanes.' || a.attname from pg_attribute a
    where a.attrelid = 'metrics.rollup_lanes'::regclass and a.attnum > 0 and not a.attisdropped
      and col_description(a.attrelid, a.attnum) is null
  ),
  '{}'::text[], 'the new table, its columns and the new functions have comments');
select ok((select relrowsecurity from pg_class where oid = 'metrics.rollup_lanes'::regclass),
  'row level security is enabled on metrics.rollup_lanes');

set local role authenticated;
select throws_ok($$select * from metrics.rollup_lanes$$, '42501', null, 'a signed-in user cannot read the lanes');
reset role;
set local role anon;
select throws_ok($$select * from metrics.rollup_lanes$$, '42501', null, 'anon cannot read the lanes');
reset role;

select * from finish();
rollback;
