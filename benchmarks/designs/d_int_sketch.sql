-- Design D (prototype, benchmark scratch databases only): design B with the sketches of the rollup tables
-- (rollup_1m, series_totals) stored as two parallel integer arrays instead of jsonb. Applied by
-- benchmarks/ingest.py on top of b_append_only.sql (never a migration).
--
-- Array form: sk_keys integer[] (strictly ascending) + sk_counts bigint[] (every count >= 1), one element
-- per non-empty bucket on ONE axis in value order, the axis sketch_quantiles already sorts by:
--   negative store key k -> -200000 - k,   zero bucket -> -100000,   positive store key k -> k
-- (keys lie in [-1036, 35488], so the three ranges never meet). A null pair = no sketch (counters, gauges).
-- DDSketch buckets of one series are near-contiguous, but a dense (offset, counts[]) form buys nothing in
-- plain SQL: PostgreSQL has no element-wise array addition, so either form is summed by unnest + group by.
--
-- Raw points keep their wire form (jsonb): the pass expands each histogram point's buckets once
-- (jsonb_each_text, as B), sums them per (series, minute, key) and per (series, key), adds the stored
-- arrays of the touched rows set-based (unnest + group by) and writes the arrays back whole: no PL/pgSQL
-- sketch_merge / sketch_store_merge / sketch_union per row any more.
--
-- Readers: metrics.rollup_1m and metrics.series_totals become views over the renamed tables
-- (rollup_1m_store, series_totals_store) that rebuild the jsonb wire form on read (metrics.isketch_jsonb),
-- so metrics.query, exposition, the 5-minute rollups and the benchmark's CHECK_SQL read them unchanged
-- (a reader pays the conversion, ~per stored bucket, only for the sketches it reads). publish_project,
-- the only reader inside the timed work, reads the arrays directly (sketch_quantiles over arrays).
-- Prototype shortcuts: the views are owner-rights (no RLS for `authenticated` readers: a migration would
-- change the readers instead, or make the views security_invoker); retention, rollup_hours and the
-- 5-minute rollups are not exercised by the benchmark.

-- the array form -----------------------------------------------------------------------------------------
create function metrics.isketch_jsonb(p_keys integer[], p_counts bigint[])
returns jsonb
language sql immutable strict parallel safe set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'z', coalesce(sum(u.c) filter (where u.k = -100000), 0)::bigint,
    'p', coalesce(pg_catalog.jsonb_object_agg(u.k::text, u.c) filter (where u.k > -100000), '{}'::jsonb),
    'n', coalesce(pg_catalog.jsonb_object_agg((-200000 - u.k)::text, u.c) filter (where u.k < -100000), '{}'::jsonb)
  )
  from unnest(p_keys, p_counts) as u (k, c)
$$;
comment on function metrics.isketch_jsonb(integer[], bigint[]) is
  'Design D: the jsonb wire form {"z","p","n"} of a sketch stored as value-ordered key/count arrays.';

create function metrics.isketch_from_jsonb(p_sketch jsonb, out keys integer[], out counts bigint[])
language sql immutable strict parallel safe set search_path = ''
as $$
  select pg_catalog.array_agg(b.k order by b.k), pg_catalog.array_agg(b.c order by b.k)
  from (
    select -200000 - t.k::integer as k, t.c::bigint as c from pg_catalog.jsonb_each_text(p_sketch -> 'n') as t (k, c)
    union all
    select -100000, (p_sketch ->> 'z')::bigint where (p_sketch ->> 'z')::bigint > 0
    union all
    select t.k::integer, t.c::bigint from pg_catalog.jsonb_each_text(p_sketch -> 'p') as t (k, c)
  ) as b
  where b.c > 0
$$;
comment on function metrics.isketch_from_jsonb(jsonb) is
  'Design D: the value-ordered key/count arrays of a jsonb sketch (tests and conversions).';

-- quantiles over the arrays: the loop of sketch_quantiles(jsonb, ...) (migration 20261127000100) without
-- its first step (which builds exactly these arrays from the jsonb), so both answer the same
create function metrics.sketch_quantiles(
  p_keys integer[], p_counts bigint[], p_qs double precision[],
  p_min double precision default null, p_max double precision default null
)
returns double precision[]
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_total bigint;
  v_ranks double precision[];
  v_slots integer[];
  v_result double precision[] := pg_catalog.array_fill(null::double precision, array[pg_catalog.cardinality(p_qs)]);
  v_cum bigint := 0;
  v_next integer := 1;
  v_wanted integer;
  v_key integer;
begin
  select sum(c) into v_total from unnest(p_counts) as c;
  if coalesce(v_total, 0) = 0 then
    return v_result;
  end if;
  select pg_catalog.array_agg(q.slot order by q.q), pg_catalog.array_agg(q.q * (v_total - 1) order by q.q)
  into v_slots, v_ranks
  from pg_catalog.unnest(p_qs) with ordinality as q (q, slot)
  where q.q between 0 and 1;
  v_wanted := coalesce(pg_catalog.cardinality(v_slots), 0);
  if v_wanted = 0 then
    return v_result;
  end if;
  for i in 1 .. pg_catalog.cardinality(p_keys) loop
    v_cum := v_cum + p_counts[i];
    while v_cum > v_ranks[v_next] loop
      v_key := p_keys[i];
      v_result[v_slots[v_next]] := greatest(coalesce(p_min, '-infinity'), least(coalesce(p_max, 'infinity'), case
        when v_key < -100000 then -metrics.sketch_value(-200000 - v_key)
        when v_key = -100000 then 0
        else metrics.sketch_value(v_key)
      end));
      v_next := v_next + 1;
      if v_next > v_wanted then
        return v_result;
      end if;
    end loop;
  end loop;
  return v_result;
end
$$;
comment on function metrics.sketch_quantiles(integer[], bigint[], double precision[], double precision, double precision) is
  'Design D: sketch_quantiles over the value-ordered key/count arrays; same rule, same answers as the jsonb form.';

-- storage: the tables keep their rows and indexes under a new name, with arrays instead of jsonb ------------
alter table metrics.rollup_1m rename to rollup_1m_store;
alter table metrics.rollup_1m_store drop column sketch,
  add column sk_keys integer[], add column sk_counts bigint[];
alter table metrics.series_totals rename to series_totals_store;
alter table metrics.series_totals_store drop column sketch,
  add column sk_keys integer[], add column sk_counts bigint[];

create view metrics.rollup_1m as
select r.project_id, r.series_id, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.last_ts,
  metrics.isketch_jsonb(r.sk_keys, r.sk_counts) as sketch, r.updated_at
from metrics.rollup_1m_store r;
create view metrics.series_totals as
select t.series_id, t.project_id, t.count, t.sum, t.last, t.last_ts,
  metrics.isketch_jsonb(t.sk_keys, t.sk_counts) as sketch, t.updated_at
from metrics.series_totals_store t;
grant select on metrics.rollup_1m, metrics.series_totals to authenticated, service_role;

-- the pass --------------------------------------------------------------------------------------------------
create or replace function metrics.rollup_pass()
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
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.rollup_pass')) then
    return pg_catalog.jsonb_build_object('skipped', true);
  end if;
  v_to := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
  select s.xid_watermark into strict v_from from metrics.rollup_pass_state s for update;
  if v_to <= v_from then
    return pg_catalog.jsonb_build_object('points', 0, 'minutes', 0, 'messages', 0);
  end if;
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
      count(*) as points
    from new_points n
    group by 1, 2, 3
  ),
  cells as materialized (
    -- every bucket of the pass's sketches, once, on the value-order axis, summed per series, minute and key
    select n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, b.k, sum(b.c)::bigint as c
    from new_points n
    cross join lateral (
      select -200000 - t.k::integer as k, t.c::bigint as c from pg_catalog.jsonb_each_text(n.sketch -> 'n') as t (k, c)
      union all
      select -100000, (n.sketch ->> 'z')::bigint where (n.sketch ->> 'z')::bigint > 0
      union all
      select t.k::integer, t.c::bigint from pg_catalog.jsonb_each_text(n.sketch -> 'p') as t (k, c)
    ) as b
    where n.sketch is not null
    group by 1, 2, 3
  ),
  minute_sketches as materialized (
    -- the pass's cells plus the stored buckets of the minutes they touch (only the pass writes these rows;
    -- it holds its advisory lock), back to arrays in key order
    select x.series_id, x.bucket, pg_catalog.array_agg(x.k order by x.k) as keys, pg_catalog.array_agg(x.c order by x.k) as counts
    from (
      select a.series_id, a.bucket, a.k, sum(a.c)::bigint as c
      from (
        select c.series_id, c.bucket, c.k, c.c from cells c
        union all
        select r.series_id, r.bucket, u.k, u.c
        from (select distinct c.series_id, c.bucket from cells c) as t
        join metrics.rollup_1m_store r on r.series_id = t.series_id and r.bucket = t.bucket
        cross join lateral unnest(r.sk_keys, r.sk_counts) as u (k, c)
      ) as a
      group by 1, 2, 3
    ) as x
    group by 1, 2
  ),
  total_sketches as materialized (
    select x.series_id, pg_catalog.array_agg(x.k order by x.k) as keys, pg_catalog.array_agg(x.c order by x.k) as counts
    from (
      select a.series_id, a.k, sum(a.c)::bigint as c
      from (
        select c.series_id, c.k, c.c from cells c
        union all
        select t.series_id, u.k, u.c
        from (select distinct c.series_id from cells c) as s
        join metrics.series_totals_store t on t.series_id = s.series_id
        cross join lateral unnest(t.sk_keys, t.sk_counts) as u (k, c)
      ) as a
      group by 1, 2
    ) as x
    group by 1
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      ms.keys, ms.counts
    from minutes m
    left join minute_sketches ms on ms.series_id = m.series_id and ms.bucket = m.bucket
  ),
  rolled as (
    insert into metrics.rollup_1m_store as r (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sk_keys, sk_counts)
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.keys, m.counts
    from minute_rows m
    order by m.series_id, m.bucket
    on conflict (series_id, bucket) do update set
      count = r.count + excluded.count,
      sum = r.sum + excluded.sum,
      min = least(r.min, excluded.min),
      max = greatest(r.max, excluded.max),
      last = metrics.later_last(r.last, r.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(r.last_ts, excluded.last_ts),
      -- already stored + new (minute_sketches); a minute without new sketch buckets keeps its arrays
      sk_keys = coalesce(excluded.sk_keys, r.sk_keys),
      sk_counts = coalesce(excluded.sk_counts, r.sk_counts),
      updated_at = now()
    returning 1
  ),
  totals as (
    insert into metrics.series_totals_store as t (series_id, project_id, count, sum, last, last_ts, sk_keys, sk_counts)
    select g.series_id, g.project_id, g.count, g.sum, g.last, g.last_ts, ts.keys, ts.counts
    from (
      select m.series_id, m.project_id, sum(m.count) as count, sum(m.sum) as sum,
        (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2] as last,
        max(m.last_ts) as last_ts
      from minute_rows m
      group by m.series_id, m.project_id
    ) as g
    left join total_sketches ts on ts.series_id = g.series_id
    order by g.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sk_keys = coalesce(excluded.sk_keys, t.sk_keys),
      sk_counts = coalesce(excluded.sk_counts, t.sk_counts),
      updated_at = now()
    returning 1
  ),
  queued as (
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
  select coalesce(sum(m.points), 0), count(*), pg_catalog.array_agg(distinct m.project_id)
  into v_points, v_minutes, v_projects
  from minute_rows m;

  update metrics.rollup_pass_state s
  set xid_watermark = v_to, passes = s.passes + 1, points = s.points + v_points, updated_at = now();

  for v_project in select distinct q.project_id from metrics.publish_queue q loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes, 'messages', v_sent,
    'from', v_from::text, 'to', v_to::text);
end
$$;
comment on function metrics.rollup_pass() is
  'Design D prototype: design B''s pass with sketches summed as integer key/count arrays, set-based.';

-- live publish: reads the arrays (only change from migration 20261127000100: rollup_1m_store, sk_keys/sk_counts)
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
  if not found or v_last > pg_catalog.clock_timestamp() - v_interval then
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
        join metrics.rollup_1m_store r on r.series_id = d.series_id and r.bucket = d.bucket
        join metrics.series s on s.id = d.series_id
        join metrics.families f on f.project_id = s.project_id and f.name = s.name
        cross join lateral (
          -- offset 0 keeps the subquery whole: flattened, each of qs[1..3] would compute all three again
          select case when f.kind = 'histogram'
            then metrics.sketch_quantiles(r.sk_keys, r.sk_counts, '{0.5,0.9,0.99}', r.min, r.max) end as qs
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

revoke execute on all functions in schema metrics from public;
grant execute on function metrics.isketch_jsonb(integer[], bigint[]), metrics.isketch_from_jsonb(jsonb),
  metrics.sketch_quantiles(integer[], bigint[], double precision[], double precision, double precision)
  to authenticated, service_role;
