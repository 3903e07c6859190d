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
  select pg_catalog.exp(p_key / 49.998333288886556::double precision) * (2.0 / (1.0 + 1.02020202020202))::double precision
$$;
comment on function metrics.sketch_value(integer) is
  'Representative value of a bucket, within 1 % of every value that maps to it.';

create function metrics.sketch_store_merge(p_a jsonb, p_b jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_object_agg(s.k, s.c), '{}'::jsonb)
  from (
    select u.k, sum(u.c::bigint) as c
    from (
      select * from pg_catalog.jsonb_each_text(coalesce(p_a, '{}'::jsonb))
      union all
      select * from pg_catalog.jsonb_each_text(coalesce(p_b, '{}'::jsonb))
    ) as u (k, c)
    group by u.k
  ) as s
$$;
comment on function metrics.sketch_store_merge(jsonb, jsonb) is 'Adds two bucket stores key by key.';

create function metrics.sketch_merge(p_a jsonb, p_b jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_a is null then p_b
    when p_b is null then p_a
    else pg_catalog.jsonb_build_object(
      'z', coalesce((p_a ->> 'z')::bigint, 0) + coalesce((p_b ->> 'z')::bigint, 0),
      'p', metrics.sketch_store_merge(p_a -> 'p', p_b -> 'p'),
      'n', metrics.sketch_store_merge(p_a -> 'n', p_b -> 'n')
    )
  end
$$;
comment on function metrics.sketch_merge(jsonb, jsonb) is
  'Exact merge of two sketches (bucket counts add); null is the empty sketch.';

create aggregate metrics.sketch_union(jsonb) (
  sfunc = metrics.sketch_merge,
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

create function metrics.sketch_quantile(
  p_sketch jsonb, p_q double precision, p_min double precision default null, p_max double precision default null
)
returns double precision
language sql immutable parallel safe set search_path = ''
as $$
  with buckets as (
    select 0 as grp, -(t.k::integer) as ord, -1 as sign, t.k::integer as key, t.c::bigint as cnt
    from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'n', '{}'::jsonb)) as t (k, c)
    union all
    select 1, 0, 0, 0, (p_sketch ->> 'z')::bigint where coalesce((p_sketch ->> 'z')::bigint, 0) > 0
    union all
    select 2, t.k::integer, 1, t.k::integer, t.c::bigint
    from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'p', '{}'::jsonb)) as t (k, c)
  ),
  ranked as (
    select sign, key, sum(cnt) over (order by grp, ord rows unbounded preceding) as cum, sum(cnt) over () as n
    from buckets
  )
  select greatest(
    coalesce(p_min, '-infinity'::double precision),
    least(coalesce(p_max, 'infinity'::double precision), case sign
      when -1 then -metrics.sketch_value(key)
      when 0 then 0::double precision
      else metrics.sketch_value(key)
    end)
  )
  from ranked
  where p_q between 0 and 1 and cum > p_q * (n - 1)
  order by cum
  limit 1
$$;
comment on function metrics.sketch_quantile(jsonb, double precision, double precision, double precision) is
  'Quantile q in [0, 1] of a sketch (rank q*(n-1), as DDSketch), clamped into [min, max] when given; '
  'null for an empty sketch or q outside [0, 1].';

grant execute on function
  metrics.sketch_key(double precision), metrics.sketch_value(integer),
  metrics.sketch_store_merge(jsonb, jsonb), metrics.sketch_merge(jsonb, jsonb), metrics.sketch_union(jsonb),
  metrics.sketch_from_values(double precision[]), metrics.sketch_count(jsonb),
  metrics.sketch_quantile(jsonb, double precision, double precision, double precision)
  to authenticated, service_role;
