-- Issue #14: metrics.json_number inlined where it is used. A SQL function with a SET clause is never
-- inlined: it ran as a function call for every number of every live message (~28,000 calls a message on the
-- default benchmark workload, a quarter of metrics.publish_project's CPU: 207 -> 153 ms per message of
-- 4,000 minutes with the expression written in place, messages byte-identical) and of every query answer.
-- Without `set search_path`, and declared stable as its body is (to_jsonb is stable, and the planner does
-- not inline an immutable function whose body is not), the planner substitutes the expression into the
-- caller's statement. Safe: the function is not security definer (it runs with the caller's rights), its
-- body names pg_catalog's to_jsonb explicitly, and its callers in metrics pin an empty search_path
-- themselves.
--
-- Also: NaN is now null, as the comment and docs/schema.md always said. The old test `p_value <> p_value`
-- is never true in PostgreSQL, where NaN equals NaN, so a NaN (a sum of +infinity and -infinity) was sent
-- as the JSON string "NaN".

create or replace function metrics.json_number(p_value double precision)
returns jsonb
language sql stable parallel safe
as $$
  -- JSON has no infinity or NaN: a sum that overflowed double precision is sent as null rather than
  -- failing the message
  select case when p_value in ('infinity', '-infinity', 'NaN') then null else pg_catalog.to_jsonb(p_value) end
$$;

comment on function metrics.json_number(double precision) is
  'A double as JSON, null where JSON has no number for it (±infinity, NaN). No SET clause, so that the '
  'planner inlines it into its callers.';
