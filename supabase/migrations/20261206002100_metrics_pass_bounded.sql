-- Issue #14: a rollup pass merges at most metrics.config.pass_max_points points (default 100,000), cut at a
-- transaction boundary, and says so ('behind': true) so that its callers run the next pass at once.
--
-- Before, one pass merged every committed point since the watermark in one statement. After the pass had
-- stopped for a while (pg_cron paused, the loop's host down, a long transaction holding the watermark), the next
-- pass took the whole backlog in one transaction: at the reference fleet's 6,000 points a second an hour is
-- 21.6 million points, whose materialized rows spill gigabytes to temporary files, hold the pass's lock and
-- publish nothing for the many minutes it runs, and, should it fail or be cancelled, start again from nothing.
-- Cut into passes of at most pass_max_points, a backlog is merged in committed steps, live messages go out
-- between them, and each pass's memory and temporary files are bounded by its points (how far depends on the
-- sketches' sizes: 805,000 default-workload points took 5 passes of 200,000 without temporary files; 200,000
-- points of ~1 KB sketches took 13 s and 736 MB of temporary files, hence the default of 100,000). A single
-- transaction larger than the bound is still merged whole (its points share one transaction id, which the
-- watermark cannot split); keep the bound well above max_points_per_batch.

alter table metrics.config
  add column pass_max_points integer not null default 100000 check (pass_max_points between 1 and 100000000);
comment on column metrics.config.pass_max_points is
  'The most points one rollup pass merges (migration 20261206002100); a backlog beyond it is merged by the '
  'passes that follow, each committed, which run without waiting while the pass reports behind = true. '
  'A single transaction with more points is merged whole, so keep it well above max_points_per_batch.';

create or replace function metrics.pass_cut(p_from xid8, p_to xid8, p_max integer)
returns xid8
language sql stable set search_path = ''
as $$
  -- the transaction id of the first point past p_max (in transaction-id order), or, when the first transaction
  -- alone holds more, the id just after it; p_to when no more than p_max points are left. Every point of a
  -- transaction lies on one side of the cut.
  select coalesce((
    select case when c.xid > f.xid then c.xid else (f.xid::text::numeric + 1)::text::xid8 end
    from (
      select p.xid from metrics.points p
      where p.xid >= p_from and p.xid < p_to
      order by p.xid
      offset p_max limit 1
    ) as c,
    (select min(p.xid) as xid from metrics.points p where p.xid >= p_from and p.xid < p_to) as f
  ), p_to)
$$;
comment on function metrics.pass_cut(xid8, xid8, integer) is
  'Where a rollup pass over [p_from, p_to) stops so that it merges at most p_max points (points_xid_idx): the '
  'transaction id of the first point beyond them, or just after the first transaction when that one alone holds '
  'more (a transaction is never split), or p_to when no more than p_max are left.';
revoke execute on function metrics.pass_cut(xid8, xid8, integer) from public;

create or replace function metrics.rollup_pass()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_to xid8;
  v_from xid8;
  v_finished xid8;
  v_result jsonb := pg_catalog.jsonb_build_object('points', 0, 'minutes', 0);
  v_oldest timestamptz;
  v_project uuid;
  v_sent integer := 0;
begin
  -- one pass at a time; callers wait rather than skip, so a pass called after a commit merges that commit
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'));
  -- a new statement, so a snapshot taken after the lock: every transaction below v_finished has finished
  v_finished := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
  select s.xid_watermark into strict v_from from metrics.rollup_pass_state s;
  v_to := v_finished;
  if v_finished > v_from then
    -- at most pass_max_points points, cut at a transaction boundary; the passes that follow take the rest
    v_to := metrics.pass_cut(v_from, v_finished, (select c.pass_max_points from metrics.config c));
    -- points of an hour or 5-minute window that may be rolling up right now: wait for that rollup (shared
    -- locks, in maintain()'s order), so the watermarks the late marks compare with are the ones it leaves.
    -- maintain() never runs a pass, so no one holds a rollup lock while waiting for this pass.
    select min(p.ts) into v_oldest from metrics.points p where p.xid >= v_from and p.xid < v_to;
    if v_oldest < pg_catalog.date_trunc('hour', now()) then
      perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
    end if;
    if v_oldest < metrics.five_minute_window(now()) then
      perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_five_minutes'));
    end if;
    v_result := metrics.rollup_points(v_from, v_to);
    update metrics.rollup_pass_state s
    set xid_watermark = v_to, passes = s.passes + 1, points = s.points + (v_result ->> 'points')::bigint,
      last_pass_at = now(), last_points = (v_result ->> 'points')::integer;
  end if;
  -- closed minutes into the totals, about once a minute (after this pass's merge, which it includes)
  v_result := v_result || pg_catalog.jsonb_build_object('folded', metrics.fold_totals());
  -- live publish of every project with queued minutes (this pass's and those a rate limit held back)
  for v_project in select distinct q.project_id from metrics.publish_queue q loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return v_result || pg_catalog.jsonb_build_object('messages', v_sent, 'behind', v_to < v_finished and exists (
    select from metrics.points p where p.xid >= v_to and p.xid < v_finished));
end
$$;
comment on function metrics.rollup_pass() is
  'Merges the points of finished transactions since the watermark, at most metrics.config.pass_max_points of '
  'them cut at a transaction boundary (metrics.rollup_points), and moves the watermark in the same transaction '
  '(exactly once); folds the closed minutes into the totals about once a minute (metrics.fold_totals); then '
  'publishes every project with queued minutes its rate limit allows. Returns points, minutes, folded, '
  'messages and behind (true when finished points beyond the bound are left for the next pass). Run every '
  'second by metrics.run_rollup_passes() (pg_cron) or maintain --loop, at once again while behind.';

-- no SET clause: a procedure with one cannot COMMIT (every name below is schema-qualified)
create or replace procedure metrics.run_rollup_passes(p_seconds double precision default 55, p_every double precision default 1)
language plpgsql
as $$
declare
  v_until timestamptz := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_seconds);
  v_started timestamptz;
  v_behind boolean;
begin
  if p_seconds is null or p_seconds <= 0 or p_seconds > 3600 or p_every is null or p_every < 0.1 or p_every > 60 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('run_rollup_passes(%s, %s): seconds must be in (0, 3600], every in [0.1, 60]',
        p_seconds, p_every);
  end if;
  while pg_catalog.clock_timestamp() < v_until loop
    v_started := pg_catalog.clock_timestamp();
    v_behind := coalesce((metrics.rollup_pass() ->> 'behind')::boolean, false);
    -- each pass its own transaction: its rollups and live messages go out now, and no transaction id is held
    commit;
    if not v_behind then  -- a backlog is merged pass after pass, without waiting
      perform pg_catalog.pg_sleep(greatest(0, p_every
        - extract(epoch from pg_catalog.clock_timestamp() - v_started)::double precision));
      commit;
    end if;
  end loop;
end
$$;
comment on procedure metrics.run_rollup_passes(double precision, double precision) is
  'Runs metrics.rollup_pass() every p_every seconds (default 1; each pass committed on its own, and the next at '
  'once while a pass reports a backlog beyond metrics.config.pass_max_points) for p_seconds: pg_cron calls it '
  'every minute (CALL as the job''s only statement), which gives passes every second (or down to 0.1 s) under '
  'any pg_cron version, whose schedules stop at one second (1.5+) or one minute (older).';

comment on function metrics.publish_pending() is
  'Runs one rollup pass (metrics.rollup_pass: merges committed points, at most metrics.config.pass_max_points, '
  'then publishes every project''s queued changes its rate limit allows); returns the messages sent. A caller '
  'that must know whether a backlog is left calls metrics.rollup_pass() and reads behind.';
