-- Maintenance: partitions ahead, hourly rollups from closed minutes, retention. One function, run by
-- pg_cron where it exists and by `meshhook-metrics maintain` elsewhere.

create function metrics.rollup_hours()
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_from timestamptz;
  -- an hour counts as closed five minutes after its end, when no ingest that began inside it is still open
  v_until timestamptz := pg_catalog.date_trunc('hour', now() - interval '5 minutes');
  v_rows integer;
begin
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_hours'));
  select ms.hour_watermark into v_from from metrics.maintenance_state ms for update;
  with due as (
    -- every series of the hours closed since the last run
    select distinct r.series_id, pg_catalog.date_trunc('hour', r.bucket) as hour
    from metrics.rollup_1m r
    where r.bucket >= v_from and r.bucket < v_until
    union
    -- and hours rolled up before that have had late points since
    select l.series_id, l.hour from metrics.late_hours l where l.hour < v_until
  ),
  merged as (
    select r.project_id, r.series_id, d.hour, sum(r.count) as count, sum(r.sum) as sum, min(r.min) as min,
      max(r.max) as max,
      (max(array[extract(epoch from r.last_ts)::double precision, r.last]) filter (where r.last_ts is not null))[2] as last,
      max(r.last_ts) as last_ts, metrics.sketch_union(r.sketch) as sketch
    from due d
    join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket >= d.hour and r.bucket < d.hour + interval '1 hour'
    group by r.project_id, r.series_id, d.hour
  )
  insert into metrics.rollup_1h as t (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
  select m.project_id, m.series_id, m.hour, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch from merged m
  on conflict (series_id, bucket) do update set
    count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max, last = excluded.last,
    last_ts = excluded.last_ts, sketch = excluded.sketch, updated_at = now();
  get diagnostics v_rows = row_count;
  delete from metrics.late_hours l where l.hour < v_until;
  update metrics.maintenance_state set hour_watermark = greatest(hour_watermark, v_until);
  return v_rows;
end
$$;
comment on function metrics.rollup_hours() is
  'Rolls up every hour closed since the last run (and earlier hours that got late points) from its '
  'minutes, replacing the hour; returns hours written.';

create function metrics.apply_retention()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_keep_raw interval;
  v_part record;
  v_dropped integer := 0;
  v_points bigint;
  v_minutes bigint;
  v_hours bigint;
  v_batches bigint;
begin
  select * into strict v_cfg from metrics.config;
  -- whole partitions go once no project keeps raw points that long
  select greatest(v_cfg.raw_retention, coalesce(max(pr.raw_retention), v_cfg.raw_retention)) into v_keep_raw
  from metrics.projects pr;
  for v_part in
    select c.relname, pg_catalog.to_date(pg_catalog.substr(c.relname, 8), 'YYYYMMDD') as day
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'metrics.points'::regclass and c.relname ~ '^points_\d{8}$'
  loop
    if v_part.day + 1 <= (now() - v_keep_raw)::date then
      execute pg_catalog.format('drop table metrics.%I', v_part.relname);
      v_dropped := v_dropped + 1;
    end if;
  end loop;
  -- projects that keep less than the partitions do
  delete from metrics.points p using metrics.projects pr
  where pr.id = p.project_id and pr.raw_retention is not null and p.ts < now() - pr.raw_retention;
  get diagnostics v_points = row_count;

  delete from metrics.rollup_1m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_minutes = row_count;

  delete from metrics.rollup_1h r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.hour_retention, v_cfg.hour_retention);
  get diagnostics v_hours = row_count;

  -- a batch may be resent while its points are inside the timestamp window: keep the ledger past it
  delete from metrics.batches b
  where b.received_at < now() - greatest(v_cfg.max_past + v_cfg.max_future + interval '1 hour', v_cfg.raw_retention);
  get diagnostics v_batches = row_count;

  return pg_catalog.jsonb_build_object(
    'partitions_dropped', v_dropped, 'points_deleted', v_points, 'minutes_deleted', v_minutes,
    'hours_deleted', v_hours, 'batches_forgotten', v_batches
  );
end
$$;
comment on function metrics.apply_retention() is
  'Drops raw partitions past the longest raw retention, deletes rows past each project''s retention '
  '(raw 2 days, minute 14 days, hour 400 days by default) and forgets old batch ids.';

create function metrics.maintain()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_day date;
  v_created integer := 0;
  v_report jsonb;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.maintain')) then
    return pg_catalog.jsonb_build_object('skipped', 'another maintenance run is in progress');
  end if;
  for v_day in select pg_catalog.generate_series(current_date - 1, current_date + 2, interval '1 day')::date loop
    if metrics.ensure_points_partition(v_day) then
      v_created := v_created + 1;
    end if;
  end loop;
  v_report := pg_catalog.jsonb_build_object('partitions_created', v_created, 'hours_rolled_up', metrics.rollup_hours())
    || metrics.apply_retention()
    || pg_catalog.jsonb_build_object('messages_published', metrics.publish_pending());
  update metrics.maintenance_state set last_run_at = now(), last_report = v_report;
  return v_report;
end
$$;
comment on function metrics.maintain() is
  'All periodic work in one call: raw partitions for yesterday..+2 days, hourly rollups, retention, and a '
  'publish sweep. Safe to run concurrently (a second run skips). Returns a report.';

create function metrics.schedule_maintenance()
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
  if pg_catalog.string_to_array(pg_catalog.split_part(v_version, '-', 1), '.')::integer[] >= array[1, 5] then
    execute pg_catalog.format('select %I.schedule($1, $2, $3)', 'cron')
      using 'meshhook-metrics-publish', '1 seconds', 'select metrics.publish_pending()';
    return 'scheduled maintenance every minute and publish sweeps every second with pg_cron ' || v_version;
  end if;
  return 'scheduled maintenance every minute with pg_cron ' || v_version
    || ' (no second schedules: run "meshhook-metrics maintain --loop" for publish sweeps)';
end
$$;
comment on function metrics.schedule_maintenance() is
  'Schedules metrics.maintain() (and, with pg_cron >= 1.5, per-second publish sweeps) when pg_cron is '
  'installed; idempotent (cron.schedule replaces jobs by name). Call again after enabling pg_cron.';

-- schedule now where pg_cron is available; elsewhere the CLI loop does the work
select metrics.schedule_maintenance();

grant execute on function metrics.maintain(), metrics.rollup_hours(), metrics.apply_retention(),
  metrics.schedule_maintenance() to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
