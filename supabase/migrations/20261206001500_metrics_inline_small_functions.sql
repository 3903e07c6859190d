-- Issue #14: the small pure SQL functions the rollup pass, the fold, the live message and the queries call
-- for every row, inlined. A SQL function with a SET clause is never inlined: each call ran through the
-- function manager with search_path saved and restored around it (metrics.json_number: migration
-- 20261206001400). These three are immutable, their bodies use only immutable, strict pg_catalog operators
-- and functions, and none is security definer, so without the clause the planner writes their expression
-- into the calling statement. Nothing else changes; their rules stay here, in one place.

create or replace function metrics.later_last(
  p_last double precision, p_last_ts timestamptz, p_next double precision, p_next_ts timestamptz
)
returns double precision
language sql immutable parallel safe
as $$
  -- the value of the later timestamp; ties go to the larger value, so the merge order never matters
  select case
    when p_next_ts is null then p_last
    when p_last_ts is null or (p_next_ts, p_next) > (p_last_ts, p_last) then p_next
    else p_last
  end
$$;
comment on function metrics.later_last(double precision, timestamptz, double precision, timestamptz) is
  'Merge rule of a "last" value: the one with the later timestamp, ties to the larger (order-independent). '
  'No SET clause, so that the planner inlines it.';

create or replace function metrics.sketch_value(p_key integer)
returns double precision
language sql immutable strict parallel safe
as $$
  -- ln(2 / (1 + gamma)) is added in the exponent (not multiplied after it) so the top bucket stays finite
  select pg_catalog.exp(p_key / 49.998333288886556::double precision + -0.010050335853501338::double precision)
$$;
comment on function metrics.sketch_value(integer) is
  'Representative value of a bucket, within 1 % of every value that maps to it. No SET clause, so that the '
  'planner inlines it.';

create or replace function metrics.five_minute_window(p_ts timestamptz)
returns timestamptz
language sql immutable parallel safe
as $$
  select pg_catalog.date_bin('5 minutes'::interval, p_ts, '1970-01-01 00:00:00+00'::timestamptz)
$$;
comment on function metrics.five_minute_window(timestamptz) is
  'Start of the 5-minute window (aligned to the epoch, so every whole-5-minute step holds whole windows) of '
  'p_ts. No SET clause, so that the planner inlines it.';
