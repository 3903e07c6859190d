-- Issue #14: the lanes of the rollup pass (migration 20261207000300) mended after the change's second review.
--
-- 1. A merge takes the hourly rollup's lock (shared) whenever it takes the 5-minute rollup's, so that the
--    one-shot pass and set_pass_lanes, which merge several lanes in one transaction, keep maintain()'s lock
--    order: a lane whose points needed only the 5-minute lock, then a later lane that needed the hourly one,
--    against maintain() holding the hourly lock and waiting for the 5-minute one, deadlocked.
-- 2. metrics.fold_and_publish waits for each lane's pass with a transaction lock taken in a block that is then
--    rolled back (it took a session lock and gave it back: a cancel between the two would have kept the lane's
--    lock for the session's life, and that lane's passes waiting on it), no longer than the caller's own
--    lock_timeout when that is shorter (metrics.capped_lock_timeout), and not at all with p_wait false, which
--    the callers pass while lane 0 is behind (it waited out the other lanes' backlog passes instead of merging
--    its own). metrics.run_rollup_passes passes it so.
-- 3. metrics.fold_totals waits no longer than the caller's lock_timeout either, and a deadlock found while it
--    waits (deadlock_timeout set below its 0.5 s) skips the fold instead of failing the pass.
-- The waits left between lanes are bounded: the publish waits at most 2 s a lane for the tick's passes, the
-- fold at most 0.5 s for the merges that hold its lock shared.

-- 1. the rollup locks in maintain()'s order ------------------------------------------------------------------------
create or replace function metrics.merge_lane_range(p_from xid8, p_to xid8, p_lane integer, p_lanes integer)
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
  -- never runs a pass, so no one holds a rollup lock while waiting for a lane. The hourly lock comes with the
  -- 5-minute one even for points of the current hour: the one-shot pass and set_pass_lanes merge several lanes
  -- in one transaction, and a later lane that needs the hourly lock must not take it after an earlier lane
  -- took the 5-minute one (maintain() takes them in the other order: a deadlock, the second review found).
  select min(p.ts) into v_oldest from metrics.points p
  where p.xid >= p_from and p.xid < p_to and (p_lanes = 1 or p.series_id % p_lanes = p_lane);
  if v_oldest < metrics.five_minute_window(now()) then  -- (the hour's start is never after the window's)
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_five_minutes'));
  end if;
  return metrics.rollup_points(p_from, p_to, p_lane, p_lanes);
end
$$;
comment on function metrics.merge_lane_range(xid8, xid8, integer, integer) is
  'Merges a lane''s points of [p_from, p_to) (metrics.rollup_points) under the locks a merge takes: '
  'metrics.fold_totals'' shared, and the hour and 5-minute rollups'' shared, in that order, when its points '
  'reach back before the current 5-minute window. '
  'The caller holds the lane''s lock and moves its watermark in the same transaction.';

-- 2. the publish's wait for the tick's lanes -----------------------------------------------------------------------
create function metrics.capped_lock_timeout(p_cap interval)
returns text
language sql stable set search_path = ''
as $$
  -- lock_timeout reads '0' when off, else a value with its unit ('2s', '500ms'), which casts to an interval
  select (pg_catalog.date_part('epoch', case
      when pg_catalog.current_setting('lock_timeout') = '0' then p_cap
      else least(pg_catalog.current_setting('lock_timeout')::interval, p_cap)
    end) * 1000)::bigint::text || 'ms'
$$;
comment on function metrics.capped_lock_timeout(interval) is
  'The lock_timeout for a bounded wait: p_cap, or the caller''s own when that is shorter.';
revoke execute on function metrics.capped_lock_timeout(interval) from public;

drop function metrics.fold_and_publish();
create function metrics.fold_and_publish(p_wait boolean default true)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_folded integer;
  v_project uuid;
  v_sent integer := 0;
begin
  -- the lanes' passes running now, which started on the same tick as the one that called this: wait for each
  -- (at most 2 s) by taking its lock in a block that is then rolled back, which gives the lock and the
  -- block's lock_timeout back whatever happens, so that this message carries what they merge. Not while
  -- lane 0 is behind (p_wait false): it would wait out the other lanes' backlog passes instead of its own
  for l in 0 .. case when p_wait then (select count(*)::integer from metrics.rollup_lanes) - 1 else -1 end loop
    begin
      perform pg_catalog.set_config('lock_timeout', metrics.capped_lock_timeout(interval '2 seconds'), true);
      perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'), l);
      raise sqlstate 'MHLAN';
    exception when sqlstate 'MHLAN' or lock_not_available or deadlock_detected then
      null;  -- (after a wait cut short, a long pass of that lane: its minutes go out with a later message)
    end;
  end loop;
  -- closed minutes into the totals, about once a minute (skipped while another lane's merge is uncommitted)
  v_folded := metrics.fold_totals();
  -- live publish of every project with queued minutes (this pass's and those a rate limit held back)
  -- in one order, so two publishers' first publishes of the same new projects wait rather than deadlock
  for v_project in select distinct q.project_id from metrics.publish_queue q order by 1 loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return pg_catalog.jsonb_build_object('folded', v_folded, 'messages', v_sent);
end
$$;
comment on function metrics.fold_and_publish(boolean) is
  'What follows the lanes'' merges, in a transaction of its own after lane 0''s pass (or in the one-shot '
  'metrics.rollup_pass()): waits for the lanes'' passes running now (at most 2 s each; the lanes pass on the '
  'same ticks; not with p_wait false, as while lane 0 is behind), folds the closed minutes into the totals '
  '(metrics.fold_totals), then publishes every project with queued minutes its rate limit allows, so that one '
  'message a project usually carries every lane''s minutes of the tick. Returns folded and messages.';
revoke execute on function metrics.fold_and_publish(boolean) from public;
grant execute on function metrics.fold_and_publish(boolean) to service_role;

-- 3. the fold's wait ----------------------------------------------------------------------------------------------
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
  v_lock_timeout text := pg_catalog.current_setting('lock_timeout');  -- the caller's, put back below
begin
  if v_to <= (select s.totals_folded_before from metrics.rollup_pass_state s) then
    return 0;  -- nothing closed since (read again under the lock: another lane may be folding right now)
  end if;
  -- every merge holds this lock shared to its commit (another lane's pass, a metrics.rollup_now()
  -- transaction): its minutes are not visible yet. Wait for the lanes' merges, which end within a pass, but
  -- not longer than 0.5 s (a rollup_now() transaction may stay open; and below deadlock_timeout, so a wait
  -- behind maintain()'s rollup locks gives up before it is called a deadlock): then fold on a later pass
  begin
    perform pg_catalog.set_config('lock_timeout', metrics.capped_lock_timeout(interval '500 milliseconds'), true);
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.fold_totals'));
  exception when lock_not_available or deadlock_detected then
    return 0;  -- (the block's rollback put the caller's lock_timeout back)
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

-- the callers: lane 0's fold and publish wait for the tick's lanes unless it is behind -------------------------------
-- no SET clause: a procedure with one cannot COMMIT (every name below is schema-qualified)
create or replace procedure metrics.run_rollup_passes(p_seconds double precision default 55, p_every double precision default 1,
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
      perform metrics.fold_and_publish(not v_behind);
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
