-- 5-minute rollups merged across series, per label value: the answer to "this metric over a day at
-- 5-minute steps, all series merged or grouped by one label" without reading a row per series and window.
-- A day of 1,000 series is 288,000 rows of metrics.rollup_5m; the same query reads 288 rows (merged) or
-- 288 per value of the label from here. Built in the same transaction as the 5-minute rows they come
-- from (metrics.rollup_five_minutes), recomputed whole per (project, metric, window), kept as long as them.

create table metrics.rollup_5m_by_label (
  project_id uuid not null references metrics.projects (id) on delete cascade,
  metric text not null,
  -- '' stands for all series of the metric merged; otherwise a label name, and value is the series' value
  -- of that label (null for the series without it)
  label text not null,
  value text,
  bucket timestamptz not null,
  series integer not null check (series > 0),
  count bigint not null,
  sum double precision not null,
  min double precision,
  max double precision,
  last double precision,
  last_ts timestamptz,
  sketch jsonb,
  constraint rollup_5m_by_label_key unique nulls not distinct (project_id, metric, label, bucket, value),
  constraint rollup_5m_by_label_all_series check (label <> '' or value is null)
);
create index rollup_5m_by_label_bucket_idx on metrics.rollup_5m_by_label (bucket);
comment on table metrics.rollup_5m_by_label is
  'metrics.rollup_5m merged across the series of a metric: once for all of them (label '''') and once per value '
  'of each label name the window''s series carry (value null: the series without that label). Answers '
  'unfiltered 5-minute-step queries merged or grouped by one label; rebuilt by metrics.rollup_label_windows().';
comment on column metrics.rollup_5m_by_label.series is 'How many series were merged into the row.';
comment on constraint rollup_5m_by_label_key on metrics.rollup_5m_by_label is
  'One row per (project, metric, label, window, value), in the order queries read them; nulls equal, so each '
  'window has one group without the label.';
comment on index metrics.rollup_5m_by_label_bucket_idx is 'Rebuilds of given windows and retention deletes by time.';

alter table metrics.rollup_5m_by_label enable row level security;
create policy rollup_5m_by_label_members_read on metrics.rollup_5m_by_label for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy rollup_5m_by_label_members_read on metrics.rollup_5m_by_label is
  'Members see their projects'' merged 5-minute rollups.';
grant select on metrics.rollup_5m_by_label to authenticated;
grant all on metrics.rollup_5m_by_label to service_role;

create function metrics.rollup_label_windows(p_projects uuid[], p_metrics text[], p_buckets timestamptz[])
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_rows integer;
begin
  -- whole windows are rebuilt: a late series, or a label name that is new in the window, changes every group
  delete from metrics.rollup_5m_by_label l
  using rows from (pg_catalog.unnest(p_projects), pg_catalog.unnest(p_metrics), pg_catalog.unnest(p_buckets))
      as w (project_id, metric, bucket)
  where l.project_id = w.project_id and l.metric = w.metric and l.bucket = w.bucket;
  with windows as (
    select distinct w.project_id, w.metric, w.bucket
    from rows from (pg_catalog.unnest(p_projects), pg_catalog.unnest(p_metrics), pg_catalog.unnest(p_buckets))
      as w (project_id, metric, bucket)
  ),
  src as materialized (  -- the window's 5-minute row of every series of the metric
    select w.project_id, w.metric, w.bucket, s.labels, r.count, r.sum, r.min, r.max, r.last, r.last_ts, r.sketch
    from windows w
    join metrics.series s on s.project_id = w.project_id and s.name = w.metric
    join metrics.rollup_5m r on r.series_id = s.id and r.bucket = w.bucket
  ),
  names as (  -- the label names the window's series carry
    select distinct x.project_id, x.metric, x.bucket, k.label
    from src x cross join lateral pg_catalog.jsonb_object_keys(x.labels) as k (label)
  ),
  keyed as materialized (  -- each row once in the all-series group and once per label name of its window
    select x.project_id, x.metric, x.bucket, ''::text as label, null::text as value, x.count, x.sum, x.min, x.max,
      x.last, x.last_ts, x.sketch
    from src x
    union all
    select x.project_id, x.metric, x.bucket, n.label, x.labels ->> n.label, x.count, x.sum, x.min, x.max,
      x.last, x.last_ts, x.sketch
    from src x
    join names n on n.project_id = x.project_id and n.metric = x.metric and n.bucket = x.bucket
  ),
  cells as (  -- sketches merge set-based: bucket counts add per (group, store, key)
    select x.project_id, x.metric, x.bucket, x.label, x.value, c.store, c.key, sum(c.n) as n
    from keyed x
    cross join lateral (
      select 'p'::text as store, e.key, e.value::bigint as n from pg_catalog.jsonb_each_text(x.sketch -> 'p') e
      union all
      select 'n'::text, e.key, e.value::bigint from pg_catalog.jsonb_each_text(x.sketch -> 'n') e
    ) as c
    where x.sketch is not null
    group by 1, 2, 3, 4, 5, 6, 7
  ),
  stores as (
    select c.project_id, c.metric, c.bucket, c.label, c.value, c.store, pg_catalog.jsonb_object_agg(c.key, c.n) as cells
    from cells c group by 1, 2, 3, 4, 5, 6
  ),
  sketches as (
    select s.project_id, s.metric, s.bucket, s.label, s.value, pg_catalog.jsonb_object_agg(s.store, s.cells) as cells
    from stores s group by 1, 2, 3, 4, 5
  ),
  merged as (
    select x.project_id, x.metric, x.bucket, x.label, x.value, count(*)::integer as series, sum(x.count) as count,
      sum(x.sum) as sum, min(x.min) as min, max(x.max) as max,
      (max(array[extract(epoch from x.last_ts)::double precision, x.last]) filter (where x.last_ts is not null))[2] as last,
      max(x.last_ts) as last_ts, sum((x.sketch ->> 'z')::bigint) as zeros, count(x.sketch) as sketches
    from keyed x
    group by 1, 2, 3, 4, 5
  )
  insert into metrics.rollup_5m_by_label (project_id, metric, bucket, label, value, series, count, sum, min, max, last,
    last_ts, sketch)
  select m.project_id, m.metric, m.bucket, m.label, m.value, m.series, m.count, m.sum, m.min, m.max, m.last, m.last_ts,
    case when m.sketches > 0 then metrics.sketch_from_cells(m.zeros::bigint, coalesce(k.cells, '{}'::jsonb)) end
  from merged m
  left join sketches k on k.project_id = m.project_id and k.metric = m.metric and k.bucket = m.bucket
    and k.label = m.label and (k.value is null) = (m.value is null) and coalesce(k.value, '') = coalesce(m.value, '')
  order by m.project_id, m.metric, m.label, m.bucket, m.value;
  get diagnostics v_rows = row_count;
  return v_rows;
end
$$;
comment on function metrics.rollup_label_windows(uuid[], text[], timestamptz[]) is
  'Rebuilds metrics.rollup_5m_by_label for the given (project, metric, 5-minute window) triples (parallel '
  'arrays) from metrics.rollup_5m; returns the rows written.';

-- the 5-minute rollup rebuilds the merged rows of every window it writes ----------------------------------
create or replace function metrics.rollup_five_minutes()
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_from timestamptz;
  -- a window counts as closed five minutes after its end, when no ingest that began inside it is still open
  v_until timestamptz := metrics.five_minute_window(now() - interval '5 minutes');
  v_rows integer;
  v_projects uuid[];
  v_metrics text[];
  v_buckets timestamptz[];
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
  ),
  written as (
    insert into metrics.rollup_5m as t (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch from merged m
    order by m.series_id, m.bucket
    on conflict (series_id, bucket) do update set
      count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max, last = excluded.last,
      last_ts = excluded.last_ts, sketch = excluded.sketch, updated_at = now()
    returning t.series_id, t.bucket
  )
  -- the (project, metric, window) triples written, for their merged rows
  select (select count(*) from written)::integer, pg_catalog.array_agg(w.project_id), pg_catalog.array_agg(w.name),
    pg_catalog.array_agg(w.bucket)
  into v_rows, v_projects, v_metrics, v_buckets
  from (
    select distinct s.project_id, s.name, x.bucket from written x join metrics.series s on s.id = x.series_id
  ) as w;
  if v_projects is not null then
    perform metrics.rollup_label_windows(v_projects, v_metrics, v_buckets);
  end if;
  delete from metrics.late_five_minutes l where l.bucket < v_until;
  update metrics.maintenance_state set five_minute_watermark = greatest(five_minute_watermark, v_until);
  return v_rows;
end
$$;
comment on function metrics.rollup_five_minutes() is
  'Rolls the 5-minute windows closed since the last run (at most an hour of them per run, from the oldest '
  'minute on the first run) and the late ones up from rollup_1m into rollup_5m, rebuilds their merged rows '
  'in rollup_5m_by_label and moves the watermark; returns the 5-minute rows written.';

-- retention: the merged rows live as long as the 5-minute rows ------------------------------------------
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
  v_five_minute_groups bigint;
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
  delete from metrics.rollup_5m_by_label r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minute_groups = row_count;

  delete from metrics.rollup_1h r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.hour_retention, v_cfg.hour_retention);
  get diagnostics v_hours = row_count;

  -- a batch may be resent while its points are inside the timestamp window: keep the ledger past it
  delete from metrics.batches b
  where b.received_at < now() - greatest(v_cfg.max_past + v_cfg.max_future + interval '1 hour', v_cfg.raw_retention);
  get diagnostics v_batches = row_count;

  return pg_catalog.jsonb_build_object(
    'partitions_dropped', v_dropped, 'points_deleted', v_points, 'minutes_deleted', v_minutes,
    'five_minutes_deleted', v_five_minutes, 'five_minute_groups_deleted', v_five_minute_groups,
    'hours_deleted', v_hours, 'batches_forgotten', v_batches
  );
end
$$;
comment on function metrics.apply_retention() is
  'Drops raw partitions past the longest raw retention, deletes rows past each project''s retention '
  '(raw 2 days; minute, 5-minute and merged 5-minute 14 days; hour 400 days by default) and forgets old batch ids.';

-- query: unfiltered 5-minute steps read the merged rows -------------------------------------------------
create function metrics.query_series(
  p_project_id uuid,
  p_metric text,
  p_from timestamptz,
  p_to timestamptz,
  p_matchers jsonb default '[]'::jsonb,
  p_step interval default null,
  p_agg text default 'sum',
  p_by text[] default null
)
returns table (labels jsonb, points double precision[])
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
  v_label text;
  v_groups text;
  v_windows text;
  v_must jsonb;
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
  -- the rules of matchers and aggregations are those of alert rules too: one function each
  if metrics.matchers_problem(coalesce(p_matchers, '[]'::jsonb)) is not null then
    perform metrics.reject('p_matchers', metrics.matchers_problem(p_matchers));
  end if;
  if metrics.aggregation_problem(p_agg) is not null then
    perform metrics.reject('p_agg', metrics.aggregation_problem(p_agg));
  end if;
  if v_agg ~ '^p' then
    v_q := pg_catalog.substr(v_agg, 2)::double precision / 100;
    v_agg := 'quantile';
  elsif v_agg ~ '^quantile' then
    v_q := substring(v_agg from '\(([^)]*)\)')::double precision;
    v_agg := 'quantile';
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

  -- the chosen series first (a handful or thousands), then one index scan per rollup table over all of them;
  -- the equality matchers (non-empty values) as one jsonb containment first: a C operator per series, so
  -- the matcher rules (a SQL function call each, ~20 µs) only run on the series that pass it
  select coalesce(pg_catalog.jsonb_object_agg(m ->> 'label', m -> 'value'), '{}'::jsonb) into v_must
  from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) as m
  where m ->> 'op' = '=' and m ->> 'value' <> '';
  select pg_catalog.array_agg(s.id) into v_ids
  from metrics.series s
  where s.project_id = p_project_id and s.name = p_metric and s.labels @> v_must
    and (coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb or metrics.series_matches(s.labels, p_matchers));

  -- Which series form which output label set: "grouped" (series id -> grp, a small integer per label set in
  -- label-set order, so that rows are grouped and sorted on it rather than on jsonb) and "labelsets" (grp ->
  -- labels), then "rows": every rollup row of the range with its grp. Unfiltered queries that merge all
  -- series or group them by one label read the complete 5-minute windows from the rows merged across series
  -- (one per window and label value instead of one per series and window); the others read every series.
  if coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb and coalesce(pg_catalog.cardinality(p_by), 2) <= 1
     and v_five_from < v_five_until then
    v_label := coalesce(p_by[1], '');
    v_groups := $q$
    with keyed as materialized (  -- each series' value of the label ('' stands for no label: all merged)
      select s.id, case when $14 = '' then null else s.labels ->> $14 end as key
      from metrics.series s
      where s.id = any($1)
    ),
    labelsets as materialized (
      select d.key, d.out_labels, pg_catalog.dense_rank() over (order by d.out_labels) as grp
      from (
        select k.key, case when k.key is null then '{}'::jsonb else pg_catalog.jsonb_build_object($14, k.key) end as out_labels
        from (select distinct kd.key from keyed kd) as k
      ) as d
    ),
    grouped as materialized (
      select kd.id, l.grp from keyed kd
      join labelsets l on (l.key is null) = (kd.key is null) and coalesce(l.key, '') = coalesce(kd.key, '')
    ),
    $q$;
    v_windows := $q$
      union all
      -- the complete windows, merged per value of the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key = l.value
      where l.project_id = $12 and l.metric = $13 and l.label = $14 and l.bucket >= $10 and l.bucket < $11
      union all
      -- the group without the label: its merged rows, or the all-series row of a window in which no series
      -- had the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key is null
      where l.project_id = $12 and l.metric = $13 and l.bucket >= $10 and l.bucket < $11
        and ((l.label = $14 and l.value is null)
          or ($14 <> '' and l.label = '' and (  -- probed per window (an index look-up each)
            select 1 from metrics.rollup_5m_by_label o
            where o.project_id = l.project_id and o.metric = l.metric and o.bucket = l.bucket and o.label = $14 limit 1
          ) is null))
    $q$;
  else
    v_groups := $q$
    with chosen as materialized (  -- the output labels once per series, not once per row
      select s.id,
        case when $2 is null then s.labels
          else coalesce((select pg_catalog.jsonb_object_agg(k, s.labels -> k) from pg_catalog.unnest($2) k where s.labels ? k), '{}'::jsonb)
        end as out_labels
      from metrics.series s
      where s.id = any($1)
    ),
    grouped as materialized (
      select c.id, pg_catalog.dense_rank() over (order by c.out_labels) as grp, c.out_labels from chosen c
    ),
    labelsets as (select distinct gr.grp, gr.out_labels from grouped gr),
    $q$;
    v_windows := $q$
      union all
      select g.grp, f.bucket, f.count, f.sum, f.min, f.max, f.last, f.last_ts, f.sketch
      from metrics.rollup_5m f
      join grouped g on g.id = f.series_id
      where f.series_id = any($1) and f.bucket >= $10 and f.bucket < $11
    $q$;
  end if;

  -- planned per call (not a cached generic plan): a handful of series wants index scans, thousands a scan
  return query execute v_groups || $q$
  rows as (
    select g.grp, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.last_ts, r.sketch
    from (
      select h.series_id, h.bucket, h.count, h.sum, h.min, h.max, h.last, h.last_ts, h.sketch
      from metrics.rollup_1h h
      where h.series_id = any($1) and h.bucket >= $3 and h.bucket < $4
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
    $q$ || v_windows || $q$
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
  ),
  valued as (
    select st.grp, st.step_ts, case $7
        when 'rate' then (case when $8 = 'counter' then st.sum else st.count::double precision end)
          / extract(epoch from $6)::double precision
        when 'sum' then st.sum
        when 'avg' then st.sum / nullif(st.count, 0)
        when 'min' then st.min
        when 'max' then st.max
        when 'last' then st.last
        when 'count' then st.count::double precision
        when 'quantile' then metrics.sketch_quantile(st.sketch, $9, st.min, st.max)
      end as value
    from stepped st
  )
  -- one row per label set: its points as [epoch, value] pairs (not finite: null, as JSON has no NaN)
  select g.out_labels, p.points
  from (
    select v.grp, pg_catalog.array_agg(array[extract(epoch from v.step_ts)::double precision,
        case when v.value = 'NaN'::double precision or abs(v.value) = 'Infinity'::double precision then null
          else v.value end]
        order by v.step_ts) as points
    from valued v
    group by v.grp
  ) as p
  join labelsets g on g.grp = p.grp
  order by p.grp  -- grp follows the order of the label sets: no sort on jsonb
  $q$ using v_ids, p_by, p_from, v_split, p_to, v_step, v_agg, v_kind, v_q, v_five_from, v_five_until,
    p_project_id, p_metric, v_label;
end
$$;
comment on function metrics.query_series(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'Series of one metric over [p_from, p_to), one row per label set with its points as [epoch seconds, value] '
  'pairs (value null where undefined or not finite): label matchers [{"label","op","value"}], step (default: '
  '~300 points), aggregation rate|sum|avg|min|max|last|count|pNN|quantile(q); p_by merges series by those '
  'labels (empty array: all into one). Whole-hour steps read hourly rollups for the complete hours, steps of '
  'whole 5-minute windows read 5-minute rollups for the complete windows (merged across series when there are '
  'no matchers and at most one p_by label), and minutes the rest; ranges starting beyond minute retention read '
  'hours only. Runs as the caller, so row-level security applies. The HTTP service writes these rows as JSON.';

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
language sql stable security invoker set search_path = ''
as $$
  select s.labels, pg_catalog.to_timestamp(s.points[i][1]), s.points[i][2]
  from metrics.query_series(p_project_id, p_metric, p_from, p_to, p_matchers, p_step, p_agg, p_by)
    with ordinality as s (labels, points, n)
  cross join lateral pg_catalog.generate_subscripts(s.points, 1) as i
  order by s.n, i
$$;
comment on function metrics.query(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'metrics.query_series one row per point: (labels, step start, value), label sets in order, then time. '
  'Same arguments and rules; values that are not finite are null. Runs as the caller (row-level security).';

-- the windows rolled up before this migration get their merged rows now
select metrics.rollup_label_windows(pg_catalog.array_agg(w.project_id), pg_catalog.array_agg(w.name), pg_catalog.array_agg(w.bucket))
from (
  select distinct s.project_id, s.name, r.bucket from metrics.rollup_5m r join metrics.series s on s.id = r.series_id
) as w
having count(*) > 0;

grant execute on function metrics.rollup_label_windows(uuid[], text[], timestamptz[]) to service_role;
grant execute on function metrics.query_series(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[])
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
