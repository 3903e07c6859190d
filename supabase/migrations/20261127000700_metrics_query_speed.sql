-- Faster queries: whole points, set-based sketch merges, stored quantiles, and whole hours only; merged
-- rows of histograms built faster.
--
-- metrics.query_series without grouping where nothing is grouped: a rollup row whose width is the step and
-- which is the only row of its label set in that step is a point already. That holds for every series on
-- its own (no p_by: series labels are unique per metric) at the width of the tier it is read from (hourly
-- rows at 1-hour steps, 5-minute rows at 5-minute steps, minutes at 1-minute steps) and for the merged
-- 5-minute rows at 5-minute steps. Those rows now skip the hash aggregation by (label set, step); only the
-- rest (minutes at the edges of a range, finer tiers under coarser steps, merged label sets) is summed.
-- 1,000 series over a day at hourly steps (24,000 points) took half its time in that aggregation.
-- Also: quantiles of steps without a sketch (counters, gauges) are null without a sketch_quantile call
-- (~90 µs each: a day of 50 series at 5-minute steps took 1.3 s); the sketches of rows summed per step
-- merge set-based like the rollups merge them, not by one PL/pgSQL sketch_union call per row (an hour of 100
-- histogram series at 1-minute steps: p99 1.7-2.0 s -> 0.3 s); epoch seconds come from date_part
-- (float8) instead of extract (numeric, then parsed back into a float8); the points of all label sets are
-- sorted once instead of once per label set. And whole-hour steps no longer lose a partial first hour, nor
-- count a partial last hour whole: hours are read only where they lie wholly inside the range.
-- Adding the generated column rollup_5m_by_label.quantiles rewrites that table, computing the quantiles of
-- every stored histogram row (~0.3 ms a row).

-- Quantiles stored with the merged 5-minute rows: grouped by a label, a day at 5-minute steps is 288 points
-- per label value, each a quantile of a sketch of hundreds of buckets (~0.45 ms to parse): p99 by a label with
-- 50 values took 5 s. The usual ones are computed once, when the row is written, by the same function.
create function metrics.stored_quantiles()
returns double precision[]
language sql immutable parallel safe set search_path = ''
as $$
  -- as percentages over 100, the way metrics.query_series reads 'p99.9' (0.999 and 99.9 / 100 differ)
  select array(select p / 100 from pg_catalog.unnest(array[50, 75, 90, 95, 99, 99.9]::double precision[]) as p)
$$;
comment on function metrics.stored_quantiles() is
  'The quantiles stored with each merged 5-minute row (rollup_5m_by_label.quantiles): p50, p75, p90, p95, '
  'p99, p99.9, as metrics.query_series parses pNN. Changing them means re-creating that generated column.';

alter table metrics.rollup_5m_by_label add column quantiles double precision[]
  generated always as (
    case when sketch is not null then metrics.sketch_quantiles(sketch, metrics.stored_quantiles(), min, max) end
  ) stored;
comment on column metrics.rollup_5m_by_label.quantiles is
  'metrics.sketch_quantiles of the row''s sketch at metrics.stored_quantiles(), clamped to [min, max]: what '
  'metrics.query_series answers pNN with for a whole merged point, without parsing the sketch.';

-- The merged rows of histograms are built ~2.5x faster: their sketch buckets group by integer keys (0.33 s
-- per window of 100 histogram series before). Otherwise as in migration 20261127000600.
create or replace function metrics.rollup_label_windows(p_projects uuid[], p_metrics text[], p_buckets timestamptz[])
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
  cells as (  -- sketches merge set-based: bucket counts add per (group, store, key); integer keys group ~2.5x
    -- faster than their text under a collation
    select x.project_id, x.metric, x.bucket, x.label, x.value, c.store, c.key, sum(c.n) as n
    from keyed x
    cross join lateral (
      select 'p'::"char" as store, e.key::integer as key, e.value::bigint as n from pg_catalog.jsonb_each_text(x.sketch -> 'p') e
      union all
      select 'n'::"char", e.key::integer, e.value::bigint from pg_catalog.jsonb_each_text(x.sketch -> 'n') e
    ) as c
    where x.sketch is not null
    group by 1, 2, 3, 4, 5, 6, 7
  ),
  stores as (
    select c.project_id, c.metric, c.bucket, c.label, c.value, c.store::text as store, pg_catalog.jsonb_object_agg(c.key, c.n) as cells
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
create or replace function metrics.query_series(
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
  v_five_from timestamptz;
  v_hours_from timestamptz;
  v_hours_until timestamptz;
  v_five_until timestamptz;
  v_hour timestamptz;
  v_hour_end timestamptz;
  v_ids bigint[];
  v_labels jsonb[];
  v_q double precision;
  v_agg text := lower(p_agg);
  v_kind text;
  v_label text;
  v_groups text;
  v_five text;
  v_hours text;
  v_minutes text;
  v_whole text[];
  v_sources text[];
  v_is_whole boolean[];
  v_none text;
  v_parts text[];
  v_merged boolean;
  v_own boolean;
  v_part_sketches text;
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
  if pg_catalog.date_part('month', v_step) <> 0 or pg_catalog.date_part('year', v_step) <> 0 then
    -- '1 mon' compares as 30 days, but steps are bins from the epoch, and months have no fixed length
    perform metrics.reject('p_step', 'in days, hours, minutes or seconds (months have no fixed length)');
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
  -- Which tier reads which part of [p_from, p_to), in time order:
  --   minutes [p_from, v_five_from), 5-minute rows [v_five_from, v_hours_from), hourly rows
  --   [v_hours_from, v_hours_until), 5-minute rows [v_hours_until, v_five_until), minutes [v_five_until, p_to).
  -- Hours only whole and complete ones inside the range for whole-hour steps; 5-minute windows only whole and
  -- complete ones for steps of whole windows; minutes the edges. Ranges starting beyond minute retention read
  -- the whole complete hours inside them at any step, and minutes after those (the start's minutes and
  -- windows are gone: a partial first hour is absent).
  if p_from < now() - v_minute_retention then
    v_hours_from := least(p_to, pg_catalog.date_bin('1 hour', p_from + interval '1 hour' - interval '1 microsecond',
      '1970-01-01 00:00:00+00'::timestamptz));
    v_hours_until := greatest(v_hours_from, pg_catalog.date_bin('1 hour', least(p_to, metrics.hours_complete_until()),
      '1970-01-01 00:00:00+00'::timestamptz));
    v_five_from := v_hours_from;
    v_five_until := v_hours_until;
  elsif extract(epoch from v_step) % 300 <> 0 then
    v_five_from := p_to;
    v_hours_from := p_to;
    v_hours_until := p_to;
    v_five_until := p_to;
  else
    v_five_from := least(p_to, metrics.five_minute_window(p_from + interval '5 minutes' - interval '1 microsecond'));
    v_five_until := greatest(v_five_from,
      metrics.five_minute_window(least(p_to, metrics.five_minutes_complete_until())));
    v_hours_from := v_five_from;
    v_hours_until := v_five_from;
    if extract(epoch from v_step) % 3600 = 0 then
      v_hour := pg_catalog.date_bin('1 hour', p_from + interval '1 hour' - interval '1 microsecond',
        '1970-01-01 00:00:00+00'::timestamptz);
      v_hour_end := pg_catalog.date_bin('1 hour', least(p_to, metrics.hours_complete_until()),
        '1970-01-01 00:00:00+00'::timestamptz);
      if v_hour < v_hour_end then
        if v_five_until < v_hour then
          v_five_from := v_hour;  -- the 5-minute tier is behind the hourly one: minutes before the first hour
        end if;
        v_hours_from := v_hour;
        v_hours_until := v_hour_end;
        v_five_until := greatest(v_five_until, v_hour_end);
      end if;
    end if;
  end if;

  -- the chosen series first (a handful or thousands), then one index scan per rollup table over all of them;
  -- the equality matchers (non-empty values) as one jsonb containment first: a C operator per series, so
  -- the matcher rules (a SQL function call each, ~20 µs) only run on the series that pass it
  select coalesce(pg_catalog.jsonb_object_agg(m ->> 'label', m -> 'value'), '{}'::jsonb) into v_must
  from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) as m
  where m ->> 'op' = '=' and m ->> 'value' <> '';
  -- ids and labels in label order, read once: the query below takes them from these arrays
  select pg_catalog.array_agg(s.id order by s.labels), pg_catalog.array_agg(s.labels order by s.labels)
  into v_ids, v_labels
  from metrics.series s
  where s.project_id = p_project_id and s.name = p_metric and s.labels @> v_must
    and (coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb or metrics.series_matches(s.labels, p_matchers));

  -- Which series form which output label set: "grouped" (series id -> grp, a small integer per label set in
  -- label-set order, so that rows are grouped and sorted on it rather than on jsonb) and "labelsets" (grp ->
  -- labels). Unfiltered queries that merge all series or group them by one label read the complete 5-minute
  -- windows from the rows merged across series (one per window and label value instead of one per series and
  -- window); the others read every series.
  v_merged := coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb and coalesce(pg_catalog.cardinality(p_by), 2) <= 1
    and (v_five_from < v_hours_from or v_hours_until < v_five_until);
  -- A rollup row is a whole point already when its width is the step and it is the only row of its label
  -- set in that step: every series on its own (p_by null; series labels are unique per metric) or a merged
  -- row. Those skip the grouping (for 24,000 hourly points of 1,000 series, half the query's time).
  v_own := p_by is null;
  if v_merged then
    v_label := coalesce(p_by[1], '');
    v_groups := $q$
    with keyed as materialized (  -- each series' value of the label ('' stands for no label: all merged)
      select s.id, case when $14 = '' then null else s.labels ->> $14 end as key
      from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) as s (id, labels)
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
    v_five := $q$
      -- the complete windows, merged per value of the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch, l.quantiles
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key = l.value
      where l.project_id = $12 and l.metric = $13 and l.label = $14
        and ((l.bucket >= $10 and l.bucket < $3) or (l.bucket >= $4 and l.bucket < $11))
      union all
      -- the group without the label: its merged rows, or the all-series row of a window in which no series
      -- had the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch, l.quantiles
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key is null
      where l.project_id = $12 and l.metric = $13
        and ((l.bucket >= $10 and l.bucket < $3) or (l.bucket >= $4 and l.bucket < $11))
        and ((l.label = $14 and l.value is null)
          or ($14 <> '' and l.label = '' and (  -- probed per window (an index look-up each)
            select 1 from metrics.rollup_5m_by_label o
            where o.project_id = l.project_id and o.metric = l.metric and o.bucket = l.bucket and o.label = $14 limit 1
          ) is null))
    $q$;
  elsif v_own then
    v_groups := $q$
    with grouped as materialized (  -- every series its own label set, in label order already
      select s.id, s.grp, s.labels as out_labels from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) with ordinality as s (id, labels, grp)
    ),
    labelsets as (select gr.grp, gr.out_labels from grouped gr),
    $q$;
  else
    v_groups := $q$
    with chosen as materialized (  -- the output labels once per series, not once per row
      select s.id,
        coalesce((select pg_catalog.jsonb_object_agg(k, s.labels -> k) from pg_catalog.unnest($2) k where s.labels ? k), '{}'::jsonb)
          as out_labels
      from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) as s (id, labels)
    ),
    grouped as materialized (
      select c.id, pg_catalog.dense_rank() over (order by c.out_labels) as grp, c.out_labels from chosen c
    ),
    labelsets as (select distinct gr.grp, gr.out_labels from grouped gr),
    $q$;
  end if;
  if not v_merged then
    v_five := $q$
      select g.grp, f.bucket, f.count, f.sum, f.min, f.max, f.last, f.last_ts, f.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_5m f
      join grouped g on g.id = f.series_id
      where f.series_id = any($1)
        and ((f.bucket >= $10 and f.bucket < $3) or (f.bucket >= $4 and f.bucket < $11))
    $q$;
  end if;
  v_hours := $q$
      select g.grp, h.bucket, h.count, h.sum, h.min, h.max, h.last, h.last_ts, h.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_1h h
      join grouped g on g.id = h.series_id
      where h.series_id = any($1) and h.bucket >= $3 and h.bucket < $4
  $q$;
  v_minutes := $q$
      select g.grp, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_1m m
      join grouped g on g.id = m.series_id
      where m.series_id = any($1) and ((m.bucket >= $15 and m.bucket < $10) or (m.bucket >= $11 and m.bucket < $5))
  $q$;
  -- each source of rows goes to "whole" (points as they are) or "parts" (summed per step)
  v_sources := array[v_hours, v_minutes, v_five];
  v_is_whole := array[v_own and v_step = interval '1 hour', v_own and v_step = interval '1 minute',
    (v_own or v_merged) and v_step = interval '5 minutes'];
  select pg_catalog.array_agg(x.src) filter (where x.whole), pg_catalog.array_agg(x.src) filter (where not x.whole)
  into v_whole, v_parts
  from rows from (pg_catalog.unnest(v_sources), pg_catalog.unnest(v_is_whole)) as x (src, whole);
  -- a source list with nothing in it: no rows, of the sources' columns
  v_none := $q$
      select null::bigint as grp, null::timestamptz as bucket, null::bigint as count, null::double precision as sum,
        null::double precision as min, null::double precision as max, null::double precision as last,
        null::timestamptz as last_ts, null::jsonb as sketch, null::double precision[] as quantiles where false $q$;

  -- Quantiles: the sketches of the rows summed per step merge set-based, as the rollups merge them (bucket
  -- counts add per label set, step, store and key), not one PL/pgSQL sketch_union call per row: an hour of
  -- 100 histogram series at 1-minute steps merges 6,000 minute sketches. Whole points keep their sketch.
  v_part_sketches := case when v_agg = 'quantile' then $q$
  part_cells as (  -- integer keys: grouping them costs a fraction of grouping their text under a collation
    select x.grp, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz) as step_ts, c.store, c.key,
      sum(c.n) as n
    from parts x
    cross join lateral (
      select 'p'::"char" as store, e.key::integer as key, e.value::bigint as n from pg_catalog.jsonb_each_text(x.sketch -> 'p') e
      union all
      select 'n'::"char", e.key::integer, e.value::bigint from pg_catalog.jsonb_each_text(x.sketch -> 'n') e
    ) as c
    where x.sketch is not null
    group by 1, 2, 3, 4
  ),
  part_stores as (
    select c.grp, c.step_ts, c.store::text as store, pg_catalog.jsonb_object_agg(c.key, c.n) as cells
    from part_cells c group by 1, 2, 3
  ),
  part_sketches as (
    select s.grp, s.step_ts, pg_catalog.jsonb_object_agg(s.store, s.cells) as cells
    from part_stores s group by 1, 2
  ),$q$ else $q$
  part_sketches as (select null::bigint as grp, null::timestamptz as step_ts, null::jsonb as cells where false),$q$ end;

  -- planned per call (not a cached generic plan): a handful of series wants index scans, thousands a scan
  return query execute v_groups || $q$
  parts as ($q$ || coalesce(pg_catalog.array_to_string(v_parts, ' union all '), v_none) || $q$
  ),
  whole as ($q$ || coalesce(pg_catalog.array_to_string(v_whole, ' union all '), v_none) || $q$
  ),
  stepped as (
    select x.grp, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz) as step_ts,
      sum(x.count)::double precision as count, sum(x.sum) as sum, min(x.min) as min, max(x.max) as max,
      -- FILTER, not CASE: an aggregate under CASE still runs for every row; these only run when asked for
      (max(array[pg_catalog.date_part('epoch', x.last_ts), x.last])
        filter (where $7 = 'last' and x.last_ts is not null))[2] as last,
      -- quantiles: the parts' zero counts here, their bucket counts in part_sketches (below)
      sum((x.sketch ->> 'z')::bigint) filter (where $7 = 'quantile') as zeros,
      count(x.sketch) filter (where $7 = 'quantile') as sketches,
      null::jsonb as sketch, null::double precision[] as quantiles
    from parts x
    group by x.grp, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz)
    union all
    select w.grp, w.bucket, w.count::double precision, w.sum, w.min, w.max,
      case when $7 = 'last' and w.last_ts is not null then w.last end, null, null,
      case when $7 = 'quantile' then w.sketch end, case when $7 = 'quantile' then w.quantiles end
    from whole w
  ),$q$ || v_part_sketches || $q$
  valued as (
    select st.grp, st.step_ts, case $7
        when 'rate' then (case when $8 = 'counter' then st.sum else st.count end)
          / extract(epoch from $6)::double precision
        when 'sum' then st.sum
        when 'avg' then st.sum / nullif(st.count, 0)
        when 'min' then st.min
        when 'max' then st.max
        when 'last' then st.last
        when 'count' then st.count
        when 'quantile' then case
          when $17 is not null and st.quantiles is not null then st.quantiles[$17]  -- stored at rollup time
          when st.sketches > 0 then metrics.sketch_quantile(
            metrics.sketch_from_cells(st.zeros::bigint, coalesce(ps.cells, '{}'::jsonb)), $9, st.min, st.max)
          when st.sketch is not null then metrics.sketch_quantile(st.sketch, $9, st.min, st.max)
        end
      end as value
    from stepped st
    left join part_sketches ps on ps.grp = st.grp and ps.step_ts = st.step_ts
  )
  -- one row per label set: its points as [epoch, value] pairs (not finite: null, as JSON has no NaN)
  select g.out_labels, p.points
  from (
    select v.grp, pg_catalog.array_agg(array[pg_catalog.date_part('epoch', v.step_ts),
        case when v.value = 'NaN'::double precision or abs(v.value) = 'Infinity'::double precision then null
          else v.value end] order by v.step_ts) as points
    from valued v
    group by v.grp
  ) as p
  join labelsets g on g.grp = p.grp
  order by p.grp  -- grp follows the order of the label sets: no sort on jsonb
  $q$ using v_ids, p_by, v_hours_from, v_hours_until, p_to, v_step, v_agg, v_kind, v_q, v_five_from, v_five_until,
    p_project_id, p_metric, v_label, p_from, v_labels,
    pg_catalog.array_position(metrics.stored_quantiles(), v_q);
end
$$;
comment on function metrics.query_series(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'Series of one metric over [p_from, p_to), one row per label set with its points as [epoch seconds, value] '
  'pairs (value null where undefined or not finite): label matchers [{"label","op","value"}], step (default: '
  '~300 points), aggregation rate|sum|avg|min|max|last|count|pNN|quantile(q); p_by merges series by those '
  'labels (empty array: all into one). Whole-hour steps read hourly rollups for the complete hours, steps of '
  'whole 5-minute windows read 5-minute rollups for the complete windows (merged across series when there are '
  'no matchers and at most one p_by label), and minutes the rest; ranges starting beyond minute retention read '
  'hours only. Rows that are whole points (one per label set and step) are not regrouped, and a stored quantile '
  '(metrics.stored_quantiles) of a whole merged row is read, not computed. Runs as the caller, so row-level '
  'security applies. The HTTP service writes these rows as JSON.';

grant execute on function metrics.stored_quantiles() to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
