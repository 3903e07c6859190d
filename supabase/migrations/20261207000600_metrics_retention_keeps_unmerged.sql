-- Issue #14: retention deletes only what the tiers built from it have taken. Since the rollup pass merges points
-- after their commit (migration 20261206000500) and the totals fold closed minutes about once a minute (migration
-- 20261206000700), a row can be past its retention before it is merged or folded: a raw point of a project whose
-- raw_retention is shorter than max_past, every point while the pass stands still (its job failing over a
-- weekend: the daily partition drop then took two days of points the pass had never merged), a minute while the
-- fold skips or when minute_retention is shorter than the fold's lag. Deleting it lost data for good (a
-- Prometheus counter then went backwards). Now:
-- * raw points are deleted, and partitions dropped, only once merged (xid below metrics.rollup_watermark(), the
--   lowest lane's; a partition holding a point not merged yet is kept and counted in partitions_kept_unmerged;
--   checked again under the drop's lock, so a writer that commits meanwhile is not dropped with it);
-- * minute rollups are deleted only once folded into the totals and rolled up into their hour (bucket below
--   rollup_pass_state.totals_folded_before and maintenance_state.hour_watermark), and only in hours no late
--   point can reach any more: before the hour of now() - config.max_past - 5 minutes (an ingest still open,
--   as metrics.rollup_hours allows for) and of the oldest point not merged yet, and no late_hours mark pending.
--   metrics.rollup_hours recomputes a late hour from the minutes left, so deleting some of them first made the
--   hour the late points alone.
-- A stalled pass then costs disk, not data; metrics.rollup_status() and GET /healthz report it.

create or replace function metrics.apply_row_retention()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_merged_below xid8 := metrics.rollup_watermark();  -- null (no lane) deletes no point
  v_minutes_taken_before timestamptz;
  v_points bigint;
  v_minutes bigint;
  v_five_minutes bigint;
  v_five_minute_groups bigint;
  v_hours bigint;
  v_batches bigint;
begin
  select * into strict v_cfg from metrics.config;
  -- minutes before this are folded, rolled up into their hour, and out of the reach of late points: those
  -- ingest may still accept (an ingest still open: 5 minutes, as rollup_hours allows) and those accepted but
  -- not merged yet (points_xid_idx: the points past the watermark, about a second's while the pass keeps up)
  v_minutes_taken_before := least(
    (select s.totals_folded_before from metrics.rollup_pass_state s),
    (select ms.hour_watermark from metrics.maintenance_state ms),
    pg_catalog.date_trunc('hour', now() - v_cfg.max_past - interval '5 minutes'),
    (select pg_catalog.date_trunc('hour', min(p.ts)) from metrics.points p
     where p.xid >= coalesce(v_merged_below, '0'::xid8)));
  -- projects that keep less than the partitions do; a point the pass has not merged yet stays (xid null: merged
  -- by rollup_now())
  delete from metrics.points p using metrics.projects pr
  where pr.id = p.project_id and pr.raw_retention is not null and p.ts < now() - pr.raw_retention
    and (p.xid is null or p.xid < v_merged_below);
  get diagnostics v_points = row_count;

  -- a minute stays until the totals' fold and the hourly rollup have taken it for good (a late hour is
  -- recomputed from its minutes: metrics.rollup_hours)
  delete from metrics.rollup_1m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention)
    and r.bucket < v_minutes_taken_before
    and not exists (
      select from metrics.late_hours l where l.series_id = r.series_id and l.hour = pg_catalog.date_trunc('hour', r.bucket)
    );
  get diagnostics v_minutes = row_count;

  -- the 5-minute tier speeds up minute-resolution queries, so it lives exactly as long as the minutes
  delete from metrics.rollup_5m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minutes = row_count;
  delete from metrics.rollup_5m_by_label r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minute_groups = row_count;

  delete from metrics.rollup_1h r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.hour_retention, v_cfg.hour_retention);
  get diagnostics v_hours = row_count;

  -- a batch may be resent while its points are inside the timestamp window: keep the ledger past the widest
  -- window ever configured (a batch forgotten under a narrow window must not count twice under a wider one)
  delete from metrics.batches b
  where b.received_at < now() - greatest(
    greatest(v_cfg.max_past, v_cfg.max_past_high_water) + greatest(v_cfg.max_future, v_cfg.max_future_high_water)
      + interval '1 hour',
    v_cfg.raw_retention);
  get diagnostics v_batches = row_count;

  return pg_catalog.jsonb_build_object(
    'points_deleted', v_points, 'minutes_deleted', v_minutes,
    'five_minutes_deleted', v_five_minutes, 'five_minute_groups_deleted', v_five_minute_groups,
    'hours_deleted', v_hours, 'batches_forgotten', v_batches
  );
end
$$;
comment on function metrics.apply_row_retention() is
  'Deletes rows past each project''s retention (raw 2 days; minute, 5-minute and merged 5-minute 14 days; '
  'hour 400 days by default), but no raw point the rollup pass has not merged (xid at or past '
  'metrics.rollup_watermark()) and no minute the totals'' fold or the hourly rollup has not taken for good (bucket '
  'at or past rollup_pass_state.totals_folded_before, maintenance_state.hour_watermark, the hour of now() - '
  'config.max_past - 5 minutes or that of the oldest point not merged, or of an hour with a late_hours mark); '
  'forgets batch ids older than '
  'the widest timestamp window ever configured (config.max_past_high_water + max_future_high_water + 1 hour, at '
  'least raw_retention). No DDL.';

create function metrics.points_partition_unmerged(p_partition text)
returns boolean
language plpgsql stable security invoker set search_path = ''
as $$
declare
  v_unmerged boolean;
begin
  -- the partition's points_xid_idx answers; no lane (a null watermark) counts every point as not merged
  execute pg_catalog.format('select exists (select from metrics.%I p where p.xid >= $1)', p_partition)
    into v_unmerged using coalesce(metrics.rollup_watermark(), '0'::xid8);
  return v_unmerged;
end
$$;
comment on function metrics.points_partition_unmerged(text) is
  'Whether a raw partition (metrics.<p_partition>) holds a point the rollup pass has not merged (xid at or past '
  'metrics.rollup_watermark()). Internal to maintenance (invoker, granted to no one).';

create function metrics.drop_merged_points_partition(p_day date, p_lock_timeout interval, p_attempts integer)
returns text
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_partition text := 'points_' || pg_catalog.to_char(p_day, 'YYYYMMDD');
  v_timeout text := pg_catalog.current_setting('lock_timeout');
begin
  if metrics.points_partition_unmerged(v_partition) then
    return 'kept';  -- (no lock taken while the pass stands still)
  end if;
  if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
    return 'deferred';  -- the check under the lock needs a snapshot taken after it (pg_cron, the CLI: autocommit)
  end if;
  for v_try in 1 .. greatest(p_attempts, 1) loop
    begin
      -- set in the subtransaction: undone with it when the lock is not granted in time
      perform pg_catalog.set_config('lock_timeout',
        greatest(1, (extract(epoch from p_lock_timeout) * 1000)::bigint)::text || 'ms', true);
      -- the lock the drop takes anyway, first: no writer commits into the partition between the check and the drop
      lock table only metrics.points in access exclusive mode;
      perform pg_catalog.set_config('lock_timeout', v_timeout, true);
      if metrics.points_partition_unmerged(v_partition) then
        raise sqlstate 'MHKPT';  -- rolls the block back, and with it the lock: ingest goes on at once
      end if;
      execute pg_catalog.format('drop table if exists metrics.%I', v_partition);
      return 'dropped';
    exception when sqlstate 'MHKPT' then
      return 'kept';
    when lock_not_available or deadlock_detected then
      -- (a pass that read points waits for this run's rollup locks: no wait lasts, the drop comes next run)
      if v_try < p_attempts then
        perform pg_catalog.pg_sleep(0.05 * v_try);  -- holds no lock that blocks ingest meanwhile
      end if;
    end;
  end loop;
  return 'deferred';
end
$$;
comment on function metrics.drop_merged_points_partition(date, interval, integer) is
  'Drops the raw partition of a UTC day unless it holds a point the rollup pass has not merged (checked before '
  'and again under ACCESS EXCLUSIVE on metrics.points, taken with lock_timeout = p_lock_timeout and retried up to '
  'p_attempts times as metrics.points_partition_ddl does; a kept partition gives the lock back at once): '
  '''dropped'', ''kept'' or ''deferred'' (the lock stayed busy or a deadlock was found, or the transaction is not '
  'read committed). Internal to maintenance (invoker, granted to no one).';

create or replace function metrics.maintain_points_partitions(
  p_create boolean default true,
  p_drop boolean default true,
  p_lock_timeout interval default '100 milliseconds',
  p_attempts integer default 3
)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_keep_raw interval;
  v_day date;
  v_part record;
  v_created integer := 0;
  v_dropped integer := 0;
  v_kept integer := 0;
  v_deferred integer := 0;
  v_report jsonb := '{}'::jsonb;
begin
  if p_create then
    for v_day in select pg_catalog.generate_series(current_date - 1, current_date + 2, interval '1 day')::date loop
      if pg_catalog.to_regclass('metrics.points_' || pg_catalog.to_char(v_day, 'YYYYMMDD')) is null then
        if metrics.points_partition_ddl(false, v_day, p_lock_timeout, p_attempts) then
          v_created := v_created + 1;
        else
          v_deferred := v_deferred + 1;
        end if;
      end if;
    end loop;
    v_report := v_report || pg_catalog.jsonb_build_object('partitions_created', v_created);
  end if;
  if p_drop then
    select * into strict v_cfg from metrics.config;
    -- whole partitions go once no project keeps raw points that long
    select greatest(v_cfg.raw_retention, coalesce(max(pr.raw_retention), v_cfg.raw_retention)) into v_keep_raw
    from metrics.projects pr;
    for v_part in
      select c.relname, pg_catalog.to_date(pg_catalog.substr(c.relname, 8), 'YYYYMMDD') as day
      from pg_catalog.pg_inherits i
      join pg_catalog.pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'metrics.points'::regclass and c.relname ~ '^points_\d{8}$'
      order by 1
    loop
      continue when v_part.day + 1 > (now() - v_keep_raw)::date;
      -- DROP of a partition takes ACCESS EXCLUSIVE on metrics.points until the transaction ends: done last;
      -- a point the pass has not merged keeps its partition
      case metrics.drop_merged_points_partition(v_part.day, p_lock_timeout, p_attempts)
        when 'dropped' then v_dropped := v_dropped + 1;
        when 'kept' then v_kept := v_kept + 1;
        else v_deferred := v_deferred + 1;
      end case;
    end loop;
    v_report := v_report || pg_catalog.jsonb_build_object('partitions_dropped', v_dropped,
      'partitions_kept_unmerged', v_kept);
  end if;
  return v_report || pg_catalog.jsonb_build_object('partitions_deferred', v_deferred);
end
$$;
comment on function metrics.maintain_points_partitions(boolean, boolean, interval, integer) is
  'Partition DDL of maintenance: creates the raw partitions of yesterday..+2 days (p_create) and drops those '
  'past the longest raw retention (p_drop) whose points the rollup pass has all merged (one holding a point at '
  'or past metrics.rollup_watermark() is kept and counted in partitions_kept_unmerged, for a later run: '
  'metrics.drop_merged_points_partition), each statement with a short lock_timeout and retries; a partition whose lock stays '
  'busy is counted in partitions_deferred and left for the next run. Call it last in a transaction (maintain() '
  'does): a drop holds ACCESS EXCLUSIVE on metrics.points until the commit.';

revoke execute on function metrics.points_partition_unmerged(text) from public;
revoke execute on function metrics.drop_merged_points_partition(date, interval, integer) from public;
