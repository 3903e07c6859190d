-- Creating a day's raw-points partition when another transaction has just created it: the second check
-- after the advisory lock can still read a stale "no such table" from this session's catalog cache (taking
-- an advisory lock does not process catalog invalidations), and the create then failed with 42P07. The
-- create now treats "already exists" as "done", so a first ingest racing the first maintenance run (or two
-- ingests at a day boundary) both succeed.

create or replace function metrics.ensure_points_partition(p_day date)
returns boolean
language plpgsql security definer set search_path = ''
as $$
declare
  v_name text := 'points_' || pg_catalog.to_char(p_day, 'YYYYMMDD');
begin
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.points partitions'));
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  begin
    execute pg_catalog.format(
      'create table metrics.%I partition of metrics.points for values from (%L) to (%L)',
      v_name, (p_day::text || ' 00:00:00+00')::timestamptz, ((p_day + 1)::text || ' 00:00:00+00')::timestamptz
    );
  exception when duplicate_table then
    return false;  -- committed by a concurrent transaction after this session cached its absence
  end;
  execute pg_catalog.format('alter table metrics.%I enable row level security', v_name);
  execute pg_catalog.format('comment on table metrics.%I is %L', v_name, 'Raw points of ' || p_day::text || ' (UTC).');
  return true;
end
$$;
comment on function metrics.ensure_points_partition(date) is
  'Creates the raw-points partition of a UTC day when missing; returns whether it created one (false also '
  'when a concurrent transaction created it first).';

grant execute on function metrics.ensure_points_partition(date) to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
