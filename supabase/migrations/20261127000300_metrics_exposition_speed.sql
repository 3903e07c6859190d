-- Faster exposition rows for GET /metrics (10,000 series per scrape):
--
-- * histogram bucket counts are computed set-based for all histograms of a scrape at once (every sketch
--   bucket is placed once, with width_bucket, at the first boundary that counts it; one running sum per
--   series) instead of a PL/pgSQL call per series that sorted its buckets twice;
-- * labels go through metrics.exposition_labels only when one needs rewriting; otherwise they are passed
--   through (or get the project_id label with one jsonb concatenation);
-- * rows are ordered by the metric's rank (name, project) and the series id, not by the names and label
--   sets of 10,000 rows (a locale-aware text and jsonb sort): a family's series stay together, in a
--   stable order.
--
-- The counting rule is unchanged (metrics.sketch_cumulative_counts stays its reference): a value is counted
-- under every boundary >= the representative value of its sketch bucket.

create function metrics.histogram_rank_edges(p_boundaries double precision[])
returns double precision[]
language sql immutable strict parallel safe set search_path = ''
as $$
  -- rank of a sketch bucket, ordered like the values it holds: negative-store key k -> -(k + 100000),
  -- zero -> 0, positive-store key k -> k + 100000 (ingest keeps keys in [-1036, 35488])
  select pg_catalog.array_agg(
    case
      when b.bound < 0 then -(b.threshold + 100000)
      when b.bound > 0 then b.threshold + 100000
      else 0
    end::double precision
    order by b.i)
  from rows from (
    pg_catalog.unnest(p_boundaries), pg_catalog.unnest(metrics.histogram_thresholds(p_boundaries))
  ) with ordinality as b (bound, threshold, i)
$$;
comment on function metrics.histogram_rank_edges(double precision[]) is
  'For each bucket boundary the largest sketch-bucket rank counted under it, on one axis that orders '
  'negative-store keys (-(k + 100000)), zero (0) and positive-store keys (k + 100000) by value; '
  'non-decreasing, so width_bucket(rank - 0.5, edges) + 1 is the first boundary that counts a bucket.';

-- a new last parameter, p_kinds, lets the service fetch histograms (the costly part: every sketch bucket is
-- placed) on a second connection while it renders the counters and gauges
drop function metrics.exposition_rows(uuid, boolean, interval, interval);
create function metrics.exposition_rows(
  p_project_id uuid default null,
  p_with_project boolean default true,
  p_gauge_max_age interval default '15 minutes',
  p_max_age interval default '7 days',
  p_kinds text[] default null
)
returns table (
  project_id uuid, name text, kind text, unit text, help text, labels jsonb,
  value double precision, count bigint, sum double precision, le double precision[], buckets bigint[]
)
language sql stable security invoker set search_path = ''
as $$
  with fam as materialized (
    -- per metric once: its boundaries, their rank edges and its position in the output
    select f.project_id, f.name, f.kind, f.unit, f.help, b.boundaries,
      metrics.histogram_rank_edges(b.boundaries) as edges,
      pg_catalog.row_number() over (order by f.name, f.project_id) as metric_order
    from metrics.families f
    left join metrics.histogram_boundaries hb on hb.project_id = f.project_id and hb.metric = f.name
    cross join lateral (
      select case when f.kind = 'histogram'
        then coalesce(hb.boundaries, metrics.default_histogram_boundaries(f.unit)) end as boundaries
    ) as b
    where (p_project_id is null or f.project_id = p_project_id) and (p_kinds is null or f.kind = any(p_kinds))
  ),
  exported as materialized (
    -- without the sketches: 10,000 rows with them outgrow work_mem and spill to disk
    select t.series_id, s.project_id, s.name, s.labels, f.kind, f.unit, f.help, f.boundaries, f.edges,
      f.metric_order, t.count, t.sum, t.last
    from metrics.series_totals t
    join metrics.series s on s.id = t.series_id
    join fam f on f.project_id = s.project_id and f.name = s.name
    where (p_project_id is null or t.project_id = p_project_id)
      and t.updated_at >= now() - case when f.kind = 'gauge' then p_gauge_max_age else p_max_age end
      and (f.kind <> 'gauge' or t.last is not null)
  ),
  placed as (
    -- every bucket of every exported histogram's sketch, summed per first boundary that counts it
    select e.series_id, 1 + pg_catalog.width_bucket(k.rank - 0.5::double precision, e.edges) as from_bound,
      sum(k.c) as c
    from exported e
    join metrics.series_totals t on t.series_id = e.series_id
    cross join lateral (
      select 0::double precision as rank, coalesce((t.sketch ->> 'z')::bigint, 0) as c
      union all
      select p.k::integer + 100000, p.c::bigint
      from pg_catalog.jsonb_each_text(t.sketch -> 'p') as p (k, c)
      union all
      select -(n.k::integer + 100000), n.c::bigint
      from pg_catalog.jsonb_each_text(t.sketch -> 'n') as n (k, c)
    ) as k
    where e.kind = 'histogram'
    group by 1, 2
  ),
  cumulative as (
    -- running sums over the boundaries: the Prometheus "le" buckets
    select r.series_id, pg_catalog.array_agg(r.running order by r.i) as buckets
    from (
      select e.series_id, i.i,
        sum(coalesce(p.c, 0)) over (partition by e.series_id order by i.i) as running
      from exported e
      cross join lateral pg_catalog.generate_series(1, pg_catalog.cardinality(e.boundaries)) as i (i)
      left join placed p on p.series_id = e.series_id and p.from_bound = i.i
      where e.kind = 'histogram'
    ) as r
    group by r.series_id
  )
  select e.project_id, e.name, e.kind, e.unit, e.help,
    case
      when e.labels ?| '{__overflow__,le,project_id}'::text[]
        then metrics.exposition_labels(e.labels, e.kind, e.project_id, p_with_project)
      when p_with_project then e.labels || pg_catalog.jsonb_build_object('project_id', e.project_id::text)
      else e.labels
    end,
    case e.kind when 'counter' then e.sum when 'gauge' then e.last end,
    case when e.kind = 'histogram' then e.count end,
    case when e.kind = 'histogram' then e.sum end,
    e.boundaries,
    case when e.kind = 'histogram' then coalesce(c.buckets, '{}') end
  from exported e
  left join cumulative c on c.series_id = e.series_id
  order by e.metric_order, e.series_id
$$;
comment on function metrics.exposition_rows(uuid, boolean, interval, interval, text[]) is
  'What GET /metrics exports for the caller (security invoker: row-level security applies): counters as '
  'cumulative totals (value), gauges as last value, histograms as count, sum and cumulative bucket counts '
  '(buckets) per boundary (le); only series updated within p_max_age (gauges: p_gauge_max_age) and, when '
  'p_kinds is given, of those kinds. Rows come grouped by metric (ordered by name, then project) and by '
  'series id within a metric; bucket counts are computed for all histograms at once (the rule of '
  'metrics.sketch_cumulative_counts).';

drop function metrics.scrape(text);
create function metrics.scrape(p_token text, p_kinds text[] default null)
returns table (
  project_id uuid, name text, kind text, unit text, help text, labels jsonb,
  value double precision, count bigint, sum double precision, le double precision[], buckets bigint[]
)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_id uuid;
  v_project uuid;
  v_used timestamptz;
begin
  select t.id, t.project_id, t.last_used_at into v_id, v_project, v_used
  from metrics.scrape_tokens t
  where t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_token, ''), 'UTF8'))
    and t.revoked_at is null
    and (t.expires_at is null or t.expires_at > now());
  if not found then
    raise exception using
      errcode = '28000',
      message = 'invalid scrape token',
      hint = 'the token is unknown, revoked or expired';
  end if;
  if v_used is null or v_used < now() - interval '1 minute' then
    update metrics.scrape_tokens set last_used_at = now() where id = v_id;
  end if;
  return query select * from metrics.exposition_rows(v_project, false, p_kinds => p_kinds);
end
$$;
comment on function metrics.scrape(text, text[]) is
  'The exposition rows of the ONE project a valid scrape token belongs to (no project_id label), of p_kinds '
  'when given; raises 28000 for an unknown, revoked or expired token. Security definer: callable by anon, '
  'the token is the check.';

grant execute on function metrics.histogram_rank_edges(double precision[]),
  metrics.exposition_rows(uuid, boolean, interval, interval, text[])
  to authenticated, service_role;
grant execute on function metrics.scrape(text, text[]) to anon, authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
