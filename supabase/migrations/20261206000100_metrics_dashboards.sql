-- Saved dashboards of the live dashboard (issue #13) and the caller's projects:
--
--   metrics.dashboards              panel specs per project; members read, editors and admins write
--   metrics.dashboard_spec_problem  THE rule of a spec's shape (the HTTP service and the before-write
--                                   trigger ask it; the service only parses the JSON path it names)
--   metrics.my_projects             the caller's projects with their role (for the project picker)
--
-- A spec is {"version": 1, "title", "panels": [...]} as dashboard/CONTRACT.md ("Dashboard spec") describes.
-- Every update bumps "revision"; a writer that sets revision to the value it read gets 40001 when someone
-- else updated the dashboard meanwhile (optimistic concurrency: two editors never silently overwrite each
-- other). Like the alerting tables, a dashboard needs its project's metrics.projects row (created by the
-- first accepted batch of the project, or by the membership store's insert).

-- the shape of a spec -------------------------------------------------------------------------------------
create function metrics.dashboard_matchers_problem(p_list jsonb, p_path text)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_i integer := 0;
  v_item jsonb;
begin
  if p_list is null or pg_catalog.jsonb_typeof(p_list) <> 'array' then
    return pg_catalog.format('%s: must be an array of matcher strings such as outcome!="error"', p_path);
  end if;
  if pg_catalog.jsonb_array_length(p_list) > 20 then
    return pg_catalog.format('%s: at most 20 matchers', p_path);
  end if;
  for v_item in select e from pg_catalog.jsonb_array_elements(p_list) e loop
    if pg_catalog.jsonb_typeof(v_item) <> 'string' then
      return pg_catalog.format('%s[%s]: must be a string such as outcome!="error"', p_path, v_i);
    end if;
    if pg_catalog.char_length(v_item #>> '{}') > 1200 then
      return pg_catalog.format('%s[%s]: longer than 1200 characters', p_path, v_i);
    end if;
    -- the structure only (as GET /api/metrics's "match"): the query checks values and regexes when it runs
    if (v_item #>> '{}') !~ '^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)' then
      return pg_catalog.format('%s[%s]: expected label<op>value with op one of =, !=, =~, !~ (e.g. status=~"5..")',
        p_path, v_i);
    end if;
    v_i := v_i + 1;
  end loop;
  return null;
end
$$;
comment on function metrics.dashboard_matchers_problem(jsonb, text) is
  'Part of metrics.dashboard_spec_problem: why a list of label matcher strings (a panel''s match, a ratio''s '
  'numerator or denominator) is invalid, prefixed with its JSON path p_path, or null: an array of at most 20 '
  'strings of at most 1200 characters, each label<op>value (op =, !=, =~, !~).';

create function metrics.dashboard_panel_problem(p_panel jsonb, p_path text)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_keys constant text[] := array['id', 'title', 'type', 'metric', 'agg', 'by', 'match', 'quantiles', 'ratio',
    'unit', 'thresholds', 'width', 'height'];
  v_key text;
  v_type text;
  v_problem text;
  v_item jsonb;
  v_i integer;
  v_size numeric;
  v_max integer;
begin
  if pg_catalog.jsonb_typeof(p_panel) <> 'object' then
    return pg_catalog.format('%s: must be an object', p_path);
  end if;
  select k into v_key from pg_catalog.jsonb_object_keys(p_panel) k where k <> all (v_keys) order by k limit 1;
  if v_key is not null then
    return pg_catalog.format('%s: unknown field %s (allowed: %s)', p_path,
      pg_catalog.to_jsonb(pg_catalog.left(v_key, 60)), pg_catalog.array_to_string(v_keys, ', '));
  end if;
  if pg_catalog.jsonb_typeof(p_panel -> 'id') is distinct from 'string'
     or (p_panel ->> 'id') !~ '^[A-Za-z0-9_-]{1,64}$' then
    return pg_catalog.format('%s.id: required, 1 to 64 characters A-Z a-z 0-9 _ -', p_path);
  end if;
  if pg_catalog.jsonb_typeof(p_panel -> 'title') is distinct from 'string'
     or pg_catalog.char_length(p_panel ->> 'title') > 200 then
    return pg_catalog.format('%s.title: required string of at most 200 characters', p_path);
  end if;
  v_type := case when pg_catalog.jsonb_typeof(p_panel -> 'type') = 'string' then p_panel ->> 'type' end;
  if v_type is null or v_type not in ('timeseries', 'stat', 'alerts') then
    return pg_catalog.format('%s.type: must be timeseries, stat or alerts', p_path);
  end if;
  -- what to query: required unless the panel lists alerts (then optional, but checked when given)
  if v_type <> 'alerts' or coalesce(pg_catalog.jsonb_typeof(p_panel -> 'metric'), 'null') <> 'null' then
    if pg_catalog.jsonb_typeof(p_panel -> 'metric') is distinct from 'string'
       or (p_panel ->> 'metric') !~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$' or (p_panel ->> 'metric') like '\_\_%'
       or pg_catalog.char_length(p_panel ->> 'metric') > 200 then
      return pg_catalog.format('%s.metric: required metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 200 characters, '
        'not starting with __)', p_path);
    end if;
  end if;
  if v_type <> 'alerts' or coalesce(pg_catalog.jsonb_typeof(p_panel -> 'agg'), 'null') <> 'null' then
    if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'agg'), 'null') not in ('string', 'null') then
      return pg_catalog.format('%s.agg: must be a string', p_path);
    end if;
    v_problem := metrics.aggregation_problem(p_panel ->> 'agg');
    if v_problem is not null then
      return pg_catalog.format('%s.agg: %s', p_path, v_problem);
    end if;
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'by'), 'null') <> 'null' then
    if pg_catalog.jsonb_typeof(p_panel -> 'by') <> 'array'
       or exists (select from pg_catalog.jsonb_array_elements(p_panel -> 'by') e where pg_catalog.jsonb_typeof(e) <> 'string') then
      return pg_catalog.format('%s.by: must be null or an array of label names', p_path);
    end if;
    v_problem := metrics.label_names_problem(array(select pg_catalog.jsonb_array_elements_text(p_panel -> 'by')));
    if v_problem is not null then
      return pg_catalog.format('%s.by: %s', p_path, v_problem);
    end if;
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'match'), 'null') <> 'null' then
    v_problem := metrics.dashboard_matchers_problem(p_panel -> 'match', p_path || '.match');
    if v_problem is not null then
      return v_problem;
    end if;
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'quantiles'), 'null') <> 'null' then
    if pg_catalog.jsonb_typeof(p_panel -> 'quantiles') <> 'array' or pg_catalog.jsonb_array_length(p_panel -> 'quantiles') > 10 then
      return pg_catalog.format('%s.quantiles: must be null or an array of at most 10 percentiles such as "p99"', p_path);
    end if;
    v_i := 0;
    for v_item in select e from pg_catalog.jsonb_array_elements(p_panel -> 'quantiles') e loop
      if pg_catalog.jsonb_typeof(v_item) <> 'string' or (v_item #>> '{}') !~ '^p\d{1,2}(\.\d+)?$'
         or metrics.aggregation_problem(v_item #>> '{}') is not null then
        return pg_catalog.format('%s.quantiles[%s]: must be a percentile pNN or pNN.N such as "p99"', p_path, v_i);
      end if;
      v_i := v_i + 1;
    end loop;
    if (select pg_catalog.count(distinct e) from pg_catalog.jsonb_array_elements(p_panel -> 'quantiles') e)
       <> pg_catalog.jsonb_array_length(p_panel -> 'quantiles') then
      return pg_catalog.format('%s.quantiles: must not repeat', p_path);
    end if;
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'ratio'), 'null') <> 'null' then
    if pg_catalog.jsonb_typeof(p_panel -> 'ratio') <> 'object'
       or (p_panel -> 'ratio') - '{numerator,denominator}'::text[] <> '{}'::jsonb then
      return pg_catalog.format('%s.ratio: must be null or {"numerator": [matchers], "denominator": [matchers]}', p_path);
    end if;
    v_problem := coalesce(
      metrics.dashboard_matchers_problem(p_panel -> 'ratio' -> 'numerator', p_path || '.ratio.numerator'),
      metrics.dashboard_matchers_problem(p_panel -> 'ratio' -> 'denominator', p_path || '.ratio.denominator'));
    if v_problem is not null then
      return v_problem;
    end if;
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'unit'), 'null') <> 'null'
     and (pg_catalog.jsonb_typeof(p_panel -> 'unit') <> 'string' or (p_panel ->> 'unit') not in
          ('short', 'percent', 'percentunit', 's', 'ms', 'bytes', 'Bps', 'reqps', 'ops', 'none')) then
    return pg_catalog.format('%s.unit: must be one of short, percent, percentunit, s, ms, bytes, Bps, reqps, ops, none',
      p_path);
  end if;
  if coalesce(pg_catalog.jsonb_typeof(p_panel -> 'thresholds'), 'null') <> 'null' then
    if pg_catalog.jsonb_typeof(p_panel -> 'thresholds') <> 'array' or pg_catalog.jsonb_array_length(p_panel -> 'thresholds') > 10 then
      return pg_catalog.format('%s.thresholds: must be null or an array of at most 10 thresholds', p_path);
    end if;
    v_i := 0;
    for v_item in select e from pg_catalog.jsonb_array_elements(p_panel -> 'thresholds') e loop
      if pg_catalog.jsonb_typeof(v_item) <> 'object' or v_item - '{value,color}'::text[] <> '{}'::jsonb then
        return pg_catalog.format('%s.thresholds[%s]: must be {"value": number, "color": "ok"|"warning"|"critical"}', p_path, v_i);
      end if;
      if pg_catalog.jsonb_typeof(v_item -> 'value') is distinct from 'number' then
        return pg_catalog.format('%s.thresholds[%s].value: required number', p_path, v_i);
      end if;
      if pg_catalog.jsonb_typeof(v_item -> 'color') is distinct from 'string'
         or (v_item ->> 'color') not in ('ok', 'warning', 'critical') then
        return pg_catalog.format('%s.thresholds[%s].color: must be ok, warning or critical', p_path, v_i);
      end if;
      v_i := v_i + 1;
    end loop;
  end if;
  foreach v_key in array array['width', 'height'] loop
    v_max := case v_key when 'width' then 12 else 4 end;
    if coalesce(pg_catalog.jsonb_typeof(p_panel -> v_key), 'null') <> 'null' then
      v_size := case when pg_catalog.jsonb_typeof(p_panel -> v_key) = 'number' then (p_panel -> v_key)::numeric end;
      if v_size is null or v_size <> pg_catalog.trunc(v_size) or v_size not between 1 and v_max then
        return pg_catalog.format('%s.%s: must be an integer from 1 to %s', p_path, v_key, v_max);
      end if;
    end if;
  end loop;
  return null;
end
$$;
comment on function metrics.dashboard_panel_problem(jsonb, text) is
  'Part of metrics.dashboard_spec_problem: why one panel is invalid, prefixed with its JSON path p_path '
  '(e.g. panels[2].agg: ...), or null. Fields: id, title, type (timeseries, stat, alerts), metric and agg '
  '(required unless type is alerts), by, match, quantiles, ratio, unit, thresholds, width, height (null or '
  'absent: the dashboard''s defaults); no others.';

create function metrics.dashboard_spec_problem(p_spec jsonb)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_key text;
  v_panel jsonb;
  v_i integer := 0;
  v_problem text;
  v_first integer;
begin
  if p_spec is null then
    return 'required';
  end if;
  if pg_catalog.octet_length(p_spec::text) > 65536 then
    return 'larger than 65536 bytes as JSON';
  end if;
  if pg_catalog.jsonb_typeof(p_spec) <> 'object' then
    return 'must be an object {"version": 1, "title": string, "panels": [...]}';
  end if;
  select k into v_key from pg_catalog.jsonb_object_keys(p_spec) k where k not in ('version', 'title', 'panels')
  order by k limit 1;
  if v_key is not null then
    return pg_catalog.format('unknown field %s (allowed: version, title, panels)', pg_catalog.to_jsonb(pg_catalog.left(v_key, 60)));
  end if;
  if (p_spec -> 'version') is distinct from '1'::jsonb then
    return 'version: must be 1';
  end if;
  if pg_catalog.jsonb_typeof(p_spec -> 'title') is distinct from 'string'
     or pg_catalog.char_length(p_spec ->> 'title') > 200 then
    return 'title: required string of at most 200 characters';
  end if;
  if pg_catalog.jsonb_typeof(p_spec -> 'panels') is distinct from 'array'
     or pg_catalog.jsonb_array_length(p_spec -> 'panels') > 48 then
    return 'panels: required array of at most 48 panels';
  end if;
  for v_panel in select e from pg_catalog.jsonb_array_elements(p_spec -> 'panels') e loop
    v_problem := metrics.dashboard_panel_problem(v_panel, pg_catalog.format('panels[%s]', v_i));
    if v_problem is not null then
      return v_problem;
    end if;
    select e.n - 1 into v_first from pg_catalog.jsonb_array_elements(p_spec -> 'panels') with ordinality as e (p, n)
    where e.p -> 'id' = v_panel -> 'id' order by e.n limit 1;
    if v_first < v_i then
      return pg_catalog.format('panels[%s].id: %s is the id of panels[%s] too (ids are unique in a dashboard)',
        v_i, v_panel -> 'id', v_first);
    end if;
    v_i := v_i + 1;
  end loop;
  return null;
end
$$;
comment on function metrics.dashboard_spec_problem(jsonb) is
  'THE rule of a dashboard spec: why it is invalid, or null. The message starts with the JSON path of the '
  'problem ("panels[2].agg: unknown aggregation ...") unless it is about the whole spec. A spec is an object '
  '{"version": 1, "title": string <= 200, "panels": [at most 48 panels]} of at most 65536 bytes as JSON; '
  'panels as metrics.dashboard_panel_problem, with ids unique in the spec. Immutable (no configuration): the '
  'before-write trigger of metrics.dashboards and the HTTP service ask it.';

-- the table -------------------------------------------------------------------------------------------------
create table metrics.dashboards (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  name text not null check (char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]'),
  spec jsonb not null,
  position integer not null check (position between 0 and 1000000),
  revision integer not null default 1 check (revision >= 1),
  created_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint dashboards_name_key unique (project_id, name)
);
comment on table metrics.dashboards is
  'Saved dashboards of the live dashboard: a name and a panel spec (metrics.dashboard_spec_problem) per '
  'project, in the order of position. Members read, editors and admins write. Every update bumps revision '
  '(optimistic concurrency, see metrics.dashboards_before_write).';
comment on column metrics.dashboards.name is 'Shown in the dashboard picker; unique per project, 1 to 200 characters, no line breaks.';
comment on column metrics.dashboards.spec is
  'The panels: {"version": 1, "title", "panels": [...]} (dashboard/CONTRACT.md, "Dashboard spec"); checked '
  'by metrics.dashboard_spec_problem whenever it is written.';
comment on column metrics.dashboards.position is
  'Order of the project''s dashboards (ascending, then by name); a new dashboard without one goes last.';
comment on column metrics.dashboards.revision is
  '1 when created, bumped by every update. An update that sets revision to the value it read fails with '
  '40001 if the row changed since: two editors never silently overwrite each other.';
comment on column metrics.dashboards.created_by is 'The user who created it (auth.uid()); null when written by the service role.';
comment on column metrics.dashboards.updated_at is 'When it last changed (set by the trigger).';
comment on constraint dashboards_name_key on metrics.dashboards is
  'Dashboard names are unique per project; also the index of a project''s dashboards.';

create function metrics.dashboards_before_write()
returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_problem text;
begin
  if tg_op = 'UPDATE' then
    -- optimistic concurrency: "set revision = <the one you read>" must find it unchanged (a concurrent
    -- update waits for the row lock and then sees the bumped revision here)
    if new.revision is distinct from old.revision then
      raise exception using
        errcode = '40001',
        message = pg_catalog.format('dashboard %s changed meanwhile: revision %s is not the current revision %s',
          old.id, new.revision, old.revision),
        hint = 'reload the dashboard and apply your change again',
        schema = tg_table_schema, table = tg_table_name, column = 'revision';
    end if;
    new.revision := old.revision + 1;
    new.updated_at := pg_catalog.now();
    new.created_at := old.created_at;
    new.created_by := old.created_by;
  else
    new.revision := 1;
  end if;
  if tg_op = 'INSERT' or new.spec is distinct from old.spec then
    v_problem := metrics.dashboard_spec_problem(new.spec);
    if v_problem is not null then
      raise exception using
        errcode = '23514',
        message = pg_catalog.format('spec: %s', v_problem),
        schema = tg_table_schema, table = tg_table_name, constraint = 'dashboards_spec_check';
    end if;
  end if;
  if new.position is null then
    -- last of the project's dashboards the writer sees (a writer sees them all: editors read too)
    new.position := coalesce((
      select pg_catalog.max(d.position) + 1 from metrics.dashboards d where d.project_id = new.project_id
    ), 0);
  end if;
  return new;
end
$$;
comment on function metrics.dashboards_before_write() is
  'Before-write trigger of metrics.dashboards: the spec passes metrics.dashboard_spec_problem (raises 23514 '
  'naming dashboards_spec_check, message "spec: <path>: ..."); revision is 1 on insert and bumped by every '
  'update, and an update that sets another revision than the current one raises 40001 (optimistic '
  'concurrency); a missing position puts the dashboard last.';
create trigger dashboards_before_write
before insert or update on metrics.dashboards
for each row execute function metrics.dashboards_before_write();
comment on trigger dashboards_before_write on metrics.dashboards is
  'Spec rule, revision bump and optimistic concurrency, default position.';

-- row-level security ------------------------------------------------------------------------------------------
alter table metrics.dashboards enable row level security;

create policy dashboards_members_read on metrics.dashboards for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy dashboards_members_read on metrics.dashboards is 'Members (any role) see their projects'' dashboards.';
create policy dashboards_editors_insert on metrics.dashboards for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy dashboards_editors_insert on metrics.dashboards is 'Editors and admins create dashboards.';
create policy dashboards_editors_update on metrics.dashboards for update to authenticated
  using (project_id in (select metrics.user_project_ids('editor')))
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy dashboards_editors_update on metrics.dashboards is 'Editors and admins change dashboards.';
create policy dashboards_editors_delete on metrics.dashboards for delete to authenticated
  using (project_id in (select metrics.user_project_ids('editor')));
comment on policy dashboards_editors_delete on metrics.dashboards is 'Editors and admins delete dashboards.';

-- the caller's projects ------------------------------------------------------------------------------------------
create function metrics.my_projects()
returns table (project_id uuid, name text, role text)
language sql stable security invoker set search_path = ''
as $$
  select u.id, p.name,
    case
      when u.id in (select metrics.user_project_ids('admin')) then 'admin'
      when u.id in (select metrics.user_project_ids('editor')) then 'editor'
      else 'viewer'
    end
  from metrics.user_project_ids('viewer') as u (id)
  left join metrics.projects p on p.id = u.id
  union all
  -- the service role is no member of anything and may do everything: every project that has metrics
  select p.id, p.name, 'admin' from metrics.projects p where auth.role() = 'service_role'
  order by 2 nulls last, 1
$$;
comment on function metrics.my_projects() is
  'The calling user''s projects (metrics.membership through metrics.user_project_ids, so a rewired '
  'membership applies) with their role, viewer, editor or admin, and the name from metrics.projects (null '
  'without a row or a name); by name, then id. The service role gets every row of metrics.projects as admin. '
  'Security invoker: row-level security of metrics.projects lets members read their projects'' names.';

-- privileges ---------------------------------------------------------------------------------------------------
grant select, delete on metrics.dashboards to authenticated;
grant insert (project_id, name, spec, position) on metrics.dashboards to authenticated;
grant update (name, spec, position, revision) on metrics.dashboards to authenticated;
grant all on metrics.dashboards to service_role;

grant execute on function metrics.dashboard_spec_problem(jsonb), metrics.dashboard_panel_problem(jsonb, text),
  metrics.dashboard_matchers_problem(jsonb, text), metrics.my_projects()
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
