-- Issue #14: one sketch merge costs less. metrics.sketch_store_merge (every stored-sketch merge: the rollup
-- pass's minute upsert, the totals, sketch_union in queries and rollups) built the second store's sums with
-- jsonb_object_agg, a jsonb value assembled pair by pair. json_object_agg writes the same pairs as text,
-- parsed to jsonb once: the same object (keys are unique: one per bucket of the second store), 8-12 % less
-- CPU per merge of a ~230-key stored sketch with a 120-key or a 230-key one (300 merges per timing, three
-- interleaved runs). The rule is unchanged: the second store's buckets added key by key, `||` overwriting
-- the shared keys with their sums (tests/db/test_sketch_sql.py compares every merge with Python's).

create or replace function metrics.sketch_store_merge(p_a jsonb, p_b jsonb)
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
  select pg_catalog.json_object_agg(b.key, (b.value #>> '{}')::bigint + coalesce((p_a ->> b.key)::bigint, 0))::jsonb
  into v_added
  from pg_catalog.jsonb_each(p_b) as b;
  return p_a || v_added;
end
$$;

comment on function metrics.sketch_store_merge(jsonb, jsonb) is
  'Adds two bucket stores key by key in one pass over the second (PL/pgSQL: cached plans; the sums written '
  'as json text and parsed once, cheaper than jsonb built pair by pair).';
