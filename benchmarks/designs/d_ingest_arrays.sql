-- Design D+ (prototype, benchmark scratch databases only): design D, and the conversion of each histogram
-- point's buckets to key/count arrays done ONCE, at ingest, inside the bucket validation that already
-- expands every bucket (jsonb_each_text + casts); the raw point keeps its wire form (sketch jsonb) and gets
-- the arrays beside it (sk_keys on the value-order axis of d_int_sketch.sql, sk_counts; unsorted, zero
-- count left in the jsonb). The rollup pass then unnests arrays instead of expanding jsonb.
-- Applied by benchmarks/ingest.py on top of b_append_only.sql and d_int_sketch.sql (never a migration).
-- metrics.ingest is the migration's (20261127000100) with two changes: the bucket validation statement
-- also aggregates the arrays (and reports problems through one bool_or instead of exists), and the raw
-- insert joins them in by point index.

create type metrics.point_cells as (idx integer, keys integer[], counts bigint[]);
alter table metrics.points add column sk_keys integer[], add column sk_counts bigint[];

create or replace function metrics.ingest(batch jsonb)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_project uuid;
  v_source text;
  v_batch_id text;
  v_points jsonb;
  v_count integer;
  v_rows metrics.ingest_row[];
  v_conflict record;
  v_quota integer;
  v_existing integer;
  v_created integer := 0;
  v_overflowed integer := 0;
  v_day date;
  v_cells metrics.point_cells[];
  v_bad boolean;
begin
  select * into strict v_cfg from metrics.config;

  -- envelope ------------------------------------------------------------------------------------------
  if pg_catalog.jsonb_typeof(batch) is distinct from 'object' then
    perform metrics.reject('batch', 'must be a JSON object');
  end if;
  if (batch - '{project_id,source,batch_id,points,sent_at}'::text[]) <> '{}'::jsonb then
    perform metrics.reject('batch.' || (select k from pg_catalog.jsonb_object_keys(
      batch - '{project_id,source,batch_id,points,sent_at}'::text[]) k order by k limit 1), 'unknown field');
  end if;
  if not coalesce((batch ->> 'project_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false) then
    perform metrics.reject('batch.project_id', 'required uuid');
  end if;
  v_project := (batch ->> 'project_id')::uuid;
  v_source := batch ->> 'source';
  if pg_catalog.jsonb_typeof(batch -> 'source') is distinct from 'string' or pg_catalog.char_length(v_source) not between 1 and 200 then
    perform metrics.reject('batch.source', 'required string of 1 to 200 characters');
  end if;
  v_batch_id := batch ->> 'batch_id';
  if pg_catalog.jsonb_typeof(batch -> 'batch_id') is distinct from 'string' or pg_catalog.char_length(v_batch_id) not between 1 and 100 then
    perform metrics.reject('batch.batch_id', 'required string of 1 to 100 characters');
  end if;
  if coalesce(pg_catalog.jsonb_typeof(batch -> 'sent_at'), 'null') not in ('number', 'null') then
    perform metrics.reject('batch.sent_at', 'must be a number (epoch seconds)');
  end if;
  v_points := batch -> 'points';
  if pg_catalog.jsonb_typeof(v_points) is distinct from 'array' then
    perform metrics.reject('batch.points', 'required array');
  end if;
  v_count := pg_catalog.jsonb_array_length(v_points);
  if v_count = 0 then
    perform metrics.reject('batch.points', 'must not be empty');
  elsif v_count > v_cfg.max_points_per_batch then
    perform metrics.reject('batch.points', pg_catalog.format('%s points, more than the limit of %s', v_count, v_cfg.max_points_per_batch));
  end if;

  perform metrics.assert_can_write(v_project);

  -- exactly once: a resent batch changes nothing ----------------------------------------------------------
  insert into metrics.projects (id) values (v_project) on conflict do nothing;
  insert into metrics.batches (project_id, source, batch_id, points)
  values (v_project, v_source, v_batch_id, v_count)
  on conflict do nothing;
  if not found then
    return pg_catalog.jsonb_build_object('status', 'duplicate', 'points', 0, 'series_created', 0, 'overflowed', 0);
  end if;

  -- parse into typed rows with a cheap shape check per point ------------------------------------------------
  begin
    select pg_catalog.array_agg(row(
      e.idx - 1, r.name, r.kind, coalesce(nullif(r.labels, 'null'::jsonb), '{}'::jsonb),
      pg_catalog.to_timestamp(r.ts), r.count::bigint, r.sum, r.min, r.max, r.last,
      case when r.sketch::text like '%.%' then metrics.sketch_normalize(r.sketch) else nullif(r.sketch, 'null'::jsonb) end,
      r.unit, r.help,
      coalesce(pg_catalog.jsonb_typeof(e.p) = 'object'
        and (e.p - '{name,kind,labels,ts,count,sum,min,max,last,sketch,unit,help}'::text[]) = '{}'::jsonb
        and pg_catalog.jsonb_typeof(e.p -> 'name') = 'string'
        and pg_catalog.jsonb_typeof(e.p -> 'ts') = 'number'
        and pg_catalog.jsonb_typeof(e.p -> 'count') = 'number'
        and r.count = pg_catalog.trunc(r.count) and r.count between 1 and 999999999999999999
        and pg_catalog.jsonb_typeof(e.p -> 'sum') = 'number'
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'min'), 'null') in ('number', 'null')
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'max'), 'null') in ('number', 'null')
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'last'), 'null') in ('number', 'null')
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'labels'), 'null') in ('object', 'null')
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'unit'), 'null') in ('string', 'null')
        and coalesce(pg_catalog.jsonb_typeof(e.p -> 'help'), 'null') in ('string', 'null'), false),
      null
    )::metrics.ingest_row order by e.idx)
    into v_rows
    from pg_catalog.jsonb_array_elements(v_points) with ordinality as e (p, idx)
    cross join lateral pg_catalog.jsonb_to_record(
      case when pg_catalog.jsonb_typeof(e.p) = 'object' then e.p else '{}'::jsonb end
    ) as r (
      name text, kind text, labels jsonb, ts double precision, count numeric, sum double precision,
      min double precision, max double precision, last double precision, sketch jsonb, unit text, help text
    );
  exception when others then  -- a value no column type takes (a string as a number, 1e400, ...)
    perform metrics.reject_first_problem(v_points, v_cfg, now(), sqlerrm);
  end;

  if exists (
    select from pg_catalog.unnest(v_rows) p
    where not p.shape_ok  -- never null: a missing or mistyped required field makes it false
      or p.kind is null or p.kind not in ('counter', 'gauge', 'histogram')
      or p.ts < now() - v_cfg.max_past or p.ts > now() + v_cfg.max_future
      or (p.kind = 'counter' and p.sum < 0)
      or (p.kind in ('gauge', 'histogram') and (p.min is null or p.max is null))
      or (p.kind = 'gauge' and p.last is null)
      or p.min > p.max
      or (p.kind = 'histogram') <> (p.sketch is not null)
      or pg_catalog.char_length(p.unit) > 64 or pg_catalog.char_length(p.help) > 1024
      or (p.kind = 'histogram' and (
        pg_catalog.jsonb_typeof(p.sketch) <> 'object'
        or (p.sketch - '{z,p,n}'::text[]) <> '{}'::jsonb
        or coalesce(pg_catalog.jsonb_typeof(p.sketch -> 'p'), 'object') <> 'object'
        or coalesce(pg_catalog.jsonb_typeof(p.sketch -> 'n'), 'object') <> 'object'
        or (p.sketch ? 'z' and not metrics.is_count(p.sketch -> 'z', 0))))
  ) or exists (
    select from (select distinct p.name from pg_catalog.unnest(v_rows) p) n
    where not (n.name ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$') or n.name like '\_\_%' or pg_catalog.char_length(n.name) > 200
  ) then
    perform metrics.reject_first_problem(v_points, v_cfg, now(), 'invalid point');
  end if;

  -- every histogram's buckets in one pass, by casts rather than patterns: a key is canonical when it
  -- survives integer -> text unchanged; a count or key no cast takes lands in the detailed validator.
  -- Design D+: the same scan also collects each point's buckets as value-ordered-axis key/count arrays
  -- (unsorted; the rollup pass groups them), stored with the raw point beside its wire form
  begin
    select pg_catalog.array_agg(row(p.idx, s.keys, s.counts)::metrics.point_cells),
      coalesce(bool_or(
        s.bad > 0
        or s.total + coalesce((p.sketch ->> 'z')::bigint, 0) <> p.count
        or pg_catalog.jsonb_path_exists(p.sketch, '$.*.* ? (@.type() != "number")')
      ), false)
    into v_cells, v_bad
    from pg_catalog.unnest(v_rows) p
    cross join lateral (
      select count(*) filter (where not (
          b.k::integer between -1036 and 35488 and b.k::integer::text = b.k and b.c::bigint >= 1
        )) as bad,
        coalesce(sum(b.c::bigint), 0) as total,
        pg_catalog.array_agg(case when b.positive then b.k::integer else -200000 - b.k::integer end) as keys,
        pg_catalog.array_agg(b.c::bigint) as counts
      from (
        select true, * from pg_catalog.jsonb_each_text(p.sketch -> 'p')
        union all
        select false, * from pg_catalog.jsonb_each_text(p.sketch -> 'n')
      ) as b (positive, k, c)
    ) as s
    where p.kind = 'histogram';
    if v_bad then
      perform metrics.reject_first_problem(v_points, v_cfg, now(), 'invalid histogram sketch');
    end if;
  exception when invalid_text_representation or numeric_value_out_of_range then
    perform metrics.reject_first_problem(v_points, v_cfg, now(), 'invalid histogram sketch');
  end;

  select * into v_conflict from metrics.kind_conflict(v_project, v_rows);
  if found then
    perform metrics.reject(pg_catalog.format('points[%s].kind', v_conflict.idx),
      pg_catalog.format('metric %s is a %s, not a %s', v_conflict.name, v_conflict.expected, v_conflict.kind));
  end if;

  -- series: resolve, create within the quota, redirect the rest to per-metric overflow series ---------------
  v_rows := metrics.resolve_series(v_project, v_rows);
  if exists (select from pg_catalog.unnest(v_rows) p where p.series_id is null) then
    -- label sets of existing series were checked when those were created; check the new ones
    if exists (
      select from (select distinct p.labels from pg_catalog.unnest(v_rows) p where p.series_id is null) l
      where metrics.labels_problem(l.labels, v_cfg) is not null
    ) then
      perform metrics.reject_first_problem(v_points, v_cfg, now(), 'invalid labels');
    end if;

    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_project::text, 7157));
    -- under the lock: a concurrent batch may have created series or families meanwhile
    select * into v_conflict from metrics.kind_conflict(v_project, v_rows);
    if found then
      perform metrics.reject(pg_catalog.format('points[%s].kind', v_conflict.idx),
        pg_catalog.format('metric %s is a %s, not a %s', v_conflict.name, v_conflict.expected, v_conflict.kind));
    end if;
    v_rows := metrics.resolve_series(v_project, v_rows);

    insert into metrics.families (project_id, name, kind, unit, help)
    select distinct on (p.name) v_project, p.name, p.kind, coalesce(p.unit, ''), coalesce(p.help, '')
    from pg_catalog.unnest(v_rows) p
    where p.series_id is null
    order by p.name, p.idx
    on conflict do nothing;

    select coalesce(pr.series_quota, v_cfg.default_series_quota) into v_quota
    from metrics.projects pr where pr.id = v_project;
    select count(*) into v_existing from metrics.series s
    where s.project_id = v_project and not s.labels ? '__overflow__';

    insert into metrics.series (project_id, name, labels)
    select w.project_id, w.name, w.labels from (
      select v_project as project_id, p.name, p.labels, min(p.idx) as first_idx
      from pg_catalog.unnest(v_rows) p where p.series_id is null
      group by p.name, p.labels
      order by first_idx
      limit greatest(v_quota - v_existing, 0)
    ) as w (project_id, name, labels, first_idx);
    get diagnostics v_created = row_count;
    v_rows := metrics.resolve_series(v_project, v_rows);

    if exists (select from pg_catalog.unnest(v_rows) p where p.series_id is null) then
      insert into metrics.series (project_id, name, labels)
      select distinct v_project, p.name, '{"__overflow__": "true"}'::jsonb
      from pg_catalog.unnest(v_rows) p where p.series_id is null
      on conflict do nothing;
      with redirected as (
        select p.name, count(*) as n from pg_catalog.unnest(v_rows) p where p.series_id is null group by p.name
      ), counted as (
        update metrics.families f set overflow_points = f.overflow_points + r.n
        from redirected r where f.project_id = v_project and f.name = r.name
        returning r.n
      )
      select coalesce(sum(c.n), 0) into v_overflowed from counted c;
      select pg_catalog.array_agg(row(
        p.idx, p.name, p.kind, p.labels, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch, p.unit, p.help,
        p.shape_ok, coalesce(p.series_id, s.id)
      )::metrics.ingest_row order by p.idx)
      into v_rows
      from pg_catalog.unnest(v_rows) p
      left join metrics.series s on p.series_id is null and s.project_id = v_project and s.name = p.name
        and s.labels = '{"__overflow__": "true"}'::jsonb;
    end if;
  end if;

  -- store: partitions exist for every day the batch touches; the statement trigger rolls up and publishes ---
  for v_day in select distinct (p.ts at time zone 'UTC')::date from pg_catalog.unnest(v_rows) p loop
    perform metrics.ensure_points_partition(v_day);
  end loop;

  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch,
    sk_keys, sk_counts)
  select v_project, p.series_id, p.ts, v_source, v_batch_id, p.count, p.sum, p.min, p.max, p.last, p.sketch,
    c.keys, c.counts
  from pg_catalog.unnest(v_rows) p
  left join pg_catalog.unnest(v_cells) c on c.idx = p.idx;

  return pg_catalog.jsonb_build_object(
    'status', 'accepted', 'points', v_count, 'series_created', v_created, 'overflowed', v_overflowed
  );
end
$$;


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
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch, p.sk_keys, p.sk_counts
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
    -- every bucket of the pass's sketches from the arrays ingest stored, summed per series, minute and key
    select n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, b.k, sum(b.c)::bigint as c
    from new_points n
    cross join lateral (
      select u.k, u.c from unnest(n.sk_keys, n.sk_counts) as u (k, c)
      union all
      select -100000, (n.sketch ->> 'z')::bigint where (n.sketch ->> 'z')::bigint > 0
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
  'Design D+ prototype: design D''s pass reading the key/count arrays that ingest stored with each raw point.';
