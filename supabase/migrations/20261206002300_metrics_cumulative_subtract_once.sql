-- Issue #14 (found measuring the edge function's benchmark after design I): a cumulative histogram's
-- subtraction ran five times a point.
--
-- metrics.cumulative_to_delta computes each cumulative histogram's delta in a lateral subquery (sb: the
-- exponential buckets' difference or metrics.sketch_subtract) that three later expressions read (the reset
-- test, the delta sketch, and through them the output). The planner flattened the subquery into each use, so
-- the subtraction ran once per use: auto_explain counted 1,000 executions of sketch_subtract for 200 histogram
-- points. "offset 0" keeps the subquery whole (as metrics.publish_project does for its quantiles), and the
-- subtraction runs once a point. Nothing else changes.
--
-- Measured on an export of 800 cumulative points (600 counters, 200 histograms; the same stream states, six
-- exports in a row, steady state): cumulative_to_delta 87-97 ms -> 62-65 ms an export. The outputs of seven
-- exports in a row (resets by a smaller sum and by a newer start, histograms growing, negative values) are
-- identical before and after. python -m benchmarks.edge_ingest: see docs/ingest-http.md.

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
        offset 0  -- kept whole: flattened, sb.sub's three uses below each ran the subtraction again
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
  'exports) is not stored: the state is its baseline (migration 20261206001700). Each histogram''s subtraction runs '
  'once (migration 20261206002300). Internal to metrics.ingest_http.';
