-- Five-minute rollups: the tier between minutes and hours. A day at 5-minute steps reads 288 rows per
-- series instead of 1,440, which is what makes minute-resolution dashboards over many series fast.
-- Built like the hourly tier: maintain() rolls up closed windows (5 minutes after their end) from the
-- minutes, a statement trigger marks windows that get late points, and the next run recomputes them.
-- metrics.query reads the complete windows for steps of whole 5-minute windows and minutes elsewhere.

create table metrics.rollup_5m (
  like metrics.rollup_1m including defaults including constraints,
  primary key (series_id, bucket),
  foreign key (series_id) references metrics.series (id) on delete cascade
);
create index rollup_5m_bucket_idx on metrics.rollup_5m (bucket);
comment on table metrics.rollup_5m is
  'Per-5-minute aggregates recomputed by metrics.maintain() from closed minutes (windows aligned to the '
  'epoch); kept as long as the minutes.';
comment on index metrics.rollup_5m_bucket_idx is 'Time-range scans: rollup runs and retention.';

create table metrics.late_five_minutes (
  series_id bigint not null,
  bucket timestamptz not null,
  primary key (series_id, bucket)
);
comment on table metrics.late_five_minutes is
  '5-minute windows already rolled up that received late points since: the next maintenance run recomputes them.';

alter table metrics.maintenance_state
  add column five_minute_watermark timestamptz not null default '-infinity';
comment on column metrics.maintenance_state.five_minute_watermark is
  '5-minute windows before it are rolled up into metrics.rollup_5m.';

alter table metrics.rollup_5m enable row level security;
alter table metrics.late_five_minutes enable row level security;
create policy rollup_5m_members_read on metrics.rollup_5m for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy rollup_5m_members_read on metrics.rollup_5m is 'Members see their projects'' 5-minute rollups.';
grant select on metrics.rollup_5m to authenticated;
grant all on metrics.rollup_5m, metrics.late_five_minutes to service_role;

create function metrics.five_minute_window(p_ts timestamptz)
returns timestamptz
language sql immutable parallel safe set search_path = ''
as $$
  select pg_catalog.date_bin('5 minutes'::interval, p_ts, '1970-01-01 00:00:00+00'::timestamptz)
$$;
comment on function metrics.five_minute_window(timestamptz) is
  'Start of the 5-minute window (aligned to the epoch, so every whole-5-minute step holds whole windows) of p_ts.';

create function metrics.five_minutes_complete_until()
returns timestamptz
language sql stable security definer set search_path = ''
as $$
  select ms.five_minute_watermark from metrics.maintenance_state ms
$$;
comment on function metrics.five_minutes_complete_until() is
  'End of the rolled-up 5-minute windows: queries read rollup_5m before it (definer: maintenance_state is not '
  'readable by callers).';

create function metrics.rollup_five_minutes()
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_from timestamptz;
  -- a window counts as closed five minutes after its end, when no ingest that began inside it is still open
  v_until timestamptz := metrics.five_minute_window(now() - interval '5 minutes');
  v_rows integer;
begin
  -- lock order, everywhere: the hourly rollup's lock, the maintenance_state row, then this rollup's lock
  -- (maintain() holds the row from rollup_hours() when it gets here; ingests take the two locks only)
  select ms.five_minute_watermark into v_from from metrics.maintenance_state ms for update;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_five_minutes'));
  if v_from = '-infinity' then
    -- the first run starts at the oldest minute (an existing installation has up to its minute retention)
    select metrics.five_minute_window(min(r.bucket)) into v_from from metrics.rollup_1m r;
    v_from := coalesce(v_from, v_until);
  end if;
  -- at most an hour of windows per run: a backfill takes many short runs instead of one very long one that
  -- would hold the lock (and the ingests that take it at window boundaries) for its whole length; queries
  -- read minutes for whatever lies past the watermark meanwhile
  v_until := least(v_until, v_from + interval '1 hour');
  with due as (
    -- every series of the windows closed since the last run
    select distinct r.series_id, metrics.five_minute_window(r.bucket) as bucket
    from metrics.rollup_1m r
    where r.bucket >= v_from and r.bucket < v_until
    union
    -- and windows rolled up before that have had late points since
    select l.series_id, l.bucket from metrics.late_five_minutes l where l.bucket < v_until
  ),
  merged as (
    select r.project_id, r.series_id, d.bucket, sum(r.count) as count, sum(r.sum) as sum, min(r.min) as min,
      max(r.max) as max,
      (max(array[extract(epoch from r.last_ts)::double precision, r.last]) filter (where r.last_ts is not null))[2] as last,
      max(r.last_ts) as last_ts, metrics.sketch_union(r.sketch) as sketch
    from due d
    join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket >= d.bucket and r.bucket < d.bucket + interval '5 minutes'
    group by r.project_id, r.series_id, d.bucket
  )
  insert into metrics.rollup_5m as t (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
  select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch from merged m
  order by m.series_id, m.bucket
  on conflict (series_id, bucket) do update set
    count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max, last = excluded.last,
    last_ts = excluded.last_ts, sketch = excluded.sketch, updated_at = now();
  get diagnostics v_rows = row_count;
  delete from metrics.late_five_minutes l where l.bucket < v_until;
  update metrics.maintenance_state set five_minute_watermark = greatest(five_minute_watermark, v_until);
  return v_rows;
end
$$;
comment on function metrics.rollup_five_minutes() is
  'Rolls the 5-minute windows closed since the last run (at most an hour of them per run, from the oldest '
  'minute on the first run) and the late ones up from rollup_1m into rollup_5m and moves the watermark; '
  'returns the rows written.';

create function metrics.on_points_mark_late_windows()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  -- Points for periods already rolled up make those periods due again. The shared locks order this
  -- statement against a running rollup, so the watermark read is the one that run leaves behind. This
  -- trigger fires first (triggers fire in name order) and takes both locks before the statement locks any
  -- row, in the order maintain() takes them (hours, then 5-minute windows): an ingest holding rollup rows
  -- never waits for a lock that a queued rollup waits for (points_rollup asks for the hourly one again; it
  -- already has it).
  if exists (select from new_points n where n.ts < pg_catalog.date_trunc('hour', now())) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
  end if;
  if exists (select from new_points n where n.ts < metrics.five_minute_window(now())) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_five_minutes'));
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct n.series_id, metrics.five_minute_window(n.ts)
    from new_points n
    where n.ts < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing;
  end if;
  return null;
end
$$;
comment on function metrics.on_points_mark_late_windows() is
  'Statement trigger of metrics.points, fired first: takes the rollup locks (hours, then 5-minute windows) '
  'before any row lock, and marks the 5-minute windows already rolled up that received points.';

create trigger points_late_windows
after insert on metrics.points
referencing new table as new_points
for each statement execute function metrics.on_points_mark_late_windows();
comment on trigger points_late_windows on metrics.points is
  'Fires before points_rollup: rollup locks first, then late 5-minute windows for the next maintenance run.';

-- query: the 5-minute tier inside the minute range -------------------------------------------------
create or replace function metrics.query(
  p_project_id uuid,
  p_metric text,
  p_from timestamptz,
  p_to timestamptz,
  p_matchers jsonb default '[]'::jsonb,
  p_step interval default null,
  p_agg text default 'sum',
  p_by text[] default null
)
returns table (labels jsonb, ts timestamptz, value double precision)
language plpgsql stable security invoker set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_minute_retention interval;
  v_step interval := p_step;
  v_split timestamptz;
  v_five_from timestamptz;
  v_five_until timestamptz;
  v_ids bigint[];
  v_q double precision;
  v_agg text := lower(p_agg);
  v_kind text;
  m jsonb;
begin
  select * into strict v_cfg from metrics.config;
  if p_project_id is null then perform metrics.reject('p_project_id', 'required'); end if;
  if p_metric is null then perform metrics.reject('p_metric', 'required'); end if;
  if p_from is null or p_to is null or p_from >= p_to then
    perform metrics.reject('p_from', 'p_from and p_to are required and p_from must be before p_to');
  end if;
  if p_to - p_from > interval '400 days' then
    perform metrics.reject('p_to', 'time ranges are limited to 400 days');
  end if;
  if v_step is not null and (v_step < interval '1 minute' or v_step > interval '31 days') then
    perform metrics.reject('p_step', 'must be between 1 minute and 31 days');
  end if;
  if pg_catalog.jsonb_typeof(coalesce(p_matchers, '[]'::jsonb)) <> 'array' then
    perform metrics.reject('p_matchers', 'must be an array of {"label", "op", "value"}');
  end if;
  for m in select * from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) loop
    if pg_catalog.jsonb_typeof(m) <> 'object' or pg_catalog.jsonb_typeof(m -> 'label') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'value') is distinct from 'string' then
      perform metrics.reject('p_matchers', 'each matcher is {"label": string, "op": "=|!=|=~|!~", "value": string}');
    end if;
    if (m ->> 'op') is null or (m ->> 'op') not in ('=', '!=', '=~', '!~') then
      perform metrics.reject('p_matchers', pg_catalog.format('unknown operator %L (use =, !=, =~, !~)', m ->> 'op'));
    end if;
    if (m ->> 'op') in ('=~', '!~') then
      if pg_catalog.char_length(m ->> 'value') > v_cfg.regex_max_length then
        perform metrics.reject('p_matchers', pg_catalog.format('regex longer than %s characters', v_cfg.regex_max_length));
      end if;
      begin
        perform '' ~ (m ->> 'value');
      exception when invalid_regular_expression then
        perform metrics.reject('p_matchers', pg_catalog.format('invalid regex %L: %s', m ->> 'value', sqlerrm));
      end;
    end if;
  end loop;

  if v_agg ~ '^p\d{1,2}(\.\d+)?$' then
    v_q := pg_catalog.substr(v_agg, 2)::double precision / 100;
    v_agg := 'quantile';
  elsif v_agg ~ '^quantile\(0?\.\d+\)$' or v_agg ~ '^quantile\([01]\)$' then
    v_q := substring(v_agg from '\(([^)]*)\)')::double precision;
    v_agg := 'quantile';
  elsif v_agg not in ('rate', 'sum', 'avg', 'min', 'max', 'last', 'count') then
    perform metrics.reject('p_agg', pg_catalog.format(
      'unknown aggregation %L (use rate, sum, avg, min, max, last, count, pNN or quantile(q))', p_agg));
  end if;

  select coalesce(pr.minute_retention, v_cfg.minute_retention) into v_minute_retention
  from metrics.projects pr where pr.id = p_project_id;
  v_minute_retention := coalesce(v_minute_retention, v_cfg.minute_retention);
  select f.kind into v_kind from metrics.families f where f.project_id = p_project_id and f.name = p_metric;

  if v_step is null then
    -- about 300 points per series, whole minutes (whole hours past a day)
    v_step := pg_catalog.make_interval(mins => greatest(1, pg_catalog.ceil(extract(epoch from p_to - p_from) / 60 / 300))::integer);
    if v_step > interval '1 hour' then
      v_step := pg_catalog.make_interval(hours => pg_catalog.ceil(extract(epoch from v_step) / 3600)::integer);
    end if;
  end if;
  -- hours when the step is whole hours and those hours are complete, or when minutes are gone already
  -- [p_from, v_split) is read from hourly rollups, [v_split, p_to) from minutes: hours for whole-hour steps
  -- as far as they are complete, everything from hours when the range starts beyond minute retention
  v_split := case
    when p_from < now() - v_minute_retention then p_to
    when extract(epoch from v_step)::bigint % 3600 = 0
      then greatest(p_from, least(p_to, metrics.hours_complete_until()))
    else p_from
  end;
  if v_split > p_from and v_split < p_to and extract(epoch from v_split)::bigint % 3600 <> 0 then
    v_split := p_from;  -- a split inside an hour would count that hour twice
  end if;

  -- inside the minute range, steps of whole 5-minute windows read the complete windows from rollup_5m:
  -- [v_split, v_five_from) and [v_five_until, p_to) from minutes, [v_five_from, v_five_until) from 5-minute rows
  v_five_from := v_split;
  v_five_until := v_split;
  if extract(epoch from v_step)::bigint % 300 = 0 and v_split < p_to then
    v_five_from := metrics.five_minute_window(v_split + interval '5 minutes' - interval '1 microsecond');
    v_five_until := greatest(v_five_from,
      metrics.five_minute_window(greatest(v_split, least(p_to, metrics.five_minutes_complete_until()))));
  end if;

  -- the chosen series first (a handful or thousands), then one index scan per rollup table over all of them
  select pg_catalog.array_agg(s.id) into v_ids
  from metrics.series s
  where s.project_id = p_project_id and s.name = p_metric and metrics.series_matches(s.labels, p_matchers);

  -- planned per call (not a cached generic plan): a handful of series wants index scans, thousands a scan
  return query execute $q$
  with chosen as materialized (  -- the output labels once per series, not once per row
    select s.id,
      case when $2 is null then s.labels
        else coalesce((select pg_catalog.jsonb_object_agg(k, s.labels -> k) from pg_catalog.unnest($2) k where s.labels ? k), '{}'::jsonb)
      end as out_labels
    from metrics.series s
    where s.id = any($1)
  ),
  grouped as materialized (  -- rows are grouped on a small integer per output label set, not on jsonb
    select c.id, pg_catalog.dense_rank() over (order by c.out_labels) as grp, c.out_labels from chosen c
  ),
  rows as (
    select g.grp, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.last_ts, r.sketch
    from (
      select h.series_id, h.bucket, h.count, h.sum, h.min, h.max, h.last, h.last_ts, h.sketch
      from metrics.rollup_1h h
      where h.series_id = any($1) and h.bucket >= $3 and h.bucket < $4
      union all
      select f.series_id, f.bucket, f.count, f.sum, f.min, f.max, f.last, f.last_ts, f.sketch
      from metrics.rollup_5m f
      where f.series_id = any($1) and f.bucket >= $10 and f.bucket < $11
      union all
      select m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
      from metrics.rollup_1m m
      where m.series_id = any($1) and m.bucket >= $4 and m.bucket < $10
      union all
      select m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
      from metrics.rollup_1m m
      where m.series_id = any($1) and m.bucket >= $11 and m.bucket < $5
    ) as r
    join grouped g on g.id = r.series_id
  ),
  stepped as (
    select x.grp, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz) as step_ts,
      sum(x.count) as count, sum(x.sum) as sum, min(x.min) as min, max(x.max) as max,
      -- FILTER, not CASE: an aggregate under CASE still runs for every row; these only run when asked for
      (max(array[extract(epoch from x.last_ts)::double precision, x.last])
        filter (where $7 = 'last' and x.last_ts is not null))[2] as last,
      metrics.sketch_union(x.sketch) filter (where $7 = 'quantile') as sketch
    from rows x
    group by x.grp, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz)
  )
  select g.out_labels, st.step_ts, case $7
      when 'rate' then (case when $8 = 'counter' then st.sum else st.count::double precision end)
        / extract(epoch from $6)::double precision
      when 'sum' then st.sum
      when 'avg' then st.sum / nullif(st.count, 0)
      when 'min' then st.min
      when 'max' then st.max
      when 'last' then st.last
      when 'count' then st.count::double precision
      when 'quantile' then metrics.sketch_quantile(st.sketch, $9, st.min, st.max)
    end
  from stepped st
  join (select distinct gr.grp, gr.out_labels from grouped gr) as g on g.grp = st.grp
  order by st.grp, st.step_ts  -- grp follows the order of the label sets: no sort on jsonb
  $q$ using v_ids, p_by, p_from, v_split, p_to, v_step, v_agg, v_kind, v_q, v_five_from, v_five_until;
end
$$;

-- retention and the one maintenance call --------------------------------------------------------------
create or replace function metrics.apply_retention()
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
  v_five_minutes bigint;
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

  -- the 5-minute tier speeds up minute-resolution queries, so it lives exactly as long as the minutes
  delete from metrics.rollup_5m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minutes = row_count;

  delete from metrics.rollup_1h r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.hour_retention, v_cfg.hour_retention);
  get diagnostics v_hours = row_count;

  -- a batch may be resent while its points are inside the timestamp window: keep the ledger past it
  delete from metrics.batches b
  where b.received_at < now() - greatest(v_cfg.max_past + v_cfg.max_future + interval '1 hour', v_cfg.raw_retention);
  get diagnostics v_batches = row_count;

  return pg_catalog.jsonb_build_object(
    'partitions_dropped', v_dropped, 'points_deleted', v_points, 'minutes_deleted', v_minutes,
    'five_minutes_deleted', v_five_minutes,
    'hours_deleted', v_hours, 'batches_forgotten', v_batches
  );
end
$$;

create or replace function metrics.maintain()
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
  v_report := pg_catalog.jsonb_build_object('partitions_created', v_created, 'hours_rolled_up', metrics.rollup_hours(),
      'five_minutes_rolled_up', metrics.rollup_five_minutes())
    || metrics.apply_retention()
    || pg_catalog.jsonb_build_object('messages_published', metrics.publish_pending());
  update metrics.maintenance_state set last_run_at = now(), last_report = v_report;
  return v_report;
end
$$;

comment on function metrics.query(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'Series of one metric over [p_from, p_to): label matchers [{"label","op","value"}], step (default: '
  '~300 points), aggregation rate|sum|avg|min|max|last|count|pNN|quantile(q); p_by merges series by those '
  'labels (empty array: all into one). Whole-hour steps read hourly rollups for the complete hours, steps of '
  'whole 5-minute windows read 5-minute rollups for the complete windows, and minutes the rest; ranges '
  'starting beyond minute retention read hours only. Runs as the caller, so row-level security applies.';
comment on function metrics.apply_retention() is
  'Drops raw partitions past the longest raw retention, deletes rows past each project''s retention '
  '(raw 2 days, minute and 5-minute 14 days, hour 400 days by default) and forgets old batch ids.';
comment on function metrics.maintain() is
  'All periodic work in one call: raw partitions for yesterday..+2 days, hourly and 5-minute rollups, '
  'retention, and a publish sweep. Safe to run concurrently (a second run skips). Returns a report.';

grant execute on function metrics.five_minute_window(timestamptz), metrics.five_minutes_complete_until()
  to authenticated, service_role;
grant execute on function metrics.rollup_five_minutes() to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
