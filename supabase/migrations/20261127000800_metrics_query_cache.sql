-- What a cache of query results needs from the database: which steps can no longer change, and a number
-- that moves whenever rolled-up data changes after all.
--
-- The HTTP service keeps the points of complete steps of recent queries (meshhook_rt_metrics/api/
-- query_cache.py) and asks PostgreSQL only for the steps that are new since, so a dashboard refreshing
-- "the last 24 hours" reads the last few minutes instead of the whole day again. A step is settled once it
-- lies before metrics.five_minutes_complete_until() (every window before it is rolled up; later points for
-- those windows are late) and before the first window or hour of the project still marked late (the next
-- maintenance run recomputes those). When that run recomputes them, it deletes their marks; a trigger then
-- bumps the project's revision, and the cache drops what it kept for the project.

-- revisions come from one sequence, so a number is never given twice, even to a project whose row was
-- deleted and made again: a cache entry stamped with an old number can never look current
create sequence metrics.rollup_revision_seq;
comment on sequence metrics.rollup_revision_seq is 'Values of metrics.rollup_revisions.revision.';

create table metrics.rollup_revisions (
  project_id uuid primary key references metrics.projects (id) on delete cascade,
  revision bigint not null default pg_catalog.nextval('metrics.rollup_revision_seq') check (revision > 0),
  updated_at timestamptz not null default now()
);
comment on table metrics.rollup_revisions is
  'Per project, a number moved whenever rollups of already settled windows or hours are recomputed (late '
  'points): results of settled steps cached under another number are stale. No row: revision 0.';
comment on column metrics.rollup_revisions.project_id is 'The project (its row goes with it).';
comment on column metrics.rollup_revisions.revision is
  'A fresh value of rollup_revision_seq each time late marks of the project are cleared (trigger).';
comment on column metrics.rollup_revisions.updated_at is 'When the revision last moved.';

alter table metrics.rollup_revisions enable row level security;
grant select on metrics.rollup_revisions to service_role;

create function metrics.on_late_marks_cleared()
returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
begin
  -- rows in key order (rollup runs are serialized by the maintenance_state row lock; this costs nothing)
  insert into metrics.rollup_revisions as r (project_id)
  select distinct s.project_id
  from (select distinct c.series_id from cleared c) as c
  join metrics.series s on s.id = c.series_id
  order by s.project_id
  on conflict (project_id) do update
    set revision = pg_catalog.nextval('metrics.rollup_revision_seq'), updated_at = now();
  return null;
end
$$;
comment on function metrics.on_late_marks_cleared() is
  'Trigger of late_five_minutes and late_hours (after delete, per statement): the marks are cleared once '
  'their windows or hours are recomputed, so the revision of each project they belong to moves.';

create trigger late_five_minutes_cleared after delete on metrics.late_five_minutes
  referencing old table as cleared for each statement execute function metrics.on_late_marks_cleared();
comment on trigger late_five_minutes_cleared on metrics.late_five_minutes is
  'Recomputed late 5-minute windows bump their projects'' rollup_revisions.';
create trigger late_hours_cleared after delete on metrics.late_hours
  referencing old table as cleared for each statement execute function metrics.on_late_marks_cleared();
comment on trigger late_hours_cleared on metrics.late_hours is
  'Recomputed late hours bump their projects'' rollup_revisions.';

-- The step metrics.query_series takes when none is given. query_series (migration 20261127000700) computes
-- it inline with the same expression; tests/db/test_query_horizon.py holds the two to each other.
create function metrics.default_step(p_from timestamptz, p_to timestamptz)
returns interval
language sql immutable parallel safe set search_path = ''
as $$
  -- about 300 points per series, whole minutes (whole hours past an hour)
  select case when x.mins > 60 then pg_catalog.make_interval(hours => pg_catalog.ceil(x.mins / 60.0)::integer)
    else pg_catalog.make_interval(mins => x.mins) end
  from (select greatest(1, pg_catalog.ceil(extract(epoch from p_to - p_from) / 60 / 300))::integer as mins) as x
$$;
comment on function metrics.default_step(timestamptz, timestamptz) is
  'The step metrics.query_series uses over [p_from, p_to) when given none: ~300 points, whole minutes up to '
  'an hour, whole hours past it.';

create function metrics.query_horizon(p_project_id uuid, p_from timestamptz, p_to timestamptz,
  p_step interval default null)
returns table (revision bigint, settled_until timestamptz, minutes_from timestamptz, step interval)
language plpgsql stable security definer set search_path = ''
as $$
begin
  -- definer, for the maintenance state and the late marks; answers only about projects the caller sees
  if coalesce(auth.role(), '') <> 'service_role'
    and p_project_id not in (select metrics.user_project_ids('viewer')) then
    return;
  end if;
  return query
  select coalesce((select r.revision from metrics.rollup_revisions r where r.project_id = p_project_id), 0),
    least(metrics.five_minutes_complete_until(),
      (select min(l.bucket) from metrics.late_five_minutes l
        join metrics.series s on s.id = l.series_id where s.project_id = p_project_id),
      (select min(l.hour) from metrics.late_hours l
        join metrics.series s on s.id = l.series_id where s.project_id = p_project_id)),
    -- query_series reads ranges starting before minute retention differently (whole hours only), and
    -- retention deletes hourly rows past hour retention (which a project may set shorter) without a revision
    now() - (select least(coalesce(pr.minute_retention, c.minute_retention), coalesce(pr.hour_retention, c.hour_retention))
      from metrics.config c left join metrics.projects pr on pr.id = p_project_id),
    coalesce(p_step, metrics.default_step(p_from, p_to));
end
$$;
comment on function metrics.query_horizon(uuid, timestamptz, timestamptz, interval) is
  'For a cache of metrics.query_series results: the project''s rollup revision '
  '(cached steps of another revision are stale), the instant before which every step is settled (rolled '
  'up, no late marks pending), the start of minute retention or of hour retention if shorter (ranges '
  'starting earlier are not cached), and the step of [p_from, p_to) (p_step, or metrics.default_step). No '
  'row for a project the caller does not see. As of the statement: call it in the snapshot of the reads.';

grant execute on function metrics.default_step(timestamptz, timestamptz) to authenticated, service_role;
grant execute on function metrics.query_horizon(uuid, timestamptz, timestamptz, interval)
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
