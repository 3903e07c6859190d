-- Issue #14 (found while measuring the rollup pass): one tenant could stop the rollups of every tenant.
--
-- A point's count could be any integer of up to 18 digits. The rollups add counts as bigint (rollup_1m.count,
-- the minutes' zero counts, each sketch bucket in metrics.sketch_store_merge, the totals, the 5-minute and hourly
-- rollups), so ten points of 999999999999999999 for one series in one minute overflowed the minute's count:
-- metrics.rollup_pass() then failed with 22003 "bigint out of range" on every run, for every project, since the
-- pass merges all projects' points in one statement. Measured on the local stack: ten such points through the
-- JSON RPC, then every rollup_pass() raised 22003 and no minute of any project was merged.
--
-- A point is one producer's delta over one flush (the client's: a second; an OpenTelemetry export: a minute at
-- most); a billion observations in it is already beyond any producer. With counts of at most 10^9, a minute of
-- one series overflows only past 9.2 * 10^9 points of it in that minute, an hour past as many in the hour:
-- beyond what a PostgreSQL instance ingests (the fleet benchmark's 6,000 points/s is 2.2 * 10^7 an hour). The
-- cumulative totals of a series would need 9.2 * 10^9 points of it over its life (at 100,000 points/s into one
-- series, a day); see docs/architecture.md for that residual.
--
-- A review found the same through the sums: two points of one series in one minute, each with sum 1.7e308 (a
-- finite double), made the minute's sum overflow double precision (22003 "value out of range: overflow"), with
-- the same effect. A point's sum is now at most 1e290 either way (metrics.max_point_sum()): 1.8e18 points of one
-- series before any sum, the totals included, could overflow. min, max and last are never added.
--
-- The cap lives in one function, metrics.max_point_count(), read by metrics.point_problem (the detailed
-- validator, for its message) and metrics.check_ingest_rows (the rules every path applies: the JSON RPC, the
-- COPY path and ingest_known). metrics.is_count keeps its 18 digits: metrics.ingest_http checks a cumulative
-- point's count with it before the conversion, and a cumulative count may well pass 10^9; the delta it turns
-- into goes through metrics.ingest and the cap. Sketch counts need no cap of their own: z and every bucket are
-- at least 0 and add up to the count.
--
-- metrics.cumulative_to_delta: a cumulative histogram of a stream first seen (or reset) carries its whole life
-- as the delta. A long-lived process's (a billion requests: 1,000 a second for 12 days) would now fail its
-- export on every try, since the failed batch records no state either. Such a delta is not stored; the state
-- is recorded as the stream's baseline, and the next export's difference is stored as usual; the same holds
-- for a genuine difference of more than 10^9 observations between two exports (hours of an outage at tens of
-- thousands a second), which is lost. (Counters are stored with count 1 and their difference as the sum: no
-- cap applies to them.) Since such a point never reaches metrics.ingest, the conversion checks it itself first,
-- as ingest would (point_problem with one observation standing in for its count, sketch_problem against its
-- count): a bad one is refused and changes no state.
--
-- Found with it (the same function): a cumulative histogram's delta took as min the representative value of its
-- lowest bucket raised to the point's min, and as max that of its highest lowered to the point's max. A
-- representative value lies within 1 % of its bucket's values, not between them: when a delta's values all
-- lay in one bucket above its representative value (a histogram of one constant value, such as a fixed
-- timeout), min came out above max and every export after the stream's first failed with "min: greater than
-- max". Both are now clamped to [min, max], max to at least min.

create function metrics.max_point_count()
returns bigint
language sql immutable parallel safe
as $$
  select 1000000000::bigint
$$;
comment on function metrics.max_point_count() is
  'The largest count one stored point may carry (10^9): keeps every rollup''s bigint sums far from overflow '
  '(migration 20261206001700). Inlined (SQL, no SET clause).';
create function metrics.max_point_sum()
returns double precision
language sql immutable parallel safe
as $$
  select 1e290::double precision
$$;
comment on function metrics.max_point_sum() is
  'The largest absolute sum one stored point may carry (1e290): the rollups add sums as double precision, which '
  'raises an error past 1.8e308; at most 1e290 a point, that takes 1.8e18 points of one series (migration '
  '20261206001700). Inlined (SQL, no SET clause).';

-- as metrics.point_problem, which reads them (an inlined function needs the caller's EXECUTE right too)
revoke execute on function metrics.max_point_count(), metrics.max_point_sum() from public;
grant execute on function metrics.max_point_count(), metrics.max_point_sum() to authenticated, service_role;

create or replace function metrics.point_problem(p_point jsonb, p_cfg metrics.config, p_now timestamptz)
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
    when (p_point ->> 'count')::numeric > metrics.max_point_count()
      then metrics.problem('.count', 'greater than ' || metrics.max_point_count() || ', the most one point may count')
    when not metrics.is_finite_number(p_point -> 'sum') then metrics.problem('.sum', 'required finite number')
    when abs((p_point ->> 'sum')::numeric) > metrics.max_point_sum()::numeric  -- (as a double, 1e-400 fails)
      then metrics.problem('.sum', 'beyond ' || metrics.max_point_sum() || ' either way, the largest sum one point may carry')
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
  'Why one wire point is invalid (see metrics.problem), or null. The single definition of a valid point. '
  'A count is at most metrics.max_point_count() (migration 20261206001700).';

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
      or p.ts is null or p.count is null or p.count not between 1 and metrics.max_point_count()
      or not coalesce(abs(p.sum) <= metrics.max_point_sum(), false)  -- PostgreSQL's NaN is above infinity
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
comment on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config) is
  'The point rules every ingest path applies to its parsed rows (the JSON RPC, the COPY path, ingest_known): '
  'raises the invalid-batch error (metrics.reject_first_problem names the point) or returns. A count is at most '
  'metrics.max_point_count() (migration 20261206001700).';

create or replace function metrics.cumulative_to_delta(p_project_id uuid, p_points jsonb)
returns jsonb
language plpgsql volatile set search_path = ''
as $$
declare
  v_out jsonb;
  v_dup record;
begin
  -- one point per stream and batch; only counters and histograms are cumulative; buckets on histograms only
  select c.idx, c.stream, c.kind into v_dup
  from (
    select e.idx - 1 as idx, e.p -> 'cumulative' ->> 'stream' as stream, e.p ->> 'kind' as kind,
      e.p -> 'cumulative' as c,
      pg_catalog.row_number() over (partition by e.p -> 'cumulative' ->> 'stream' order by e.idx) as nth
    from pg_catalog.jsonb_array_elements(p_points) with ordinality as e (p, idx)
    where pg_catalog.jsonb_typeof(e.p) = 'object' and e.p ? 'cumulative'
  ) c
  where c.nth > 1 or c.kind is distinct from 'counter' and c.kind is distinct from 'histogram'
    or pg_catalog.jsonb_typeof(c.c) <> 'object' or (c.c - '{stream,start,buckets}'::text[]) <> '{}'::jsonb
    or pg_catalog.jsonb_typeof(c.c -> 'stream') is distinct from 'string'
    or pg_catalog.char_length(c.stream) not between 1 and 200
    or pg_catalog.jsonb_typeof(c.c -> 'start') is distinct from 'string'
    or (c.c ->> 'start') !~ '^[0-9]{1,40}$'
    or (c.c ? 'buckets' and (c.kind is distinct from 'histogram' or pg_catalog.jsonb_typeof(c.c -> 'buckets') <> 'object'))
  order by c.idx
  limit 1;
  if found then
    perform metrics.reject(pg_catalog.format('points[%s].cumulative', v_dup.idx),
      'an object {stream (1 to 200 characters), start (unix nanoseconds, decimal digits), buckets (histograms '
      'only, optional)}; one point per stream and batch; on counters and histograms only');
  end if;
  if not exists (select from pg_catalog.jsonb_array_elements(p_points) e (p) where e.p ? 'cumulative') then
    return p_points;
  end if;
  -- the conversion reads ts, count and sum: a cumulative point is checked by the validator before it
  if exists (
    select from pg_catalog.jsonb_array_elements(p_points) e (p)
    where e.p ? 'cumulative' and not (metrics.is_finite_number(e.p -> 'ts') and metrics.is_finite_number(e.p -> 'sum')
      and metrics.is_count(e.p -> 'count', 0))
  ) then
    perform metrics.reject_first_problem(
      (select pg_catalog.jsonb_agg(case when pg_catalog.jsonb_typeof(e.p) = 'object' then e.p - 'cumulative' else e.p end
         order by e.idx) from pg_catalog.jsonb_array_elements(p_points) with ordinality e (p, idx)),
      (select c from metrics.config c), now(), 'a cumulative point needs numbers ts, count and sum');
  end if;
  -- a histogram counting more than a point may is not passed on to metrics.ingest (below: its delta, if past
  -- the cap too, becomes the stream's baseline), so it is checked here as ingest would check it: the point with
  -- one observation standing in for its count and sketch, and its sketch against its own count
  select c.idx, c.problem into v_dup
  from (
    select e.idx - 1 as idx, coalesce(
        metrics.point_problem((e.p - 'cumulative') || '{"count": 1, "sketch": {"z": 1}}'::jsonb,
          (select c from metrics.config c), now()),
        metrics.problem('.sketch', metrics.sketch_problem(e.p -> 'sketch', (e.p ->> 'count')::numeric::bigint)))
        as problem
    from pg_catalog.jsonb_array_elements(p_points) with ordinality as e (p, idx)
    where e.p ? 'cumulative' and e.p ->> 'kind' = 'histogram'
      and (e.p ->> 'count')::numeric > metrics.max_point_count()
  ) as c
  where c.problem is not null
  order by c.idx
  limit 1;
  if found then
    perform metrics.reject(
      pg_catalog.format('points[%s]%s', v_dup.idx, pg_catalog.split_part(v_dup.problem, pg_catalog.chr(31), 1)),
      pg_catalog.split_part(v_dup.problem, pg_catalog.chr(31), 2));
  end if;

  -- lock the streams' state rows in key order (concurrent exports of one stream convert one after the other);
  -- a new stream first gets a row without state (start_ns ''), so that a concurrent first export of it waits too
  insert into metrics.ingest_streams as s (project_id, stream, start_ns, ts, count, sum)
  select p_project_id, e.p -> 'cumulative' ->> 'stream', '', '-infinity', 0, 0
  from pg_catalog.jsonb_array_elements(p_points) e (p)
  where e.p ? 'cumulative'
  order by 2
  on conflict (project_id, stream) do nothing;
  perform from metrics.ingest_streams s
  where s.project_id = p_project_id
    and s.stream in (select e.p -> 'cumulative' ->> 'stream' from pg_catalog.jsonb_array_elements(p_points) e (p))
  order by s.stream
  for update;

  begin
    with x as (
      select e.idx, e.p as point, e.p ->> 'kind' as kind, e.p -> 'cumulative' ->> 'stream' as stream,
        e.p -> 'cumulative' ->> 'start' as start_ns, (e.p -> 'cumulative' ->> 'start')::numeric as start,
        pg_catalog.to_timestamp((e.p ->> 'ts')::double precision) as ts,
        (e.p ->> 'count')::numeric::bigint as count, (e.p ->> 'sum')::double precision as sum,
        nullif(e.p -> 'sketch', 'null'::jsonb) as sketch,
        nullif(e.p -> 'cumulative' -> 'buckets', 'null'::jsonb) as buckets
      from pg_catalog.jsonb_array_elements(p_points) with ordinality as e (p, idx)
    ),
    xs as (
      -- start times compare as numbers: an older start is a late export of an earlier process life (stale)
      select x.*, s.stream as s_stream, s.ts as s_ts, s.count as s_count, s.sum as s_sum, s.sketch as s_sketch,
        s.buckets as s_buckets, nullif(s.start_ns, '')::numeric as s_start
      from x
      left join metrics.ingest_streams s on s.project_id = p_project_id and s.stream = x.stream
      where x.stream is not null
    ),
    c as (
      select xs.*, xs.s_start is not null and (xs.start < xs.s_start or (xs.start = xs.s_start and xs.ts <= xs.s_ts))
          as stale,
        r.reset, r.dcount, r.dsketch, case when r.reset then xs.sum else xs.sum - xs.s_sum end as dsum
      from xs
      cross join lateral (
        select case when xs.kind = 'histogram' and xs.s_start = xs.start then
          case when xs.buckets is not null then metrics.exp_buckets_delta(xs.buckets, xs.s_buckets)
               else metrics.sketch_subtract(xs.sketch, xs.s_sketch) end
        end as sub
      ) as sb
      cross join lateral (
        select xs.s_start is null or xs.start <> xs.s_start or xs.sum < xs.s_sum or xs.count < xs.s_count
          or (xs.kind = 'histogram' and sb.sub is null) as reset
      ) as r0
      cross join lateral (
        select r0.reset,
          case when r0.reset then xs.count else xs.count - xs.s_count end as dcount,
          case when r0.reset then xs.sketch else sb.sub end as dsketch
      ) as r
    ),
    state as (
      insert into metrics.ingest_streams as s (project_id, stream, start_ns, ts, count, sum, sketch, buckets, updated_at)
      select p_project_id, c.stream, c.start::text, c.ts, c.count, c.sum, c.sketch, c.buckets, now()
      from c where not c.stale
      order by c.stream
      on conflict (project_id, stream) do update set
        start_ns = excluded.start_ns, ts = excluded.ts, count = excluded.count, sum = excluded.sum,
        sketch = excluded.sketch, buckets = excluded.buckets, updated_at = excluded.updated_at
      returning 1
    ),
    out as (
      select x.idx, x.point from x where x.stream is null
      union all
      select c.idx, case when c.kind = 'counter' then
          (c.point - 'cumulative') || pg_catalog.jsonb_build_object('count', 1, 'sum', c.dsum)
        else
          (c.point - 'cumulative') || pg_catalog.jsonb_build_object(
            'count', c.dcount, 'sum', c.dsum, 'sketch', c.dsketch,
            -- the delta's extremes: its buckets' representative values, within the point's min and max; a
            -- representative value lies within 1 % of its bucket's values, not between them, so both are
            -- clamped to [min, max] and max to at least min (all of a delta in one bucket, above its value)
            'min', case when c.reset then c.point -> 'min'
                   else pg_catalog.to_jsonb(ex.lo_in) end,
            'max', case when c.reset then c.point -> 'max'
                   else pg_catalog.to_jsonb(greatest(ex.lo_in, least(ex.hi, (c.point ->> 'max')::double precision))) end)
        end
      from c cross join lateral (
        select e.hi, least(greatest(e.lo, (c.point ->> 'min')::double precision), (c.point ->> 'max')::double precision)
          as lo_in
        from metrics.sketch_extremes(c.dsketch) as e
      ) as ex
      -- a histogram's delta past the cap is a stream first seen (or reset) with a long life behind it: its
      -- state above is its baseline, as a rate's first sample is, rather than one minute of a lifetime's count
      where not c.stale and (c.kind = 'counter' or c.dcount between 1 and metrics.max_point_count())
    )
    -- (a data-modifying WITH runs to completion whether or not it is read)
    select coalesce(pg_catalog.jsonb_agg(o.point order by o.idx), '[]'::jsonb) into v_out from out o;
  exception when data_exception then
    -- a value no column takes (a string as a number, 1e400, ...): the detailed validator names it
    perform metrics.reject_first_problem(
      (select pg_catalog.jsonb_agg(case when pg_catalog.jsonb_typeof(e.p) = 'object' then e.p - 'cumulative' else e.p end
         order by e.idx) from pg_catalog.jsonb_array_elements(p_points) with ordinality e (p, idx)),
      (select c from metrics.config c), now(), sqlerrm);
  end;
  return v_out;
end
$$;
comment on function metrics.cumulative_to_delta(uuid, jsonb) is
  'Turns the cumulative points of a batch (points with "cumulative": {"stream", "start"[, "buckets"]}, count, sum '
  'and sketch since start) into deltas against metrics.ingest_streams and records the new state. Start times '
  'compare as numbers. Reset (the whole value is the delta) when the stream is new, its start is newer, or a '
  'count, sum or bucket went down; a point with an older start (an earlier process life) or of the same start '
  'and not later than the state (a late retry) is dropped, and so is a histogram without new values; a counter '
  'keeps a zero delta. Histograms subtract bucket by bucket: exponential ones (with buckets) in their own bucket '
  'space (metrics.exp_buckets_delta), the others in sketch space (metrics.sketch_subtract). The stream rows are '
  'created (without state) and locked in stream order first, so concurrent exports of a stream, its first ones '
  'too, convert one after the other. ts, count and sum of cumulative points are validated first, and a histogram '
  'counting more than metrics.max_point_count() is checked whole as ingest would check it. A histogram delta '
  'above that cap (a stream first seen, or reset, after a long life; or more than 10^9 observations between two '
  'exports) is not stored: the state is its baseline (migration 20261206001700). Internal to metrics.ingest_http.';
