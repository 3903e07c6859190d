-- Schema "metrics": configuration, projects and the ONE membership rule every policy uses.

create schema if not exists metrics;
comment on schema metrics is
  'MeshHook real-time metrics: ingest, rollups, live publish and queries. Tables are private; '
  'RPC functions are the API (add "metrics" to the Data API''s exposed schemas).';


grant usage on schema metrics to anon, authenticated, service_role;

-- global configuration -----------------------------------------------------------------------------------
create table metrics.config (
  id boolean primary key default true check (id),
  max_points_per_batch integer not null default 50000 check (max_points_per_batch between 1 and 1000000),
  max_labels integer not null default 32 check (max_labels between 0 and 256),
  max_label_value_length integer not null default 1024 check (max_label_value_length between 1 and 65536),
  max_past interval not null default '24 hours' check (max_past > interval '0'),
  max_future interval not null default '5 minutes' check (max_future >= interval '0'),
  default_series_quota integer not null default 10000 check (default_series_quota > 0),
  raw_retention interval not null default '2 days' check (raw_retention > interval '0'),
  minute_retention interval not null default '14 days' check (minute_retention > interval '0'),
  hour_retention interval not null default '400 days' check (hour_retention > interval '0'),
  publish_interval interval not null default '1 second' check (publish_interval >= interval '100 milliseconds'),
  publish_max_bytes integer not null default 200000 check (publish_max_bytes >= 10000),
  regex_max_length integer not null default 256 check (regex_max_length between 1 and 4096)
);
comment on table metrics.config is
  'Single-row installation settings: validation limits, timestamp window, default quota, retention and '
  'publish rate. Per-project overrides live in metrics.projects.';
insert into metrics.config default values;

-- projects ----------------------------------------------------------------------------------------------
create table metrics.projects (
  id uuid primary key,
  name text check (char_length(name) <= 200),
  series_quota integer check (series_quota > 0),
  raw_retention interval check (raw_retention > interval '0'),
  minute_retention interval check (minute_retention > interval '0'),
  hour_retention interval check (hour_retention > interval '0'),
  publish_interval interval check (publish_interval >= interval '100 milliseconds'),
  created_at timestamptz not null default now()
);
comment on table metrics.projects is
  'Per-project metrics settings (tenant key = MeshHook project id). Null settings fall back to '
  'metrics.config. A row is created on the first accepted batch.';

create table metrics.project_members (
  project_id uuid not null references metrics.projects (id) on delete cascade,
  user_id uuid not null,
  role text not null check (role in ('viewer', 'editor', 'admin')),
  created_at timestamptz not null default now(),
  primary key (project_id, user_id)
);
create index project_members_user_id_idx on metrics.project_members (user_id);
comment on table metrics.project_members is
  'Default membership store: viewer reads, editor also ingests, admin also manages members. '
  'Installations with their own project tables rewire metrics.membership() instead.';
comment on index metrics.project_members_user_id_idx is 'Membership look-up by user.';

-- the membership rule -----------------------------------------------------------------------------------
create function metrics.membership(p_user_id uuid)
returns table (project_id uuid, role text)
language sql stable security definer set search_path = ''
as $$
  select m.project_id, m.role from metrics.project_members m where m.user_id = p_user_id
$$;
comment on function metrics.membership(uuid) is
  'THE membership rule: projects a user belongs to, with role viewer|editor|admin. Every policy and '
  'check goes through it. To use your own tables, replace its body, e.g. for MeshHook: '
  '"select p.id, ''admin''::text from public.projects p where p.user_id = p_user_id".';

create function metrics.role_rank(p_role text)
returns integer
language sql immutable parallel safe set search_path = ''
as $$
  select case p_role when 'viewer' then 1 when 'editor' then 2 when 'admin' then 3 else 0 end
$$;
comment on function metrics.role_rank(text) is 'Orders project roles: viewer < editor < admin.';

create function metrics.user_project_ids(p_min_role text default 'viewer')
returns setof uuid
language sql stable security definer set search_path = ''
as $$
  select m.project_id
  from metrics.membership(auth.uid()) m
  where metrics.role_rank(m.role) >= metrics.role_rank(p_min_role)
$$;
comment on function metrics.user_project_ids(text) is
  'Projects of the calling user (auth.uid()) with at least the given role; used by every RLS policy '
  'as "project_id in (select metrics.user_project_ids(...))".';

create function metrics.assert_can_write(p_project_id uuid)
returns void
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_role text := auth.role();
begin
  if v_role = 'service_role' then
    return;
  end if;
  if coalesce(v_role, '') = '' then
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
    message = format('not allowed to write metrics of project %s', p_project_id),
    hint = 'ingest needs the service role, a trusted direct connection, or the editor role in the project';
end
$$;
comment on function metrics.assert_can_write(uuid) is
  'Raises 42501 unless the caller may write the project''s metrics (service role, trusted direct '
  'connection, or editor/admin member).';

-- row-level security --------------------------------------------------------------------------------------
alter table metrics.config enable row level security;
alter table metrics.projects enable row level security;
alter table metrics.project_members enable row level security;

create policy config_readable on metrics.config for select to authenticated using (true);
comment on policy config_readable on metrics.config is 'Limits are not secret: any signed-in user may read them.';

create policy projects_members_read on metrics.projects for select to authenticated
  using (id in (select metrics.user_project_ids('viewer')));
comment on policy projects_members_read on metrics.projects is 'Members see their projects'' settings.';

create policy projects_admins_rename on metrics.projects for update to authenticated
  using (id in (select metrics.user_project_ids('admin')))
  with check (id in (select metrics.user_project_ids('admin')));
comment on policy projects_admins_rename on metrics.projects is
  'Admins may rename their project (only the name column is granted).';

create policy members_read on metrics.project_members for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy members_read on metrics.project_members is 'Members see who else is in their projects.';

create policy members_admin_insert on metrics.project_members for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy members_admin_insert on metrics.project_members is 'Admins add members to their projects.';

create policy members_admin_update on metrics.project_members for update to authenticated
  using (project_id in (select metrics.user_project_ids('admin')))
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy members_admin_update on metrics.project_members is 'Admins change roles in their projects.';

create policy members_admin_delete on metrics.project_members for delete to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy members_admin_delete on metrics.project_members is 'Admins remove members of their projects.';

grant select on metrics.config, metrics.projects, metrics.project_members to authenticated;
grant update (name) on metrics.projects to authenticated;
grant insert, update, delete on metrics.project_members to authenticated;
grant all on metrics.config, metrics.projects, metrics.project_members to service_role;

grant execute on function metrics.role_rank(text), metrics.user_project_ids(text)
  to anon, authenticated, service_role;
grant execute on function metrics.membership(uuid), metrics.assert_can_write(uuid) to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
