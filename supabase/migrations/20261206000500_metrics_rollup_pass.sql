-- Issue #14: append-only ingest and a set-based rollup pass over committed transactions (design B).
--
-- Before: statement triggers on metrics.points merged every ingest statement into the minute rollups and
-- totals. Concurrent workers flushing the same series serialised on those rows' locks, and every statement
-- merged its own jsonb sketches (125-175 us of database CPU per point; benchmarks/ingest.py, design A).
-- Now: metrics.ingest (unchanged) only validates, writes the ledger, resolves series and appends raw points;
-- metrics.rollup_pass(), run every 0.5 s (pg_cron: metrics.run_rollup_passes(); or `meshhook-metrics maintain --loop`),
-- merges the points of every finished transaction since its watermark in one set-based statement and
-- publishes the touched projects (design B: 49-79 us per point, no row-lock wall; docs/architecture.md).
--
-- Exactly-once over committed ranges: points.xid is the inserting transaction's 64-bit id. A pass takes
-- T = pg_snapshot_xmin(pg_current_snapshot()): every transaction with an id below T has finished, so the
-- points with W <= xid < T are final and visible to the pass's next statements; the pass merges them and sets
-- the watermark W = T in the same transaction. A crashed or rolled-back pass redoes the same range; a running
-- transaction's points (xid >= T) wait for a later pass. Any transaction holding an xid anywhere in the
-- cluster holds T back: rollups are then delayed, never lost or doubled.

-- the inserting transaction; null for points merged before this migration (by the old triggers) or already
-- merged by metrics.rollup_now(). No table rewrite: the default applies to new rows only.
alter table metrics.points add column xid xid8;
alter table metrics.points alter column xid set default pg_catalog.pg_current_xact_id();
comment on column metrics.points.xid is
  'Id of the inserting transaction: metrics.rollup_pass() merges the points of finished transactions past its '
  'watermark. Null: merged already (before the rollup pass existed, or by metrics.rollup_now()).';
create index points_xid_idx on metrics.points (xid) where xid is not null;
comment on index metrics.points_xid_idx is 'The rollup pass reads the points of one transaction-id range.';

drop trigger points_rollup on metrics.points;
drop trigger points_late_windows on metrics.points;
drop function metrics.on_points_inserted();
drop function metrics.on_points_mark_late_windows();

create table metrics.rollup_pass_state (
  id boolean primary key default true check (id),
  xid_watermark xid8 not null,
  passes bigint not null default 0,
  points bigint not null default 0,
  last_pass_at timestamptz,
  last_points integer not null default 0
);
comment on table metrics.rollup_pass_state is
  'The rollup pass''s watermark (points of transactions below it are merged) and counters, one row.';
alter table metrics.rollup_pass_state enable row level security;
-- monitoring may read how far the pass is (the service role bypasses RLS); only the definers write
grant select on metrics.rollup_pass_state to service_role;
-- every transaction that will insert points after this migration has an id at or above this snapshot's xmin
insert into metrics.rollup_pass_state (xid_watermark, last_pass_at)
values (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()), now());

create function metrics.rollup_points(p_from xid8, p_to xid8)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
as $$
declare
  v_points bigint;
  v_minutes bigint;
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
comment on function metrics.rollup_points(xid8, xid8) is
  'Merges the raw points of the transactions p_from <= xid < p_to into the minute rollups, the totals, the '
  'publish queue and the late hour / 5-minute marks, set-based: sketch buckets summed once per series and '
  'minute. The caller guarantees that no range is merged twice (metrics.rollup_pass, metrics.rollup_now).';
revoke execute on function metrics.rollup_points(xid8, xid8) from public;

create function metrics.rollup_pass()
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
  -- live publish of every project with queued minutes (this pass's and those a rate limit held back)
  for v_project in select distinct q.project_id from metrics.publish_queue q loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return v_result || pg_catalog.jsonb_build_object('messages', v_sent);
end
$$;
comment on function metrics.rollup_pass() is
  'Merges the points of every finished transaction since the watermark (metrics.rollup_points) and moves the '
  'watermark in the same transaction (exactly once), then publishes every project with queued minutes its '
  'rate limit allows. Run every 0.5 s by metrics.run_rollup_passes() (pg_cron) or maintain --loop.';
revoke execute on function metrics.rollup_pass() from public;
grant execute on function metrics.rollup_pass() to service_role;

create function metrics.rollup_status(out pending_points bigint, out last_merge_at timestamptz, out stalled boolean)
language sql stable security definer set search_path = ''
as $$
  -- pending: points at or past the watermark (committed, or of transactions still running)
  select pg_catalog.count(p.*), s.last_pass_at,
    pg_catalog.count(p.*) > 0 and coalesce(s.last_pass_at, '-infinity') < now() - interval '1 minute'
  from metrics.rollup_pass_state s
  left join metrics.points p on p.xid >= s.xid_watermark
  group by s.last_pass_at
$$;
comment on function metrics.rollup_status() is
  'How far the rollup pass is: points not merged yet, when a pass last merged any, and stalled (points '
  'waiting and no merge for a minute: no pass runs, or a long transaction holds the watermark back). For '
  'health checks; counts only, no tenant data.';
revoke execute on function metrics.rollup_status() from public;
grant execute on function metrics.rollup_status() to service_role;

create function metrics.rollup_now()
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
  v_result := metrics.rollup_points(v_self, (v_self::text::numeric + 1)::text::xid8);
  -- merged: out of every later range (the pass, and this function called again)
  update metrics.points set xid = null where xid = v_self;
  return v_result;
end
$$;
comment on function metrics.rollup_now() is
  'Read-your-writes inside one transaction (tests, tools): merges the points this transaction inserted so far '
  'and marks them merged (xid null) so that the pass never merges them again. Costs an update per point; '
  'ingest paths leave merging to metrics.rollup_pass().';
revoke execute on function metrics.rollup_now() from public;
grant execute on function metrics.rollup_now() to service_role;

-- the sweep the CLI loop (and earlier pg_cron schedules) already run: now the pass, which also publishes
create or replace function metrics.publish_pending()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
begin
  return (metrics.rollup_pass() ->> 'messages')::integer;
end
$$;
comment on function metrics.publish_pending() is
  'Runs the rollup pass (metrics.rollup_pass: merges committed points, then publishes every project''s queued '
  'changes its rate limit allows); returns the messages sent. Run every 0.5 s by metrics.run_rollup_passes() '
  '(pg_cron) or meshhook-metrics maintain --loop.';

comment on table metrics.points is
  'Raw deltas, one row per series per flush of a worker, partitioned by UTC day (metrics.points_YYYYMMDD). '
  'Append-only: metrics.rollup_pass() merges them into the rollups, which are what queries read.';
comment on table metrics.rollup_1m is
  'Per-minute aggregates merged from raw deltas by metrics.rollup_pass(): count, sum, min, max, last value '
  '(and when), and a mergeable sketch for histograms.';

-- maintain() no longer sweeps: the pass does, every 0.5 s, and it must never wait for a rollup lock that a
-- maintenance run holding the pass's lock would wait for in turn
create or replace function metrics.maintain()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_report jsonb;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.maintain')) then
    return pg_catalog.jsonb_build_object('skipped', 'another maintenance run is in progress');
  end if;
  v_report := pg_catalog.jsonb_build_object('hours_rolled_up', metrics.rollup_hours(),
      'five_minutes_rolled_up', metrics.rollup_five_minutes())
    || metrics.apply_row_retention();
  update metrics.maintenance_state set last_run_at = now();
  -- partition DDL last, so that its locks on metrics.points last only until the commit: creating takes SHARE
  -- UPDATE EXCLUSIVE (ingest goes on), dropping ACCESS EXCLUSIVE (ingest waits, for the end of this run only)
  v_report := v_report || metrics.maintain_points_partitions();
  update metrics.maintenance_state set last_report = v_report;
  return v_report;
end
$$;
comment on function metrics.maintain() is
  'All periodic work but the rollup pass in one call: hourly and 5-minute rollups, row retention, then the '
  'partition DDL (raw partitions for yesterday..+2 days, drops past retention; short lock timeouts with '
  'retries, busy ones deferred to the next run), last so that its locks on metrics.points are held only until '
  'the commit. Safe to run concurrently (a second run skips). Returns a report. The rollup pass and live '
  'publish run apart (metrics.rollup_pass, every 0.5 s).';

-- no SET clause: a procedure with one cannot COMMIT (every name below is schema-qualified)
create procedure metrics.run_rollup_passes(p_seconds double precision default 55, p_every double precision default 0.5)
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
  'Runs metrics.rollup_pass() every p_every seconds (each pass committed on its own) for p_seconds: pg_cron '
  'calls it every minute (CALL as the job''s only statement), which gives sub-second passes under any pg_cron '
  'version, whose schedules stop at one second (1.5+) or one minute (older).';
revoke execute on procedure metrics.run_rollup_passes(double precision, double precision) from public;
grant execute on procedure metrics.run_rollup_passes(double precision, double precision) to service_role;

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
  return 'scheduled maintenance every minute and rollup passes every 0.5 s (a minutely job) with pg_cron '
    || v_version;
end
$$;
comment on function metrics.schedule_maintenance() is
  'Schedules metrics.maintain() every minute and metrics.run_rollup_passes() (a rollup pass every 0.5 s for 55 s) '
  'every minute when pg_cron is installed; idempotent (cron.schedule replaces jobs by name). Call again after '
  'enabling pg_cron.';

-- reschedule where pg_cron is available
select metrics.schedule_maintenance();

-- publish: the rate limit tolerates the pass's jitter (the rest as in 20261127000100) -------------------------
create or replace function metrics.publish_project(p_project_id uuid)
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_interval interval;
  v_last timestamptz;
  v_parts jsonb[];
  v_seq bigint;
  v_stored_before bigint;
  v_series_ids bigint[];
  v_buckets timestamptz[];
begin
  select * into strict v_cfg from metrics.config;
  select coalesce(pr.publish_interval, v_cfg.publish_interval) into v_interval
  from metrics.projects pr where pr.id = p_project_id;
  if not found then
    return 0;
  end if;

  insert into metrics.publish_state (project_id) values (p_project_id) on conflict do nothing;
  -- whoever holds the row publishes; the others leave their changes queued for the next sweep
  select ps.last_sent_at into v_last
  from metrics.publish_state ps where ps.project_id = p_project_id
  for update skip locked;
  -- a pass on the interval's own cadence (e.g. every second, 1 s interval) is not skipped for a few
  -- milliseconds of jitter: the interval less a tenth, at most 100 ms
  if not found or v_last > pg_catalog.clock_timestamp() - v_interval
      + least(v_interval / 10, interval '100 milliseconds') then
    return 0;
  end if;

  -- a failed send must not lose the queued changes: the block rolls back the dequeue and the rate-limit stamp
  begin
    -- dequeue in its own statement: it waits for ingests that still hold queued rows, and the read below
    -- then takes a fresh snapshot that includes their rollup changes
    with dequeued as (
      delete from metrics.publish_queue q where q.project_id = p_project_id returning q.series_id, q.bucket
    )
    select pg_catalog.array_agg(d.series_id), pg_catalog.array_agg(d.bucket) into v_series_ids, v_buckets
    from dequeued d;
    if v_series_ids is null then
      return 0;
    end if;

    with dirty as (
      select * from unnest(v_series_ids, v_buckets) as u (series_id, bucket)  -- multi-array unnest: unqualified syntax
    ),
    items as (
      select x.rn, x.item, pg_catalog.octet_length(x.item::text) + 2 as size  -- + the ", " between items
      from (
        select pg_catalog.row_number() over (order by s.name, s.id, r.bucket) as rn,
          pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'series_id', s.id, 'name', s.name, 'labels', s.labels, 'kind', f.kind,
            'minute', r.bucket, 'count', r.count, 'sum', metrics.json_number(r.sum), 'min', metrics.json_number(r.min),
            'max', metrics.json_number(r.max), 'last', metrics.json_number(r.last),
            'p50', metrics.json_number(qs[1]), 'p90', metrics.json_number(qs[2]), 'p99', metrics.json_number(qs[3])
          )) as item
        from dirty d
        join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket = d.bucket
        join metrics.series s on s.id = d.series_id
        join metrics.families f on f.project_id = s.project_id and f.name = s.name
        cross join lateral (
          -- offset 0 keeps the subquery whole: flattened, each of qs[1..3] would compute all three again
          select case when f.kind = 'histogram'
            then metrics.sketch_quantiles(r.sketch, '{0.5,0.9,0.99}', r.min, r.max) end as qs
          offset 0
        ) as q
      ) as x
    ),
    placed as (
      -- greedy parts: an item starts a new part once the bytes before it pass the budget, so every part
      -- stays under publish_max_bytes (budget = limit - envelope - the largest item)
      select i.rn, i.item,
        ((pg_catalog.sum(i.size) over (order by i.rn) - i.size)
          / greatest(v_cfg.publish_max_bytes - 300 - max(i.size) over (), 1))::bigint as part
      from items i
    )
    select pg_catalog.array_agg(p.series order by p.part) into v_parts
    from (select pl.part, pg_catalog.jsonb_agg(pl.item order by pl.rn) as series from placed pl group by pl.part) p;

    if v_parts is null then
      return 0;
    end if;
    v_stored_before := metrics.realtime_rows_inserted();

    update metrics.publish_state ps
    set last_sent_at = pg_catalog.clock_timestamp(), messages_sent = ps.messages_sent + 1
    where ps.project_id = p_project_id
    returning ps.messages_sent into v_seq;

    for i in 1 .. pg_catalog.cardinality(v_parts) loop
      perform realtime.send(
        pg_catalog.jsonb_build_object(
          'project_id', p_project_id, 'seq', v_seq, 'part', i, 'parts', pg_catalog.cardinality(v_parts),
          'series', v_parts[i]
        ),
        'rollup',
        metrics.topic(p_project_id),
        true
      );
    end loop;
    if metrics.realtime_rows_inserted() - v_stored_before <> pg_catalog.cardinality(v_parts) then
      raise exception 'realtime.send did not store the message (see the preceding ErrorSendingBroadcastMessage warning)';
    end if;
  exception when others then
    raise warning 'metrics: live update of project % not published, changes stay queued: %', p_project_id, sqlerrm;
    return 0;
  end;
  return pg_catalog.cardinality(v_parts);
end
$$;
comment on function metrics.publish_project(uuid) is
  'Sends a project''s queued minute aggregates as ONE live update (split into parts under publish_max_bytes) '
  'on its private topic, at most once per publish interval (less a tenth, at most 100 ms, for the jitter of '
  'the pass that calls it); returns the number of messages sent.';
