-- Issue #14: metrics.ingest_known (design K) for less server CPU, behaviour unchanged.
--
-- A helper's profile (backend CPU by psutil, one connection, durable commits, the ingest benchmark's workload:
-- 2,000 series, 15 % histograms of ~86 buckets; each stage of the function cut off in turn): at 300 points
-- a call cost 6.6-7.0 ms, of it ~1.7 ms before the body runs (the array literals, mostly jsonb_in of the
-- sketches), 0.6 ms opening the batch and committing, 0.95 ms building the rows (the series and families
-- look-ups), 2.0 ms in metrics.check_ingest_rows (1.5 ms of it the per-bucket sketch rule), 0.2 ms finding the
-- rows' days for their partitions and 1.1 ms inserting. Three costs were not the work itself:
--
-- 1  metrics.request_role(), called by assert_can_write for every batch, was a SQL function with a SET
--    clause: never inlined, and a SQL function's body is parsed, rewritten (the pg_roles view) and planned
--    again in every query that calls it, so in every transaction: 107 us of the 133 us assert_can_write took
--    per call (140 us with a role claim). As PL/pgSQL its query is planned once per session: assert_can_write
--    27 us, with or without a claim. metrics.caller_role() likewise. Same queries, same results.
-- 2  metrics.is_count, called by check_ingest_rows for every histogram (its z), was a SQL function with a SET
--    clause too: parsed and planned per statement, run through the function manager per call. Without the
--    clause the planner writes its expression into the calling statement (as migration 20261206001500 did
--    for three other small functions); its operators are schema-qualified, so the callers' search_path does
--    not matter. Every caller (the RPC's validator, check_ingest_rows) gets the same answers.
-- 3  ingest_known found the partitions' days with a DISTINCT over every row's ts AT TIME ZONE 'UTC' (the zone
--    looked up per row: ~0.8 us a point). Nearly every batch lies within one UTC day: when the earliest and the
--    latest time fall on one day (to_timestamp is monotonic), that day's partition is the only one; otherwise
--    each distinct day's, as before.
--
-- Backend CPU, the original against this (both as functions side by side in one scratch database, the same
-- batches, interleaved A B A B, 9 rounds each; median (range) in us a point; the stored rows, ledger rows and
-- the errors of 11 bad batches compared: identical):
--   25 points:    49.0 (47.0-50.3) -> 39.3 (38.3-41.3)   -20 %   (1 alone, another run: -18 %)
--   300 points:   23.0 (22.3-24.0) -> 21.3 (21.0-22.0)    -7 %   (1 alone: -6 %)
--   5,000 points: 20.5 (18.8-21.0) -> 19.8 (18.3-20.5)    -4 %
-- Measured and not kept: the sketch buckets validated by one regular expression over each store's text
-- (canonical keys, integer counts) instead of the casts and the jsonpath type test (-9 % of check_ingest_rows,
-- -1.5 % of a call: the per-bucket expansion for the sum stays either way), the casts computed once per bucket
-- (-4 % of check_ingest_rows), inserting straight from the arrays rather than the rows (+-0), generic plans
-- forced (+-0: PL/pgSQL already settles on them).

-- 1: who the caller is, planned once per session ---------------------------------------------------------------
create or replace function metrics.caller_role()
returns text
language plpgsql stable set search_path = ''
as $$
begin
  -- the role set by SET ROLE (the Data API's SET LOCAL ROLE), else the login role; unlike current_user it is
  -- not changed by security definer functions, and unlike request.jwt.claims no session can set it to a role
  -- it is not a member of
  return case when pg_catalog.current_setting('role') = 'none' then session_user::text
    else pg_catalog.current_setting('role') end;
end
$$;
comment on function metrics.caller_role() is
  'The role the session acts as outside any security definer function: the role of SET ROLE (the Data API '
  'runs SET LOCAL ROLE <role claim>), else the login role (session_user). Only membership lets a session '
  'SET ROLE, so unlike request.jwt.claims it cannot be chosen freely. PL/pgSQL, so that its plan is kept for '
  'the session (a SQL function with a SET clause is planned again in every query).';

create or replace function metrics.request_role()
returns text
language plpgsql stable set search_path = ''
as $$
begin
  -- the claim counts only when the session acts as that role (or could SET ROLE to it anyway)
  return (
    select c.claim
    from (select nullif(auth.role(), '') as claim) as c
    where case when exists (select from pg_catalog.pg_roles r where r.rolname = c.claim)
      then pg_catalog.pg_has_role(metrics.caller_role()::name, c.claim::name, 'MEMBER') else false end
  );
end
$$;
comment on function metrics.request_role() is
  'The JWT role claim (auth.role()) if the session may act as that role: metrics.caller_role() is a member of '
  'it (the Data API''s SET LOCAL ROLE <role claim>, or a role that could SET ROLE to it anyway). Null without '
  'a role claim and for a claim the session could not have made through the Data API (e.g. a direct login, '
  'or a session acting as authenticated, claiming service_role): such claims grant nothing. PL/pgSQL, so that '
  'its query is planned once per session, not in every transaction (assert_can_write calls it per batch).';

-- 2: is_count inlined ------------------------------------------------------------------------------------------
create or replace function metrics.is_count(p_value jsonb, p_min integer)
returns boolean
language sql immutable parallel safe
as $$
  -- an integer written as 5 or 5.0 (JSON does not distinguish them), at least p_min, at most 18 digits
  select coalesce(pg_catalog.jsonb_typeof(p_value) operator(pg_catalog.=) 'number'
    and (p_value operator(pg_catalog.#>>) '{}') operator(pg_catalog.~) '^\d{1,18}(\.0+)?$'
    and (p_value operator(pg_catalog.#>>) '{}')::numeric operator(pg_catalog.>=) p_min, false)
$$;
comment on function metrics.is_count(jsonb, integer) is
  'A JSON integer (5 or 5.0) of at most 18 digits, >= p_min. No SET clause (its operators are schema-qualified), '
  'so that the planner inlines it.';

-- 3: the partitions of a batch's day ---------------------------------------------------------------------------
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
  v_first date;
  v_last date;
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

  -- the rows' days (every time is finite now, converted as the rows' are): when the earliest and the latest
  -- fall on one UTC day, so do all (to_timestamp is monotonic), and no row needs its zone looked up
  select (pg_catalog.to_timestamp(least(greatest(min(t), -1e11), 1e11)) at time zone 'UTC')::date,
    (pg_catalog.to_timestamp(least(greatest(max(t), -1e11), 1e11)) at time zone 'UTC')::date
  into v_first, v_last
  from pg_catalog.unnest(p_ts) as t;
  if v_first = v_last then
    perform metrics.ensure_points_partition(v_first);
  else
    for v_day in select distinct (p.ts at time zone 'UTC')::date from pg_catalog.unnest(v_rows) p loop
      perform metrics.ensure_points_partition(v_day);
    end loop;
  end if;
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
  '(22023, points[i] in array order). The producer''s fast path once it knows its series'' ids. A batch within '
  'one UTC day ensures that day''s partition without converting each row''s time.';
