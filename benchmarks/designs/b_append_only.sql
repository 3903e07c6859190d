-- Design B (prototype, benchmark scratch databases only): append-only ingest + a periodic set-based
-- rollup pass over committed transaction-id ranges.
--
-- Applied by benchmarks/ingest.py on top of the migrated schema (never a migration). What it changes:
--   * metrics.points gets xid xid8 (default pg_current_xact_id(): the inserting transaction's 64-bit id,
--     also filled for COPY) and a btree index on it (per partition; one key per batch, deduplicated);
--   * the statement triggers points_late_windows and points_rollup are dropped: metrics.ingest (unchanged)
--     now only validates, writes the ledger, resolves series and inserts raw points;
--   * metrics.rollup_pass() merges every point whose transaction is finished and after the pass's
--     watermark into rollup_1m / series_totals / publish_queue / late marks in ONE set-based statement,
--     summing sketch buckets once per (series, minute) per pass and merging each into the stored sketch
--     once; then it publishes the touched projects (rate limit as before).
--
-- Exactly-once over committed ranges: the watermark is a transaction id W. A pass takes
-- T = pg_snapshot_xmin(pg_current_snapshot()) before anything else: every transaction with an id < T has
-- finished (committed or rolled back), so the points with W <= xid < T are final and all visible to the
-- pass's later statements; points of transactions still running have xid >= T and wait for a later pass.
-- The pass advances W to T in the same transaction as the rollups it writes, so a crash or rollback of the
-- pass redoes the same range, and no range is merged twice. (Same idea as Citus' incremental rollups and
-- pg_incremental, which use a sequence plus waiting for in-flight writers; the transaction id makes the
-- wait unnecessary.) Cost of the trick: any long-running transaction that holds an xid, anywhere in the
-- cluster, holds T back and delays the rollups (not loses them).

alter table metrics.points add column xid xid8 not null default pg_catalog.pg_current_xact_id();
create index points_xid_idx on metrics.points (xid);

drop trigger points_rollup on metrics.points;
drop trigger points_late_windows on metrics.points;

create table metrics.rollup_pass_state (
  id boolean primary key default true check (id),
  xid_watermark xid8 not null,
  passes bigint not null default 0,
  points bigint not null default 0,
  updated_at timestamptz not null default now()
);
insert into metrics.rollup_pass_state (xid_watermark) values (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()));

create function metrics.rollup_pass()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
as $$
declare
  v_to xid8;
  v_from xid8;
  v_points bigint := 0;
  v_minutes bigint := 0;
  v_projects uuid[];
  v_sent integer := 0;
  v_project uuid;
begin
  -- one pass at a time; a second caller returns at once (the loop and pg_cron may overlap)
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass')) then
    return pg_catalog.jsonb_build_object('skipped', true);
  end if;
  -- before this transaction has an id of its own: every transaction below v_to has finished
  v_to := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
  select s.xid_watermark into strict v_from from metrics.rollup_pass_state s for update;
  if v_to <= v_from then
    return pg_catalog.jsonb_build_object('points', 0, 'minutes', 0, 'messages', 0);
  end if;

  -- the rollup locks in maintain()'s order (hours, then 5-minute windows), before any row lock:
  -- a running rollup_hours()/rollup_five_minutes() finishes first and the watermarks read below are the
  -- ones it leaves behind, so points of hours/windows already rolled up are marked late
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
  perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_five_minutes'));

  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch
    from metrics.points p
    where p.xid >= v_from and p.xid < v_to
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
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
    -- every bucket of the pass's sketches summed once per series, minute, store and key
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
    group by m.series_id, m.project_id
    order by m.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sketch = metrics.sketch_merge(t.sketch, excluded.sketch),
      updated_at = now()
    returning 1
  ),
  queued as (
    -- the pass is the only writer of the queue now: no lock dance with ingests
    insert into metrics.publish_queue (project_id, series_id, bucket)
    select m.project_id, m.series_id, m.bucket from minute_rows m
    order by 2, 3
    on conflict do nothing
    returning 1
  ),
  late_h as (
    insert into metrics.late_hours (series_id, hour)
    select distinct m.series_id, pg_catalog.date_trunc('hour', m.bucket)
    from minute_rows m
    where m.bucket < (select ms.hour_watermark from metrics.maintenance_state ms)
    on conflict do nothing
    returning 1
  ),
  late_5 as (
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct m.series_id, metrics.five_minute_window(m.bucket)
    from minute_rows m
    where m.bucket < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing
    returning 1
  )
  -- (data-modifying CTEs run to completion whether or not the outer query reads them)
  select coalesce(sum(m.points), 0), count(*), pg_catalog.array_agg(distinct m.project_id)
  into v_points, v_minutes, v_projects
  from minute_rows m;

  update metrics.rollup_pass_state s
  set xid_watermark = v_to, passes = s.passes + 1, points = s.points + v_points, updated_at = now();

  -- live publish of every project with queued minutes (this pass's and those a rate limit held back)
  for v_project in select distinct q.project_id from metrics.publish_queue q loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes, 'messages', v_sent,
    'from', v_from::text, 'to', v_to::text);
end
$$;
comment on function metrics.rollup_pass() is
  'Design B prototype: merges the points of every finished transaction since the watermark into the '
  'minute rollups, totals, publish queue and late marks, set-based, and publishes the touched projects.';
grant execute on function metrics.rollup_pass() to service_role;
revoke execute on function metrics.rollup_pass() from public;

-- the trailing changes of a burst: the sweep also runs the pass (pg_cron >= 1.5 or the CLI loop call this)
create or replace function metrics.publish_pending()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_project uuid;
  v_sent integer := 0;
  v_result jsonb;
begin
  -- the pass publishes every queued project itself; when another pass is running, sweep as before
  v_result := metrics.rollup_pass();
  if v_result ? 'skipped' then
    for v_project in select distinct q.project_id from metrics.publish_queue q loop
      v_sent := v_sent + metrics.publish_project(v_project);
    end loop;
    return v_sent;
  end if;
  return coalesce((v_result ->> 'messages')::integer, 0);
end
$$;
