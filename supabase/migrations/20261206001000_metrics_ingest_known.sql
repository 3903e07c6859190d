-- Issue #14: metrics.ingest_known, a batch of series the producer has resolved, as typed arrays in one call.
--
-- Measured (docs/architecture.md, "Then: one call for known series"): the validated COPY path (migration
-- 20261206000800) saves the database the JSON parse and the series look-up, but takes the producer six round
-- trips (BEGIN, begin_copy_batch, COPY start, COPY data, check_copied_points, COMMIT); a flush through it cost
-- the worker more CPU than the JSON RPC. The same rows as arrays (series ids, epoch seconds, counts, sums,
-- min/max/last, sketches) go in one statement, at the COPY path's database cost: the arrays are checked
-- before they are stored (no read-back), with the same rules and errors (metrics.check_ingest_rows).
--
-- metrics.open_batch is the batch envelope, tenancy and ledger of the typed paths, so that begin_copy_batch and
-- ingest_known state them once (begin_copy_batch is redefined to call it, behaviour unchanged).

create function metrics.open_batch(
  p_project_id uuid, p_source text, p_batch_id text, p_points integer, p_cfg metrics.config
)
returns boolean
language plpgsql volatile set search_path = ''
as $$
begin
  if p_project_id is null then
    perform metrics.reject('batch.project_id', 'required uuid');
  end if;
  if p_source is null or pg_catalog.char_length(p_source) not between 1 and 200 then
    perform metrics.reject('batch.source', 'required string of 1 to 200 characters');
  end if;
  if p_batch_id is null or pg_catalog.char_length(p_batch_id) not between 1 and 100 then
    perform metrics.reject('batch.batch_id', 'required string of 1 to 100 characters');
  end if;
  if p_points is null or p_points < 1 then
    perform metrics.reject('batch.points', 'must not be empty');
  elsif p_points > p_cfg.max_points_per_batch then
    perform metrics.reject('batch.points', pg_catalog.format('%s points, more than the limit of %s', p_points, p_cfg.max_points_per_batch));
  end if;
  perform metrics.assert_can_write(p_project_id);

  insert into metrics.projects (id) values (p_project_id) on conflict do nothing;
  insert into metrics.batches (project_id, source, batch_id, points)
  values (p_project_id, p_source, p_batch_id, p_points)
  on conflict do nothing;
  return found;
end
$$;
comment on function metrics.open_batch(uuid, text, text, integer, metrics.config) is
  'The envelope of a batch on the typed paths (project, source and batch id, 1 to max_points_per_batch points), '
  'the caller''s right to write the project, and the ledger row: false when the batch was stored before '
  '(exactly once). Called by metrics.begin_copy_batch and metrics.ingest_known.';

create or replace function metrics.begin_copy_batch(
  p_project_id uuid, p_source text, p_batch_id text, p_points integer, p_days date[] default null
)
returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_day date;
begin
  select * into strict v_cfg from metrics.config;
  -- set (to the batch, then to 'checked') until the transaction ends
  if pg_catalog.current_setting('metrics.copy_batch', true) <> '' then
    raise exception 'a batch was already begun in this transaction: one batch per transaction'
      using errcode = '55000';
  end if;
  if not metrics.open_batch(p_project_id, p_source, p_batch_id, p_points, v_cfg) then
    return false;
  end if;
  -- the days the rows fall on (within the accepted window) get their partitions, as ingest does
  for v_day in
    select distinct d from pg_catalog.unnest(p_days) as d
    where d between (now() - v_cfg.max_past)::date - 1 and (now() + v_cfg.max_future)::date + 1
  loop
    perform metrics.ensure_points_partition(v_day);
  end loop;
  perform pg_catalog.set_config('metrics.copy_batch', pg_catalog.jsonb_build_object(
    'project_id', p_project_id, 'source', p_source, 'batch_id', p_batch_id, 'points', p_points)::text, true);
  return true;
end
$$;

create function metrics.ingest_known(
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
      case when u.ts = u.ts and abs(u.ts) < 'infinity' then pg_catalog.to_timestamp(u.ts) end, u.count, u.sum, u.min, u.max, u.last,
      u.sketch, null, null,
      -- what the JSON shape check ensures on the RPC path: a time, an integer count in range, finite numbers
      u.ts is not null and u.ts = u.ts and abs(u.ts) < 'infinity'
        and u.count between 1 and 999999999999999999
        and u.sum = u.sum and abs(u.sum) < 'infinity'
        and coalesce(u.min = u.min and abs(u.min) < 'infinity', true)
        and coalesce(u.max = u.max and abs(u.max) < 'infinity', true)
        and coalesce(u.last = u.last and abs(u.last) < 'infinity', true),
      u.series_id
    )::metrics.ingest_row order by u.i),
    min(u.i) filter (where s.id is null)
  into v_rows, v_stray
  from rows from (
    pg_catalog.unnest(p_series_ids), pg_catalog.unnest(p_ts), pg_catalog.unnest(p_count), pg_catalog.unnest(p_sum),
    pg_catalog.unnest(p_min), pg_catalog.unnest(p_max), pg_catalog.unnest(p_last), pg_catalog.unnest(p_sketch)
  ) with ordinality as u (series_id, ts, count, sum, min, max, last, sketch, i)
  left join metrics.series s on s.id = u.series_id and s.project_id = p_project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;
  if v_stray is not null then
    perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray - 1),
      pg_catalog.format('%s is not a series of project %s', coalesce(p_series_ids[v_stray]::text, 'null'), p_project_id));
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
comment on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], jsonb[]) is
  'Stores a batch of points of existing series of the project, given as arrays with one value per point (series '
  'ids, epoch seconds, count, sum, min, max, last, sketch): the envelope, tenancy and ledger of metrics.open_batch '
  '(a resent batch is a duplicate) and the rules of metrics.check_ingest_rows, with metrics.ingest''s errors '
  '(22023, points[i] in array order). The producer''s fast path once it knows its series'' ids.';

revoke execute on function metrics.open_batch(uuid, text, text, integer, metrics.config) from public;
revoke execute on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], jsonb[]) from public;
-- for trusted producers, as the COPY path: the service role (and the owner)
grant execute on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], jsonb[]) to service_role;
