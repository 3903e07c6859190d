-- Ingest: one batch of deltas (JSON, see docs/batch.schema.json), validated whole, applied exactly once.

create function metrics.reject(p_where text, p_problem text)
returns void
language plpgsql volatile set search_path = ''
as $$
begin
  raise exception using
    errcode = '22023',
    message = p_where || ': ' || p_problem,
    detail = 'the batch was rejected as a whole; nothing of it was stored',
    hint = 'see docs/schema.md, "Batch wire format"';
end
$$;
comment on function metrics.reject(text, text) is
  'Raises the invalid-batch error (SQLSTATE 22023, HTTP 400 through the Data API) naming where and what.';

create function metrics.is_finite_number(p_value jsonb)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select pg_catalog.jsonb_typeof(p_value) = 'number'
    and abs((p_value #>> '{}')::numeric) <= 1.7976931348623157e308
$$;
comment on function metrics.is_finite_number(jsonb) is 'A JSON number that fits a finite double.';

create function metrics.sketch_problem(p_sketch jsonb, p_count bigint)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when pg_catalog.jsonb_typeof(p_sketch) is distinct from 'object' then 'must be an object {"z", "p", "n"}'
    when exists (select from pg_catalog.jsonb_object_keys(p_sketch) k where k not in ('z', 'p', 'n'))
      then 'unknown member (allowed: z, p, n)'
    when p_sketch ? 'z' and not (pg_catalog.jsonb_typeof(p_sketch -> 'z') = 'number'
      and (p_sketch ->> 'z') ~ '^\d{1,18}$') then 'z: must be a non-negative integer'
    when exists (
      select from pg_catalog.unnest(array['p', 'n']) s
      where p_sketch ? s and pg_catalog.jsonb_typeof(p_sketch -> s) <> 'object'
    ) then 'p and n must be objects of key: count'
    when exists (
      select
      from pg_catalog.unnest(array['p', 'n']) s,
        pg_catalog.jsonb_each(coalesce(p_sketch -> s, '{}'::jsonb)) b
      where not (b.key ~ '^-?\d{1,5}$' and b.key::integer between -1036 and 35488)
        or pg_catalog.jsonb_typeof(b.value) <> 'number'
        or not ((b.value #>> '{}') ~ '^\d{1,18}$')
        or (b.value #>> '{}')::bigint < 1
    ) then 'bucket keys must be integers in [-1036, 35488] and counts positive integers'
    when metrics.sketch_count(p_sketch) <> p_count then 'bucket counts must add up to the point''s count'
  end
$$;
comment on function metrics.sketch_problem(jsonb, bigint) is
  'Why a wire sketch is invalid for a point of the given count, or null when it is valid.';

create function metrics.point_problem(p_point jsonb, p_cfg metrics.config, p_now timestamptz)
returns text
language sql stable parallel safe set search_path = ''
as $$
  select case
    when pg_catalog.jsonb_typeof(p_point) is distinct from 'object' then ': must be an object'
    when exists (
      select from pg_catalog.jsonb_object_keys(p_point) k
      where k not in ('name', 'kind', 'labels', 'ts', 'count', 'sum', 'min', 'max', 'last', 'sketch', 'unit', 'help')
    ) then '.' || (
      select k from pg_catalog.jsonb_object_keys(p_point) k
      where k not in ('name', 'kind', 'labels', 'ts', 'count', 'sum', 'min', 'max', 'last', 'sketch', 'unit', 'help')
      limit 1
    ) || ': unknown field'
    when pg_catalog.jsonb_typeof(p_point -> 'name') is distinct from 'string' then '.name: required string'
    when not ((p_point ->> 'name') ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$')
      then '.name: invalid metric name ' || pg_catalog.quote_literal(pg_catalog.left(p_point ->> 'name', 100))
        || ' (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)'
    when (p_point ->> 'name') like '\_\_%' then '.name: names starting with "__" are reserved'
    when pg_catalog.char_length(p_point ->> 'name') > 200 then '.name: longer than 200 characters'
    when (p_point ->> 'kind') is null or (p_point ->> 'kind') not in ('counter', 'gauge', 'histogram')
      then '.kind: must be "counter", "gauge" or "histogram"'
    when p_point ? 'labels' and pg_catalog.jsonb_typeof(p_point -> 'labels') not in ('object', 'null')
      then '.labels: must be an object of name: string'
    when (select count(*) from pg_catalog.jsonb_object_keys(coalesce(p_point -> 'labels', '{}'::jsonb)) k
          where pg_catalog.jsonb_typeof(p_point -> 'labels') = 'object') > p_cfg.max_labels
      then '.labels: more than ' || p_cfg.max_labels || ' labels'
    when exists (
      select from pg_catalog.jsonb_each(p_point -> 'labels') l
      where pg_catalog.jsonb_typeof(p_point -> 'labels') = 'object'
        and (not (l.key ~ '^[a-zA-Z_][a-zA-Z0-9_]*$') or l.key like '\_\_%' or pg_catalog.char_length(l.key) > 100
          or pg_catalog.jsonb_typeof(l.value) <> 'string'
          or pg_catalog.char_length(l.value #>> '{}') > p_cfg.max_label_value_length)
    ) then (
      select '.labels.' || pg_catalog.left(l.key, 100) || ': ' || case
        when not (l.key ~ '^[a-zA-Z_][a-zA-Z0-9_]*$') then 'invalid label name (allowed: [a-zA-Z_][a-zA-Z0-9_]*)'
        when l.key like '\_\_%' then 'label names starting with "__" are reserved'
        when pg_catalog.char_length(l.key) > 100 then 'label name longer than 100 characters'
        when pg_catalog.jsonb_typeof(l.value) <> 'string' then 'label values must be strings'
        else 'label value longer than ' || p_cfg.max_label_value_length || ' characters'
      end
      from pg_catalog.jsonb_each(p_point -> 'labels') l
      where not (l.key ~ '^[a-zA-Z_][a-zA-Z0-9_]*$') or l.key like '\_\_%' or pg_catalog.char_length(l.key) > 100
        or pg_catalog.jsonb_typeof(l.value) <> 'string'
        or pg_catalog.char_length(l.value #>> '{}') > p_cfg.max_label_value_length
      order by l.key limit 1
    )
    when pg_catalog.jsonb_typeof(p_point -> 'ts') is distinct from 'number' then '.ts: required number (epoch seconds)'
    when pg_catalog.to_timestamp((p_point ->> 'ts')::double precision) < p_now - p_cfg.max_past
      then '.ts: older than the accepted window of ' || p_cfg.max_past::text
    when pg_catalog.to_timestamp((p_point ->> 'ts')::double precision) > p_now + p_cfg.max_future
      then '.ts: more than ' || p_cfg.max_future::text || ' in the future'
    when not (pg_catalog.jsonb_typeof(p_point -> 'count') = 'number' and (p_point ->> 'count') ~ '^\d{1,18}$'
      and (p_point ->> 'count')::bigint >= 1) then '.count: required integer >= 1'
    when not metrics.is_finite_number(p_point -> 'sum') then '.sum: required finite number'
    when exists (
      select from pg_catalog.unnest(array['min', 'max', 'last']) f
      where p_point ? f and pg_catalog.jsonb_typeof(p_point -> f) <> 'null' and not metrics.is_finite_number(p_point -> f)
    ) then (
      select '.' || f || ': must be a finite number' from pg_catalog.unnest(array['min', 'max', 'last']) f
      where p_point ? f and pg_catalog.jsonb_typeof(p_point -> f) <> 'null' and not metrics.is_finite_number(p_point -> f)
      limit 1
    )
    when (p_point ->> 'kind') = 'counter' and (p_point ->> 'sum')::numeric < 0
      then '.sum: counter increments must not be negative'
    when (p_point ->> 'kind') in ('gauge', 'histogram') and (p_point ->> 'min') is null then '.min: required for ' || (p_point ->> 'kind')
    when (p_point ->> 'kind') in ('gauge', 'histogram') and (p_point ->> 'max') is null then '.max: required for ' || (p_point ->> 'kind')
    when (p_point ->> 'kind') = 'gauge' and (p_point ->> 'last') is null then '.last: required for gauge'
    when (p_point ->> 'min')::numeric > (p_point ->> 'max')::numeric then '.min: greater than max'
    when (p_point ->> 'kind') <> 'histogram' and (p_point ->> 'sketch') is not null
      then '.sketch: only histograms carry a sketch'
    when (p_point ->> 'kind') = 'histogram' and (p_point ->> 'sketch') is null then '.sketch: required for histogram'
    when (p_point ->> 'kind') = 'histogram'
      and metrics.sketch_problem(p_point -> 'sketch', (p_point ->> 'count')::bigint) is not null
      then '.sketch: ' || metrics.sketch_problem(p_point -> 'sketch', (p_point ->> 'count')::bigint)
    when p_point ? 'unit' and pg_catalog.jsonb_typeof(p_point -> 'unit') not in ('string', 'null')
      then '.unit: must be a string'
    when pg_catalog.char_length(p_point ->> 'unit') > 64 then '.unit: longer than 64 characters'
    when p_point ? 'help' and pg_catalog.jsonb_typeof(p_point -> 'help') not in ('string', 'null')
      then '.help: must be a string'
    when pg_catalog.char_length(p_point ->> 'help') > 1024 then '.help: longer than 1024 characters'
  end
$$;
comment on function metrics.point_problem(jsonb, metrics.config, timestamptz) is
  'Why one wire point is invalid (".field: problem"), or null. The single definition of a valid point.';

create function metrics.ingest(batch jsonb)
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
  v_problem record;
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
  if exists (select from pg_catalog.jsonb_object_keys(batch) k where k not in ('project_id', 'source', 'batch_id', 'points', 'sent_at')) then
    perform metrics.reject('batch.' || (select k from pg_catalog.jsonb_object_keys(batch) k
      where k not in ('project_id', 'source', 'batch_id', 'points', 'sent_at') limit 1), 'unknown field');
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

  -- validation: the first offending point, named -----------------------------------------------------------
  select c.idx, c.problem
  into v_problem
  from (
    select e.idx - 1 as idx, metrics.point_problem(e.p, v_cfg, now()) as problem
    from pg_catalog.jsonb_array_elements(v_points) with ordinality as e (p, idx)
    offset 0
  ) as c
  where c.problem is not null
  order by c.idx
  limit 1;
  if found then
    perform metrics.reject(pg_catalog.format('points[%s]%s', v_problem.idx, pg_catalog.split_part(v_problem.problem, ': ', 1)),
      pg_catalog.substr(v_problem.problem, pg_catalog.strpos(v_problem.problem, ': ') + 2));
  end if;

  create temporary table if not exists pg_temp.ingest_points (
    idx integer, name text, kind text, labels jsonb, ts timestamptz, count bigint, sum double precision,
    min double precision, max double precision, last double precision, sketch jsonb, unit text, help text,
    series_id bigint
  ) on commit delete rows;
  truncate pg_temp.ingest_points;

  insert into pg_temp.ingest_points
  select e.idx - 1, r.name, r.kind, coalesce(nullif(r.labels, 'null'::jsonb), '{}'::jsonb),
    pg_catalog.to_timestamp(r.ts), r.count, r.sum, r.min, r.max, r.last, nullif(r.sketch, 'null'::jsonb),
    r.unit, r.help, null
  from pg_catalog.jsonb_array_elements(v_points) with ordinality as e (p, idx),
    pg_catalog.jsonb_to_record(e.p) as r (
      name text, kind text, labels jsonb, ts double precision, count bigint, sum double precision,
      min double precision, max double precision, last double precision, sketch jsonb, unit text, help text
    );

  -- a metric keeps its kind: against stored families and within the batch
  select p.idx, p.name, p.kind, coalesce(f.kind, first_kind.kind) as expected
  into v_problem
  from pg_temp.ingest_points p
  join (
    select distinct on (q.name) q.name, q.kind from pg_temp.ingest_points q order by q.name, q.idx
  ) as first_kind on first_kind.name = p.name
  left join metrics.families f on f.project_id = v_project and f.name = p.name
  where p.kind <> coalesce(f.kind, first_kind.kind)
  order by p.idx
  limit 1;
  if found then
    perform metrics.reject(pg_catalog.format('points[%s].kind', v_problem.idx),
      pg_catalog.format('metric %s is a %s, not a %s', v_problem.name, v_problem.expected, v_problem.kind));
  end if;

  -- series: resolve, create within the quota, redirect the rest to per-metric overflow series ---------------
  update pg_temp.ingest_points p set series_id = s.id
  from metrics.series s
  where s.project_id = v_project and s.name = p.name and s.labels = p.labels;

  if exists (select from pg_temp.ingest_points where series_id is null) then
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_project::text, 7157));
    -- resolve again: a concurrent batch may have created them while we waited
    update pg_temp.ingest_points p set series_id = s.id
    from metrics.series s
    where p.series_id is null and s.project_id = v_project and s.name = p.name and s.labels = p.labels;

    insert into metrics.families (project_id, name, kind, unit, help)
    select distinct on (p.name) v_project, p.name, p.kind, coalesce(p.unit, ''), coalesce(p.help, '')
    from pg_temp.ingest_points p
    where p.series_id is null
    order by p.name, p.idx
    on conflict do nothing;

    select coalesce(pr.series_quota, v_cfg.default_series_quota) into v_quota
    from metrics.projects pr where pr.id = v_project;
    select count(*) into v_existing from metrics.series s
    where s.project_id = v_project and not s.labels ? '__overflow__';

    with wanted as (
      select p.name, p.labels, min(p.idx) as first_idx
      from pg_temp.ingest_points p where p.series_id is null
      group by p.name, p.labels
    ), admitted as (
      select w.name, w.labels from wanted w order by w.first_idx limit greatest(v_quota - v_existing, 0)
    ), created as (
      insert into metrics.series (project_id, name, labels)
      select v_project, a.name, a.labels from admitted a
      returning id, name, labels
    )
    update pg_temp.ingest_points p set series_id = c.id
    from created c where p.series_id is null and c.name = p.name and c.labels = p.labels;
    v_created := (select count(*) from metrics.series s
      where s.project_id = v_project and not s.labels ? '__overflow__') - v_existing;

    if exists (select from pg_temp.ingest_points where series_id is null) then
      insert into metrics.series (project_id, name, labels)
      select distinct v_project, p.name, '{"__overflow__": "true"}'::jsonb
      from pg_temp.ingest_points p where p.series_id is null
      on conflict do nothing;
      with redirected as (
        update pg_temp.ingest_points p set series_id = s.id
        from metrics.series s
        where p.series_id is null and s.project_id = v_project and s.name = p.name
          and s.labels = '{"__overflow__": "true"}'::jsonb
        returning p.name
      ), per_metric as (
        select r.name, count(*) as n from redirected r group by r.name
      ), counted as (
        update metrics.families f set overflow_points = f.overflow_points + pm.n
        from per_metric pm where f.project_id = v_project and f.name = pm.name
        returning pm.n
      )
      select coalesce(sum(n), 0) into v_overflowed from counted;
    end if;
  end if;

  -- store: partitions exist for every day the batch touches; the statement trigger rolls up and publishes ---
  for v_day in select distinct (p.ts at time zone 'UTC')::date from pg_temp.ingest_points p loop
    perform metrics.ensure_points_partition(v_day);
  end loop;

  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch)
  select v_project, p.series_id, p.ts, v_source, v_batch_id, p.count, p.sum, p.min, p.max, p.last, p.sketch
  from pg_temp.ingest_points p;

  return pg_catalog.jsonb_build_object(
    'status', 'accepted', 'points', v_count, 'series_created', v_created, 'overflowed', v_overflowed
  );
end
$$;
comment on function metrics.ingest(jsonb) is
  'Ingests one batch {project_id, source, batch_id, points[]} (docs/batch.schema.json). Validates it whole '
  '(22023 naming the first bad point and field), applies it exactly once per (project, source, batch_id), '
  'keeps the series quota via per-metric overflow series. Returns {status, points, series_created, overflowed}.';

grant execute on function metrics.ingest(jsonb), metrics.reject(text, text) to authenticated, service_role;
grant execute on function metrics.is_finite_number(jsonb), metrics.sketch_problem(jsonb, bigint),
  metrics.point_problem(jsonb, metrics.config, timestamptz) to authenticated, service_role;
