-- Issue #14: the rollup pass every second instead of every 0.5 s (metrics.run_rollup_passes' default, the job
-- pg_cron runs; `meshhook-metrics maintain --loop` likewise).
--
-- Live messages go out at most once per project and publish interval (1 s by default), so a pass every 0.5 s
-- published on every other pass anyway, and the passes in between repeated each histogram minute's stored-
-- sketch merge and rewrite (the per-series half of a fleet's pass) for nothing the dashboard or the alert worker
-- sees. Measured at the reference fleet (`python -m benchmarks.ingest --workload fleet --designs K
-- --pass-interval <s>`, three runs each, interleaved, quiet 2-core VM):
--   every 0.5 s: 39.4-46.7 us of database CPU a point (mean 43.1; the pass 18.6-25.0), commit -> live message
--                p95 0.80 s, commit -> metrics.query p95 0.29 s
--   every 1 s:   36.3-37.7 (mean 37.2, -14 %; the pass 16.0-16.6, -27 %), live p95 0.80-0.82 s (unchanged),
--                metrics.query p95 0.80-0.82 s
--   every 0.75 s (one run): 36.6, but live p95 1.32 s: out of step with the 1 s publish interval.
-- Both stay within the freshness goal (p95 <= 1.5 s); a caller that needs its own points at once still has
-- metrics.rollup_now().

-- no SET clause: a procedure with one cannot COMMIT (every name below is schema-qualified)
create or replace procedure metrics.run_rollup_passes(p_seconds double precision default 55, p_every double precision default 1)
language plpgsql
as $$
declare
  v_until timestamptz := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_seconds);
  v_started timestamptz;
begin
  if p_seconds is null or p_seconds <= 0 or p_seconds > 3600 or p_every is null or p_every < 0.1 or p_every > 60 then
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('run_rollup_passes(%s, %s): seconds must be in (0, 3600], every in [0.1, 60]',
        p_seconds, p_every);
  end if;
  while pg_catalog.clock_timestamp() < v_until loop
    v_started := pg_catalog.clock_timestamp();
    perform metrics.rollup_pass();
    -- each pass its own transaction: its rollups and live messages go out now, and no transaction id is held
    commit;
    perform pg_catalog.pg_sleep(greatest(0, p_every
      - extract(epoch from pg_catalog.clock_timestamp() - v_started)::double precision));
    commit;
  end loop;
end
$$;
comment on procedure metrics.run_rollup_passes(double precision, double precision) is
  'Runs metrics.rollup_pass() every p_every seconds (default 1, migration 20261206002000; each pass committed '
  'on its own) for p_seconds: pg_cron calls it every minute (CALL as the job''s only statement), which gives '
  'passes every second (or down to 0.1 s) under any pg_cron version, whose schedules stop at one second (1.5+) '
  'or one minute (older).';

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
  -- replaces the per-second publish sweep of earlier versions (same job name)
  execute pg_catalog.format('select %I.schedule($1, $2, $3)', 'cron')
    using 'meshhook-metrics-publish', '* * * * *', 'call metrics.run_rollup_passes()';
  return 'scheduled maintenance every minute and rollup passes every second (a minutely job) with pg_cron '
    || v_version;
end
$$;
comment on function metrics.schedule_maintenance() is
  'Schedules metrics.maintain() every minute and metrics.run_rollup_passes() (a rollup pass every second for 55 s) '
  'every minute when pg_cron is installed; idempotent (cron.schedule replaces jobs by name). Call again after '
  'enabling pg_cron.';

comment on function metrics.rollup_pass() is
  'Merges the points of every finished transaction since the watermark (metrics.rollup_points) and moves the '
  'watermark in the same transaction (exactly once), folds the closed minutes into the totals about '
  'once a minute (metrics.fold_totals), then publishes every project with queued minutes its rate limit '
  'allows. Run every second by metrics.run_rollup_passes() (pg_cron) or maintain --loop.';
comment on function metrics.publish_pending() is
  'Runs the rollup pass (metrics.rollup_pass: merges committed points, then publishes every project''s queued '
  'changes its rate limit allows); returns the messages sent. Run every second by metrics.run_rollup_passes() '
  '(pg_cron) or meshhook-metrics maintain --loop.';
