-- Exposition for Prometheus (GET /metrics of the HTTP service): cumulative per-series totals, histogram
-- bucket boundaries per metric, per-project scrape tokens (stored hashed) and the functions that turn
-- them into exposition rows. The HTTP service only renders these rows; every rule lives here.
--
-- Why a totals table: a Prometheus counter must never go backwards, across scrapes, service restarts
-- and retention. Summing rollups at scrape time would either drop when retention deletes old minutes /
-- hours or lag behind the hourly rollup; instead a statement trigger on metrics.points adds every
-- accepted delta to metrics.series_totals (exactly once, because points are inserted exactly once), and
-- retention never touches that table. It also makes a scrape of 10,000 series a single index-ordered read.

-- cumulative totals ------------------------------------------------------------------------------------
create table metrics.series_totals (
  series_id bigint primary key references metrics.series (id) on delete cascade,
  project_id uuid not null,
  count bigint not null default 0,
  sum double precision not null default 0,
  last double precision,
  last_ts timestamptz,
  sketch jsonb,
  updated_at timestamptz not null default now()
);
create index series_totals_project_id_idx on metrics.series_totals (project_id);
comment on table metrics.series_totals is
  'Per-series totals since the series was created: count and sum of every accepted delta, last value '
  '(by timestamp, ties to the larger value) and the merged sketch. Maintained by the points_totals '
  'trigger, never by retention: Prometheus counters exported from it never go backwards.';
comment on index metrics.series_totals_project_id_idx is 'Scrapes of one project.';

create function metrics.on_points_totals()
returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into metrics.series_totals as t (series_id, project_id, count, sum, last, last_ts, sketch)
  select n.series_id, n.project_id, sum(n.count), sum(n.sum),
    (pg_catalog.array_agg(n.last order by n.ts desc, n.last desc) filter (where n.last is not null))[1],
    max(n.ts) filter (where n.last is not null),
    metrics.sketch_union(n.sketch)
  from new_points n
  group by n.series_id, n.project_id
  order by n.series_id
  on conflict (series_id) do update set
    count = t.count + excluded.count,
    sum = t.sum + excluded.sum,
    last = metrics.later_last(t.last, t.last_ts, excluded.last, excluded.last_ts),
    last_ts = greatest(t.last_ts, excluded.last_ts),
    sketch = metrics.sketch_merge(t.sketch, excluded.sketch),
    updated_at = now();
  return null;
end
$$;
comment on function metrics.on_points_totals() is
  'Statement trigger of metrics.points: adds the inserted deltas to metrics.series_totals (series in id '
  'order, so concurrent batches lock rows in the same order).';

create trigger points_totals
after insert on metrics.points
referencing new table as new_points
for each statement execute function metrics.on_points_totals();
comment on trigger points_totals on metrics.points is
  'Keeps the cumulative totals that GET /metrics exports (runs after points_rollup).';

-- an existing installation starts from what its rollups still hold: hours, then the minutes after the
-- last rolled-up hour of each series
with last_hour as (
  select h.series_id, max(h.bucket) + interval '1 hour' as after
  from metrics.rollup_1h h group by h.series_id
),
parts as (
  select h.series_id, h.project_id, h.count, h.sum, h.last, h.last_ts, h.sketch
  from metrics.rollup_1h h
  union all
  select m.series_id, m.project_id, m.count, m.sum, m.last, m.last_ts, m.sketch
  from metrics.rollup_1m m left join last_hour lh on lh.series_id = m.series_id
  where lh.after is null or m.bucket >= lh.after
)
insert into metrics.series_totals (series_id, project_id, count, sum, last, last_ts, sketch)
select p.series_id, p.project_id, sum(p.count), sum(p.sum),
  (pg_catalog.array_agg(p.last order by p.last_ts desc, p.last desc) filter (where p.last_ts is not null))[1],
  max(p.last_ts), metrics.sketch_union(p.sketch)
from parts p
group by p.series_id, p.project_id;

-- histogram bucket boundaries ------------------------------------------------------------------------
create function metrics.boundaries_problem(p_boundaries double precision[])
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_boundaries is null then 'required'
    when pg_catalog.array_ndims(p_boundaries) is distinct from 1 then 'must be a non-empty list of numbers'
    when pg_catalog.cardinality(p_boundaries) > 64 then 'at most 64 boundaries'
    when exists (
      select from pg_catalog.unnest(p_boundaries) b
      where b is null or b = 'NaN'::double precision or b in ('Infinity', '-Infinity')
    ) then 'boundaries must be finite numbers (+Inf is always added)'
    when exists (
      select from pg_catalog.generate_subscripts(p_boundaries, 1) i
      where i > 1 and p_boundaries[i] <= p_boundaries[i - 1]
    ) then 'boundaries must be strictly increasing'
  end
$$;
comment on function metrics.boundaries_problem(double precision[]) is
  'Why a list of histogram bucket boundaries is invalid (1 to 64 finite, strictly increasing numbers), or null.';

create function metrics.default_histogram_boundaries(p_unit text default '')
returns double precision[]
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_unit = 'bytes' then '{256,1024,4096,16384,65536,262144,1048576,4194304,16777216,67108864,268435456}'::double precision[]
    else '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10}'::double precision[]
  end
$$;
comment on function metrics.default_histogram_boundaries(text) is
  'Bucket boundaries of histograms without configured ones: Prometheus'' default buckets (seconds), or '
  'powers of four from 256 B to 256 MiB for unit "bytes". Replace the body to change the installation default.';

create table metrics.histogram_boundaries (
  project_id uuid not null references metrics.projects (id) on delete cascade,
  metric text not null check (metric ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$' and char_length(metric) <= 200),
  boundaries double precision[] not null check (metrics.boundaries_problem(boundaries) is null),
  updated_at timestamptz not null default now(),
  primary key (project_id, metric)
);
comment on table metrics.histogram_boundaries is
  'Per-metric "le" boundaries of exported histograms (the +Inf bucket is implicit); bucket counts are '
  'derived from the merged sketch, so a change applies to all past data at the next scrape.';

create function metrics.histogram_thresholds(p_boundaries double precision[])
returns integer[]
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_bound double precision;
  v_key integer;
  v_out integer[] := '{}';
begin
  foreach v_bound in array p_boundaries loop
    if v_bound > 0 then
      -- the largest positive-store key whose representative value is <= the boundary
      v_key := metrics.sketch_key(v_bound);
      if metrics.sketch_value(v_key) > v_bound then
        v_key := v_key - 1;
      end if;
    elsif v_bound < 0 then
      -- the smallest negative-store key whose representative magnitude is >= -boundary
      v_key := metrics.sketch_key(-v_bound);
      if metrics.sketch_value(v_key) < -v_bound then
        v_key := v_key + 1;
      end if;
    else
      v_key := 0;
    end if;
    v_out := v_out || v_key;
  end loop;
  return v_out;
end
$$;
comment on function metrics.histogram_thresholds(double precision[]) is
  'For each bucket boundary the sketch key that separates the buckets counted under it (positive boundary: '
  'largest key with value <= boundary; negative: smallest negative-store key with magnitude >= -boundary). '
  'Computed once per metric so that counting a sketch compares integers only.';

create function metrics.sketch_cumulative_counts(
  p_sketch jsonb, p_boundaries double precision[], p_thresholds integer[] default null
)
returns bigint[]
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_thresholds integer[] := coalesce(p_thresholds, metrics.histogram_thresholds(p_boundaries));
  v_pkeys integer[];
  v_pcounts bigint[];
  v_nkeys integer[];
  v_ncounts bigint[];
  v_ntotal bigint;
  v_zero bigint := coalesce((p_sketch ->> 'z')::bigint, 0);
  v_out bigint[] := '{}';
  v_pos bigint := 0;
  v_neg bigint := 0;
  v_np integer;
  v_nn integer;
  i integer := 1;
  j integer := 1;
  b integer;
begin
  -- positive buckets by ascending value; negative buckets by ascending value (largest magnitude first)
  select pg_catalog.array_agg(t.k::integer order by t.k::integer),
    pg_catalog.array_agg(t.c::bigint order by t.k::integer)
  into v_pkeys, v_pcounts
  from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'p', '{}'::jsonb)) as t (k, c);
  select pg_catalog.array_agg(t.k::integer order by t.k::integer desc),
    pg_catalog.array_agg(t.c::bigint order by t.k::integer desc), coalesce(sum(t.c::bigint), 0)
  into v_nkeys, v_ncounts, v_ntotal
  from pg_catalog.jsonb_each_text(coalesce(p_sketch -> 'n', '{}'::jsonb)) as t (k, c);
  v_np := coalesce(pg_catalog.cardinality(v_pkeys), 0);
  v_nn := coalesce(pg_catalog.cardinality(v_nkeys), 0);
  for b in 1 .. coalesce(pg_catalog.cardinality(p_boundaries), 0) loop
    if p_boundaries[b] < 0 then
      -- negative values -v(k) <= boundary: magnitudes v(k) >= -boundary, i.e. keys >= the threshold
      while i <= v_nn and v_nkeys[i] >= v_thresholds[b] loop
        v_neg := v_neg + v_ncounts[i];
        i := i + 1;
      end loop;
      v_out := v_out || v_neg;
    else
      if p_boundaries[b] > 0 then
        while j <= v_np and v_pkeys[j] <= v_thresholds[b] loop
          v_pos := v_pos + v_pcounts[j];
          j := j + 1;
        end loop;
      end if;
      v_out := v_out || (v_ntotal + v_zero + v_pos);
    end if;
  end loop;
  return v_out;
end
$$;
comment on function metrics.sketch_cumulative_counts(jsonb, double precision[], integer[]) is
  'Cumulative Prometheus bucket counts of a sketch: for each boundary (ascending) the number of values '
  'whose bucket''s representative value (the one quantiles report, within 1 %) is <= the boundary. '
  'p_thresholds: metrics.histogram_thresholds(p_boundaries), computed when null.';

-- exposition rows --------------------------------------------------------------------------------------
create function metrics.exposition_labels(p_labels jsonb, p_kind text, p_project_id uuid, p_with_project boolean)
returns jsonb
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_out jsonb := p_labels;
begin
  if v_out ? '__overflow__' then
    v_out := (v_out - '__overflow__') || pg_catalog.jsonb_build_object('meshhook_overflow', v_out -> '__overflow__');
  end if;
  if p_kind = 'histogram' and v_out ? 'le' then
    v_out := (v_out - 'le') || pg_catalog.jsonb_build_object('exported_le', v_out -> 'le');
  end if;
  if p_with_project then
    if v_out ? 'project_id' then
      v_out := (v_out - 'project_id') || pg_catalog.jsonb_build_object('exported_project_id', v_out -> 'project_id');
    end if;
    v_out := v_out || pg_catalog.jsonb_build_object('project_id', p_project_id::text);
  end if;
  return v_out;
end
$$;
comment on function metrics.exposition_labels(jsonb, text, uuid, boolean) is
  'Labels of a series as exported: the overflow marker becomes meshhook_overflow="true", a histogram''s '
  'own "le" becomes exported_le, and with p_with_project a project_id label is added (an existing one '
  'becomes exported_project_id).';

create function metrics.exposition_rows(
  p_project_id uuid default null,
  p_with_project boolean default true,
  p_gauge_max_age interval default '15 minutes',
  p_max_age interval default '7 days'
)
returns table (
  project_id uuid, name text, kind text, unit text, help text, labels jsonb,
  value double precision, count bigint, sum double precision, le double precision[], buckets bigint[]
)
language sql stable security invoker set search_path = ''
as $$
  with fam as materialized (
    -- per metric once: its boundaries and their sketch-key thresholds
    select f.project_id, f.name, f.kind, f.unit, f.help, b.boundaries,
      case when b.boundaries is not null then metrics.histogram_thresholds(b.boundaries) end as thresholds
    from metrics.families f
    left join metrics.histogram_boundaries hb on hb.project_id = f.project_id and hb.metric = f.name
    cross join lateral (
      select case when f.kind = 'histogram'
        then coalesce(hb.boundaries, metrics.default_histogram_boundaries(f.unit)) end as boundaries
    ) as b
    where p_project_id is null or f.project_id = p_project_id
  )
  select s.project_id, s.name, f.kind, f.unit, f.help,
    metrics.exposition_labels(s.labels, f.kind, s.project_id, p_with_project),
    case f.kind when 'counter' then t.sum when 'gauge' then t.last end,
    case when f.kind = 'histogram' then t.count end,
    case when f.kind = 'histogram' then t.sum end,
    f.boundaries,
    case when f.kind = 'histogram' then metrics.sketch_cumulative_counts(t.sketch, f.boundaries, f.thresholds) end
  from metrics.series_totals t
  join metrics.series s on s.id = t.series_id
  join fam f on f.project_id = s.project_id and f.name = s.name
  where (p_project_id is null or t.project_id = p_project_id)
    and t.updated_at >= now() - case when f.kind = 'gauge' then p_gauge_max_age else p_max_age end
    and (f.kind <> 'gauge' or t.last is not null)
  order by s.name, s.project_id, s.labels
$$;
comment on function metrics.exposition_rows(uuid, boolean, interval, interval) is
  'What GET /metrics exports for the caller (security invoker: row-level security applies): counters as '
  'cumulative totals (value), gauges as last value, histograms as count, sum and cumulative bucket counts '
  '(buckets) per boundary (le); only series updated within p_max_age (gauges: p_gauge_max_age).';

-- discovery -------------------------------------------------------------------------------------------
create function metrics.list_metrics(p_project_id uuid)
returns table (name text, kind text, unit text, help text, series bigint, overflow_points bigint)
language sql stable security invoker set search_path = ''
as $$
  select f.name, f.kind, f.unit, f.help,
    (select count(*) from metrics.series s where s.project_id = f.project_id and s.name = f.name),
    f.overflow_points
  from metrics.families f
  where f.project_id = p_project_id
  order by f.name
$$;
comment on function metrics.list_metrics(uuid) is
  'The metrics of a project with kind, unit, help, number of series and overflowed points (row-level '
  'security applies: non-members get no rows).';

create function metrics.list_series(
  p_project_id uuid, p_metric text default null, p_matchers jsonb default '[]'::jsonb, p_limit integer default 1000
)
returns table (name text, labels jsonb, last_seen timestamptz)
language sql stable security invoker set search_path = ''
as $$
  select s.name, s.labels, t.updated_at
  from metrics.series s
  left join metrics.series_totals t on t.series_id = s.id
  where s.project_id = p_project_id
    and (p_metric is null or s.name = p_metric)
    and metrics.series_matches(s.labels, p_matchers)
  order by s.name, s.labels
  limit greatest(least(coalesce(p_limit, 1000), 10000), 0)
$$;
comment on function metrics.list_series(uuid, text, jsonb, integer) is
  'Series of a project (optionally one metric, label matchers as in metrics.query) with the time of their '
  'last accepted point; at most p_limit (<= 10000) rows. Row-level security applies.';

-- scrape tokens ----------------------------------------------------------------------------------------
create table metrics.scrape_tokens (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  name text not null default '' check (char_length(name) <= 200),
  token_hash bytea not null unique check (octet_length(token_hash) = 32),
  token_prefix text not null,
  created_by uuid,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz
);
create index scrape_tokens_project_id_idx on metrics.scrape_tokens (project_id);
comment on table metrics.scrape_tokens is
  'Per-project bearer tokens for Prometheus scrapes of GET /metrics. Only the sha256 of a token is stored; '
  'the token itself is shown once, when created. Revoked or expired tokens are refused.';
comment on index metrics.scrape_tokens_project_id_idx is 'Token listing per project.';

alter table metrics.series_totals enable row level security;
alter table metrics.histogram_boundaries enable row level security;
alter table metrics.scrape_tokens enable row level security;

create policy series_totals_members_read on metrics.series_totals for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy series_totals_members_read on metrics.series_totals is 'Members see their projects'' totals.';

create policy histogram_boundaries_members_read on metrics.histogram_boundaries for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy histogram_boundaries_members_read on metrics.histogram_boundaries is
  'Members see their projects'' bucket boundaries.';

create policy histogram_boundaries_admins_insert on metrics.histogram_boundaries for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy histogram_boundaries_admins_insert on metrics.histogram_boundaries is
  'Admins configure bucket boundaries of their projects.';

create policy histogram_boundaries_admins_update on metrics.histogram_boundaries for update to authenticated
  using (project_id in (select metrics.user_project_ids('admin')))
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy histogram_boundaries_admins_update on metrics.histogram_boundaries is
  'Admins change bucket boundaries of their projects.';

create policy histogram_boundaries_admins_delete on metrics.histogram_boundaries for delete to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy histogram_boundaries_admins_delete on metrics.histogram_boundaries is
  'Admins reset bucket boundaries of their projects to the default.';

create policy scrape_tokens_admins_read on metrics.scrape_tokens for select to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy scrape_tokens_admins_read on metrics.scrape_tokens is 'Admins list their projects'' scrape tokens.';

create policy scrape_tokens_admins_insert on metrics.scrape_tokens for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy scrape_tokens_admins_insert on metrics.scrape_tokens is 'Admins create scrape tokens.';

create policy scrape_tokens_admins_update on metrics.scrape_tokens for update to authenticated
  using (project_id in (select metrics.user_project_ids('admin')))
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy scrape_tokens_admins_update on metrics.scrape_tokens is 'Admins rename and revoke scrape tokens.';

create policy scrape_tokens_admins_delete on metrics.scrape_tokens for delete to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy scrape_tokens_admins_delete on metrics.scrape_tokens is 'Admins delete scrape tokens.';

create function metrics.create_scrape_token(
  p_project_id uuid, p_name text default '', p_expires_at timestamptz default null
)
returns table (id uuid, token text, token_prefix text, created_at timestamptz, expires_at timestamptz)
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  -- 244 random bits from the server's strong random source (gen_random_uuid is core since PG 13)
  v_token text := 'mhm_' || pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
begin
  if p_project_id is null then perform metrics.reject('p_project_id', 'required'); end if;
  if p_expires_at is not null and p_expires_at <= now() then
    perform metrics.reject('p_expires_at', 'must be in the future');
  end if;
  return query
  insert into metrics.scrape_tokens as t (project_id, name, token_hash, token_prefix, created_by, expires_at)
  values (p_project_id, coalesce(p_name, ''), pg_catalog.sha256(pg_catalog.convert_to(v_token, 'UTF8')),
    pg_catalog.left(v_token, 12), auth.uid(), p_expires_at)
  returning t.id, v_token, t.token_prefix, t.created_at, t.expires_at;
end
$$;
comment on function metrics.create_scrape_token(uuid, text, timestamptz) is
  'Creates a scrape token for a project (row-level security: project admins or the service role) and '
  'returns it ONCE; only its sha256 is stored.';

create function metrics.revoke_scrape_token(p_id uuid)
returns boolean
language sql volatile security invoker set search_path = ''
as $$
  with revoked as (
    update metrics.scrape_tokens t set revoked_at = coalesce(t.revoked_at, now())
    where t.id = p_id
    returning t.id
  )
  select exists (select from revoked)
$$;
comment on function metrics.revoke_scrape_token(uuid) is
  'Revokes a scrape token (row-level security: admins of its project); false when not found or not visible.';

create function metrics.scrape(p_token text)
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
  return query select * from metrics.exposition_rows(v_project, false);
end
$$;
comment on function metrics.scrape(text) is
  'The exposition rows of the ONE project a valid scrape token belongs to (no project_id label); raises '
  '28000 for an unknown, revoked or expired token. Security definer: callable by anon, the token is the check.';

grant select on metrics.series_totals, metrics.histogram_boundaries to authenticated;
grant insert, update, delete on metrics.histogram_boundaries to authenticated;
grant select (id, project_id, name, token_prefix, created_by, created_at, expires_at, revoked_at, last_used_at)
  on metrics.scrape_tokens to authenticated;
grant insert (project_id, name, token_hash, token_prefix, created_by, expires_at) on metrics.scrape_tokens
  to authenticated;
grant update (name, revoked_at) on metrics.scrape_tokens to authenticated;
grant delete on metrics.scrape_tokens to authenticated;
grant all on metrics.series_totals, metrics.histogram_boundaries, metrics.scrape_tokens to service_role;

grant execute on function metrics.boundaries_problem(double precision[]),
  metrics.default_histogram_boundaries(text),
  metrics.histogram_thresholds(double precision[]),
  metrics.sketch_cumulative_counts(jsonb, double precision[], integer[]),
  metrics.exposition_labels(jsonb, text, uuid, boolean),
  metrics.exposition_rows(uuid, boolean, interval, interval),
  metrics.list_metrics(uuid), metrics.list_series(uuid, text, jsonb, integer),
  metrics.create_scrape_token(uuid, text, timestamptz),
  metrics.revoke_scrape_token(uuid)
  to authenticated, service_role;
grant execute on function metrics.scrape(text) to anon, authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
