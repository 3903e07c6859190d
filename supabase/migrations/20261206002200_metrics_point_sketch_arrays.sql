-- Issue #14 (design I): ingest_known takes and stores histogram sketches as integer arrays, not jsonb.
--
-- Where ingest_known's CPU went (backend CPU, each variant in its own clone of the migrated database, the same
-- 5,000-point batches of the default workload, every call rolled back): 14 us a point, of which parsing the
-- batch's sketches (jsonb[] -> jsonb_in, ~0.35 us a bucket) 4.0-4.7 and the per-bucket rule over jsonb_each_text
-- 4.2. A histogram's stores as integer arrays (integer[] keys and counts) are parsed by the element types'
-- own input functions and checked element-wise in C by ALL, and the pass unnests them without parsing or
-- casting text: the call costs half as much, the pass an eighth less (below).
--
-- * metrics.points gains the arrays (sketch_zeros, sketch_pos_keys/_counts, sketch_neg_keys/_counts). Counts are
--   integer: a bucket's count is at most its point's, at most metrics.max_point_count() (10^9 < 2^31); a
--   histogram row is 22 % smaller than with jsonb (default workload: 1,050 -> 816 bytes; bigint counts made it
--   6 % larger). A point carries its sketch in one form: jsonb (the JSON RPC, the COPY path, rows written
--   before this migration) or the arrays (ingest_known's new overload, or a COPY that fills them). Adding
--   nullable columns rewrites nothing.
-- * metrics.ingest_known gains an overload whose sketches are five arrays: the zeros and, per point, each
--   store's keys and counts as an array literal ('{3,4}'; null for points without a sketch). One flat array of
--   all keys sliced per point was measured too: a slice of a PL/pgSQL array argument copies the whole array
--   (12.2 us a point without any rule, against 5.8 for literals per point). The jsonb[] overload stays, for
--   producers of an earlier version.
-- * metrics.check_ingest_rows takes the arrays beside the rows (p_sketches, by position; null for the RPC):
--   one rule for a sketch, stated for each form. A key given twice in the arrays is one bucket (its counts add
--   up), as everywhere the arrays are read (the pass, metrics.sketch_from_arrays); a store holds at most 36,525
--   elements, as many as there are keys; an empty store is '{}' (null is refused). metrics.check_copied_points
--   passes the copied rows' arrays: a COPY may fill those columns too (the service role inserts into
--   metrics.points), and the pass reads them.
-- * metrics.rollup_points sums both forms' buckets in one aggregation, grouped by the minute's number (one
--   bigint from the minutes' CTE) and the key instead of (series, minute, key): 8.0 -> 7.1 us a point for
--   rollup_points over 100,000 default-workload points, rollups identical. (Both packed into one bigint were as
--   fast with 16 bits for the key, which a key out of range would spill into the next minute, and 60 % slower
--   with 32: the hash of a bigint XORs its halves, so (minute << 32) + key collides all over); a minute with a single jsonb sketch keeps it as before. Rollups
--   are identical whichever form the points came in (tests/db/test_point_sketch_arrays.py).
-- * metrics.point_sketch(points) is a point's sketch in the stored jsonb form, whichever form it has (tests,
--   debugging).
--
-- Measured (backend CPU as above, 7 interleaved rounds; each design in its own clone):
--   ingest_known, 5,000 points:         14.0 -> 6.9 us a point (prototype; 7.7 with the rules as shipped)
--   one pass over 40,000 such points:   17.3 -> 15.2 us a point; the rollups identical
-- python -m benchmarks.ingest --designs K0,K (K0: the jsonb overload, K: this one; the same run, each with its
-- COPY baseline; database CPU per point, all server processes, the pass included):
--   default (20 batches of 5,000)       28.7 -> 22.4 us a point    0.158 -> 0.181 x COPY
--   sustained (100 batches)             28.4 -> 20.8               0.199 -> 0.266 x COPY
--   realistic (20 sources x 300)        26.2 -> 16.7               0.246 -> 0.408 x COPY
--   reference fleet (6,000 points/s)    34.2 -> 28.1               live p95 0.83 -> 0.81 s

set local lock_timeout = '10s';  -- a busy project's ingest holds the points table; fail rather than queue behind it

alter table metrics.points
  add column sketch_zeros bigint,
  add column sketch_pos_keys integer[],
  add column sketch_pos_counts integer[],
  add column sketch_neg_keys integer[],
  add column sketch_neg_counts integer[];
comment on column metrics.points.sketch_zeros is
  'A histogram sketch as arrays (metrics.ingest_known''s form; migration 20261206002200): the zero bucket''s count. '
  'Null when the point has no sketch or has it as jsonb (metrics.points.sketch).';
comment on column metrics.points.sketch_pos_keys is
  'The positive store''s bucket keys, paired by position with sketch_pos_counts (a key given twice is one bucket).';
comment on column metrics.points.sketch_pos_counts is 'The positive store''s bucket counts (see sketch_pos_keys).';
comment on column metrics.points.sketch_neg_keys is
  'The negative store''s bucket keys, paired by position with sketch_neg_counts (a key given twice is one bucket).';
comment on column metrics.points.sketch_neg_counts is 'The negative store''s bucket counts (see sketch_neg_keys).';

create type metrics.sketch_arrays as (
  zeros bigint,
  pos_keys integer[],
  pos_counts integer[],
  neg_keys integer[],
  neg_counts integer[]
);
comment on type metrics.sketch_arrays is
  'A histogram sketch as arrays, as metrics.ingest_known takes and metrics.points stores it: the zero count and '
  'each store''s keys and counts paired by position. All null for a point without a sketch.';

create function metrics.sketch_from_arrays(
  p_zeros bigint, p_pos_keys integer[], p_pos_counts integer[], p_neg_keys integer[], p_neg_counts integer[]
)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select case when p_zeros is not null then pg_catalog.jsonb_build_object(
    'z', p_zeros,
    'p', coalesce((
      select pg_catalog.json_object_agg(b.k, b.c)::jsonb
      from (
        select t.k, sum(t.c) as c from rows from (pg_catalog.unnest(p_pos_keys), pg_catalog.unnest(p_pos_counts)) as t (k, c)
        where t.k is not null
        group by t.k
      ) as b), '{}'::jsonb),
    'n', coalesce((
      select pg_catalog.json_object_agg(b.k, b.c)::jsonb
      from (
        select t.k, sum(t.c) as c from rows from (pg_catalog.unnest(p_neg_keys), pg_catalog.unnest(p_neg_counts)) as t (k, c)
        where t.k is not null
        group by t.k
      ) as b), '{}'::jsonb)
  ) end
$$;
comment on function metrics.sketch_from_arrays(bigint, integer[], integer[], integer[], integer[]) is
  'A sketch given as arrays (metrics.sketch_arrays) in the stored jsonb form {"z", "p", "n"}; the counts of a key '
  'given twice add up; a null key is left out. Null when p_zeros is null (no sketch).';

create function metrics.point_sketch(p metrics.points)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(p.sketch, metrics.sketch_from_arrays(p.sketch_zeros, p.sketch_pos_keys, p.sketch_pos_counts,
    p.sketch_neg_keys, p.sketch_neg_counts))
$$;
comment on function metrics.point_sketch(metrics.points) is
  'A raw point''s sketch in the stored jsonb form, whether it was stored as jsonb (sketch) or as arrays '
  '(sketch_zeros ...); null for a point without one. For tests, recomputations and debugging.';

create function metrics.check_ingest_rows(
  p_rows metrics.ingest_row[], p_points jsonb, p_cfg metrics.config, p_sketches metrics.sketch_arrays[]
)
returns void
language plpgsql stable set search_path = ''
as $$
declare
  -- the detailed validator walks the points as sent; rows that came without JSON get it built on failure only
  v_points jsonb := p_points;
  v_idx integer;
  v_shape text;
begin
  if exists (
    -- p_sketches (ingest_known's, the COPY path's) pairs with p_rows by position; null for the JSON RPC
    select from rows from (pg_catalog.unnest(p_rows), pg_catalog.unnest(p_sketches)) p
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
      or (p.kind = 'histogram') <> (p.sketch is not null or p.zeros is not null)
      or pg_catalog.char_length(p.unit) > 64 or pg_catalog.char_length(p.help) > 1024
      or (p.kind = 'histogram' and p.sketch is not null and (
        pg_catalog.jsonb_typeof(p.sketch) <> 'object'
        or (p.sketch - '{z,p,n}'::text[]) <> '{}'::jsonb
        or coalesce(pg_catalog.jsonb_typeof(p.sketch -> 'p'), 'object') <> 'object'
        or coalesce(pg_catalog.jsonb_typeof(p.sketch -> 'n'), 'object') <> 'object'
        or (p.sketch ? 'z' and not metrics.is_count(p.sketch -> 'z', 0))))
  ) or exists (
    select from (select distinct p.name from pg_catalog.unnest(p_rows) p) n
    where not (n.name ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$') or n.name like '\_\_%' or pg_catalog.char_length(n.name) > 200
  ) then
    perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows, p_sketches)), p_cfg, now(), 'invalid point');
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
      where p.kind = 'histogram' and p.sketch is not null and (
        s.bad > 0
        or s.total + coalesce((p.sketch ->> 'z')::bigint, 0) <> p.count
        or pg_catalog.jsonb_path_exists(p.sketch, '$.*.* ? (@.type() != "number")')
      )
    ) then
      perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows, p_sketches)), p_cfg, now(), 'invalid histogram sketch');
    end if;
  exception when invalid_text_representation or numeric_value_out_of_range then
    perform metrics.reject_first_problem(coalesce(v_points, metrics.rows_as_points(p_rows, p_sketches)), p_cfg, now(), 'invalid histogram sketch');
  end;

  -- the same rule for sketches as arrays (ingest_known's), checked element-wise in C by ALL: keys in range,
  -- counts at least 1, the counts and zeros adding up to the point's count; a key given twice is one bucket, its
  -- counts added (as everywhere the arrays are read), so a store holds at most as many elements as there are
  -- keys (36,525). The first failing point is named here, in metrics.sketch_problem's words where the JSON has
  -- the same fault, since repeated keys could hide a bad count from a check of the merged sketch.
  select p.idx, case
      when p.zeros is null then 'sketch arrays without their zero count (sketch_zeros); only histograms carry a sketch'
      when p.sketch is not null then 'one sketch, as jsonb or as arrays, not both'
      when not coalesce(pg_catalog.cardinality(p.pos_keys) = pg_catalog.cardinality(p.pos_counts)
          and pg_catalog.cardinality(p.neg_keys) = pg_catalog.cardinality(p.neg_counts)
          and pg_catalog.cardinality(p.pos_keys) <= 36525 and pg_catalog.cardinality(p.neg_keys) <= 36525
          and coalesce(pg_catalog.array_ndims(p.pos_keys), 1) = 1 and coalesce(pg_catalog.array_ndims(p.neg_keys), 1) = 1
          and coalesce(pg_catalog.array_ndims(p.pos_counts), 1) = 1 and coalesce(pg_catalog.array_ndims(p.neg_counts), 1) = 1,
        false)
        then 'each store''s keys and counts must be one-dimensional arrays of equal length (at most 36525), without nulls'
      -- (array_position takes one-dimensional arrays only: a WHEN of its own, after the one above)
      when not coalesce(pg_catalog.array_position(p.pos_keys, null) is null and pg_catalog.array_position(p.neg_keys, null) is null
          and pg_catalog.array_position(p.pos_counts, null) is null and pg_catalog.array_position(p.neg_counts, null) is null,
        false)
        then 'each store''s keys and counts must be one-dimensional arrays of equal length (at most 36525), without nulls'
      when p.zeros < 0 then 'z: must be a non-negative integer'
      when not (-1036 <= all(p.pos_keys) and 35488 >= all(p.pos_keys) and -1036 <= all(p.neg_keys)
          and 35488 >= all(p.neg_keys) and 1 <= all(p.pos_counts) and 1 <= all(p.neg_counts))
        then 'bucket keys must be integers in [-1036, 35488] (no leading zeros) and counts positive integers'
      else 'bucket counts must add up to the point''s count'
    end
  into v_idx, v_shape
  from rows from (pg_catalog.unnest(p_rows), pg_catalog.unnest(p_sketches)) p
  where (p.zeros is null and (p.pos_keys is not null or p.pos_counts is not null or p.neg_keys is not null
      or p.neg_counts is not null))
    or (p.zeros is not null and p.sketch is not null)
    or (p.zeros is not null and not coalesce(
      pg_catalog.cardinality(p.pos_keys) = pg_catalog.cardinality(p.pos_counts)
      and pg_catalog.cardinality(p.neg_keys) = pg_catalog.cardinality(p.neg_counts)
      and pg_catalog.cardinality(p.pos_keys) <= 36525 and pg_catalog.cardinality(p.neg_keys) <= 36525
      and coalesce(pg_catalog.array_ndims(p.pos_keys), 1) = 1 and coalesce(pg_catalog.array_ndims(p.neg_keys), 1) = 1
      and coalesce(pg_catalog.array_ndims(p.pos_counts), 1) = 1 and coalesce(pg_catalog.array_ndims(p.neg_counts), 1) = 1
      and p.zeros between 0 and p.count
      and -1036 <= all(p.pos_keys) and 35488 >= all(p.pos_keys) and -1036 <= all(p.neg_keys) and 35488 >= all(p.neg_keys)
      and 1 <= all(p.pos_counts) and 1 <= all(p.neg_counts)
      -- integer counts sum as bigint (36,525 of them cannot overflow it); the total as numeric
      and (select coalesce(sum(c), 0) from pg_catalog.unnest(p.pos_counts) as c)::numeric
        + (select coalesce(sum(c), 0) from pg_catalog.unnest(p.neg_counts) as c) + p.zeros = p.count,
      false))
  order by p.idx
  limit 1;
  if found then
    perform metrics.reject(pg_catalog.format('points[%s].sketch', v_idx), v_shape);
  end if;
end
$$;

comment on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config, metrics.sketch_arrays[]) is
  'The point rules every ingest path applies to its parsed rows (the JSON RPC, the COPY path, ingest_known): '
  'raises the invalid-batch error (metrics.reject_first_problem names the point) or returns. p_sketches holds '
  'the rows'' sketches as arrays, by position, where a row''s sketch came as arrays (ingest_known, or a COPY that '
  'filled the array columns: check_copied_points); a sketch''s '
  'rule is checked in whichever form it has (migration 20261206002200).';

create or replace function metrics.check_ingest_rows(p_rows metrics.ingest_row[], p_points jsonb, p_cfg metrics.config)
returns void
language sql stable set search_path = ''
as $$
  select metrics.check_ingest_rows(p_rows, p_points, p_cfg, null::metrics.sketch_arrays[])
$$;
comment on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config) is
  'metrics.check_ingest_rows with no sketch as arrays (the JSON RPC): the rules live in the '
  'four-argument function (migration 20261206002200).';

create function metrics.rows_as_points(p_rows metrics.ingest_row[], p_sketches metrics.sketch_arrays[])
returns jsonb
language sql stable set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'name', p.name, 'kind', p.kind, 'labels', p.labels, 'ts', extract(epoch from p.ts), 'count', p.count,
      'sum', p.sum, 'min', p.min, 'max', p.max, 'last', p.last,
      'sketch', coalesce(p.sketch, metrics.sketch_from_arrays(p.zeros, p.pos_keys, p.pos_counts, p.neg_keys, p.neg_counts)),
      'unit', p.unit, 'help', p.help
    )) order by p.idx), '[]'::jsonb)
  from rows from (pg_catalog.unnest(p_rows), pg_catalog.unnest(p_sketches)) p
$$;
comment on function metrics.rows_as_points(metrics.ingest_row[], metrics.sketch_arrays[]) is
  'Parsed rows back in the wire format, sketches given as arrays included, for the detailed validator''s error '
  'message (metrics.check_ingest_rows).';

create or replace function metrics.rows_as_points(p_rows metrics.ingest_row[])
returns jsonb
language sql stable set search_path = ''
as $$
  select metrics.rows_as_points(p_rows, null::metrics.sketch_arrays[])
$$;
comment on function metrics.rows_as_points(metrics.ingest_row[]) is
  'Parsed rows back in the wire format (metrics.rows_as_points with no sketch as arrays).';

create function metrics.ingest_known(
  p_project_id uuid, p_source text, p_batch_id text, p_series_ids bigint[], p_ts double precision[],
  p_count bigint[], p_sum double precision[], p_min double precision[], p_max double precision[],
  p_last double precision[], p_zeros bigint[], p_pos_keys text[], p_pos_counts text[], p_neg_keys text[],
  p_neg_counts text[]
)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_points integer := coalesce(pg_catalog.cardinality(p_series_ids), 0);
  v_rows metrics.ingest_row[];
  v_sketches metrics.sketch_arrays[];
  v_store record;
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
    or coalesce(pg_catalog.cardinality(p_zeros), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_pos_keys), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_pos_counts), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_neg_keys), 0) <> v_points
    or coalesce(pg_catalog.cardinality(p_neg_counts), 0) <> v_points then
    perform metrics.reject('batch.points', pg_catalog.format(
      'every array must hold one value per point (%s series ids)', v_points));
  end if;

  -- the rows as ingest parses them, with each series' name, kind and labels from the catalogue, and beside them
  -- each histogram's sketch as arrays (each point's stores as array literals: parsed by the types' own input
  -- functions, far cheaper than jsonb's)
  begin
    select pg_catalog.array_agg(row(
        u.i - 1, s.name, f.kind, s.labels,
        -- a time only for a finite number (NaN has none); one past PostgreSQL's range fails the time window
        case when abs(u.ts) < 'infinity' then pg_catalog.to_timestamp(least(greatest(u.ts, -1e11), 1e11)) end,
        u.count, u.sum, u.min, u.max, u.last, null, null, null,
        true,  -- typed arrays: check_ingest_rows checks the time, counts and numbers
        u.series_id
      )::metrics.ingest_row order by u.i),
      pg_catalog.array_agg(row(
        u.zeros, u.pos_keys::integer[], u.pos_counts::integer[], u.neg_keys::integer[], u.neg_counts::integer[]
      )::metrics.sketch_arrays order by u.i),
      min(u.i) filter (where s.id is null),
      (pg_catalog.array_agg(u.series_id order by u.i) filter (where s.id is null))[1]
    into v_rows, v_sketches, v_stray, v_stray_id
    from rows from (
      pg_catalog.unnest(p_series_ids), pg_catalog.unnest(p_ts), pg_catalog.unnest(p_count), pg_catalog.unnest(p_sum),
      pg_catalog.unnest(p_min), pg_catalog.unnest(p_max), pg_catalog.unnest(p_last), pg_catalog.unnest(p_zeros),
      pg_catalog.unnest(p_pos_keys), pg_catalog.unnest(p_pos_counts), pg_catalog.unnest(p_neg_keys),
      pg_catalog.unnest(p_neg_counts)
    ) with ordinality as u (series_id, ts, count, sum, min, max, last, zeros, pos_keys, pos_counts, neg_keys, neg_counts, i)
    left join metrics.series s on s.id = u.series_id and s.project_id = p_project_id
    left join metrics.families f on f.project_id = s.project_id and f.name = s.name;
  exception when invalid_text_representation or numeric_value_out_of_range or program_limit_exceeded
      or array_subscript_error then
    -- the first point whose stores do not parse, found point by point (only on this failure)
    for v_store in
      select u.i, u.pos_keys, u.pos_counts, u.neg_keys, u.neg_counts
      from rows from (pg_catalog.unnest(p_pos_keys), pg_catalog.unnest(p_pos_counts), pg_catalog.unnest(p_neg_keys),
        pg_catalog.unnest(p_neg_counts)) with ordinality as u (pos_keys, pos_counts, neg_keys, neg_counts, i)
      order by u.i
    loop
      begin
        perform v_store.pos_keys::integer[], v_store.pos_counts::integer[], v_store.neg_keys::integer[],
          v_store.neg_counts::integer[];
      exception when invalid_text_representation or numeric_value_out_of_range or program_limit_exceeded
          or array_subscript_error then
        perform metrics.reject(pg_catalog.format('points[%s].sketch', v_store.i - 1),
          'each store''s keys and counts must be array literals of integers');
      end;
    end loop;
    raise;
  end;
  if v_stray is not null then
    perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray - 1),
      pg_catalog.format('%s is not a series of project %s', coalesce(v_stray_id::text, 'null'), p_project_id));
  end if;

  perform metrics.check_ingest_rows(v_rows, null, v_cfg, v_sketches);

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
  insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last,
    sketch_zeros, sketch_pos_keys, sketch_pos_counts, sketch_neg_keys, sketch_neg_counts)
  select p_project_id, p.series_id, p.ts, p_source, p_batch_id, p.count, p.sum, p.min, p.max, p.last,
    p.zeros, p.pos_keys, p.pos_counts, p.neg_keys, p.neg_counts
  from rows from (pg_catalog.unnest(v_rows), pg_catalog.unnest(v_sketches)) p;
  return pg_catalog.jsonb_build_object('status', 'accepted', 'points', v_points, 'series_created', 0, 'overflowed', 0);
end
$$;

comment on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], bigint[], text[], text[], text[], text[]) is
  'Stores a batch of points of existing series of the project, given as arrays with one value per point (series '
  'ids, epoch seconds, count, sum, min, max, last, and each histogram''s sketch: its zero count and each store''s '
  'keys and counts as an array literal such as ''{3,4}'', null for points without a sketch): the envelope, '
  'tenancy and ledger of metrics.open_batch (a resent batch is a duplicate) and the rules of '
  'metrics.check_ingest_rows, with metrics.ingest''s errors (22023, points[i] in array order). Sketches are '
  'stored as arrays (metrics.points.sketch_zeros ...). The producer''s fast path once it knows its series'' ids '
  '(migration 20261206002200).';

create or replace function metrics.rollup_points(p_from xid8, p_to xid8)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC' set work_mem = '64MB'
as $$
declare
  v_points bigint;
  v_minutes bigint;
  -- minutes before it are folded into the totals: this range's points of such minutes (late ones) join them
  -- here; the later, open minutes stay in rollup_1m until metrics.fold_totals()
  v_folded timestamptz := (select s.totals_folded_before from metrics.rollup_pass_state s);
begin
  with new_points as materialized (
    select p.project_id, p.series_id, p.ts, p.count, p.sum, p.min, p.max, p.last, p.sketch,
      p.sketch_zeros, p.sketch_pos_keys, p.sketch_pos_counts, p.sketch_neg_keys, p.sketch_neg_counts
    from metrics.points p
    where p.xid >= p_from and p.xid < p_to
  ),
  minutes as materialized (
    select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) as bucket, sum(n.count) as count,
      sum(n.sum) as sum, min(n.min) as min, max(n.max) as max,
      -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
      (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2] as last,
      max(n.ts) filter (where n.last is not null) as last_ts,
      sum(coalesce((n.sketch ->> 'z')::bigint, n.sketch_zeros))::bigint as zeros,
      count(n.sketch) + count(n.sketch_zeros) as sketches,
      count(n.sketch_zeros) as array_sketches,
      (pg_catalog.array_agg(n.sketch) filter (where n.sketch is not null))[1] as first_sketch,
      count(*) as points,
      pg_catalog.row_number() over () as minute_no  -- the cells' key below
    from new_points n
    group by 1, 2, 3
  ),
  sketch_points as materialized (
    -- the sketches to sum: every one of a minute with more than one or with one as arrays (a minute with a
    -- single jsonb sketch keeps it as it is)
    select m.minute_no, n.sketch, n.sketch_pos_keys, n.sketch_pos_counts, n.sketch_neg_keys,
      n.sketch_neg_counts
    from new_points n
    join minutes m on m.series_id = n.series_id and m.bucket = pg_catalog.date_trunc('minute', n.ts)
    where (n.sketch is not null or n.sketch_zeros is not null) and (m.sketches > 1 or m.array_sketches > 0)
  ),
  -- every bucket of those sketches summed once per series, minute and key, one object per store: one
  -- aggregation level each, whichever form a point's sketch has, grouped by the minute's number and the key (a
  -- tenth cheaper than by series, minute and key; not packed into one bigint, whose hash folds its two halves
  -- together: (minute << 32) + key collided so often that rollup_points took 60 % longer), the object written as json text and cast to jsonb once (cheaper than jsonb_object_agg's
  -- pair-by-pair jsonb; keys are unique within a group, so the cast keeps every one)
  positive_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        select s.minute_no, b.k::integer, b.c::bigint
        from sketch_points s cross join lateral pg_catalog.jsonb_each_text(s.sketch -> 'p') as b (k, c)
        union all
        select s.minute_no, b.k, b.c
        from sketch_points s
        cross join lateral rows from (pg_catalog.unnest(s.sketch_pos_keys), pg_catalog.unnest(s.sketch_pos_counts)) as b (k, c)
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  negative_cells as (
    select c.minute_no, pg_catalog.json_object_agg(c.k, c.cnt)::jsonb as cells
    from (
      select t.minute_no, t.k, sum(t.c) as cnt
      from (
        select s.minute_no, b.k::integer, b.c::bigint
        from sketch_points s cross join lateral pg_catalog.jsonb_each_text(s.sketch -> 'n') as b (k, c)
        union all
        select s.minute_no, b.k, b.c
        from sketch_points s
        cross join lateral rows from (pg_catalog.unnest(s.sketch_neg_keys), pg_catalog.unnest(s.sketch_neg_counts)) as b (k, c)
      ) as t (minute_no, k, c)
      group by t.minute_no, t.k
    ) as c
    group by c.minute_no
  ),
  minute_rows as materialized (
    select m.project_id, m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.points,
      case
        when m.sketches = 1 and m.array_sketches = 0 then metrics.sketch_from_cells(m.zeros, m.first_sketch)
        when m.sketches >= 1 then metrics.sketch_from_cells(m.zeros, pg_catalog.jsonb_build_object(
          'p', coalesce(pc.cells, '{}'::jsonb), 'n', coalesce(nc.cells, '{}'::jsonb)))
      end as sketch
    from minutes m
    left join positive_cells pc on pc.minute_no = m.minute_no
    left join negative_cells nc on nc.minute_no = m.minute_no
  ),
  rolled as (
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
    returning 1
  ),
  totals as (
    insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
    select m.series_id, m.project_id, sum(m.count), sum(m.sum),
      (max(array[extract(epoch from m.last_ts)::double precision, m.last]) filter (where m.last_ts is not null))[2],
      max(m.last_ts),
      metrics.sketch_union(m.sketch)
    from minute_rows m
    where m.bucket < v_folded
    group by m.series_id, m.project_id
    order by m.series_id
    on conflict (series_id) do update set
      count = t.count + excluded.count,
      sum = t.sum + excluded.sum,
      last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
      last_ts = greatest(t.last_ts, excluded.last_ts),
      sketch = case when excluded.sketch is null then t.sketch else metrics.sketch_merge(t.sketch, excluded.sketch) end,
      updated_at = now()
    returning 1
  ),
  queued as (
    -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
    -- (matters for metrics.rollup_now(), whose transaction may stay open after this statement)
    insert into metrics.publish_queue as q (project_id, series_id, bucket)
    select m.project_id, m.series_id, m.bucket from minute_rows m
    order by 2, 3
    on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket
    returning 1
  ),
  late_hours as (
    insert into metrics.late_hours (series_id, hour)
    select distinct m.series_id, pg_catalog.date_trunc('hour', m.bucket)
    from minute_rows m
    where m.bucket < (select ms.hour_watermark from metrics.maintenance_state ms)
    on conflict do nothing
    returning 1
  ),
  late_five_minutes as (
    insert into metrics.late_five_minutes (series_id, bucket)
    select distinct m.series_id, metrics.five_minute_window(m.bucket)
    from minute_rows m
    where m.bucket < (select ms.five_minute_watermark from metrics.maintenance_state ms)
    order by 1, 2
    on conflict do nothing
    returning 1
  )
  -- (data-modifying CTEs run to completion whether or not the outer query reads them)
  select coalesce(sum(m.points), 0), count(*) into v_points, v_minutes from minute_rows m;
  return pg_catalog.jsonb_build_object('points', v_points, 'minutes', v_minutes);
end
$$;

comment on function metrics.rollup_points(xid8, xid8) is
  'Merges the raw points of the transactions p_from <= xid < p_to into the minute rollups, the totals (only '
  'the points of minutes already folded: metrics.fold_totals), the publish queue and the late hour / '
  '5-minute marks, set-based: sketch buckets summed once per series, minute, store and key, from sketches '
  'stored as jsonb or as arrays (migration 20261206002200). The caller guarantees that no range is merged '
  'twice (metrics.rollup_pass, metrics.rollup_now).';

create or replace function metrics.check_copied_points()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_setting text := pg_catalog.current_setting('metrics.copy_batch', true);
  v_batch jsonb;
  v_rows metrics.ingest_row[];
  v_sketches metrics.sketch_arrays[];
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
    -- a copied row's arrays, which the COPY may fill as well: checked by the same rules
    pg_catalog.array_agg(row(c.sketch_zeros, c.sketch_pos_keys, c.sketch_pos_counts, c.sketch_neg_keys,
      c.sketch_neg_counts)::metrics.sketch_arrays order by c.idx),
    count(*),
    -- the first row of another batch, or of no series of the batch's project
    (pg_catalog.array_agg(pg_catalog.jsonb_build_object('idx', c.idx, 'series_id', c.series_id,
       'project_id', c.project_id, 'of_batch', c.of_batch) order by c.idx)
     filter (where not c.of_batch or s.id is null))[1]
  into v_rows, v_sketches, v_count, v_stray
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

  perform metrics.check_ingest_rows(v_rows, null, v_cfg, v_sketches);
  perform pg_catalog.set_config('metrics.copy_batch', 'checked', true);
  return v_count;
end
$$;

comment on function metrics.check_copied_points() is
  'Validates the rows this transaction copied into metrics.points after metrics.begin_copy_batch: all of the '
  'begun batch, as many as it declared, of series of its project, and obeying metrics.check_ingest_rows (the '
  'rules of metrics.ingest), a sketch copied as arrays (sketch_zeros ...) included (migration 20261206002200). '
  'Raises 22023 with ingest''s error (points[i] in storage order) so that nothing is stored; returns the rows '
  'checked.';

-- PostgreSQL grants EXECUTE to PUBLIC on every new function: only the grants below stand
revoke execute on function metrics.sketch_from_arrays(bigint, integer[], integer[], integer[], integer[]) from public;
revoke execute on function metrics.point_sketch(metrics.points) from public;
revoke execute on function metrics.check_ingest_rows(metrics.ingest_row[], jsonb, metrics.config, metrics.sketch_arrays[]) from public;
revoke execute on function metrics.rows_as_points(metrics.ingest_row[], metrics.sketch_arrays[]) from public;
revoke execute on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], bigint[], text[], text[], text[], text[]) from public;
grant execute on function metrics.sketch_from_arrays(bigint, integer[], integer[], integer[], integer[]) to authenticated, service_role;
grant execute on function metrics.point_sketch(metrics.points) to service_role;
grant execute on function metrics.ingest_known(uuid, text, text, bigint[], double precision[], bigint[], double precision[], double precision[], double precision[], double precision[], bigint[], text[], text[], text[], text[]) to service_role;
