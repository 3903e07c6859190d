-- Ingest speed: one pass per ingest statement feeds both the minute rollups and the cumulative totals,
-- sketches of a statement are summed set-based (one jsonb_object_agg per changed row instead of one
-- pairwise merge per point), and quantiles are read in one pass over integer keys, mapping only the keys
-- they land on back to values. Results are unchanged: the same merge rules, the same quantile rule.

-- quantiles --------------------------------------------------------------------------------------------
create or replace function metrics.sketch_quantiles(
  p_sketch jsonb, p_qs double precision[], p_min double precision default null, p_max double precision default null
)
returns double precision[]
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_keys integer[];
  v_counts bigint[];
  v_total bigint;
  v_ranks double precision[];
  v_slots integer[];
  v_result double precision[] := pg_catalog.array_fill(null::double precision, array[pg_catalog.cardinality(p_qs)]);
  v_cum bigint := 0;
  v_next integer := 1;
  v_wanted integer;
  v_key integer;
begin
  -- buckets in value order as one integer order: negative store as -200000 - key (largest magnitude
  -- first), zeros as -100000, positive store as its key (keys lie in [-1036, 35488])
  select pg_catalog.array_agg(b.k order by b.k), pg_catalog.array_agg(b.c order by b.k), sum(b.c)
  into v_keys, v_counts, v_total
  from (
    select -200000 - t.k::integer as k, t.c::bigint as c from pg_catalog.jsonb_each_text(p_sketch -> 'n') as t (k, c)
    union all
    select -100000, (p_sketch ->> 'z')::bigint where (p_sketch ->> 'z')::bigint > 0
    union all
    select t.k::integer, t.c::bigint from pg_catalog.jsonb_each_text(p_sketch -> 'p') as t (k, c)
  ) as b;
  if coalesce(v_total, 0) = 0 then
    return v_result;
  end if;
  -- the wanted quantiles in ascending order, answered in one pass over the buckets: the first bucket
  -- whose cumulative count passes q * (total - 1), clamped to [min, max]
  select pg_catalog.array_agg(q.slot order by q.q), pg_catalog.array_agg(q.q * (v_total - 1) order by q.q)
  into v_slots, v_ranks
  from pg_catalog.unnest(p_qs) with ordinality as q (q, slot)
  where q.q between 0 and 1;
  v_wanted := coalesce(pg_catalog.cardinality(v_slots), 0);
  if v_wanted = 0 then
    return v_result;
  end if;
  for i in 1 .. pg_catalog.cardinality(v_keys) loop
    v_cum := v_cum + v_counts[i];
    while v_cum > v_ranks[v_next] loop
      v_key := v_keys[i];
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
comment on function metrics.sketch_quantiles(jsonb, double precision[], double precision, double precision) is
  'Quantiles (each q in [0, 1], others give null) of a sketch: the representative value of the first bucket, '
  'in value order, whose cumulative count exceeds q * (count - 1), clamped to [p_min, p_max]. One pass over '
  'the buckets answers all of p_qs.';

-- live publish: quantiles once per histogram -------------------------------------------------------------
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

-- statement sketches, summed set-based ---------------------------------------------------------------------
create function metrics.sketch_from_cells(p_zeros bigint, p_cells jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  -- p_cells: {"p": {...}, "n": {...}} as built by jsonb_object_agg over (store, key) sums
  select pg_catalog.jsonb_build_object(
    'z', coalesce(p_zeros, 0),
    'p', coalesce(p_cells -> 'p', '{}'::jsonb),
    'n', coalesce(p_cells -> 'n', '{}'::jsonb)
  )
$$;
comment on function metrics.sketch_from_cells(bigint, jsonb) is
  'The stored sketch form {"z", "p", "n"} from a zero count and per-store bucket objects (either may be missing).';

-- one trigger for rollups and totals -------------------------------------------------------------------------
drop trigger points_totals on metrics.points;
drop function metrics.on_points_totals();

create or replace function metrics.on_points_inserted()
returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  v_project uuid;
begin
  with minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum((n.sketch ->> 'z')::bigint)::bigint as zeros,
      count(n.sketch) as sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch
    from new_points n
    group by 1, 2, 3
  ),
  cells as materialized (
    -- the buckets of minutes with more than one sketch (a worker sends one point per series per flush, so
    -- usually none), summed per series, minute, store and key
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
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts,
      case
        when m.sketches = 1 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches > 1 then metrics.sketch_from_cells(m.zeros, mc.cells)
      end as sketch
    from minutes m
    left join merged_cells mc on mc.series_id = m.series_id and mc.bucket = m.bucket
  ),
  rolled as (
    -- rows in key order, so concurrent statements lock shared rollup rows in the same order
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
  )
  insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
  select m.series_id, m.project_id, sum(m.count), sum(m.sum),
    (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2],
    max(m.last_ts),
    -- most series have one minute per statement: sketch_union (strict) then takes that sketch as is
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
    updated_at = now();

  -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
  insert into metrics.publish_queue as q (project_id, series_id, bucket)
  select distinct n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) from new_points n
  order by 2, 3
  on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket;

  -- points for hours already rolled up make those hours due again; the shared lock orders this against a
  -- running metrics.rollup_hours(), so the watermark read is the one that run leaves behind
  if exists (select from new_points n where n.ts < pg_catalog.date_trunc('hour', now())) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
  end if;
  insert into metrics.late_hours (series_id, hour)
  select distinct n.series_id, pg_catalog.date_trunc('hour', n.ts)
  from new_points n
  where n.ts < (select ms.hour_watermark from metrics.maintenance_state ms)
  on conflict do nothing;

  for v_project in select distinct n.project_id from new_points n loop
    perform metrics.publish_project(v_project);
  end loop;
  return null;
end
$$;
comment on function metrics.on_points_inserted() is
  'Statement trigger of metrics.points: one pass over the inserted deltas merges them into the minute '
  'rollups and the cumulative totals (rows locked in key order), queues the changed minutes for the live '
  'publish, marks late hours, and publishes each touched project when its interval has passed.';

-- ingest: histogram buckets checked by casts ----------------------------------------------------------------
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
  -- survives integer -> text unchanged; a count or key no cast takes lands in the detailed validator
  begin
    if exists (
      select
      from pg_catalog.unnest(v_rows) p
      cross join lateral (
        select count(*) filter (where not (
            b.k::integer between -1036 and 35488 and b.k::integer::text = b.k and b.c::bigint >= 1
          )) as bad,
          coalesce(sum(b.c::bigint), 0) as total
        from (
          select * from pg_catalog.jsonb_each_text(p.sketch -> 'p')
          union all
          select * from pg_catalog.jsonb_each_text(p.sketch -> 'n')
        ) as b (k, c)
      ) as s
      where p.kind = 'histogram' and (
        s.bad > 0
        or s.total + coalesce((p.sketch ->> 'z')::bigint, 0) <> p.count
        or pg_catalog.jsonb_path_exists(p.sketch, '$.*.* ? (@.type() != "number")')
      )
    ) then
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

  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch)
  select v_project, p.series_id, p.ts, v_source, v_batch_id, p.count, p.sum, p.min, p.max, p.last, p.sketch
  from pg_catalog.unnest(v_rows) p;

  return pg_catalog.jsonb_build_object(
    'status', 'accepted', 'points', v_count, 'series_created', v_created, 'overflowed', v_overflowed
  );
end
$$;
grant execute on function metrics.sketch_from_cells(bigint, jsonb) to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
