-- Issue #14: the rollup pass's interval is a cost knob (docs/capacity.md: a pass every second costs the database
-- 14 % less than every 0.5 s at the reference fleet), but metrics.set_pass_lanes and metrics.schedule_maintenance
-- rescheduled every lane's pg_cron job with the default of 1 s, silently undoing an operator's choice.
--
-- metrics.schedule_rollup_passes gains p_every: the seconds between passes for every lane's job (the lanes must
-- share one: they pass on the same ticks, so that lane 0's live messages carry the other lanes' minutes). Without
-- it, the interval lane 0's job runs with now is kept (1 s when there is no such job or its command is not one
-- this function wrote). So set_pass_lanes and schedule_maintenance, which call it without one, keep the interval.
-- An interval is kept to the millisecond (0.1 + 0.2 is written, and read back, as 0.3).

drop function metrics.schedule_rollup_passes(boolean);

create function metrics.pass_interval_of(p_command text)
returns double precision
language sql immutable set search_path = ''
as $$
  -- the interval argument of a command schedule_rollup_passes writes (or an earlier version wrote, without a
  -- lane); null for any other command, and for an interval run_rollup_passes would refuse
  select case when v.every between 0.1 and 60 then v.every end
  from (
    select pg_catalog.substring(pg_catalog.lower(p_command),
      '^\s*call\s+metrics\.run_rollup_passes\(\s*[0-9]+(?:\.[0-9]+)?\s*,\s*([0-9]{1,9}(?:\.[0-9]{1,20})?)\s*(?:,\s*[0-9]{1,2}\s*)?\)\s*;?\s*$'
    )::double precision as every
  ) as v
$$;
comment on function metrics.pass_interval_of(text) is
  'The seconds between passes in a rollup pass job''s command (call metrics.run_rollup_passes(<seconds>, '
  '<every>[, <lane>])), or null when the command is another or the interval is outside [0.1, 60].';
revoke execute on function metrics.pass_interval_of(text) from public;
grant execute on function metrics.pass_interval_of(text) to service_role;

create function metrics.schedule_rollup_passes(p_create boolean default false, p_every double precision default null)
returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_version text;
  v_lanes integer := (select count(*)::integer from metrics.rollup_lanes);
  v_command text;
  v_every double precision := p_every;
begin
  if p_every is not null and not (p_every between 0.1 and 60) then  -- NaN sorts above every number
    raise exception using
      errcode = '22023',
      message = pg_catalog.format('schedule_rollup_passes: p_every must be in [0.1, 60] seconds, got %s', p_every);
  end if;
  v_every := pg_catalog.round(p_every::numeric, 3)::double precision;  -- what pass_interval_of reads back
  select e.extversion into v_version from pg_catalog.pg_extension e where e.extname = 'pg_cron';
  if v_version is null then
    return 'pg_cron not installed: run "meshhook-metrics maintain --loop" (a thread per lane; '
      'MESHHOOK_METRICS_PUBLISH_EVERY sets its interval)';
  end if;
  -- built at run time: the cron schema may not exist where this function is compiled or linted
  execute pg_catalog.format('select j.command from %I.job j where j.jobname = $1', 'cron')
    into v_command using 'meshhook-metrics-publish';
  if not p_create and v_command is null then
    return 'no pg_cron job runs the rollup pass (metrics.schedule_maintenance() schedules them)'
      || case when p_every is not null then '; the interval was not applied: call this again after it' else '' end;
  end if;
  v_every := coalesce(v_every, metrics.pass_interval_of(v_command), 1);
  -- lane 0 keeps the job name of earlier versions (cron.schedule replaces jobs by name)
  for l in 0 .. v_lanes - 1 loop
    execute pg_catalog.format('select %I.schedule($1, $2, $3)', 'cron')
      using case when l = 0 then 'meshhook-metrics-publish' else 'meshhook-metrics-publish-lane-' || l end,
        '* * * * *', pg_catalog.format('call metrics.run_rollup_passes(55, %s, %s)', v_every, l);
  end loop;
  -- the jobs of lanes that are gone
  execute pg_catalog.format('select count(%I.unschedule(j.jobname)) from %I.job j where j.jobname ~ $1 '
    'and case when j.jobname ~ $1 then pg_catalog.substring(j.jobname, $2)::integer end >= $3', 'cron', 'cron')
    using '^meshhook-metrics-publish-lane-[0-9]{1,9}$', '([0-9]+)$', v_lanes;
  return pg_catalog.format('rollup passes every %s in %s lane(s), a minutely pg_cron job each (pg_cron %s)',
    case when v_every = 1 then 'second' else v_every || ' s' end, v_lanes, v_version);
end
$$;
comment on function metrics.schedule_rollup_passes(boolean, double precision) is
  'Schedules a minutely pg_cron job per lane of the rollup pass (metrics.run_rollup_passes(55, p_every, lane); '
  'lane 0 named meshhook-metrics-publish, the others meshhook-metrics-publish-lane-<n>) and unschedules those of '
  'lanes that are gone; without p_create, only where the pass is already scheduled (metrics.set_pass_lanes calls '
  'it so). Without p_every, the interval lane 0''s job runs with is kept (else 1 s); a p_every outside [0.1, 60] '
  'raises 22023 and changes nothing; it is kept to the millisecond. Returns what it did (that the interval was not '
  'applied, where no job runs the pass yet).';
revoke execute on function metrics.schedule_rollup_passes(boolean, double precision) from public;
-- as metrics.schedule_maintenance(), which calls it (both run as the caller)
grant execute on function metrics.schedule_rollup_passes(boolean, double precision) to service_role;
