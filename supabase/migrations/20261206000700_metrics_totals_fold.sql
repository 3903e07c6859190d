-- Issue #14: the totals are folded once a minute instead of upserted on every rollup pass.
--
-- Measured (docs/architecture.md, "Where the time goes now"): the pass's upsert into metrics.series_totals
-- (one row per series touched, every 0.5 s: count, sum, last, and for histograms a merge into the cumulative
-- sketch) was a quarter to a third of its merge statement, for totals that only a scrape (every 15-60 s)
-- and series discovery read. Now the totals are two parts: metrics.series_totals holds the minutes before a
-- watermark (rollup_pass_state.totals_folded_before), the minute rollups at or after it hold the rest. The
-- pass writes the totals only for points of minutes already folded (late points); about once a minute,
-- metrics.fold_totals() folds the minutes that closed since into the totals and moves the watermark, in the
-- pass's transaction. Readers take both parts: metrics.series_totals_current (count, sum, last, updated_at)
-- and metrics.series_sketch_parts() / metrics.series_total_sketch() (the sketch).
--
-- Exactly once: a minute row counts in the totals if its minute is before the watermark, in the open minutes
-- otherwise, never both. The pass and the fold run under the pass's lock; a transaction of
-- metrics.rollup_now() holds a shared lock that a fold must take exclusively (or skip that pass), so no fold
-- reads the minutes before such a transaction's merge is committed.

alter table metrics.rollup_pass_state add column totals_folded_before timestamptz;
-- every sketch merged so far is in the totals: the watermark starts after every existing minute row
update metrics.rollup_pass_state
set totals_folded_before = greatest(
  pg_catalog.date_trunc('minute', now()) + interval '1 minute',
  (select max(r.bucket) + interval '1 minute' from metrics.rollup_1m r)
);
alter table metrics.rollup_pass_state alter column totals_folded_before set not null;
comment on column metrics.rollup_pass_state.totals_folded_before is
  'Fold watermark: the minutes before it are in metrics.series_totals, those at or after it only in '
  'metrics.rollup_1m (metrics.series_totals_current, metrics.series_sketch_parts add them).';
comment on table metrics.series_totals is
  'Per-series totals of the minutes before rollup_pass_state.totals_folded_before (folded about once a minute by '
  'metrics.fold_totals; late points of such minutes are added by the pass): count and sum of every accepted '
  'delta, last value (by timestamp, ties to the larger value) and the merged sketch. Never touched by retention. '
  'Current totals: metrics.series_totals_current (and metrics.series_total_sketch for the sketch).';
comment on column metrics.series_totals.sketch is
  'The merged sketch of the folded minutes; the whole total sketch: metrics.series_total_sketch(series_id).';
-- per-pass upserts are gone; the fold's once-a-minute updates find room on the page (HOT, no index entry)
alter table metrics.series_totals set (fillfactor = 70);

-- the exposition (security invoker) reads the fold watermark: a time, no tenant data
create policy rollup_pass_state_read on metrics.rollup_pass_state for select to authenticated using (true);
comment on policy rollup_pass_state_read on metrics.rollup_pass_state is
  'Signed-in callers read the fold watermark (the only column granted to them), for metrics.series_sketch_parts.';
grant select (totals_folded_before) on metrics.rollup_pass_state to authenticated;

create view metrics.series_totals_current with (security_invoker = true) as
select s.id as series_id, s.project_id,
  coalesce(t.count, 0) + coalesce(o.count, 0) as count,
  coalesce(t.sum, 0) + coalesce(o.sum, 0) as sum,
  metrics.later_last(t.last, t.last_ts, o.last, o.last_ts) as last,
  greatest(t.last_ts, o.last_ts) as last_ts,
  greatest(t.updated_at, o.updated_at) as updated_at
from metrics.series s
left join metrics.series_totals t on t.series_id = s.id
-- grouped, not a lateral probe per series: a scrape reads the open minutes of a project in one index range
-- (rollup_1m_project_bucket_idx); a filter on one series or project reaches inside through the join keys
left join (
  select r.series_id, r.project_id, sum(r.count)::bigint as count, sum(r.sum) as sum,
    (max(array[extract(epoch from r.last_ts)::double precision, r.last]) filter (where r.last_ts is not null))[2] as last,
    max(r.last_ts) as last_ts, max(r.updated_at) as updated_at
  from metrics.rollup_1m r
  where r.bucket >= (select ps.totals_folded_before from metrics.rollup_pass_state ps)
  group by r.series_id, r.project_id
) as o on o.series_id = s.id and o.project_id = s.project_id
where t.series_id is not null or o.series_id is not null;
comment on view metrics.series_totals_current is
  'Current per-series totals: metrics.series_totals (the folded minutes) plus the minutes not folded yet (one or '
  'two minute rollups a series): count, sum, last value and its time, and updated_at (when its last points were '
  'merged). Security invoker: row-level security of the tables applies.';
grant select on metrics.series_totals_current to authenticated, service_role;

create function metrics.series_sketch_parts(p_series_id bigint)
returns setof jsonb
language sql stable security invoker set search_path = ''
as $$
  select t.sketch from metrics.series_totals t where t.series_id = p_series_id and t.sketch is not null
  union all
  select r.sketch from metrics.rollup_1m r
  where r.series_id = p_series_id and r.bucket >= (select s.totals_folded_before from metrics.rollup_pass_state s) and r.sketch is not null
$$;
comment on function metrics.series_sketch_parts(bigint) is
  'The parts whose merge is a series'' total sketch: its folded sketch in metrics.series_totals and the sketches '
  'of its minutes not folded yet (security invoker: row-level security applies).';
revoke execute on function metrics.series_sketch_parts(bigint) from public;
grant execute on function metrics.series_sketch_parts(bigint) to authenticated, service_role;

create function metrics.series_total_sketch(p_series_id bigint)
returns jsonb
language sql stable security invoker set search_path = ''
as $$
  select metrics.sketch_union(p.sketch) from metrics.series_sketch_parts(p_series_id) as p (sketch)
$$;
comment on function metrics.series_total_sketch(bigint) is
  'A series'' sketch of every value since it was created (null: none), merged from metrics.series_sketch_parts.';
revoke execute on function metrics.series_total_sketch(bigint) from public;
grant execute on function metrics.series_total_sketch(bigint) to authenticated, service_role;

create function metrics.fold_totals()
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_from timestamptz;
  -- a minute is folded 30 s after it ends: by then its points have arrived (a 1 s flush, a 0.5 s pass);
  -- later points of it are merged into the totals by the pass directly, so folding early is only dearer
  v_to timestamptz := pg_catalog.date_trunc('minute', now() - interval '30 seconds');
  v_series integer;
begin
  select s.totals_folded_before into strict v_from from metrics.rollup_pass_state s;
  if v_to <= v_from then
    return 0;
  end if;
  -- a transaction of metrics.rollup_now() still open holds this lock shared: its merges are not visible
  -- yet, so fold on a later pass rather than wait for it
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.fold_totals')) then
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
  'sketch; updated_at: their latest merge) and moves the watermark; returns the series folded. Called by '
  'metrics.rollup_pass() under its lock; skipped while a metrics.rollup_now() transaction is open.';
revoke execute on function metrics.fold_totals() from public;

create or replace function metrics.rollup_points(p_from xid8, p_to xid8)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
as $$
declare
  v_points bigint;
  v_minutes bigint;
  -- minutes before it are folded into the totals: this range's points of such minutes (late ones) join them
  -- here; the later, open minutes stay in rollup_1m until metrics.fold_totals()
  v_folded timestamptz := (select s.totals_folded_before from metrics.rollup_pass_state s);
begin
  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch
    from metrics.points p
    where p.xid >= p_from and p.xid < p_to
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum((n.sketch ->> 'z')::bigint)::bigint as zeros,
      count(n.sketch) as sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch,
      count(*) as points
    from new_points n
    group by 1, 2, 3
  ),
  cells as materialized (
    -- every bucket of the range's sketches summed once per series, minute, store and key
    select n.series_id, m.bucket, b.store, b.key, sum(b.cnt) as cnt
    from new_points n
    join minutes m on m.series_id = n.series_id and m.bucket = pg_catalog.date_trunc('minute', n.ts)
    cross join lateral (
      select 'p' as store, t.k as key, t.c::bigint as cnt from pg_catalog.jsonb_each_text(n.sketch -> 'p') as t (k, c)
      union all
      select 'n', t.k, t.c::bigint from pg_catalog.jsonb_each_text(n.sketch -> 'n') as t (k, c)
    ) as b
    where n.sketch is not null and m.sketches > 1
    group by 1, 2, 3, 4
  ),
  merged_cells as (
    select s.series_id, s.bucket, pg_catalog.jsonb_object_agg(s.store, s.buckets) as cells
    from (
      select c.series_id, c.bucket, c.store, pg_catalog.jsonb_object_agg(c.key, c.cnt) as buckets
      from cells c group by 1, 2, 3
    ) as s
    group by 1, 2
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      case
        when m.sketches = 1 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches > 1 then metrics.sketch_from_cells(m.zeros, mc.cells)
      end as sketch
    from minutes m
    left join merged_cells mc on mc.series_id = m.series_id and mc.bucket = m.bucket
  ),
  rolled as (
    insert into metrics.rollup_1m as r (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
    from minute_rows m
    order by m.series_id, m.bucket
    on conflict (series_id, bucket) do update set
      count = r.count + excluded.count,
      sum = r.sum + excluded.sum,
      min = least(r.min, excluded.min),
      max = greatest(r.max, excluded.max),
      last = metrics.later_last(r.last, r.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(r.last_ts, excluded.last_ts),
      sketch = metrics.sketch_merge(r.sketch, excluded.sketch),
      updated_at = now()
    returning 1
  ),
  totals as (
    insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
    select m.series_id, m.project_id, sum(m.count), sum(m.sum),
      (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2],
      max(m.last_ts),
      metrics.sketch_union(m.sketch)
    from minute_rows m
    where m.bucket < v_folded
    group by m.series_id, m.project_id
    order by m.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sketch = case when excluded.sketch is null then t.sketch else metrics.sketch_merge(t.sketch, excluded.sketch) end,
      updated_at = now()
    returning 1
  ),
  queued as (
    -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
    -- (matters for metrics.rollup_now(), whose transaction may stay open after this statement)
    insert into metrics.publish_queue as q (project_id, series_id, bucket)
    select m.project_id, m.series_id, m.bucket from minute_rows m
    order by 2, 3
    on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket
    returning 1
  ),
  late_hours as (
    insert into metrics.late_hours (series_id, hour)
    select distinct m.series_id, pg_catalog.date_trunc('hour', m.bucket)
    from minute_rows m
    where m.bucket < (select ms.hour_watermark from metrics.maintenance_state ms)
    on conflict do nothing
    returning 1
  ),
  late_five_minutes as (
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct m.series_id, metrics.five_minute_window(m.bucket)
    from minute_rows m
    where m.bucket < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing
    returning 1
  )
  -- (data-modifying CTEs run to completion whether or not the outer query reads them)
  select coalesce(sum(m.points), 0), count(*) into v_points, v_minutes from minute_rows m;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes);
end
$$;

create or replace function metrics.rollup_pass()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_to xid8;
  v_from xid8;
  v_result jsonb := pg_catalog.jsonb_build_object('points', 0, 'minutes', 0);
  v_oldest timestamptz;
  v_project uuid;
  v_sent integer := 0;
begin
  -- one pass at a time; callers wait rather than skip, so a pass called after a commit merges that commit
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass'));
  -- a new statement, so a snapshot taken after the lock: every transaction below v_to has finished
  v_to := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
  select s.xid_watermark into strict v_from from metrics.rollup_pass_state s;
  if v_to > v_from then
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
  return v_result || pg_catalog.jsonb_build_object('messages', v_sent);
end
$$;

create or replace function metrics.rollup_now()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_self xid8 := pg_catalog.pg_current_xact_id_if_assigned();
  v_result jsonb;
begin
  if v_self is null then
    return pg_catalog.jsonb_build_object('points', 0, 'minutes', 0);
  end if;
  -- held to the end of this transaction: no fold runs while this transaction's merges are uncommitted, so
  -- none can miss them (metrics.fold_totals); and after a fold, the new watermark is read below
  if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'metrics.rollup_now() needs a read committed transaction, not %',
      pg_catalog.current_setting('transaction_isolation') using errcode = '25000';
  end if;
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.fold_totals'));
  v_result := metrics.rollup_points(v_self, (v_self::text::numeric + 1)::text::xid8);
  -- merged: out of every later range (the pass, and this function called again)
  update metrics.points set xid = null where xid = v_self;
  return v_result;
end
$$;

create or replace function metrics.exposition_rows(
  p_project_id uuid default null,
  p_with_project boolean default true,
  p_gauge_max_age interval default '15 minutes',
  p_max_age interval default '7 days',
  p_kinds text[] default null
)
returns table (
  project_id uuid, name text, kind text, unit text, help text, labels jsonb,
  value double precision, count bigint, sum double precision, le double precision[], buckets bigint[]
)
language sql stable security invoker set search_path = ''
as $$
  with canonical as materialized (
    -- per metric name the oldest family the caller sees (first registered; ties: project id) decides the kind
    -- and gives HELP and UNIT; decided before the p_kinds filter, so that the service's two fetches (counters
    -- and gauges, histograms) agree. Families of the name with another kind are left out
    -- (metrics.exposition_conflicts lists them).
    select distinct on (f.name) f.name, f.kind, f.unit, f.help
    from metrics.families f
    where p_project_id is null or f.project_id = p_project_id
    order by f.name, f.created_at, f.project_id
  ),
  fam as materialized (
    -- per metric once: its boundaries, their rank edges and its position in the output
    select f.project_id, f.name, f.kind, k.unit, k.help, b.boundaries,
      metrics.histogram_rank_edges(b.boundaries) as edges,
      pg_catalog.row_number() over (order by f.name, f.project_id) as metric_order
    from metrics.families f
    join canonical k on k.name = f.name and k.kind = f.kind
    left join metrics.histogram_boundaries hb on hb.project_id = f.project_id and hb.metric = f.name
    cross join lateral (
      select case when f.kind = 'histogram'
        then coalesce(hb.boundaries, metrics.default_histogram_boundaries(f.unit)) end as boundaries
    ) as b
    where (p_project_id is null or f.project_id = p_project_id) and (p_kinds is null or f.kind = any(p_kinds))
  ),
  exported as materialized (
    -- without the sketches: 10,000 rows with them outgrow work_mem and spill to disk
    select t.series_id, s.project_id, s.name, s.labels, f.kind, f.unit, f.help, f.boundaries, f.edges,
      f.metric_order, t.count, t.sum, t.last
    from metrics.series_totals_current t
    join metrics.series s on s.id = t.series_id
    join fam f on f.project_id = s.project_id and f.name = s.name
    where (p_project_id is null or t.project_id = p_project_id)
      and t.updated_at >= now() - case when f.kind = 'gauge' then p_gauge_max_age else p_max_age end
      and (f.kind <> 'gauge' or t.last is not null)
  ),
  placed as (
    -- every bucket of every exported histogram's total sketch (its parts), summed per first boundary that counts it
    select e.series_id, 1 + pg_catalog.width_bucket(k.rank - 0.5::double precision, e.edges) as from_bound,
      sum(k.c) as c
    from exported e
    cross join lateral metrics.series_sketch_parts(e.series_id) as t (sketch)
    cross join lateral (
      select 0::double precision as rank, coalesce((t.sketch ->> 'z')::bigint, 0) as c
      union all
      select p.k::integer + 100000, p.c::bigint
      from pg_catalog.jsonb_each_text(t.sketch -> 'p') as p (k, c)
      union all
      select -(n.k::integer + 100000), n.c::bigint
      from pg_catalog.jsonb_each_text(t.sketch -> 'n') as n (k, c)
    ) as k
    where e.kind = 'histogram'
    group by 1, 2
  ),
  cumulative as (
    -- running sums over the boundaries: the Prometheus "le" buckets
    select r.series_id, pg_catalog.array_agg(r.running order by r.i) as buckets
    from (
      select e.series_id, i.i,
        sum(coalesce(p.c, 0)) over (partition by e.series_id order by i.i) as running
      from exported e
      cross join lateral pg_catalog.generate_series(1, pg_catalog.cardinality(e.boundaries)) as i (i)
      left join placed p on p.series_id = e.series_id and p.from_bound = i.i
      where e.kind = 'histogram'
    ) as r
    group by r.series_id
  )
  select e.project_id, e.name, e.kind, e.unit, e.help,
    case
      when e.labels ?| '{__overflow__,le,project_id}'::text[]
        then metrics.exposition_labels(e.labels, e.kind, e.project_id, p_with_project)
      when p_with_project then e.labels || pg_catalog.jsonb_build_object('project_id', e.project_id::text)
      else e.labels
    end,
    case e.kind when 'counter' then e.sum when 'gauge' then e.last end,
    case when e.kind = 'histogram' then e.count end,
    case when e.kind = 'histogram' then e.sum end,
    e.boundaries,
    case when e.kind = 'histogram' then coalesce(c.buckets, '{}') end
  from exported e
  left join cumulative c on c.series_id = e.series_id
  order by e.metric_order, e.series_id
$$;
comment on function metrics.exposition_rows(uuid, boolean, interval, interval, text[]) is
  'What GET /metrics exports for the caller (security invoker: row-level security applies): counters as '
  'cumulative totals (value), gauges as last value, histograms as count, sum and cumulative bucket counts '
  '(buckets) per boundary (le); only series updated within p_max_age (gauges: p_gauge_max_age) and, when '
  'p_kinds is given, of those kinds. One family per metric name: the kind, HELP and UNIT of the oldest family '
  'of that name among the projects read (first registered); families of the name with another kind are left '
  'out (metrics.exposition_conflicts). Rows come grouped by metric (ordered by name, then project) and by '
  'series id within a metric; bucket counts are computed for all histograms at once (the rule of '
  'metrics.sketch_cumulative_counts).';

comment on function metrics.rollup_now() is
  'Read-your-writes inside one read committed transaction (tests, tools): merges the points this transaction '
  'inserted so far and marks them merged (xid null) so that the pass never merges them again; no fold of the '
  'totals runs until the transaction ends. Costs an update per point; ingest paths leave merging '
  'to metrics.rollup_pass().';
comment on function metrics.rollup_points(xid8, xid8) is
  'Merges the raw points of the transactions p_from <= xid < p_to into the minute rollups, the totals (only '
  'the points of minutes already folded: metrics.fold_totals), the publish queue and the late hour / '
  '5-minute marks, set-based: sketch buckets summed once per series and minute. The caller guarantees that no '
  'range is merged twice (metrics.rollup_pass, metrics.rollup_now).';
comment on function metrics.rollup_pass() is
  'Merges the points of every finished transaction since the watermark (metrics.rollup_points) and moves the '
  'watermark in the same transaction (exactly once), folds the closed minutes into the totals about '
  'once a minute (metrics.fold_totals), then publishes every project with queued minutes its rate limit '
  'allows. Run every 0.5 s by metrics.run_rollup_passes() (pg_cron) or maintain --loop.';

create or replace function metrics.list_series(
  p_project_id uuid, p_metric text default null, p_matchers jsonb default '[]'::jsonb, p_limit integer default 1000
)
returns table (name text, labels jsonb, last_seen timestamptz)
language plpgsql stable security invoker set search_path = ''
as $$
#variable_conflict use_column
declare
  v_matchers jsonb := coalesce(p_matchers, '[]'::jsonb);
  v_problem text := metrics.matchers_problem(v_matchers);
begin
  -- the rule and the error of metrics.query's p_matchers (22023, HTTP 400 through the Data API)
  if v_problem is not null then
    perform metrics.reject('p_matchers', v_problem);
  end if;
  return query
    select s.name, s.labels, t.updated_at
    from metrics.series s
    left join metrics.series_totals_current t on t.series_id = s.id
    where s.project_id = p_project_id
      and (p_metric is null or s.name = p_metric)
      and metrics.series_matches(s.labels, v_matchers)
    order by s.name, s.labels
    limit greatest(least(coalesce(p_limit, 1000), 10000), 0);
end
$$;
