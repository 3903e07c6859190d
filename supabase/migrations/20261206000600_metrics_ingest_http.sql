-- HTTP ingest for non-Python producers (issue #16): the edge function supabase/functions/metrics-ingest turns
-- OTLP/HTTP metrics and batches of our wire format into calls of metrics.ingest_http, defined here.
--
--   metrics.ingest_tokens     per-project ingest tokens (mhi_...), only their sha256 stored; created, listed and
--                             revoked only through the definer functions below, by project admins or the
--                             service role; a revoked token stays revoked; usable for nothing but ingest.
--   metrics.ingest_streams    cumulative -> delta state per stream (OTLP cumulative sums and histograms): the
--                             last cumulative value seen, its start time (a newer start time is a reset, an
--                             older one a late export of an earlier process life: dropped) and ts; for
--                             exponential histograms also their native buckets (metrics.exp_buckets_delta).
--   metrics.ingest_grants     transaction-local proof that metrics.ingest_http checked an ingest token; what
--                             lets metrics.assert_can_write accept a token caller (anon) for that project only.
--   metrics.ingest_http       the entry point: authorises (token, or the caller's own rights), converts
--                             cumulative points to deltas and calls metrics.ingest, all in one transaction, so
--                             a retried batch (same source and batch_id) neither stores twice nor advances the
--                             conversion state.

-- ingest tokens ------------------------------------------------------------------------------------------------
create table metrics.ingest_tokens (
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
create index ingest_tokens_project_id_idx on metrics.ingest_tokens (project_id);
comment on table metrics.ingest_tokens is
  'Per-project bearer tokens (mhi_...) for HTTP ingest through the metrics-ingest edge function. Only the '
  'sha256 of a token is stored; the token is shown once, when created (metrics.create_ingest_token). '
  'Revoked or expired tokens are refused; a token is good for ingest into its one project and nothing else.';
comment on index metrics.ingest_tokens_project_id_idx is 'Token listing per project.';
alter table metrics.ingest_tokens enable row level security;
-- no policies and no grants: only the definer functions below read and write it

create function metrics.ingest_tokens_guard()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  if (new.id, new.project_id, new.token_hash, new.token_prefix, new.created_by, new.created_at)
     is distinct from (old.id, old.project_id, old.token_hash, old.token_prefix, old.created_by, old.created_at) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('ingest token %s: only name, revoked_at (once) and last_used_at can change', old.id),
      hint = 'create a new token instead';
  end if;
  if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('ingest token %s is revoked and stays revoked', old.id),
      hint = 'create a new token instead';
  end if;
  if new.expires_at is distinct from old.expires_at
     and (new.expires_at is null or (old.expires_at is not null and new.expires_at > old.expires_at)) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('ingest token %s: expires_at can only be moved earlier', old.id),
      hint = 'create a new token instead';
  end if;
  return new;
end
$$;
comment on function metrics.ingest_tokens_guard() is
  'Trigger ingest_tokens_guard (every role, the table owner too): a token''s id, project, hash, prefix, author '
  'and creation time never change; revoked_at is set once and never cleared or moved; expires_at only moves '
  'earlier. Raises 42501.';
create trigger ingest_tokens_guard
before update on metrics.ingest_tokens
for each row execute function metrics.ingest_tokens_guard();
comment on trigger ingest_tokens_guard on metrics.ingest_tokens is
  'Revoked ingest tokens stay revoked; a token''s identity is not rewritten (metrics.ingest_tokens_guard).';

create function metrics.is_project_admin(p_project_id uuid)
returns boolean
language sql stable set search_path = ''
as $$
  select coalesce(metrics.request_role(), '') = 'service_role'
    or p_project_id in (select metrics.user_project_ids('admin'))
$$;
comment on function metrics.is_project_admin(uuid) is
  'Whether the caller administers the project: an admin member (metrics.user_project_ids) or the service role '
  '(a role claim the session may act as, metrics.request_role).';

create function metrics.create_ingest_token(
  p_project_id uuid, p_name text default '', p_expires_at timestamptz default null
)
returns table (id uuid, project_id uuid, name text, token text, token_prefix text, created_at timestamptz,
  expires_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  -- 244 random bits from the server's strong random source (gen_random_uuid is core since PG 13)
  v_token text := 'mhi_' || pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
begin
  if p_project_id is null then perform metrics.reject('p_project_id', 'required'); end if;
  if not metrics.is_project_admin(p_project_id) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('not allowed to create ingest tokens of project %s', p_project_id),
      hint = 'project admins and the service role create ingest tokens';
  end if;
  if pg_catalog.char_length(coalesce(p_name, '')) > 200 then
    perform metrics.reject('p_name', 'at most 200 characters');
  end if;
  if p_expires_at is not null and p_expires_at <= now() then
    perform metrics.reject('p_expires_at', 'must be in the future');
  end if;
  insert into metrics.projects (id) values (p_project_id) on conflict do nothing;
  return query
  insert into metrics.ingest_tokens as t (project_id, name, token_hash, token_prefix, created_by, expires_at)
  values (p_project_id, coalesce(p_name, ''), pg_catalog.sha256(pg_catalog.convert_to(v_token, 'UTF8')),
    pg_catalog.left(v_token, 12), auth.uid(), p_expires_at)
  returning t.id, t.project_id, t.name, v_token, t.token_prefix, t.created_at, t.expires_at;
end
$$;
comment on function metrics.create_ingest_token(uuid, text, timestamptz) is
  'Creates an ingest token (mhi_...) for a project (its admins or the service role, else 42501) and returns '
  'it ONCE; the secret is made here from the server''s random source, only its sha256 and first 12 '
  'characters are stored.';

create function metrics.list_ingest_tokens(p_project_id uuid)
returns table (id uuid, project_id uuid, name text, token_prefix text, created_by uuid, created_at timestamptz,
  expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz)
language sql stable security definer set search_path = ''
as $$
  select t.id, t.project_id, t.name, t.token_prefix, t.created_by, t.created_at, t.expires_at, t.revoked_at,
    t.last_used_at
  from metrics.ingest_tokens t
  where t.project_id = p_project_id and metrics.is_project_admin(p_project_id)
  order by t.created_at, t.id
$$;
comment on function metrics.list_ingest_tokens(uuid) is
  'The ingest tokens of a project without their secrets, oldest first; no rows unless the caller administers '
  'the project.';

create function metrics.revoke_ingest_token(p_id uuid)
returns boolean
language sql volatile security definer set search_path = ''
as $$
  with revoked as (
    update metrics.ingest_tokens t set revoked_at = coalesce(t.revoked_at, now())
    where t.id = p_id and metrics.is_project_admin(t.project_id)
    returning t.id
  )
  select exists (select from revoked)
$$;
comment on function metrics.revoke_ingest_token(uuid) is
  'Revokes an ingest token for good (admins of its project or the service role); true when revoked now or '
  'before, false when not found or not the caller''s to revoke.';

-- the proof of a checked token, for metrics.assert_can_write ---------------------------------------------------
create table metrics.ingest_grants (
  txid xid8 not null,
  backend_pid integer not null,
  project_id uuid not null,
  primary key (txid, backend_pid, project_id)
);
comment on table metrics.ingest_grants is
  'Transaction-local proof, written and deleted by metrics.ingest_http inside one transaction (never '
  'committed), that the current transaction presented a valid ingest token of the project: '
  'metrics.assert_can_write accepts the write then. No role but the owner can write it, so it cannot be forged.';
alter table metrics.ingest_grants enable row level security;

create or replace function metrics.assert_can_write(p_project_id uuid)
returns void
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_claim text := nullif(auth.role(), '');
  v_role text := metrics.request_role();  -- null for a role claim the session cannot act as
begin
  if v_role = 'service_role' then
    return;
  end if;
  -- an ingest token checked by metrics.ingest_http in this very transaction
  if exists (
    select from metrics.ingest_grants g
    where g.txid = pg_catalog.pg_current_xact_id_if_assigned() and g.backend_pid = pg_catalog.pg_backend_pid()
      and g.project_id = p_project_id
  ) then
    return;
  end if;
  if v_claim is not null and v_role is null then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('not allowed to write metrics of project %s: the JWT claims name role %s, '
        'but the session acts as %s', p_project_id, v_claim, metrics.caller_role()),
      hint = 'claims are believed only from a session that runs as the role they name (SET ROLE, as the Data API does)';
  end if;
  if v_role is null then
    -- a direct connection without JWT claims is trusted when its login role bypasses RLS
    if exists (
      select from pg_catalog.pg_roles r where r.rolname = session_user and (r.rolsuper or r.rolbypassrls)
    ) then
      return;
    end if;
  elsif v_role = 'authenticated' and p_project_id in (select metrics.user_project_ids('editor')) then
    return;
  end if;
  raise exception using
    errcode = '42501',
    message = pg_catalog.format('not allowed to write metrics of project %s', p_project_id),
    hint = 'ingest needs the service role, a trusted direct connection, the editor role in the project, or an ingest token';
end
$$;
comment on function metrics.assert_can_write(uuid) is
  'Raises 42501 unless the caller may write the project''s metrics: the service role (a role claim the session '
  'may act as, metrics.request_role), an ingest token of the project checked by metrics.ingest_http in this '
  'transaction (metrics.ingest_grants), a trusted direct connection without claims (login role superuser or '
  'BYPASSRLS), or an authenticated editor/admin member. A role claim the session cannot act as is refused.';

-- cumulative -> delta --------------------------------------------------------------------------------------------
create table metrics.ingest_streams (
  project_id uuid not null references metrics.projects (id) on delete cascade,
  stream text not null check (char_length(stream) between 1 and 200),
  start_ns text not null check (start_ns ~ '^([0-9]{1,40})?$'),
  ts timestamptz not null,
  count bigint not null,
  sum double precision not null,
  sketch jsonb,
  buckets jsonb,
  updated_at timestamptz not null default now(),
  primary key (project_id, stream)
);
create index ingest_streams_updated_at_idx on metrics.ingest_streams (updated_at);
comment on table metrics.ingest_streams is
  'Cumulative -> delta conversion state of HTTP ingest (OTLP cumulative sums and histograms), one row per '
  'stream (a key the producer computes from metric, attributes, scope and resource: the edge function sends the '
  'SHA-256 hex of that identity): the last cumulative count, sum and sketch (and the native buckets of an '
  'exponential histogram) with their start time (start_ns, unix nanoseconds as decimal text, compared as '
  'numbers: a newer start is a reset, an older one a stale export) and time; start_ns = '''' (empty) marks a row '
  'inserted by the converting transaction itself to lock a new stream (no state yet). '
  'Written only by metrics.ingest_http in the transaction that stores the deltas; rows idle for '
  'longer than metrics.config.max_past are deleted by metrics.prune_ingest_streams.';
comment on index metrics.ingest_streams_updated_at_idx is 'Pruning of idle streams.';
alter table metrics.ingest_streams enable row level security;

create function metrics.sketch_subtract(p_a jsonb, p_b jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  -- null when a count of p_b exceeds p_a's (not a later state of the same cumulative sketch)
  with stores as (
    select s.store,
      (select coalesce(pg_catalog.jsonb_object_agg(k.key, k.d), '{}'::jsonb) from (
         select a.key, a.value::bigint - coalesce(b.value::bigint, 0) as d
         from pg_catalog.jsonb_each_text(coalesce(p_a -> s.store, '{}'::jsonb)) a
         left join pg_catalog.jsonb_each_text(coalesce(p_b -> s.store, '{}'::jsonb)) b on b.key = a.key
       ) k where k.d > 0) as delta,
      exists (
        select from pg_catalog.jsonb_each_text(coalesce(p_b -> s.store, '{}'::jsonb)) b
        left join pg_catalog.jsonb_each_text(coalesce(p_a -> s.store, '{}'::jsonb)) a on a.key = b.key
        where coalesce(a.value::bigint, 0) < b.value::bigint
      ) as negative
    from (values ('p'), ('n')) as s (store)
  )
  select case
    when (select bool_or(st.negative) from stores st)
      or coalesce((p_a ->> 'z')::bigint, 0) < coalesce((p_b ->> 'z')::bigint, 0) then null
    else pg_catalog.jsonb_build_object(
      'z', coalesce((p_a ->> 'z')::bigint, 0) - coalesce((p_b ->> 'z')::bigint, 0),
      'p', (select st.delta from stores st where st.store = 'p'),
      'n', (select st.delta from stores st where st.store = 'n'))
  end
$$;
comment on function metrics.sketch_subtract(jsonb, jsonb) is
  'Bucket-wise difference a - b of two sketches (a later and an earlier state of one cumulative sketch); '
  'null when some bucket of b holds more than a''s (a reset).';

create function metrics.exp_buckets_delta(p_new jsonb, p_old jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  -- buckets: {"scale": s, "z": zero count, "p"|"n": {"<index at scale s>": [count, "p"|"n"|"z", sketch key]}}
  with shift as (
    select (p_old ->> 'scale')::integer - (p_new ->> 'scale')::integer as d
  ),
  old as (  -- the older state downscaled to the newer scale: index i at scale s is index floor(i / 2^d) at s - d
    select st.store, pg_catalog.floor(b.key::numeric / pg_catalog.power(2::numeric, sh.d))::bigint as idx,
      sum((b.value ->> 0)::bigint) as c
    from shift sh cross join (values ('p'), ('n')) as st (store)
    cross join lateral pg_catalog.jsonb_each(coalesce(p_old -> st.store, '{}'::jsonb)) b
    where sh.d >= 0
    group by 1, 2
  ),
  new as (
    select st.store, b.key::bigint as idx, (b.value ->> 0)::bigint as c, b.value ->> 1 as slot_store,
      (b.value ->> 2)::integer as slot_key
    from (values ('p'), ('n')) as st (store)
    cross join lateral pg_catalog.jsonb_each(coalesce(p_new -> st.store, '{}'::jsonb)) b
  ),
  d as (
    select n.slot_store, n.slot_key, n.c - coalesce(o.c, 0) as c
    from new n left join old o on o.store = n.store and o.idx = n.idx
  )
  select case
    when p_new is null or p_old is null or (select sh.d from shift sh) is distinct from greatest((select sh.d from shift sh), 0)
      or coalesce((p_new ->> 'z')::bigint, 0) < coalesce((p_old ->> 'z')::bigint, 0)
      or exists (select from old o left join new n on n.store = o.store and n.idx = o.idx where coalesce(n.c, 0) < o.c)
      then null
    else pg_catalog.jsonb_build_object(
      'z', coalesce((p_new ->> 'z')::bigint, 0) - coalesce((p_old ->> 'z')::bigint, 0)
        + coalesce((select sum(d.c) from d where d.slot_store = 'z'), 0),
      'p', (select coalesce(pg_catalog.jsonb_object_agg(x.k, x.c), '{}'::jsonb) from (
              select d.slot_key::text as k, sum(d.c) as c from d where d.slot_store = 'p' group by d.slot_key
              having sum(d.c) > 0) x),
      'n', (select coalesce(pg_catalog.jsonb_object_agg(x.k, x.c), '{}'::jsonb) from (
              select d.slot_key::text as k, sum(d.c) as c from d where d.slot_store = 'n' group by d.slot_key
              having sum(d.c) > 0) x))
  end
$$;
comment on function metrics.exp_buckets_delta(jsonb, jsonb) is
  'The cumulative -> delta rule of exponential histograms, in their own bucket space: the older state p_old is '
  'downscaled to the newer scale (an SDK only lowers the scale of a cumulative stream, merging pairs of buckets), '
  'subtracted bucket by bucket from p_new, and the differences are placed in the sketch buckets p_new names for '
  'its indexes. Null (a reset) when p_new has the higher scale, or some bucket or the zero count went down. '
  'Buckets: {"scale", "z", "p"|"n": {"<index>": [count, store, sketch key]}} (cumulative.buckets, made by the '
  'edge function''s otlp.ts).';

create function metrics.sketch_extremes(p_sketch jsonb, out lo double precision, out hi double precision)
language sql immutable parallel safe set search_path = ''
as $$
  with v as (
    select -metrics.sketch_value(n.key::integer) as value from pg_catalog.jsonb_object_keys(coalesce(p_sketch -> 'n', '{}')) n (key)
    union all
    select 0 where coalesce((p_sketch ->> 'z')::bigint, 0) > 0
    union all
    select metrics.sketch_value(p.key::integer) from pg_catalog.jsonb_object_keys(coalesce(p_sketch -> 'p', '{}')) p (key)
  )
  select min(v.value), max(v.value) from v
$$;
comment on function metrics.sketch_extremes(jsonb) is
  'Representative values of the lowest and the highest non-empty bucket of a sketch (null, null when empty).';

create function metrics.cumulative_to_delta(p_project_id uuid, p_points jsonb)
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
            'min', case when c.reset then c.point -> 'min'
                   else pg_catalog.to_jsonb(greatest(ex.lo, (c.point ->> 'min')::double precision)) end,
            'max', case when c.reset then c.point -> 'max'
                   else pg_catalog.to_jsonb(least(ex.hi, (c.point ->> 'max')::double precision)) end)
        end
      from c cross join lateral metrics.sketch_extremes(c.dsketch) as ex
      where not c.stale and (c.kind = 'counter' or c.dcount > 0)
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
  'too, convert one after the other. ts, count and sum of cumulative points are validated first. Internal to '
  'metrics.ingest_http.';

create function metrics.ingest_http(p_batch jsonb, p_token text default null)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_token metrics.ingest_tokens;
  v_project uuid;
  v_points jsonb;
  v_out jsonb;
  v_granted boolean := false;
  v_duplicate constant jsonb := '{"status": "duplicate", "points": 0, "series_created": 0, "overflowed": 0}';
begin
  if pg_catalog.jsonb_typeof(p_batch) is distinct from 'object' then
    perform metrics.reject('batch', 'must be a JSON object');
  end if;
  if p_token is not null then
    select * into v_token from metrics.ingest_tokens t
    where t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
      and t.revoked_at is null and (t.expires_at is null or t.expires_at > now());
    if not found then
      raise exception using
        errcode = '28000',
        message = 'invalid ingest token',
        hint = 'the token is unknown, revoked or expired';
    end if;
    if p_batch ? 'project_id' and (p_batch ->> 'project_id') is distinct from v_token.project_id::text
       and lower(p_batch ->> 'project_id') is distinct from v_token.project_id::text then
      raise exception using
        errcode = '42501',
        message = pg_catalog.format('the ingest token belongs to project %s, not to %s', v_token.project_id,
          p_batch ->> 'project_id'),
        hint = 'an ingest token writes only its own project';
    end if;
    v_project := v_token.project_id;
    p_batch := p_batch || pg_catalog.jsonb_build_object('project_id', v_project);
    if v_token.last_used_at is null or v_token.last_used_at < now() - interval '1 minute' then
      -- best effort and never waiting: a concurrent request holding the row records the use; the row lock is
      -- held until the commit, so concurrent requests sharing the token must not queue behind it
      update metrics.ingest_tokens t set last_used_at = now()
      where t.id = (
        select l.id from metrics.ingest_tokens l
        where l.id = v_token.id and (l.last_used_at is null or l.last_used_at < now() - interval '1 minute')
        for update skip locked
      );
    end if;
    insert into metrics.ingest_grants (txid, backend_pid, project_id)
    values (pg_catalog.pg_current_xact_id(), pg_catalog.pg_backend_pid(), v_project);
    v_granted := true;
  else
    if not coalesce((p_batch ->> 'project_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false) then
      perform metrics.reject('batch.project_id', 'required uuid');
    end if;
    v_project := (p_batch ->> 'project_id')::uuid;
    -- before the conversion state is touched: the caller's own rights
    perform metrics.assert_can_write(v_project);
  end if;

  -- a resent batch changes nothing, the conversion state included
  if exists (select from metrics.batches b where b.project_id = v_project
             and b.source = p_batch ->> 'source' and b.batch_id = p_batch ->> 'batch_id') then
    v_out := v_duplicate;
  elsif pg_catalog.jsonb_typeof(p_batch -> 'points') is distinct from 'array' then
    v_out := metrics.ingest(p_batch);  -- names the problem
  else
    insert into metrics.projects (id) values (v_project) on conflict do nothing;
    begin
      v_points := metrics.cumulative_to_delta(v_project, p_batch -> 'points');
      if pg_catalog.jsonb_array_length(v_points) = 0 and pg_catalog.jsonb_array_length(p_batch -> 'points') > 0 then
        -- only unchanged cumulative histograms: nothing to store, the state is where it was
        v_out := '{"status": "accepted", "points": 0, "series_created": 0, "overflowed": 0}';
      else
        v_out := metrics.ingest(pg_catalog.jsonb_set(p_batch, '{points}', v_points));
        if v_out ->> 'status' = 'duplicate' then
          -- a concurrent twin committed first: undo this call's state changes
          raise exception using errcode = 'MHDUP', message = 'duplicate batch';
        end if;
      end if;
    exception when sqlstate 'MHDUP' then
      v_out := v_duplicate;
    end;
  end if;
  if v_granted then
    delete from metrics.ingest_grants g
    where g.txid = pg_catalog.pg_current_xact_id() and g.backend_pid = pg_catalog.pg_backend_pid();
  end if;
  return v_out;
end
$$;
comment on function metrics.ingest_http(jsonb, text) is
  'HTTP ingest (edge function metrics-ingest): stores a batch of the wire format (docs/batch.schema.json) whose '
  'points may be cumulative ("cumulative": {"stream", "start"}, converted to deltas with metrics.ingest_streams) '
  'through metrics.ingest. With p_token (an mhi_ ingest token; 28000 when unknown, revoked or expired) the '
  'project is the token''s (a different batch.project_id is 42501); without, batch.project_id and the caller''s '
  'own rights (metrics.assert_can_write). A batch already stored returns status "duplicate" and changes '
  'nothing, the conversion state included. Security definer: callable by anon, the token is the check.';

create function metrics.prune_ingest_streams()
returns integer
language sql volatile security definer set search_path = ''
as $$
  with gone as (
    delete from metrics.ingest_streams s
    where s.updated_at < now() - (select c.max_past_high_water from metrics.config c)
    returning 1
  )
  select count(*)::integer from gone
$$;
comment on function metrics.prune_ingest_streams() is
  'Deletes conversion state of streams idle for longer than the widest accepted past window '
  '(config.max_past_high_water): a later cumulative point of such a stream would be refused as too old '
  'anyway. Returns the number of rows deleted; for the maintenance loop or pg_cron.';

-- the maintenance run prunes idle conversion state (the rest as in 20261206000500)
create or replace function metrics.maintain()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_report jsonb;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('metrics.maintain')) then
    return pg_catalog.jsonb_build_object('skipped', 'another maintenance run is in progress');
  end if;
  v_report := pg_catalog.jsonb_build_object('hours_rolled_up', metrics.rollup_hours(),
      'five_minutes_rolled_up', metrics.rollup_five_minutes())
    || metrics.apply_row_retention()
    || pg_catalog.jsonb_build_object('ingest_streams_pruned', metrics.prune_ingest_streams());
  update metrics.maintenance_state set last_run_at = now();
  -- partition DDL last, so that its locks on metrics.points last only until the commit: creating takes SHARE
  -- UPDATE EXCLUSIVE (ingest goes on), dropping ACCESS EXCLUSIVE (ingest waits, for the end of this run only)
  v_report := v_report || metrics.maintain_points_partitions();
  update metrics.maintenance_state set last_report = v_report;
  return v_report;
end
$$;
comment on function metrics.maintain() is
  'All periodic work but the rollup pass in one call: hourly and 5-minute rollups, row retention, pruning of '
  'idle OTLP cumulative streams (metrics.prune_ingest_streams), then the partition DDL (raw partitions for '
  'yesterday..+2 days, drops past retention; short lock timeouts with retries, busy ones deferred to the next '
  'run), last so that its locks on metrics.points are held only until the commit. Safe to run concurrently (a '
  'second run skips). Returns a report. The rollup pass and live publish run apart (metrics.rollup_pass, '
  'every 0.5 s).';

grant execute on function metrics.create_ingest_token(uuid, text, timestamptz),
  metrics.list_ingest_tokens(uuid),
  metrics.revoke_ingest_token(uuid)
  to authenticated, service_role;
grant execute on function metrics.ingest_http(jsonb, text) to anon, authenticated, service_role;
grant execute on function metrics.prune_ingest_streams() to service_role;
grant execute on function metrics.sketch_subtract(jsonb, jsonb), metrics.sketch_extremes(jsonb),
  metrics.exp_buckets_delta(jsonb, jsonb),
  metrics.is_project_admin(uuid) to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function: only the grants above stand
revoke execute on all functions in schema metrics from public;
