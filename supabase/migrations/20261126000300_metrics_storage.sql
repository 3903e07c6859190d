-- Storage: metric families, series dictionary, raw delta points (daily partitions), batch ledger, rollups.

create table metrics.families (
  project_id uuid not null references metrics.projects (id) on delete cascade,
  name text not null,
  kind text not null check (kind in ('counter', 'gauge', 'histogram')),
  unit text not null default '' check (char_length(unit) <= 64),
  help text not null default '' check (char_length(help) <= 1024),
  overflow_points bigint not null default 0,
  created_at timestamptz not null default now(),
  primary key (project_id, name)
);
comment on table metrics.families is
  'One row per metric name per project: its kind (kept forever), unit and help, and how many points '
  'were redirected to the overflow series because the project''s series quota was reached.';

create table metrics.series (
  id bigint generated always as identity primary key,
  project_id uuid not null,
  name text not null,
  labels jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  foreign key (project_id, name) references metrics.families (project_id, name) on delete cascade,
  unique (project_id, name, labels)
);
comment on table metrics.series is
  'Series dictionary: a metric name plus a label set. The overflow series of a metric has the labels '
  '{"__overflow__": "true"} (a reserved name no client can send).';

create table metrics.points (
  project_id uuid not null,
  series_id bigint not null,
  ts timestamptz not null,
  source text not null,
  batch_id text not null,
  count bigint not null check (count >= 1),
  sum double precision not null,
  min double precision,
  max double precision,
  last double precision,
  sketch jsonb
) partition by range (ts);
comment on table metrics.points is
  'Raw deltas, one row per series per flush of a worker, partitioned by UTC day (metrics.points_YYYYMMDD). '
  'Unindexed for ingest speed; the rollups are what queries read.';

create table metrics.batches (
  project_id uuid not null,
  source text not null,
  batch_id text not null,
  points integer not null,
  received_at timestamptz not null default now(),
  primary key (project_id, source, batch_id)
);
create index batches_received_at_idx on metrics.batches (received_at);
comment on table metrics.batches is
  'Ledger of accepted batches: (project, source, batch_id) makes a resend a no-op. Kept at least as long '
  'as a batch may be (re)sent (the timestamp window).';
comment on index metrics.batches_received_at_idx is 'Retention of the batch ledger.';

create table metrics.rollup_1m (
  project_id uuid not null,
  series_id bigint not null references metrics.series (id) on delete cascade,
  bucket timestamptz not null,
  count bigint not null,
  sum double precision not null,
  min double precision,
  max double precision,
  last double precision,
  last_ts timestamptz,
  sketch jsonb,
  updated_at timestamptz not null default now(),
  primary key (series_id, bucket)
) with (fillfactor = 70);
create index rollup_1m_bucket_idx on metrics.rollup_1m (bucket);
comment on table metrics.rollup_1m is
  'Per-minute aggregates merged from raw deltas by the points trigger: count, sum, min, max, last value '
  '(by timestamp, ties to the larger value) and the merged sketch. No index on an updated column and spare '
  'page room (fillfactor 70), so the many in-minute updates stay HOT.';
comment on index metrics.rollup_1m_bucket_idx is 'Time-range scans: hourly rollups, retention.';

create table metrics.rollup_1h (
  like metrics.rollup_1m including defaults including constraints,
  primary key (series_id, bucket),
  foreign key (series_id) references metrics.series (id) on delete cascade
);
create index rollup_1h_bucket_idx on metrics.rollup_1h (bucket);
comment on table metrics.rollup_1h is 'Per-hour aggregates recomputed by metrics.maintain() from closed minutes.';
comment on index metrics.rollup_1h_bucket_idx is 'Time-range scans: retention.';

create table metrics.late_hours (
  series_id bigint not null,
  hour timestamptz not null,
  primary key (series_id, hour)
);
comment on table metrics.late_hours is
  'Hours already rolled up that received late points since: the next maintenance run recomputes them.';

create table metrics.publish_queue (
  project_id uuid not null,
  series_id bigint not null,
  bucket timestamptz not null,
  primary key (project_id, series_id, bucket)
);
comment on table metrics.publish_queue is 'Minute aggregates changed since their project''s last live message.';

create table metrics.publish_state (
  project_id uuid primary key references metrics.projects (id) on delete cascade,
  last_sent_at timestamptz not null default '-infinity',
  messages_sent bigint not null default 0
);
comment on table metrics.publish_state is 'Rate limit of live messages: when each project last published.';

create table metrics.maintenance_state (
  id boolean primary key default true check (id),
  hour_watermark timestamptz not null default '-infinity', -- hours before it are rolled up
  last_run_at timestamptz,
  last_report jsonb
);
comment on table metrics.maintenance_state is 'Progress of metrics.maintain(): hourly rollup watermark, last report.';
insert into metrics.maintenance_state default values;

-- partitions --------------------------------------------------------------------------------------------
create function metrics.ensure_points_partition(p_day date)
returns boolean
language plpgsql security definer set search_path = ''
as $$
declare
  v_name text := 'points_' || pg_catalog.to_char(p_day, 'YYYYMMDD');
begin
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.points partitions'));
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  execute pg_catalog.format(
    'create table metrics.%I partition of metrics.points for values from (%L) to (%L)',
    v_name, (p_day::text || ' 00:00:00+00')::timestamptz, ((p_day + 1)::text || ' 00:00:00+00')::timestamptz
  );
  execute pg_catalog.format('alter table metrics.%I enable row level security', v_name);
  execute pg_catalog.format('comment on table metrics.%I is %L', v_name, 'Raw points of ' || p_day::text || ' (UTC).');
  return true;
end
$$;
comment on function metrics.ensure_points_partition(date) is
  'Creates the raw-points partition of a UTC day when missing; returns whether it created one.';

-- row-level security --------------------------------------------------------------------------------------
alter table metrics.families enable row level security;
alter table metrics.series enable row level security;
alter table metrics.points enable row level security;
alter table metrics.batches enable row level security;
alter table metrics.rollup_1m enable row level security;
alter table metrics.rollup_1h enable row level security;
alter table metrics.publish_queue enable row level security;
alter table metrics.publish_state enable row level security;
alter table metrics.maintenance_state enable row level security;
alter table metrics.late_hours enable row level security;

create policy families_members_read on metrics.families for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy families_members_read on metrics.families is 'Members see their projects'' metrics.';

create policy series_members_read on metrics.series for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy series_members_read on metrics.series is 'Members see their projects'' series.';

create policy points_members_read on metrics.points for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy points_members_read on metrics.points is 'Members see their projects'' raw points.';

create policy rollup_1m_members_read on metrics.rollup_1m for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy rollup_1m_members_read on metrics.rollup_1m is 'Members see their projects'' minute rollups.';

create policy rollup_1h_members_read on metrics.rollup_1h for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy rollup_1h_members_read on metrics.rollup_1h is 'Members see their projects'' hour rollups.';

create policy batches_members_read on metrics.batches for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy batches_members_read on metrics.batches is 'Members see which batches their projects accepted.';

grant select on metrics.families, metrics.series, metrics.points, metrics.batches,
  metrics.rollup_1m, metrics.rollup_1h to authenticated;
grant all on metrics.families, metrics.series, metrics.points, metrics.batches, metrics.rollup_1m,
  metrics.rollup_1h, metrics.publish_queue, metrics.publish_state, metrics.maintenance_state, metrics.late_hours
  to service_role;
grant execute on function metrics.ensure_points_partition(date) to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
