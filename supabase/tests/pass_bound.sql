-- A rollup pass merges at most config.pass_max_points points, cut at a transaction boundary
-- (metrics.pass_cut, migration 20261206002100). Points with made-up transaction ids stand for several
-- transactions, since everything in this test is one.
begin;
set local client_min_messages = warning;
select plan(7);

select is((select pass_max_points from metrics.config), 100000, 'the default bound is 100,000 points a pass');
select throws_ok($$update metrics.config set pass_max_points = 0$$, '23514', null, 'the bound is at least one point');

select is(metrics.ingest(jsonb_build_object('project_id', '0c000000-0000-4000-8000-00000000000c', 'source', 'w',
  'batch_id', 'b1', 'points', jsonb_build_array(jsonb_build_object('name', 'jobs_total', 'kind', 'counter',
  'ts', extract(epoch from now()), 'count', 1, 'sum', 1)))) ->> 'status', 'accepted', 'setup: a series');

-- transactions 900001 (2 points), 900002 (3 points), 900003 (1 point)
insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, xid)
select p.project_id, p.series_id, p.ts, 'w', 'fake', 1, 1, x::text::xid8
from (select * from metrics.points where batch_id = 'b1' limit 1) p,
  unnest(array[900001, 900001, 900002, 900002, 900002, 900003]) x;

select is(metrics.pass_cut('900000', '900010', 10), '900010'::xid8, 'no more than the bound left: the whole range');
select is(metrics.pass_cut('900000', '900010', 3), '900002'::xid8,
  'a cut before the transaction that would take the pass past the bound');
select is(metrics.pass_cut('900000', '900010', 1), '900002'::xid8,
  'a first transaction larger than the bound is taken whole, and nothing after it');
select is(metrics.pass_cut('900002', '900010', 3), '900003'::xid8,
  'the next pass from there: the transaction of 3 points, without the next one');

select * from finish();
rollback;
