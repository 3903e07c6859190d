-- Issue #14: the point rules sum each histogram's bucket counts without copying them first.
--
-- metrics.check_ingest_rows checks that a sketch's bucket counts add up to its point's count, for every
-- histogram point of every batch (ingest_known's arrays and the COPY path's). Each sum was a subquery over
-- unnest(counts) in FROM: a Function Scan, which copies the array's elements into a tuplestore before summing
-- them, once per row and store. The same unnest in a subquery's select list runs as a ProjectSet, which streams.
-- The same rule, the same result: a null or empty array sums to nothing either way (coalesce makes it 0).
-- Measured with ingest_known (backend CPU, the same batches in two databases cloned from one, 6 interleaved
-- rounds each, every call rolled back; /tmp harness over benchmarks.ingest): 300-point batches of the
-- reference fleet's shape 23.9 / 20.6 -> 21.4 / 16.4 us a point in two runs; 5,000-point batches of the default
-- workload 18.4 -> 17.8.

create or replace function metrics.check_ingest_rows(
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
      -- integer counts sum as bigint (36,525 of them cannot overflow it); the total as numeric. Each sum unnests
      -- in a select list (a ProjectSet, streamed), not in FROM (a Function Scan, which copies the array's
      -- elements into a tuplestore first, for every row)
      and (select coalesce(sum(u.c), 0) from (select pg_catalog.unnest(p.pos_counts) as c) as u)::numeric
        + (select coalesce(sum(u.c), 0) from (select pg_catalog.unnest(p.neg_counts) as c) as u) + p.zeros = p.count,
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
  'rule is checked in whichever form it has (migration 20261206002200); bucket counts summed in a select list '
  '(migration 20261207000200).';
