-- Issue #14: the rollup pass runs in lanes, each lane merging its share of the series on its own backend at
-- once (by default two lanes; metrics.set_pass_lanes(n) changes it).
--
-- The default benchmark workload's burst is bound by its last pass: once the writers are done, one backend
-- merged the backlog while the other cores idled. The prototype of this design (benchmarks.ingest design L,
-- rounds of two lanes under one watermark) took that burst from 0.17-0.27x COPY to 0.25-0.32x in the same runs
-- (docs/architecture.md, "Then: the pass in lanes"). Shipped, a lane is a pass of its own:
--
-- * metrics.rollup_lanes holds a watermark per lane: lane k merges the points of series_id % lanes = k and
--   moves its own watermark in the same transaction, so exactly-once holds per lane, whatever another lane
--   does or however it fails. The pass's lock is per lane (a two-key advisory lock), and the rows the lanes
--   merge into (minutes, totals, publish queue, late marks) are all keyed by series, disjoint: a lane waits
--   on another only for a moment, for a publish or a fold to commit, and never the other way round as well.
--   (Any open transaction holds every lane's range back, another lane's pass included, as it held the pass.)
-- * metrics.rollup_pass(lane) is one lane's merge; after lane 0's, metrics.fold_and_publish() runs in a
--   transaction of its own. metrics.rollup_pass() stays the one-shot pass through every lane in turn, fold and
--   publish included (maintain's one-shot pass, publish_pending, tests).
-- * The totals' fold: a merge holds metrics.fold_totals' lock shared for its transaction (as
--   metrics.rollup_now() has), and fold_totals takes it exclusively (waiting at most 0.5 s) or skips the pass,
--   so no fold reads the closed minutes while another lane's merge of them is uncommitted; it reads its
--   watermark again under the lock, so two folds never fold the same minutes (the single pass's lock used to
--   keep them apart).
-- * Publishing: the lanes pass on the same ticks (multiples of the pass interval since the epoch), and after
--   lane 0's merge metrics.fold_and_publish() waits for the other lanes' passes of the tick (holding nothing),
--   so one message a project carries every lane's minutes. Measured first with every lane publishing after
--   its own merge: at the reference fleet a lane finishing after another found its project rate-limited
--   (one message a second), and its minutes waited for the next second: live p95 1.79-1.80 s against
--   1.04-1.08 s with one lane. A publisher skips queued rows a running merge holds (they stay queued with its
--   changes) instead of waiting, and inserts a project's rate-limit row only when missing (that insert's
--   conflict check waited for another open transaction that had published the project; two deadlocked).
-- * metrics.rollup_pass_state keeps the fold's watermark only; the pass's watermark and counters move to the
--   lanes. metrics.rollup_watermark() is the lowest lane's (every point of a transaction below it is merged);
--   metrics.rollup_status() reports a lane that stalls.
-- * metrics.set_pass_lanes(n) merges every lane up to the furthest lane's watermark, then cuts the series anew
--   (all under every lane's lock, one transaction) and schedules a pg_cron job per lane where pg_cron exists;
--   `meshhook-metrics maintain --loop` runs a thread per lane.

-- the single pass's lock, to the end of this migration: a pass running now (pg_cron, maintain --loop) commits its
-- watermark before the lanes copy it, and one that waits runs after, fails on the columns dropped below and
-- rolls back (its points are the lanes'), so no range is merged twice across the change
select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'));

-- the lanes and their watermarks -------------------------------------------------------------------------------
create table metrics.rollup_lanes (
  lane integer primary key check (lane between 0 and 15),
  xid_watermark xid8 not null,
  passes bigint not null default 0,
  points bigint not null default 0,
  last_pass_at timestamptz,
  last_points integer
);
comment on table metrics.rollup_lanes is
  'The rollup pass''s lanes (migration 20261207000300), one row each, numbered 0 to lanes - 1: lane k merges '
  'the points of the series with series_id % lanes = k. Changed only by metrics.set_pass_lanes(n).';
comment on column metrics.rollup_lanes.lane is 'The lane''s number, 0 to the number of lanes less one.';
comment on column metrics.rollup_lanes.xid_watermark is
  'The lane''s watermark: the points of its series from every transaction below it are merged.';
comment on column metrics.rollup_lanes.passes is 'Passes of this lane that had a range to merge.';
comment on column metrics.rollup_lanes.points is 'Points this lane''s passes merged.';
comment on column metrics.rollup_lanes.last_pass_at is 'When a pass of this lane last had a range to merge.';
comment on column metrics.rollup_lanes.last_points is 'The points that pass merged.';
alter table metrics.rollup_lanes enable row level security;
revoke all on metrics.rollup_lanes from anon, authenticated;
grant select on metrics.rollup_lanes to service_role;

-- two lanes, both at the single pass's watermark (equal watermarks: any number of lanes may start from them)
insert into metrics.rollup_lanes (lane, xid_watermark, passes, points, last_pass_at, last_points)
select g.lane, s.xid_watermark, case when g.lane = 0 then s.passes else 0 end,
  case when g.lane = 0 then s.points else 0 end, s.last_pass_at, case when g.lane = 0 then s.last_points end
from metrics.rollup_pass_state s cross join (values (0), (1)) as g (lane);

alter table metrics.rollup_pass_state
  drop column xid_watermark, drop column passes, drop column points, drop column last_pass_at,
  drop column last_points;
comment on table metrics.rollup_pass_state is
  'Single row: the totals'' fold watermark (totals_folded_before). The rollup pass''s own watermarks are per '
  'lane, in metrics.rollup_lanes (migration 20261207000300).';

create function metrics.rollup_watermark()
returns xid8
language sql stable security definer set search_path = ''
as $$
  select min(l.xid_watermark) from metrics.rollup_lanes l
$$;
comment on function metrics.rollup_watermark() is
  'The lowest lane''s watermark: the points of every transaction below it are merged, whatever their lane.';
revoke execute on function metrics.rollup_watermark() from public;
grant execute on function metrics.rollup_watermark() to service_role;

-- the range of a lane ------------------------------------------------------------------------------------------
drop function metrics.pass_cut(xid8, xid8, integer);
create function metrics.pass_cut(p_from xid8, p_to xid8, p_max integer, p_lane integer default 0,
  p_lanes integer default 1)
returns xid8
language sql stable set search_path = ''
as $$
  -- the transaction id of the lane's first point past p_max (in transaction-id order), or, when the first
  -- transaction alone holds more, the id just after it; p_to when no more than p_max points are left. Every
  -- point of a transaction lies on one side of the cut.
  select coalesce((
    select case when c.xid > f.xid then c.xid else (f.xid::text::numeric + 1)::text::xid8 end
    from (
      select p.xid from metrics.points p
      where p.xid >= p_from and p.xid < p_to and (p_lanes = 1 or p.series_id % p_lanes = p_lane)
      order by p.xid
      offset p_max limit 1
    ) as c,
    (
      select min(p.xid) as xid from metrics.points p
      where p.xid >= p_from and p.xid < p_to and (p_lanes = 1 or p.series_id % p_lanes = p_lane)
    ) as f
  ), p_to)
$$;
comment on function metrics.pass_cut(xid8, xid8, integer, integer, integer) is
  'Where a lane''s rollup pass over [p_from, p_to) stops so that it merges at most p_max of the lane''s points '
  '(series_id % p_lanes = p_lane; points_xid_idx): the transaction id of the first such point beyond them, or '
  'just after the first transaction when that one alone holds more (a transaction is never split), or p_to '
  'when no more than p_max are left.';
revoke execute on function metrics.pass_cut(xid8, xid8, integer, integer, integer) from public;

-- the merge, of one lane's series -------------------------------------------------------------------------------
drop function metrics.rollup_points(xid8, xid8);
create function metrics.rollup_points(p_from xid8, p_to xid8, p_lane integer default 0, p_lanes integer default 1)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
  -- hash joins only, whatever the estimates (migration 20261207000100); no JIT, whose compiling of this
  -- statement took longer than running it
  set enable_nestloop = off set enable_mergejoin = off set jit = off
as $$
declare
  v_points bigint;
  v_minutes bigint;
  -- minutes before it are folded into the totals: this range's points of such minutes (late ones) join them
  -- here; the later, open minutes stay in rollup_1m until metrics.fold_totals()
  v_folded timestamptz := (select s.totals_folded_before from metrics.rollup_pass_state s);
begin
  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch,
      p.sketch_zeros, p.sketch_pos_keys, p.sketch_pos_counts, p.sketch_neg_keys, p.sketch_neg_counts
    from metrics.points p
    where p.xid >= p_from and p.xid < p_to and (p_lanes = 1 or p.series_id % p_lanes = p_lane)  -- the lane's series
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum(coalesce((n.sketch ->> 'z')::bigint, n.sketch_zeros))::bigint as zeros,
      count(n.sketch) + count(n.sketch_zeros) as sketches,
      count(n.sketch_zeros) as array_sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch,
      count(*) as points,
      pg_catalog.row_number() over () as minute_no  -- the cells' key below
    from new_points n
    group by 1, 2, 3
  ),
  sketch_points as materialized (
    -- the sketches to sum: every one of a minute with more than one or with one as arrays (a minute with a
    -- single jsonb sketch keeps it as it is)
    select m.minute_no, n.sketch, n.sketch_pos_keys, n.sketch_pos_counts, n.sketch_neg_keys,
      n.sketch_neg_counts
    from new_points n
    join minutes m on m.series_id = n.series_id and m.bucket = pg_catalog.date_trunc('minute', n.ts)
    where (n.sketch is not null or n.sketch_zeros is not null) and (m.sketches > 1 or m.array_sketches > 0)
  ),
  -- every bucket of those sketches summed once per series, minute and key, one object per store: one
  -- aggregation level each, whichever form a point's sketch has, grouped by the minute's number and the key (a
  -- tenth cheaper than by series, minute and key; not packed into one bigint, whose hash folds its two halves
  -- together: (minute << 32) + key collided so often that rollup_points took 60 % longer), the object written as json text and cast to jsonb once (cheaper than jsonb_object_agg's
  -- pair-by-pair jsonb; keys are unique within a group, so the cast keeps every one)
  positive_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        -- set-returning functions in the select list (a ProjectSet), not in FROM: no lateral join, which only
        -- a nested loop can run, and unnest streams where a Function Scan copies each call's rows into a
        -- tuplestore first; equal-length arrays are zipped by position, a null sketch or array gives no row
        select x.minute_no, (x.b).key::integer, (x.b).value::bigint
        from (select s.minute_no, pg_catalog.jsonb_each_text(s.sketch -> 'p') as b from sketch_points s) as x
        union all
        select s.minute_no, pg_catalog.unnest(s.sketch_pos_keys), pg_catalog.unnest(s.sketch_pos_counts)
        from sketch_points s
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  negative_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        -- set-returning functions in the select list (a ProjectSet), not in FROM: no lateral join, which only
        -- a nested loop can run, and unnest streams where a Function Scan copies each call's rows into a
        -- tuplestore first; equal-length arrays are zipped by position, a null sketch or array gives no row
        select x.minute_no, (x.b).key::integer, (x.b).value::bigint
        from (select s.minute_no, pg_catalog.jsonb_each_text(s.sketch -> 'n') as b from sketch_points s) as x
        union all
        select s.minute_no, pg_catalog.unnest(s.sketch_neg_keys), pg_catalog.unnest(s.sketch_neg_counts)
        from sketch_points s
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      case
        when m.sketches = 1 and m.array_sketches = 0 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches >= 1 then metrics.sketch_from_cells(m.zeros, pg_catalog.jsonb_build_object(
          'p', coalesce(pc.cells, '{}'::jsonb), 'n', coalesce(nc.cells, '{}'::jsonb)))
      end as sketch
    from minutes m
    left join positive_cells pc on pc.minute_no = m.minute_no
    left join negative_cells nc on nc.minute_no = m.minute_no
  ),
  rolled as (
    insert into metrics.rollup_1m as r (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
    from minute_rows m
    order by m.series_id, m.bucket
    on conflict (series_id, bucket) do update set
      count = r.count + excluded.count,
      sum = r.sum + excluded.sum,
      min = least(r.min, excluded.min),
      max = greatest(r.max, excluded.max),
      last = metrics.later_last(r.last, r.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(r.last_ts, excluded.last_ts),
      sketch = metrics.sketch_merge(r.sketch, excluded.sketch),
      updated_at = now()
    returning 1
  ),
  totals as (
    insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
    select m.series_id, m.project_id, sum(m.count), sum(m.sum),
      (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2],
      max(m.last_ts),
      metrics.sketch_union(m.sketch)
    from minute_rows m
    where m.bucket < v_folded
    group by m.series_id, m.project_id
    order by m.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sketch = case when excluded.sketch is null then t.sketch else metrics.sketch_merge(t.sketch, excluded.sketch) end,
      updated_at = now()
    returning 1
  ),
  queued as (
    -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
    -- (matters for metrics.rollup_now(), whose transaction may stay open after this statement)
    insert into metrics.publish_queue as q (project_id, series_id, bucket)
    select m.project_id, m.series_id, m.bucket from minute_rows m
    order by 2, 3
    on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket
    returning 1
  ),
  late_hours as (
    insert into metrics.late_hours (series_id, hour)
    select distinct m.series_id, pg_catalog.date_trunc('hour', m.bucket)
    from minute_rows m
    where m.bucket < (select ms.hour_watermark from metrics.maintenance_state ms)
    on conflict do nothing
    returning 1
  ),
  late_five_minutes as (
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct m.series_id, metrics.five_minute_window(m.bucket)
    from minute_rows m
    where m.bucket < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing
    returning 1
  )
  -- (data-modifying CTEs run to completion whether or not the outer query reads them)
  select coalesce(sum(m.points), 0), count(*) into v_points, v_minutes from minute_rows m;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes);
end
$$;
comment on function metrics.rollup_points(xid8, xid8, integer, integer) is
  'Merges the raw points of the transactions p_from <= xid < p_to, of the series with series_id % p_lanes = '
  'p_lane (every series with the defaults), into the minute rollups, the totals (only the points of minutes '
  'already folded: metrics.fold_totals), the publish queue and the late hour / 5-minute marks, set-based: '
  'sketch buckets summed once per series, minute, store and key, from sketches stored as jsonb or as arrays '
  '(migration 20261206002200); hash joins only and buckets unnested in the select list, whatever the statistics '
  'say of the range (migration 20261207000100). The caller holds metrics.fold_totals'' lock shared and '
  'guarantees that no range is merged twice (metrics.merge_lane_range, metrics.rollup_now).';
revoke execute on function metrics.rollup_points(xid8, xid8, integer, integer) from public;

create function metrics.merge_lane_range(p_from xid8, p_to xid8, p_lane integer, p_lanes integer)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_oldest timestamptz;
begin
  -- held to the end of the transaction: no fold reads the closed minutes while this merge of them is
  -- uncommitted (metrics.fold_totals takes it exclusively or skips); and the fold watermark read below is final
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.fold_totals'));
  -- points of an hour or 5-minute window that may be rolling up right now: wait for that rollup (shared locks,
  -- in maintain()'s order), so the watermarks the late marks compare with are the ones it leaves. maintain()
  -- never runs a pass, so no one holds a rollup lock while waiting for a lane.
  select min(p.ts) into v_oldest from metrics.points p
  where p.xid >= p_from and p.xid < p_to and (p_lanes = 1 or p.series_id % p_lanes = p_lane);
  if v_oldest < pg_catalog.date_trunc('hour', now()) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
  end if;
  if v_oldest < metrics.five_minute_window(now()) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_five_minutes'));
  end if;
  return metrics.rollup_points(p_from, p_to, p_lane, p_lanes);
end
$$;
comment on function metrics.merge_lane_range(xid8, xid8, integer, integer) is
  'Merges a lane''s points of [p_from, p_to) (metrics.rollup_points) under the locks a merge takes: '
  'metrics.fold_totals'' shared, and the hour and 5-minute rollups'' shared when its points reach back to them. '
  'The caller holds the lane''s lock and moves its watermark in the same transaction.';
revoke execute on function metrics.merge_lane_range(xid8, xid8, integer, integer) from public;

create function metrics.rollup_lane(p_lane integer)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_lanes integer;
  v_from xid8;
  v_to xid8;
  v_finished xid8;
  v_result jsonb := pg_catalog.jsonb_build_object('points', 0, 'minutes', 0);
begin
  if p_lane is null or p_lane not between 0 and 15 then
    raise exception using errcode = '22023',
      message = pg_catalog.format('rollup pass lane %s: a lane is a number from 0 to 15', coalesce(p_lane::text, 'null'));
  end if;
  -- one pass of a lane at a time; callers wait rather than skip, so a pass called after a commit merges it
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'), p_lane);
  -- read after the lock: metrics.set_pass_lanes() changes the lanes under every lane's lock
  select count(*)::integer, max(l.xid_watermark) filter (where l.lane = p_lane) into v_lanes, v_from
  from metrics.rollup_lanes l;
  if v_from is null then  -- no such lane (any more): nothing of it to merge
    return v_result || pg_catalog.jsonb_build_object('lanes', v_lanes, 'behind', false);
  end if;
  -- a new statement, so a snapshot taken after the lock: every transaction below v_finished has finished
  v_finished := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
  v_to := v_finished;
  if v_finished > v_from then
    -- at most pass_max_points of the lane's points, cut at a transaction boundary; the passes after take the rest
    v_to := metrics.pass_cut(v_from, v_finished, (select c.pass_max_points from metrics.config c), p_lane, v_lanes);
    v_result := metrics.merge_lane_range(v_from, v_to, p_lane, v_lanes);
    update metrics.rollup_lanes l
    set xid_watermark = v_to, passes = l.passes + 1, points = l.points + (v_result ->> 'points')::bigint,
      last_pass_at = now(), last_points = (v_result ->> 'points')::integer
    where l.lane = p_lane;
  end if;
  return v_result || pg_catalog.jsonb_build_object('lanes', v_lanes, 'behind', v_to < v_finished and exists (
    select from metrics.points p
    where p.xid >= v_to and p.xid < v_finished and (v_lanes = 1 or p.series_id % v_lanes = p_lane)));
end
$$;
comment on function metrics.rollup_lane(integer) is
  'Merges one lane''s points of finished transactions since its watermark, at most '
  'metrics.config.pass_max_points of them cut at a transaction boundary, and moves its watermark in the same '
  'transaction (exactly once), under the lane''s lock (held to the end of the transaction). Returns points, '
  'minutes, lanes (their number) and behind. No fold, no publish: metrics.rollup_pass does those.';
revoke execute on function metrics.rollup_lane(integer) from public;

create function metrics.fold_and_publish()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_folded integer;
  v_project uuid;
  v_sent integer := 0;
  v_lock_timeout text := pg_catalog.current_setting('lock_timeout');
begin
  -- the lanes' passes running now, which started on the same tick as the one that called this: wait for them
  -- (each at most 2 s; a lock taken and given back at once), so that this message carries what they merge
  for l in 0 .. (select count(*)::integer from metrics.rollup_lanes) - 1 loop
    begin
      perform pg_catalog.set_config('lock_timeout', '2s', true);
      perform pg_catalog.pg_advisory_lock(pg_catalog.hashtext('metrics.rollup_pass'), l);
      perform pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('metrics.rollup_pass'), l);
    exception when lock_not_available then
      null;  -- a long pass of that lane: its minutes go out with the next message
    end;
  end loop;
  perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
  -- closed minutes into the totals, about once a minute (skipped while another lane's merge is uncommitted)
  v_folded := metrics.fold_totals();
  -- live publish of every project with queued minutes (this pass's and those a rate limit held back)
  -- in one order, so two lanes' first publishes of the same new projects wait rather than deadlock
  for v_project in select distinct q.project_id from metrics.publish_queue q order by 1 loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return pg_catalog.jsonb_build_object('folded', v_folded, 'messages', v_sent);
end
$$;
comment on function metrics.fold_and_publish() is
  'What follows the lanes'' merges, in a transaction of its own after lane 0''s pass (or in the one-shot '
  'metrics.rollup_pass()): waits for the lanes'' passes running now (at most 2 s each; the lanes pass on the '
  'same ticks), folds the closed minutes into the totals (metrics.fold_totals), then publishes every project '
  'with queued minutes its rate limit allows, so one message a project carries every lane''s minutes of the '
  'tick. Returns folded and messages.';
revoke execute on function metrics.fold_and_publish() from public;
grant execute on function metrics.fold_and_publish() to service_role;

drop function metrics.rollup_pass();
create function metrics.rollup_pass(p_lane integer default null)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_result jsonb;
  v_lane jsonb;
begin
  if p_lane is not null then  -- the lane's merge; fold and publish follow lane 0's, in a transaction of their own
    return metrics.rollup_lane(p_lane) || pg_catalog.jsonb_build_object('lane', p_lane);
  else
    -- every lane in turn, their locks taken in order (lane 0 first, after which the number of lanes is final)
    v_result := metrics.rollup_lane(0);
    for l in 1 .. (v_result ->> 'lanes')::integer - 1 loop
      v_lane := metrics.rollup_lane(l);
      v_result := v_result || pg_catalog.jsonb_build_object(
        'points', (v_result ->> 'points')::bigint + (v_lane ->> 'points')::bigint,
        'minutes', (v_result ->> 'minutes')::bigint + (v_lane ->> 'minutes')::bigint,
        'behind', (v_result ->> 'behind')::boolean or (v_lane ->> 'behind')::boolean);
    end loop;
  end if;
  return v_result || metrics.fold_and_publish();
end
$$;
comment on function metrics.rollup_pass(integer) is
  'A rollup pass. With a lane: that lane''s merge (metrics.rollup_lane: its points since its watermark, at most '
  'metrics.config.pass_max_points, merged exactly once), run on every tick of the second by that lane''s '
  'pg_cron job or maintain --loop thread, each lane on its own backend at once; after lane 0''s, its caller '
  'runs metrics.fold_and_publish() in a transaction of its own. Returns points, minutes, lanes, lane and behind '
  '(finished points beyond the bound left for the next pass, which the callers run at once). Without a lane: '
  'every lane in turn, then fold and publish, in this transaction (a one-shot pass; also folded, messages).';
revoke execute on function metrics.rollup_pass(integer) from public;
grant execute on function metrics.rollup_pass(integer) to service_role;

create or replace function metrics.fold_totals()
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_from timestamptz;
  -- a minute is folded 30 s after it ends: by then its points have arrived (a 1 s flush, a 1 s pass); later
  -- points of it are merged into the totals by the pass directly, so folding early is only dearer
  v_to timestamptz := pg_catalog.date_trunc('minute', now() - interval '30 seconds');
  v_series integer;
  v_lock_timeout text := pg_catalog.current_setting('lock_timeout');
begin
  if v_to <= (select s.totals_folded_before from metrics.rollup_pass_state s) then
    return 0;  -- nothing closed since (read again under the lock: another lane may be folding right now)
  end if;
  -- every merge holds this lock shared to its commit (another lane's pass, a metrics.rollup_now()
  -- transaction): its minutes are not visible yet. Wait for the lanes' merges, which end within a pass, but
  -- not longer than 0.5 s (a rollup_now() transaction may stay open; and below deadlock_timeout, so a wait
  -- behind maintain()'s rollup locks gives up before it is called a deadlock): then fold on a later pass
  begin
    perform pg_catalog.set_config('lock_timeout', '500ms', true);
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.fold_totals'));
  exception when lock_not_available then
    return 0;
  end;
  perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);  -- the caller's again
  -- under the lock: a fold that committed meanwhile moved the watermark, and its minutes are not folded twice
  select s.totals_folded_before into strict v_from from metrics.rollup_pass_state s;
  if v_to <= v_from then
    return 0;
  end if;
  insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch, updated_at)
  select r.series_id, r.project_id, sum(r.count)::bigint, sum(r.sum),
    (max(array[extract(epoch from r.last_ts)::double precision, r.last]) filter (where r.last_ts is not null))[2],
    max(r.last_ts), metrics.sketch_union(r.sketch), max(r.updated_at)
  from metrics.rollup_1m r
  where r.bucket >= v_from and r.bucket < v_to
  group by r.series_id, r.project_id
  order by r.series_id
  on conflict (series_id) do update set
    count = t.count + excluded.count,
    sum = t.sum + excluded.sum,
    last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
    last_ts = greatest(t.last_ts, excluded.last_ts),
    sketch = case when excluded.sketch is null then t.sketch else metrics.sketch_merge(t.sketch, excluded.sketch) end,
    updated_at = greatest(t.updated_at, excluded.updated_at);
  get diagnostics v_series = row_count;
  update metrics.rollup_pass_state s set totals_folded_before = v_to;
  return v_series;
end
$$;
comment on function metrics.fold_totals() is
  'Folds the minutes that closed (30 s ago) since the fold watermark into metrics.series_totals (count, sum, last, '
  'sketch; updated_at: their latest merge) and moves the watermark; returns the series folded. Called after each '
  'rollup pass''s merge (metrics.fold_and_publish). Every merge holds its lock shared to its commit: it waits up '
  'to 0.5 s for other lanes'' merges and otherwise skips (returns 0) for a later pass, as while a '
  'metrics.rollup_now() transaction is open; the watermark is read again under the lock (migration '
  '20261207000300), so two lanes never fold the same minutes.';

-- changing the number of lanes -----------------------------------------------------------------------------------
create function metrics.set_pass_lanes(p_lanes integer)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_old integer;
  v_to xid8;
  v_points bigint := 0;
  v_lane record;
begin
  if p_lanes is null or p_lanes not between 1 and 16 then
    raise exception using errcode = '22023',
      message = pg_catalog.format('set_pass_lanes(%s): the rollup pass runs in 1 to 16 lanes',
        coalesce(p_lanes::text, 'null'));
  end if;
  -- every lane's lock, in order: no pass runs until this commits, and none reads the lanes half changed
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'), 0);
  select count(*)::integer into v_old from metrics.rollup_lanes;
  for l in 1 .. greatest(v_old, p_lanes) - 1 loop
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'), l);
  end loop;
  -- every lane merged up to the furthest one's watermark (its transactions have all finished), so that one
  -- watermark holds for every series and the series can be cut into lanes anew
  select max(l.xid_watermark) into strict v_to from metrics.rollup_lanes l;
  for v_lane in select l.lane, l.xid_watermark from metrics.rollup_lanes l where l.xid_watermark < v_to order by l.lane loop
    v_points := v_points + (metrics.merge_lane_range(v_lane.xid_watermark, v_to, v_lane.lane, v_old) ->> 'points')::bigint;
  end loop;
  delete from metrics.rollup_lanes l where l.lane >= p_lanes;
  update metrics.rollup_lanes l set xid_watermark = v_to;
  -- a new lane counts as just passed: rollup_status() calls it stalled only if its pass does not start within a
  -- minute (a pg_cron job starts at the next minute, a maintain --loop thread within a second)
  insert into metrics.rollup_lanes (lane, xid_watermark, last_pass_at)
  select g, v_to, now() from pg_catalog.generate_series(v_old, p_lanes - 1) as g;
  return pg_catalog.jsonb_build_object('lanes', p_lanes, 'previous', v_old, 'points', v_points,
    'scheduled', metrics.schedule_rollup_passes());
end
$$;
comment on function metrics.set_pass_lanes(integer) is
  'Runs the rollup pass in p_lanes lanes (1 to 16; two by default): under every lane''s lock, merges every lane '
  'up to the furthest one''s watermark, gives every lane that watermark, adds or removes lanes, and schedules '
  'a pg_cron job per lane where pg_cron exists (metrics.schedule_rollup_passes; a maintain --loop picks the '
  'number up within a pass). Returns lanes, previous, points (merged to align the lanes) and scheduled. '
  'About one lane per core the database may spend on the pass.';
revoke execute on function metrics.set_pass_lanes(integer) from public;
grant execute on function metrics.set_pass_lanes(integer) to service_role;

-- running the lanes: pg_cron, one job per lane -----------------------------------------------------------------
drop procedure metrics.run_rollup_passes(double precision, double precision);
-- no SET clause: a procedure with one cannot COMMIT (every name below is schema-qualified)
create procedure metrics.run_rollup_passes(p_seconds double precision default 55, p_every double precision default 1,
  p_lane integer default null)
language plpgsql
as $$
declare
  v_until timestamptz := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_seconds);
  v_behind boolean;
begin
  if p_seconds is null or p_seconds <= 0 or p_seconds > 3600 or p_every is null or p_every < 0.1 or p_every > 60
      or p_lane not between 0 and 15 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('run_rollup_passes(%s, %s, %s): seconds must be in (0, 3600], every in '
        '[0.1, 60], lane from 0 to 15 (or null: every lane in turn)', p_seconds, p_every, coalesce(p_lane::text, 'null'));
  end if;
  while pg_catalog.clock_timestamp() < v_until loop
    v_behind := coalesce((metrics.rollup_pass(p_lane) ->> 'behind')::boolean, false);
    -- each pass its own transaction: its rollups and live messages go out now, and no transaction id is held
    commit;
    if p_lane = 0 then  -- after lane 0's merge, holding nothing: the tick's fold and live messages
      perform metrics.fold_and_publish();
      commit;
    end if;
    if not v_behind then  -- a backlog is merged pass after pass, without waiting
      -- to the next tick, a multiple of p_every since the epoch: every lane passes on the same ticks, so that
      -- lane 0's live messages carry the other lanes' minutes of the tick
      perform pg_catalog.pg_sleep(p_every
        - extract(epoch from pg_catalog.clock_timestamp())::double precision::numeric % p_every::numeric);
      commit;
    end if;
  end loop;
end
$$;
comment on procedure metrics.run_rollup_passes(double precision, double precision, integer) is
  'Runs metrics.rollup_pass(p_lane) on every tick of p_every seconds since the epoch (default 1; each pass '
  'committed on its own, lane 0''s followed by metrics.fold_and_publish() in a transaction of its own, and the '
  'next at once while a pass reports a backlog beyond metrics.config.pass_max_points) for p_seconds: pg_cron calls it '
  'every minute for each lane (CALL as the job''s only statement; metrics.schedule_rollup_passes), which gives '
  'passes every second (or down to 0.1 s) under any pg_cron version, whose schedules stop at one second (1.5+) '
  'or one minute (older). Without a lane, each pass goes through every lane in turn.';
revoke execute on procedure metrics.run_rollup_passes(double precision, double precision, integer) from public;
grant execute on procedure metrics.run_rollup_passes(double precision, double precision, integer) to service_role;

create function metrics.schedule_rollup_passes(p_create boolean default false)
returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_version text;
  v_lanes integer := (select count(*)::integer from metrics.rollup_lanes);
  v_exists boolean;
begin
  select e.extversion into v_version from pg_catalog.pg_extension e where e.extname = 'pg_cron';
  if v_version is null then
    return 'pg_cron not installed: run "meshhook-metrics maintain --loop" (a thread per lane)';
  end if;
  -- built at run time: the cron schema may not exist where this function is compiled or linted
  execute pg_catalog.format('select exists (select from %I.job j where j.jobname = $1)', 'cron')
    into v_exists using 'meshhook-metrics-publish';
  if not p_create and not v_exists then
    return 'no pg_cron job runs the rollup pass (metrics.schedule_maintenance() schedules them)';
  end if;
  -- lane 0 keeps the job name of earlier versions (cron.schedule replaces jobs by name)
  for l in 0 .. v_lanes - 1 loop
    execute pg_catalog.format('select %I.schedule($1, $2, $3)', 'cron')
      using case when l = 0 then 'meshhook-metrics-publish' else 'meshhook-metrics-publish-lane-' || l end,
        '* * * * *', pg_catalog.format('call metrics.run_rollup_passes(55, 1, %s)', l);
  end loop;
  -- the jobs of lanes that are gone
  execute pg_catalog.format('select count(%I.unschedule(j.jobname)) from %I.job j where j.jobname ~ $1 '
    'and case when j.jobname ~ $1 then pg_catalog.substring(j.jobname, $2)::integer end >= $3', 'cron', 'cron')
    using '^meshhook-metrics-publish-lane-[0-9]{1,9}$', '([0-9]+)$', v_lanes;
  return pg_catalog.format('rollup passes every second in %s lane(s), a minutely pg_cron job each (pg_cron %s)',
    v_lanes, v_version);
end
$$;
comment on function metrics.schedule_rollup_passes(boolean) is
  'Schedules a minutely pg_cron job per lane of the rollup pass (metrics.run_rollup_passes(55, 1, lane); lane 0 '
  'named meshhook-metrics-publish, the others meshhook-metrics-publish-lane-<n>) and unschedules those of lanes '
  'that are gone; without p_create, only where the pass is already scheduled (metrics.set_pass_lanes calls it '
  'so). Returns what it did.';
revoke execute on function metrics.schedule_rollup_passes(boolean) from public;
-- as metrics.schedule_maintenance(), which calls it (both run as the caller)
grant execute on function metrics.schedule_rollup_passes(boolean) to service_role;

create or replace function metrics.schedule_maintenance()
returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_version text;
begin
  select e.extversion into v_version from pg_catalog.pg_extension e where e.extname = 'pg_cron';
  if v_version is null then
    return 'pg_cron not installed: run "meshhook-metrics maintain --loop" instead';
  end if;
  -- built at run time: the cron schema may not exist where this function is compiled or linted
  execute pg_catalog.format('select %I.schedule($1, $2, $3)', 'cron')
    using 'meshhook-metrics-maintain', '* * * * *', 'select metrics.maintain()';
  return 'scheduled maintenance every minute; ' || metrics.schedule_rollup_passes(true);
end
$$;
comment on function metrics.schedule_maintenance() is
  'Schedules metrics.maintain() every minute and the rollup pass''s lanes (metrics.schedule_rollup_passes: a '
  'job per lane, each a pass every second) when pg_cron is installed; idempotent (cron.schedule replaces jobs by '
  'name). Call again after enabling pg_cron.';

-- reschedule where pg_cron runs the pass: a job per lane
select metrics.schedule_rollup_passes();

-- status ----------------------------------------------------------------------------------------------------------
create or replace function metrics.rollup_status(out pending_points bigint, out last_merge_at timestamptz, out stalled boolean)
language sql stable security definer set search_path = ''
as $$
  -- per lane: its points at or past its watermark (committed, or of transactions still running)
  select coalesce(sum(x.pending), 0)::bigint, max(x.last_pass_at),
    coalesce(bool_or(x.pending > 0 and coalesce(x.last_pass_at, '-infinity') < now() - interval '1 minute'), false)
  from (
    select l.last_pass_at, (
      select pg_catalog.count(*) from metrics.points p
      where p.xid >= l.xid_watermark and (n.lanes = 1 or p.series_id % n.lanes = l.lane)
    ) as pending
    from metrics.rollup_lanes l, (select count(*)::integer as lanes from metrics.rollup_lanes) as n
  ) as x
$$;
comment on function metrics.rollup_status() is
  'How far the rollup pass is: points not merged yet, when a lane last merged any, and stalled (a lane with '
  'points waiting and no merge for a minute: its pass does not run, or a long transaction holds its watermark '
  'back). For health checks; counts only, no tenant data.';

comment on function metrics.publish_pending() is
  'Runs one rollup pass through every lane (metrics.rollup_pass(): merges committed points, at most '
  'metrics.config.pass_max_points a lane, then publishes every project''s queued changes its rate limit allows); '
  'returns the messages sent. A caller that must know whether a backlog is left calls metrics.rollup_pass() and '
  'reads behind.';

-- publish: a queued row a running merge holds is skipped, not waited for (the rest as in 20261206000500) --------
create or replace function metrics.publish_project(p_project_id uuid)
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_interval interval;
  v_last timestamptz;
  v_parts jsonb[];
  v_seq bigint;
  v_stored_before bigint;
  v_series_ids bigint[];
  v_buckets timestamptz[];
begin
  select * into strict v_cfg from metrics.config;
  select coalesce(pr.publish_interval, v_cfg.publish_interval) into v_interval
  from metrics.projects pr where pr.id = p_project_id;
  if not found then
    return 0;
  end if;

  -- only when missing: an insert's conflict check waits for a transaction that updated the row (a lane's pass
  -- that published this project and has not committed yet), which the skip-locked read below must not
  if not exists (select from metrics.publish_state ps where ps.project_id = p_project_id) then
    insert into metrics.publish_state (project_id) values (p_project_id) on conflict do nothing;
  end if;
  -- whoever holds the row publishes; the others leave their changes queued for the next sweep
  select ps.last_sent_at into v_last
  from metrics.publish_state ps where ps.project_id = p_project_id
  for update skip locked;
  -- a pass on the interval's own cadence (e.g. every second, 1 s interval) is not skipped for a few
  -- milliseconds of jitter: the interval less a tenth, at most 100 ms
  if not found or v_last > pg_catalog.clock_timestamp() - v_interval
      + least(v_interval / 10, interval '100 milliseconds') then
    return 0;
  end if;

  -- a failed send must not lose the queued changes: the block rolls back the dequeue and the rate-limit stamp
  begin
    -- dequeue in its own statement, so that the read below takes a fresh snapshot. A queued row locked by a
    -- merge still running (another lane's pass, a metrics.rollup_now() transaction) is skipped, not waited
    -- for: it stays queued with that merge's changes for the next publish, and no publisher waits on a merge
    -- that may itself wait on the rows this dequeue deletes (two lanes' passes would deadlock)
    with dequeued as (
      delete from metrics.publish_queue q
      where q.ctid = any (array(
        select l.ctid from metrics.publish_queue l where l.project_id = p_project_id for update skip locked))
      returning q.series_id, q.bucket
    )
    select pg_catalog.array_agg(d.series_id), pg_catalog.array_agg(d.bucket) into v_series_ids, v_buckets
    from dequeued d;
    if v_series_ids is null then
      return 0;
    end if;

    with dirty as (
      select * from unnest(v_series_ids, v_buckets) as u (series_id, bucket)  -- multi-array unnest: unqualified syntax
    ),
    items as (
      select x.rn, x.item, pg_catalog.octet_length(x.item::text) + 2 as size  -- + the ", " between items
      from (
        select pg_catalog.row_number() over (order by s.name, s.id, r.bucket) as rn,
          pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'series_id', s.id, 'name', s.name, 'labels', s.labels, 'kind', f.kind,
            'minute', r.bucket, 'count', r.count, 'sum', metrics.json_number(r.sum), 'min', metrics.json_number(r.min),
            'max', metrics.json_number(r.max), 'last', metrics.json_number(r.last),
            'p50', metrics.json_number(qs[1]), 'p90', metrics.json_number(qs[2]), 'p99', metrics.json_number(qs[3])
          )) as item
        from dirty d
        join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket = d.bucket
        join metrics.series s on s.id = d.series_id
        join metrics.families f on f.project_id = s.project_id and f.name = s.name
        cross join lateral (
          -- offset 0 keeps the subquery whole: flattened, each of qs[1..3] would compute all three again
          select case when f.kind = 'histogram'
            then metrics.sketch_quantiles(r.sketch, '{0.5,0.9,0.99}', r.min, r.max) end as qs
          offset 0
        ) as q
      ) as x
    ),
    placed as (
      -- greedy parts: an item starts a new part once the bytes before it pass the budget, so every part
      -- stays under publish_max_bytes (budget = limit - envelope - the largest item)
      select i.rn, i.item,
        ((pg_catalog.sum(i.size) over (order by i.rn) - i.size)
          / greatest(v_cfg.publish_max_bytes - 300 - max(i.size) over (), 1))::bigint as part
      from items i
    )
    select pg_catalog.array_agg(p.series order by p.part) into v_parts
    from (select pl.part, pg_catalog.jsonb_agg(pl.item order by pl.rn) as series from placed pl group by pl.part) p;

    if v_parts is null then
      return 0;
    end if;
    v_stored_before := metrics.realtime_rows_inserted();

    update metrics.publish_state ps
    set last_sent_at = pg_catalog.clock_timestamp(), messages_sent = ps.messages_sent + 1
    where ps.project_id = p_project_id
    returning ps.messages_sent into v_seq;

    for i in 1 .. pg_catalog.cardinality(v_parts) loop
      perform realtime.send(
        pg_catalog.jsonb_build_object(
          'project_id', p_project_id, 'seq', v_seq, 'part', i, 'parts', pg_catalog.cardinality(v_parts),
          'series', v_parts[i]
        ),
        'rollup',
        metrics.topic(p_project_id),
        true
      );
    end loop;
    if metrics.realtime_rows_inserted() - v_stored_before <> pg_catalog.cardinality(v_parts) then
      raise exception 'realtime.send did not store the message (see the preceding ErrorSendingBroadcastMessage warning)';
    end if;
  exception when others then
    raise warning 'metrics: live update of project % not published, changes stay queued: %', p_project_id, sqlerrm;
    return 0;
  end;
  return pg_catalog.cardinality(v_parts);
end
$$;
comment on function metrics.publish_project(uuid) is
  'Sends a project''s queued minute aggregates as ONE live update (split into parts under publish_max_bytes) '
  'on its private topic, at most once per publish interval (less a tenth, at most 100 ms, for the jitter of '
  'the pass that calls it); queued rows a running merge holds stay queued for a later call. Returns the number '
  'of messages sent.';
