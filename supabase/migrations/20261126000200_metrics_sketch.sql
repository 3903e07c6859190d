-- Mergeable percentile sketch (DDSketch-style logarithmic buckets, 1 % relative accuracy).
--
-- Wire and storage form (jsonb): {"z": zero_count, "p": {"<key>": count}, "n": {"<key>": count}}
-- "p" holds positive values, "n" the magnitudes of negative values, "z" values with |v| < 1e-9.
-- key(v) = ceil(ln(v) * 49.998333288886556), the multiplier being 1 / log1p(2a / (1 - a)) for a = 0.01:
-- the literal is Python's repr of that double, so SQL and meshhook_rt_metrics.client.sketch agree bit for bit.

create function metrics.sketch_key(p_value double precision)
returns integer
language sql immutable strict parallel safe set search_path = ''
as $$
  select pg_catalog.ceil(pg_catalog.ln(p_value) * 49.998333288886556::double precision)::integer
$$;
comment on function metrics.sketch_key(double precision) is
  'Bucket key of a positive value: ceil(ln(v) / ln(gamma)), gamma = 1.0202..., same as the Python client.';

create function metrics.sketch_value(p_key integer)
returns double precision
language sql immutable strict parallel safe set search_path = ''
as $$
  -- ln(2 / (1 + gamma)) is added in the exponent (not multiplied after it) so the top bucket stays finite
  select pg_catalog.exp(p_key / 49.998333288886556::double precision + -0.010050335853501338::double precision)
$$;
comment on function metrics.sketch_value(integer) is
  'Representative value of a bucket, within 1 % of every value that maps to it.';

create function metrics.sketch_store_merge(p_a jsonb, p_b jsonb)
returns jsonb
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_added jsonb;
begin
  if p_a is null or p_a = '{}'::jsonb then
    return coalesce(p_b, '{}'::jsonb);
  end if;
  if p_b is null or p_b = '{}'::jsonb then
    return p_a;
  end if;
  -- one pass over the (usually smaller) second store; || then overwrites the shared keys with their sums
  select pg_catalog.jsonb_object_agg(b.key, (b.value #>> '{}')::bigint + coalesce((p_a ->> b.key)::bigint, 0))
  into v_added
  from pg_catalog.jsonb_each(p_b) as b;
  return p_a || v_added;
end
$$;
comment on function metrics.sketch_store_merge(jsonb, jsonb) is
  'Adds two bucket stores key by key in one pass over the second (PL/pgSQL: cached plans; no per-key copies).';

create function metrics.sketch_merge(p_a jsonb, p_b jsonb)
returns jsonb
language plpgsql immutable parallel safe set search_path = ''
as $$
begin
  if p_a is null then
    return p_b;
  end if;
  if p_b is null then
    return p_a;
  end if;
  return pg_catalog.jsonb_build_object(
    'z', coalesce((p_a ->> 'z')::bigint, 0) + coalesce((p_b ->> 'z')::bigint, 0),
    'p', metrics.sketch_store_merge(p_a -> 'p', p_b -> 'p'),
    'n', metrics.sketch_store_merge(p_a -> 'n', p_b -> 'n')
  );
end
$$;
comment on function metrics.sketch_merge(jsonb, jsonb) is
  'Exact merge of two sketches (bucket counts add); null is the empty sketch.';

create function metrics.later_last(
  p_last double precision, p_last_ts timestamptz, p_next double precision, p_next_ts timestamptz
)
returns double precision
language sql immutable parallel safe set search_path = ''
as $$
  -- the value of the later timestamp; ties go to the larger value, so the merge order never matters
  select case
    when p_next_ts is null then p_last
    when p_last_ts is null or (p_next_ts, p_next) > (p_last_ts, p_last) then p_next
    else p_last
  end
$$;
comment on function metrics.later_last(double precision, timestamptz, double precision, timestamptz) is
  'Merge rule of a "last" value: the one with the later timestamp, ties to the larger (order-independent).';

create function metrics.sketch_accumulate(p_state jsonb, p_next jsonb)
returns jsonb
language sql immutable strict parallel safe set search_path = ''
as $$
  select metrics.sketch_merge(p_state, p_next)
$$;
comment on function metrics.sketch_accumulate(jsonb, jsonb) is
  'Transition function of metrics.sketch_union. Strict, so a group''s first sketch becomes the state without '
  'a call and nulls are skipped: merging only happens where there is something to merge.';

create aggregate metrics.sketch_union(jsonb) (
  sfunc = metrics.sketch_accumulate,
  stype = jsonb,
  parallel = safe
);
comment on aggregate metrics.sketch_union(jsonb) is 'Merges the sketches of a group (across workers, minutes, series).';

create function metrics.sketch_from_values(p_values double precision[])
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'z', (select count(*) from pg_catalog.unnest(p_values) as t (v) where abs(v) < 1e-9),
    'p', (
      select coalesce(pg_catalog.jsonb_object_agg(k, c), '{}'::jsonb)
      from (
        select metrics.sketch_key(v) as k, count(*) as c
        from pg_catalog.unnest(p_values) as t (v) where v >= 1e-9 group by 1
      ) as s
    ),
    'n', (
      select coalesce(pg_catalog.jsonb_object_agg(k, c), '{}'::jsonb)
      from (
        select metrics.sketch_key(-v) as k, count(*) as c
        from pg_catalog.unnest(p_values) as t (v) where v <= -1e-9 group by 1
      ) as s
    )
  )
$$;
comment on function metrics.sketch_from_values(double precision[]) is
  'Builds a sketch from raw values (for SQL producers and tests).';

create function metrics.sketch_count(p_sketch jsonb)
returns bigint
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce((p_sketch ->> 'z')::bigint, 0)
    + coalesce((select sum(v::bigint) from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'p', '{}'::jsonb)) as t (k, v)), 0)
    + coalesce((select sum(v::bigint) from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'n', '{}'::jsonb)) as t (k, v)), 0)
$$;
comment on function metrics.sketch_count(jsonb) is 'Number of values summarised by a sketch.';

create function metrics.sketch_quantiles(
  p_sketch jsonb, p_qs double precision[], p_min double precision default null, p_max double precision default null
)
returns double precision[]
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_values double precision[];
  v_counts bigint[];
  v_total bigint;
  v_result double precision[] := '{}'::double precision[];
  v_q double precision;
  v_cum bigint;
  v_found double precision;
begin
  -- buckets in value order: negative store from its largest key (most negative values), zeros, positive store
  select pg_catalog.array_agg(b.val order by b.grp, b.ord), pg_catalog.array_agg(b.cnt order by b.grp, b.ord), sum(b.cnt)
  into v_values, v_counts, v_total
  from (
    select 0 as grp, -(t.k::integer) as ord, -metrics.sketch_value(t.k::integer) as val, t.c::bigint as cnt
    from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'n', '{}'::jsonb)) as t (k, c)
    union all
    select 1, 0, 0, (p_sketch ->> 'z')::bigint where coalesce((p_sketch ->> 'z')::bigint, 0) > 0
    union all
    select 2, t.k::integer, metrics.sketch_value(t.k::integer), t.c::bigint
    from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'p', '{}'::jsonb)) as t (k, c)
  ) as b;
  foreach v_q in array p_qs loop
    v_found := null;
    if v_total > 0 and v_q between 0 and 1 then
      v_cum := 0;
      for i in 1 .. pg_catalog.cardinality(v_values) loop
        v_cum := v_cum + v_counts[i];
        if v_cum > v_q * (v_total - 1) then
          v_found := greatest(coalesce(p_min, '-infinity'), least(coalesce(p_max, 'infinity'), v_values[i]));
          exit;
        end if;
      end loop;
    end if;
    v_result := v_result || v_found;
  end loop;
  return v_result;
end
$$;
comment on function metrics.sketch_quantiles(jsonb, double precision[], double precision, double precision) is
  'Quantiles q in [0, 1] of a sketch in one pass (rank q*(n-1), as DDSketch), clamped into [min, max] when '
  'given; an element is null for an empty sketch or a q outside [0, 1].';

create function metrics.sketch_quantile(
  p_sketch jsonb, p_q double precision, p_min double precision default null, p_max double precision default null
)
returns double precision
language sql immutable parallel safe set search_path = ''
as $$
  select (metrics.sketch_quantiles(p_sketch, array[p_q], p_min, p_max))[1]
$$;
comment on function metrics.sketch_quantile(jsonb, double precision, double precision, double precision) is
  'One quantile of a sketch (see metrics.sketch_quantiles).';

grant execute on function
  metrics.sketch_key(double precision), metrics.sketch_value(integer),
  metrics.sketch_store_merge(jsonb, jsonb), metrics.sketch_merge(jsonb, jsonb), metrics.sketch_accumulate(jsonb, jsonb),
  metrics.sketch_union(jsonb),
  metrics.later_last(double precision, timestamptz, double precision, timestamptz),
  metrics.sketch_from_values(double precision[]), metrics.sketch_count(jsonb),
  metrics.sketch_quantile(jsonb, double precision, double precision, double precision),
  metrics.sketch_quantiles(jsonb, double precision[], double precision, double precision)
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
