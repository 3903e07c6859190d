-- Issue #14, review of metrics.ingest_known (migration 20261206001000): the typed paths wrote the rule "a
-- time, an integer count in range, finite numbers" twice (ingest_known and check_copied_points), and
-- ingest_known's copy missed two cases: a NULL count or sum made the rule NULL, so the point passed every
-- check and the insert failed with 23502; a finite time past PostgreSQL's range (1e20) failed to_timestamp
-- with 22008. Both now fail with metrics.ingest's 22023 error for that point.
--
-- The rule moves into metrics.check_ingest_rows, the one function of the point rules every path calls (for
-- the JSON RPC it is implied by its shape check, so it changes nothing there); the typed paths pass their
-- rows as shape-checked. ingest_known converts a time beyond +-1e11 s (year 5138) as that bound, which the
-- time window refuses, and names a foreign series id from the rows it read (not by subscript: arrays may
-- start at any index).

create or replace function metrics.check_ingest_rows(p_rows metrics.ingest_row[], p_points jsonb, p_cfg metrics.config)
returns void
language plpgsql stable set search_path = ''
as $$
declare
  -- the detailed validator walks the points as sent; rows that came without JSON get it built on failure only
  v_points jsonb := p_points;
begin
  if exists (
    select from pg_catalog.unnest(p_rows) p
    where not p.shape_ok  -- never null: a missing or mistyped required field makes it false
      -- the typed paths' shape (the RPC's JSON shape check implies it): a time, a count in range, finite numbers
      or p.ts is null or p.count is null or p.count not between 1 and 999999999999999999
      or not coalesce(abs(p.sum) < 'infinity', false)  -- PostgreSQL's NaN is above infinity
      or not coalesce(abs(p.min) < 'infinity', true) or not coalesce(abs(p.max) < 'infinity', true)
      or not coalesce(abs(p.last) < 'infinity', true)
      or p.kind is null or p.kind not in ('counter', 'gauge', 'histogram')
      or p.ts < now() - p_cfg.max_past or p.ts > now() + p_cfg.max_future
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
    select from (select distinct p.name from pg_catalog.unnest(p_rows) p) n
    where not (n.name ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$') or n.name like '\_\_%' or pg_catalog.char_length(n.name) > 200
  ) then
    perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows)), p_cfg, now(), 'invalid point');
  end if;

  -- every histogram's buckets in one pass, by casts rather than patterns: a key is canonical when it
  -- survives integer -> text unchanged; a count or key no cast takes lands in the detailed validator
  begin
    if exists (
      select
      from pg_catalog.unnest(p_rows) p
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
      perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows)), p_cfg, now(), 'invalid histogram sketch');
    end if;
  exception when invalid_text_representation or numeric_value_out_of_range then
    perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows)), p_cfg, now(), 'invalid histogram sketch');
  end;

end
$$;

create or replace function metrics.check_copied_points()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_setting text := pg_catalog.current_setting('metrics.copy_batch', true);
  v_batch jsonb;
  v_rows metrics.ingest_row[];
  v_count integer;
  v_stray jsonb;
begin
  select * into strict v_cfg from metrics.config;
  if v_setting = 'checked' then
    raise exception 'the batch of this transaction was checked already: one batch per transaction'
      using errcode = '55000';
  elsif coalesce(v_setting, '') = '' then
    raise exception 'no batch begun in this transaction: call metrics.begin_copy_batch before the COPY'
      using errcode = '55000';
  end if;
  v_batch := v_setting::jsonb;
  with copied as (
    select p.*, pg_catalog.row_number() over (order by p.tableoid, p.ctid) - 1 as idx,
      p.project_id = (v_batch ->> 'project_id')::uuid and p.source = v_batch ->> 'source'
        and p.batch_id = v_batch ->> 'batch_id' as of_batch
    from metrics.points p
    where p.xid = pg_catalog.pg_current_xact_id()
  )
  select pg_catalog.array_agg(row(
      c.idx, s.name, f.kind, s.labels, c.ts, c.count, c.sum, c.min, c.max, c.last, c.sketch, null, null,
      true,  -- typed columns: check_ingest_rows checks the counts and numbers
      c.series_id
    )::metrics.ingest_row order by c.idx),
    count(*),
    -- the first row of another batch, or of no series of the batch's project
    (pg_catalog.array_agg(pg_catalog.jsonb_build_object('idx', c.idx, 'series_id', c.series_id,
       'project_id', c.project_id, 'of_batch', c.of_batch) order by c.idx)
     filter (where not c.of_batch or s.id is null))[1]
  into v_rows, v_count, v_stray
  from copied c
  left join metrics.series s on s.id = c.series_id and s.project_id = c.project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;

  if v_stray is not null then
    if (v_stray ->> 'of_batch')::boolean then
      perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray ->> 'idx'),
        pg_catalog.format('%s is not a series of project %s', v_stray ->> 'series_id', v_stray ->> 'project_id'));
    end if;
    perform metrics.reject(pg_catalog.format('points[%s]', v_stray ->> 'idx'),
      'project_id, source and batch_id must be those of the batch begun (metrics.begin_copy_batch)');
  end if;
  if v_count is distinct from (v_batch ->> 'points')::integer then
    perform metrics.reject('batch.points',
      pg_catalog.format('%s rows copied, the batch declared %s', coalesce(v_count, 0), v_batch ->> 'points'));
  end if;

  perform metrics.check_ingest_rows(v_rows, null, v_cfg);
  perform pg_catalog.set_config('metrics.copy_batch', 'checked', true);
  return v_count;
end
$$;

create or replace function metrics.ingest_known(
  p_project_id uuid, p_source text, p_batch_id text, p_series_ids bigint[], p_ts double precision[],
  p_count bigint[], p_sum double precision[], p_min double precision[], p_max double precision[],
  p_last double precision[], p_sketch jsonb[]
)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_points integer := coalesce(pg_catalog.cardinality(p_series_ids), 0);
  v_rows metrics.ingest_row[];
  v_stray integer;
  v_stray_id bigint;
  v_day date;
begin
  select * into strict v_cfg from metrics.config;
  if not metrics.open_batch(p_project_id, p_source, p_batch_id, v_points, v_cfg) then
    return pg_catalog.jsonb_build_object('status', 'duplicate', 'points', 0, 'series_created', 0, 'overflowed', 0);
  end if;
  if coalesce(pg_catalog.cardinality(p_ts), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_count), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_sum), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_min), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_max), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_last), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_sketch), 0) <> v_points then
    perform metrics.reject('batch.points', pg_catalog.format(
      'every array must hold one value per point (%s series ids)', v_points));
  end if;

  -- the rows as ingest parses them, with each series' name, kind and labels from the catalogue
  select pg_catalog.array_agg(row(
      u.i - 1, s.name, f.kind, s.labels,
      -- a time only for a finite number (NaN has none); one past PostgreSQL's range fails the time window
      case when abs(u.ts) < 'infinity' then pg_catalog.to_timestamp(least(greatest(u.ts, -1e11), 1e11)) end,
      u.count, u.sum, u.min, u.max, u.last, u.sketch, null, null,
      true,  -- typed arrays: check_ingest_rows checks the time, counts and numbers
      u.series_id
    )::metrics.ingest_row order by u.i),
    min(u.i) filter (where s.id is null),
    (pg_catalog.array_agg(u.series_id order by u.i) filter (where s.id is null))[1]
  into v_rows, v_stray, v_stray_id
  from rows from (
    pg_catalog.unnest(p_series_ids), pg_catalog.unnest(p_ts), pg_catalog.unnest(p_count), pg_catalog.unnest(p_sum),
    pg_catalog.unnest(p_min), pg_catalog.unnest(p_max), pg_catalog.unnest(p_last), pg_catalog.unnest(p_sketch)
  ) with ordinality as u (series_id, ts, count, sum, min, max, last, sketch, i)
  left join metrics.series s on s.id = u.series_id and s.project_id = p_project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;
  if v_stray is not null then
    perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray - 1),
      pg_catalog.format('%s is not a series of project %s', coalesce(v_stray_id::text, 'null'), p_project_id));
  end if;

  perform metrics.check_ingest_rows(v_rows, null, v_cfg);

  for v_day in select distinct (p.ts at time zone 'UTC')::date from pg_catalog.unnest(v_rows) p loop
    perform metrics.ensure_points_partition(v_day);
  end loop;
  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch)
  select p_project_id, p.series_id, p.ts, p_source, p_batch_id, p.count, p.sum, p.min, p.max, p.last, p.sketch
  from pg_catalog.unnest(v_rows) p;
  return pg_catalog.jsonb_build_object('status', 'accepted', 'points', v_points, 'series_created', 0, 'overflowed', 0);
end
$$;
