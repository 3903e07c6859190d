-- Issue #14: a validated COPY path for trusted producers, beside the JSON RPC.
--
-- Measured (docs/architecture.md, "Ingest: designs side by side"): metrics.ingest spends most of a batch
-- parsing JSON, resolving series by name and labels and validating; a COPY of rows with resolved series ids
-- (design C) costs a third to a half as much, but until now skipped every rule. Now:
--   select metrics.begin_copy_batch(project, source, batch_id, points[, days]);  -- tenancy, ledger (false: duplicate)
--   COPY metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch) FROM STDIN;
--   select metrics.check_copied_points();                                          -- the same rules as ingest
--   COMMIT
-- in one transaction. check_copied_points() reads the transaction's own points back (points.xid index),
-- checks that they are the begun batch's and of its project's series, and applies metrics.check_ingest_rows:
-- the point and sketch rules metrics.ingest applies, moved into one function both call. On any problem the
-- transaction fails with ingest's error (22023 "points[i].field: ..."; i counts the rows in storage order) and
-- nothing is stored. metrics.ingest is unchanged in behaviour.

create function metrics.check_ingest_rows(p_rows metrics.ingest_row[], p_points jsonb, p_cfg metrics.config)
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
comment on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config) is
  'The rules every stored point obeys (kind, time window, count, sum, min/max/last by kind, name, sketch shape '
  'and buckets), set-based over parsed rows: raises the invalid-batch error for the first bad point of p_points '
  '(null: built from the rows). Called by metrics.ingest and metrics.check_copied_points.';

create function metrics.rows_as_points(p_rows metrics.ingest_row[])
returns jsonb
language sql stable set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'name', p.name, 'kind', p.kind, 'labels', p.labels, 'ts', extract(epoch from p.ts), 'count', p.count,
      'sum', p.sum, 'min', p.min, 'max', p.max, 'last', p.last, 'sketch', p.sketch, 'unit', p.unit, 'help', p.help
    )) order by p.idx), '[]'::jsonb)
  from pg_catalog.unnest(p_rows) p
$$;
comment on function metrics.rows_as_points(metrics.ingest_row[]) is
  'Parsed rows back in the wire format, for the detailed validator''s error message (metrics.check_ingest_rows).';

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

  -- the rules every stored point obeys, whichever path it came by (metrics.check_copied_points too)
  perform metrics.check_ingest_rows(v_rows, v_points, v_cfg);

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

create function metrics.begin_copy_batch(
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
  elsif p_points > v_cfg.max_points_per_batch then
    perform metrics.reject('batch.points', pg_catalog.format('%s points, more than the limit of %s', p_points, v_cfg.max_points_per_batch));
  end if;
  perform metrics.assert_can_write(p_project_id);

  insert into metrics.projects (id) values (p_project_id) on conflict do nothing;
  insert into metrics.batches (project_id, source, batch_id, points)
  values (p_project_id, p_source, p_batch_id, p_points)
  on conflict do nothing;
  if not found then
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
comment on function metrics.begin_copy_batch(uuid, text, text, integer, date[]) is
  'Begins a validated COPY batch (one per transaction): the batch envelope rules and tenancy of metrics.ingest, '
  'the ledger row (false: a duplicate, copy nothing), partitions for p_days. Then COPY the rows into '
  'metrics.points and call metrics.check_copied_points() before committing.';

create function metrics.check_copied_points()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_setting text := pg_catalog.current_setting('metrics.copy_batch', true);
  v_batch jsonb;
  v_rows metrics.ingest_row[];
  v_count integer;
  v_stray record;
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
    select p.*, pg_catalog.row_number() over (order by p.tableoid, p.ctid) - 1 as idx
    from metrics.points p
    where p.xid = pg_catalog.pg_current_xact_id()
  )
  select pg_catalog.array_agg(row(
      c.idx, s.name, f.kind, s.labels, c.ts, c.count, c.sum, c.min, c.max, c.last, c.sketch, null, null,
      -- what the JSON shape check ensures on the RPC path: an integer count in range, finite numbers
      c.count between 1 and 999999999999999999
        and c.sum = c.sum and abs(c.sum) < 'infinity'
        and coalesce(c.min = c.min and abs(c.min) < 'infinity', true)
        and coalesce(c.max = c.max and abs(c.max) < 'infinity', true)
        and coalesce(c.last = c.last and abs(c.last) < 'infinity', true),
      c.series_id
    )::metrics.ingest_row order by c.idx),
    count(*)
  into v_rows, v_count
  from copied c
  left join metrics.series s on s.id = c.series_id and s.project_id = c.project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;

  select c.idx, c.project_id, c.source, c.batch_id, c.series_id into v_stray
  from (
    select p.*, pg_catalog.row_number() over (order by p.tableoid, p.ctid) - 1 as idx
    from metrics.points p where p.xid = pg_catalog.pg_current_xact_id()
  ) as c
  left join metrics.series s on s.id = c.series_id and s.project_id = c.project_id
  where c.project_id <> (v_batch ->> 'project_id')::uuid or c.source <> v_batch ->> 'source'
    or c.batch_id <> v_batch ->> 'batch_id' or s.id is null
  order by c.idx
  limit 1;
  if found then
    if v_stray.series_id is not null and v_stray.project_id = (v_batch ->> 'project_id')::uuid
        and v_stray.source = v_batch ->> 'source' and v_stray.batch_id = v_batch ->> 'batch_id' then
      perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray.idx),
        pg_catalog.format('%s is not a series of project %s', v_stray.series_id, v_stray.project_id));
    end if;
    perform metrics.reject(pg_catalog.format('points[%s]', v_stray.idx),
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
comment on function metrics.check_copied_points() is
  'Validates the rows this transaction copied into metrics.points after metrics.begin_copy_batch: all of the '
  'begun batch, as many as it declared, of series of its project, and obeying metrics.check_ingest_rows (the '
  'rules of metrics.ingest). Raises 22023 with ingest''s error (points[i] in storage order) so that nothing is '
  'stored; returns the rows checked.';

revoke execute on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config) from public;
revoke execute on function metrics.rows_as_points(metrics.ingest_row[]) from public;
revoke execute on function metrics.begin_copy_batch(uuid, text, text, integer, date[]) from public;
revoke execute on function metrics.check_copied_points() from public;
-- COPY into metrics.points needs INSERT on it, which only the service role (and the owner) has
grant execute on function metrics.begin_copy_batch(uuid, text, text, integer, date[]) to service_role;
grant execute on function metrics.check_copied_points() to service_role;
