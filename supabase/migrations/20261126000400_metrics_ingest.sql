-- Ingest: one batch of deltas (JSON, see docs/batch.schema.json), validated whole, applied exactly once.
--
-- Valid batches take a fast, set-based path. The detailed validator (metrics.point_problem, the single
-- definition of a valid point) only runs when a fast check fails, to name the first offending point.

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

create function metrics.problem(p_path text, p_what text)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select p_path || pg_catalog.chr(31) || p_what
$$;
comment on function metrics.problem(text, text) is
  'A validation finding: field path and description joined by a unit separator (names may contain ": ").';

create function metrics.is_finite_number(p_value jsonb)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_typeof(p_value) = 'number'
    and abs((p_value #>> '{}')::numeric) <= 1.7976931348623157e308, false)
$$;
comment on function metrics.is_finite_number(jsonb) is 'A JSON number that fits a finite double (false for null).';

create function metrics.is_count(p_value jsonb, p_min integer)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  -- an integer written as 5 or 5.0 (JSON does not distinguish them), at least p_min, at most 18 digits
  select coalesce(pg_catalog.jsonb_typeof(p_value) = 'number'
    and (p_value #>> '{}') ~ '^\d{1,18}(\.0+)?$'
    and (p_value #>> '{}')::numeric >= p_min, false)
$$;
comment on function metrics.is_count(jsonb, integer) is 'A JSON integer (5 or 5.0) of at most 18 digits, >= p_min.';

create function metrics.sketch_problem(p_sketch jsonb, p_count bigint)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when pg_catalog.jsonb_typeof(p_sketch) is distinct from 'object' then 'must be an object {"z", "p", "n"}'
    when (p_sketch - '{z,p,n}'::text[]) <> '{}'::jsonb then 'unknown member (allowed: z, p, n)'
    when p_sketch ? 'z' and not metrics.is_count(p_sketch -> 'z', 0) then 'z: must be a non-negative integer'
    when coalesce(pg_catalog.jsonb_typeof(p_sketch -> 'p'), 'object') <> 'object'
      or coalesce(pg_catalog.jsonb_typeof(p_sketch -> 'n'), 'object') <> 'object'
      then 'p and n must be objects of key: count'
    else (
      select case
        when bool_or(not (
          case when b.key ~ '^(0|-?[1-9]\d{0,4})$' then b.key::integer between -1036 and 35488 else false end
          and metrics.is_count(b.value, 1)
        )) then 'bucket keys must be integers in [-1036, 35488] (no leading zeros) and counts positive integers'
        when coalesce(sum(case when metrics.is_count(b.value, 1) then (b.value #>> '{}')::numeric end), 0)
          + coalesce((p_sketch ->> 'z')::numeric, 0) <> p_count
          then 'bucket counts must add up to the point''s count'
      end
      from (
        select * from pg_catalog.jsonb_each(coalesce(p_sketch -> 'p', '{}'::jsonb))
        union all
        select * from pg_catalog.jsonb_each(coalesce(p_sketch -> 'n', '{}'::jsonb))
      ) as b
    )
  end
$$;
comment on function metrics.sketch_problem(jsonb, bigint) is
  'Why a wire sketch is invalid for a point of the given count, or null when it is valid.';

create function metrics.sketch_store_normalize(p_store jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select case when pg_catalog.jsonb_typeof(p_store) <> 'object' then p_store else (
    select coalesce(pg_catalog.jsonb_object_agg(b.key, case
      when pg_catalog.jsonb_typeof(b.value) = 'number' and (b.value #>> '{}') ~ '^\d{1,18}\.0+$'
        then pg_catalog.to_jsonb((b.value #>> '{}')::numeric::bigint)
      else b.value
    end), '{}'::jsonb)
    from pg_catalog.jsonb_each(p_store) as b
  ) end
$$;
comment on function metrics.sketch_store_normalize(jsonb) is 'One bucket store of metrics.sketch_normalize.';

create function metrics.sketch_normalize(p_sketch jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  -- JSON does not tell 2 from 2.0; stored sketches carry plain integers so merges and quantiles can cast
  -- them. Only integral values are rewritten: anything else is left for validation to reject.
  select case when pg_catalog.jsonb_typeof(p_sketch) <> 'object' then p_sketch else
    p_sketch || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'z', case when (p_sketch ->> 'z') ~ '^\d{1,18}\.0+$' then pg_catalog.to_jsonb((p_sketch ->> 'z')::numeric::bigint) end,
      'p', metrics.sketch_store_normalize(p_sketch -> 'p'),
      'n', metrics.sketch_store_normalize(p_sketch -> 'n')
    ))
  end
$$;
comment on function metrics.sketch_normalize(jsonb) is
  'A wire sketch with integral counts written as 2.0 rewritten to 2 (other values untouched).';

create function metrics.labels_problem(p_labels jsonb, p_cfg metrics.config)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_labels is null or pg_catalog.jsonb_typeof(p_labels) = 'null' then null
    when pg_catalog.jsonb_typeof(p_labels) <> 'object' then metrics.problem('', 'must be an object of name: string')
    else (
      select case
        when count(*) > p_cfg.max_labels then metrics.problem('', 'more than ' || p_cfg.max_labels || ' labels')
        else min(metrics.problem('.' || pg_catalog.left(l.key, 100), case
          when not (l.key ~ '^[a-zA-Z_][a-zA-Z0-9_]*$') then 'invalid label name (allowed: [a-zA-Z_][a-zA-Z0-9_]*)'
          when l.key like '\_\_%' then 'label names starting with "__" are reserved'
          when pg_catalog.char_length(l.key) > 100 then 'label name longer than 100 characters'
          when pg_catalog.jsonb_typeof(l.value) <> 'string' then 'label values must be strings'
          when pg_catalog.char_length(l.value #>> '{}') > p_cfg.max_label_value_length
            then 'label value longer than ' || p_cfg.max_label_value_length || ' characters'
        end))
      end
      from pg_catalog.jsonb_each(p_labels) as l
    )
  end
$$;
comment on function metrics.labels_problem(jsonb, metrics.config) is
  'Why a label set is invalid (the first bad label by name), or null.';

create function metrics.point_problem(p_point jsonb, p_cfg metrics.config, p_now timestamptz)
returns text
language sql stable parallel safe set search_path = ''
as $$
  select case
    when pg_catalog.jsonb_typeof(p_point) is distinct from 'object' then metrics.problem('', 'must be an object')
    when (p_point - '{name,kind,labels,ts,count,sum,min,max,last,sketch,unit,help}'::text[]) <> '{}'::jsonb then (
      select metrics.problem('.' || pg_catalog.left(k, 100), 'unknown field')
      from pg_catalog.jsonb_object_keys(p_point - '{name,kind,labels,ts,count,sum,min,max,last,sketch,unit,help}'::text[]) k
      order by k limit 1
    )
    when pg_catalog.jsonb_typeof(p_point -> 'name') is distinct from 'string' then metrics.problem('.name', 'required string')
    when not ((p_point ->> 'name') ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$')
      then metrics.problem('.name', 'invalid metric name ' || pg_catalog.quote_literal(pg_catalog.left(p_point ->> 'name', 100))
        || ' (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)')
    when (p_point ->> 'name') like '\_\_%' then metrics.problem('.name', 'names starting with "__" are reserved')
    when pg_catalog.char_length(p_point ->> 'name') > 200 then metrics.problem('.name', 'longer than 200 characters')
    when (p_point ->> 'kind') is null or (p_point ->> 'kind') not in ('counter', 'gauge', 'histogram')
      then metrics.problem('.kind', 'must be "counter", "gauge" or "histogram"')
    when metrics.labels_problem(p_point -> 'labels', p_cfg) is not null
      then '.labels' || metrics.labels_problem(p_point -> 'labels', p_cfg)
    when pg_catalog.jsonb_typeof(p_point -> 'ts') is distinct from 'number'
      then metrics.problem('.ts', 'required number (epoch seconds)')
    when (p_point ->> 'ts')::numeric < extract(epoch from p_now - p_cfg.max_past)
      then metrics.problem('.ts', 'older than the accepted window of ' || p_cfg.max_past::text)
    when (p_point ->> 'ts')::numeric > extract(epoch from p_now + p_cfg.max_future)
      then metrics.problem('.ts', 'more than ' || p_cfg.max_future::text || ' in the future')
    when not metrics.is_count(p_point -> 'count', 1) then metrics.problem('.count', 'required integer >= 1')
    when not metrics.is_finite_number(p_point -> 'sum') then metrics.problem('.sum', 'required finite number')
    when exists (
      select from pg_catalog.unnest(array['min', 'max', 'last']) f
      where coalesce(pg_catalog.jsonb_typeof(p_point -> f), 'null') <> 'null' and not metrics.is_finite_number(p_point -> f)
    ) then (
      select metrics.problem('.' || f, 'must be a finite number') from pg_catalog.unnest(array['min', 'max', 'last']) f
      where coalesce(pg_catalog.jsonb_typeof(p_point -> f), 'null') <> 'null' and not metrics.is_finite_number(p_point -> f)
      limit 1
    )
    when (p_point ->> 'kind') = 'counter' and (p_point ->> 'sum')::numeric < 0
      then metrics.problem('.sum', 'counter increments must not be negative')
    when (p_point ->> 'kind') in ('gauge', 'histogram') and (p_point ->> 'min') is null
      then metrics.problem('.min', 'required for ' || (p_point ->> 'kind'))
    when (p_point ->> 'kind') in ('gauge', 'histogram') and (p_point ->> 'max') is null
      then metrics.problem('.max', 'required for ' || (p_point ->> 'kind'))
    when (p_point ->> 'kind') = 'gauge' and (p_point ->> 'last') is null then metrics.problem('.last', 'required for gauge')
    when (p_point ->> 'min')::numeric > (p_point ->> 'max')::numeric then metrics.problem('.min', 'greater than max')
    when (p_point ->> 'kind') <> 'histogram' and (p_point ->> 'sketch') is not null
      then metrics.problem('.sketch', 'only histograms carry a sketch')
    when (p_point ->> 'kind') = 'histogram' and (p_point ->> 'sketch') is null
      then metrics.problem('.sketch', 'required for histogram')
    when (p_point ->> 'kind') = 'histogram'
      and metrics.sketch_problem(p_point -> 'sketch', (p_point ->> 'count')::numeric::bigint) is not null
      then metrics.problem('.sketch', metrics.sketch_problem(p_point -> 'sketch', (p_point ->> 'count')::numeric::bigint))
    when coalesce(pg_catalog.jsonb_typeof(p_point -> 'unit'), 'null') not in ('string', 'null')
      then metrics.problem('.unit', 'must be a string')
    when pg_catalog.char_length(p_point ->> 'unit') > 64 then metrics.problem('.unit', 'longer than 64 characters')
    when coalesce(pg_catalog.jsonb_typeof(p_point -> 'help'), 'null') not in ('string', 'null')
      then metrics.problem('.help', 'must be a string')
    when pg_catalog.char_length(p_point ->> 'help') > 1024 then metrics.problem('.help', 'longer than 1024 characters')
  end
$$;
comment on function metrics.point_problem(jsonb, metrics.config, timestamptz) is
  'Why one wire point is invalid (see metrics.problem), or null. The single definition of a valid point.';

create function metrics.reject_first_problem(p_points jsonb, p_cfg metrics.config, p_now timestamptz, p_fallback text)
returns void
language plpgsql stable set search_path = ''
as $$
declare
  v_idx bigint;
  v_problem text;
begin
  select c.idx, c.problem into v_idx, v_problem
  from (
    select e.idx - 1 as idx, metrics.point_problem(e.p, p_cfg, p_now) as problem
    from pg_catalog.jsonb_array_elements(p_points) with ordinality as e (p, idx)
    offset 0
  ) as c
  where c.problem is not null
  order by c.idx
  limit 1;
  if found then
    perform metrics.reject(
      pg_catalog.format('points[%s]%s', v_idx, pg_catalog.split_part(v_problem, pg_catalog.chr(31), 1)),
      pg_catalog.split_part(v_problem, pg_catalog.chr(31), 2)
    );
  end if;
  perform metrics.reject('batch.points', p_fallback);
end
$$;
comment on function metrics.reject_first_problem(jsonb, metrics.config, timestamptz, text) is
  'The detailed validator: raises the invalid-batch error for the first point metrics.point_problem '
  'finds fault with (or the fallback). Ingest calls it only when a fast check fails.';

create type metrics.ingest_row as (
  idx integer,
  name text,
  kind text,
  labels jsonb,
  ts timestamptz,
  count bigint,
  sum double precision,
  min double precision,
  max double precision,
  last double precision,
  sketch jsonb,
  unit text,
  help text,
  shape_ok boolean,
  series_id bigint
);
comment on type metrics.ingest_row is 'One parsed point inside metrics.ingest (its series resolved later).';

create function metrics.kind_conflict(p_project_id uuid, p_rows metrics.ingest_row[])
returns table (idx integer, name text, kind text, expected text)
language sql stable set search_path = ''
as $$
  -- a metric keeps its kind: against the stored family, and within the batch against its first point
  select p.idx, p.name, p.kind, coalesce(f.kind, first_kind.kind)
  from pg_catalog.unnest(p_rows) p
  join (
    select distinct on (q.name) q.name, q.kind from pg_catalog.unnest(p_rows) q order by q.name, q.idx
  ) as first_kind on first_kind.name = p.name
  left join metrics.families f on f.project_id = p_project_id and f.name = p.name
  where p.kind <> coalesce(f.kind, first_kind.kind)
  order by p.idx
  limit 1
$$;
comment on function metrics.kind_conflict(uuid, metrics.ingest_row[]) is
  'The first point whose kind differs from its metric''s (stored, or first in the batch), if any.';

create function metrics.resolve_series(p_project_id uuid, p_rows metrics.ingest_row[])
returns metrics.ingest_row[]
language sql stable set search_path = ''
as $$
  select pg_catalog.array_agg(row(
    p.idx, p.name, p.kind, p.labels, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch, p.unit, p.help,
    p.shape_ok, coalesce(p.series_id, s.id)
  )::metrics.ingest_row order by p.idx)
  from pg_catalog.unnest(p_rows) p
  left join metrics.series s
    on p.series_id is null and s.project_id = p_project_id and s.name = p.name and s.labels = p.labels
$$;
comment on function metrics.resolve_series(uuid, metrics.ingest_row[]) is
  'Fills series_id of the rows whose (name, labels) series exists.';

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
    -- every histogram's buckets in one pass: canonical keys in range, positive integer counts adding up
    select
    from (
      select p.idx, p.count,
        case when metrics.is_count(p.sketch -> 'z', 0) then (p.sketch ->> 'z')::numeric else 0 end as zeros, b.key, b.value
      from pg_catalog.unnest(v_rows) p
      cross join lateral (
        select * from pg_catalog.jsonb_each(coalesce(p.sketch -> 'p', '{}'::jsonb))
        union all
        select * from pg_catalog.jsonb_each(coalesce(p.sketch -> 'n', '{}'::jsonb))
        union all
        select null, null
      ) as b (key, value)
      where p.kind = 'histogram'
    ) as buckets
    group by buckets.idx, buckets.count, buckets.zeros
    having bool_or(buckets.key is not null and not (
        case when buckets.key ~ '^(0|-?[1-9]\d{0,4})$' then buckets.key::integer between -1036 and 35488 else false end
        and pg_catalog.jsonb_typeof(buckets.value) = 'number' and (buckets.value #>> '{}') ~ '^[1-9]\d{0,17}(\.0+)?$'))
      or coalesce(sum(case when (buckets.value #>> '{}') ~ '^[1-9]\d{0,17}(\.0+)?$' then (buckets.value #>> '{}')::numeric end), 0)
        + buckets.zeros <> buckets.count
  ) or exists (
    select from (select distinct p.name from pg_catalog.unnest(v_rows) p) n
    where not (n.name ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$') or n.name like '\_\_%' or pg_catalog.char_length(n.name) > 200
  ) then
    perform metrics.reject_first_problem(v_points, v_cfg, now(), 'invalid point');
  end if;

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
comment on function metrics.ingest(jsonb) is
  'Ingests one batch {project_id, source, batch_id, points[], sent_at?} (docs/batch.schema.json). Validates '
  'it whole (22023 naming the first bad point and field), applies it exactly once per (project, source, '
  'batch_id), keeps the series quota via per-metric overflow series. Returns {status, points, '
  'series_created, overflowed}.';

grant execute on function metrics.ingest(jsonb), metrics.reject(text, text) to authenticated, service_role;
grant execute on function metrics.problem(text, text), metrics.is_finite_number(jsonb), metrics.is_count(jsonb, integer),
  metrics.sketch_store_normalize(jsonb), metrics.sketch_normalize(jsonb),
  metrics.sketch_problem(jsonb, bigint), metrics.labels_problem(jsonb, metrics.config),
  metrics.point_problem(jsonb, metrics.config, timestamptz),
  metrics.reject_first_problem(jsonb, metrics.config, timestamptz, text),
  metrics.kind_conflict(uuid, metrics.ingest_row[]), metrics.resolve_series(uuid, metrics.ingest_row[])
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
