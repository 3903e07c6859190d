-- Alerting configuration and history (issue 5 / the Alerting issue): notification receivers, alert rules
-- with their receivers, silences, and the history the alert worker appends. The HTTP service's
-- /api/metrics/alerts endpoints run their SQL as the caller, so the policies below decide who may do what:
--
--   receivers (notification targets and their secrets)  admins of the project only
--   rules, rule -> receiver links, silences              members read, editors and admins write
--                                                        (a silence can only be ended early, not extended
--                                                        or revived; deleted only before it starts)
--   events (history)                                    members read; only the service role writes
--
-- The validity rules of the configuration (aggregations, label matchers, label names, annotations,
-- receiver targets) are SQL functions used by check constraints, so the database refuses a bad rule
-- whoever writes it. A receiver's secret (webhook signing key, bearer token) is write-only for signed-in
-- users: they are granted every column but "secret" for select (has_secret tells whether one is set).

-- validity rules ---------------------------------------------------------------------------------------
create function metrics.aggregation_problem(p_agg text)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_agg is null then 'required'
    when pg_catalog.lower(p_agg) ~ '^p\d{1,2}(\.\d+)?$' then null
    when pg_catalog.lower(p_agg) ~ '^quantile\(0?\.\d+\)$' or pg_catalog.lower(p_agg) ~ '^quantile\([01]\)$' then null
    when pg_catalog.lower(p_agg) in ('rate', 'sum', 'avg', 'min', 'max', 'last', 'count') then null
    else pg_catalog.format('unknown aggregation %L (use rate, sum, avg, min, max, last, count, pNN or quantile(q))',
      pg_catalog.left(p_agg, 40))
  end
$$;
comment on function metrics.aggregation_problem(text) is
  'Why an aggregation is not one metrics.query accepts (rate, sum, avg, min, max, last, count, pNN / pNN.N, '
  'quantile(q)), or null when it is. Used by the check constraint of metrics.alert_rules.agg.';

create function metrics.label_names_problem(p_names text[])
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_names is null or pg_catalog.cardinality(p_names) = 0 then null
    when pg_catalog.array_ndims(p_names) <> 1 then 'must be a list of label names'
    when pg_catalog.cardinality(p_names) > 20 then 'at most 20 label names'
    when exists (
      select from pg_catalog.unnest(p_names) n
      where n is null or n !~ '^[a-zA-Z_][a-zA-Z0-9_]*$' or pg_catalog.char_length(n) > 100
    ) then 'label names match [a-zA-Z_][a-zA-Z0-9_]* and have at most 100 characters'
    when (select pg_catalog.count(distinct n) from pg_catalog.unnest(p_names) n) <> pg_catalog.cardinality(p_names)
      then 'label names must not repeat'
  end
$$;
comment on function metrics.label_names_problem(text[]) is
  'Why a list of group-by label names is invalid (at most 20 distinct names [a-zA-Z_][a-zA-Z0-9_]*), or null.';

create function metrics.matchers_problem(p_matchers jsonb, p_regex_max integer)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_i integer := 0;
  m jsonb;
begin
  if p_matchers is null then
    return 'required (an empty array matches every series)';
  end if;
  if pg_catalog.jsonb_typeof(p_matchers) <> 'array' then
    return 'must be an array of {"label", "op", "value"}';
  end if;
  if pg_catalog.jsonb_array_length(p_matchers) > 20 then
    return 'at most 20 matchers';
  end if;
  for m in select e from pg_catalog.jsonb_array_elements(p_matchers) e loop
    if pg_catalog.jsonb_typeof(m) <> 'object'
       or (m - '{label,op,value}'::text[]) <> '{}'::jsonb
       or pg_catalog.jsonb_typeof(m -> 'label') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'op') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'value') is distinct from 'string' then
      return pg_catalog.format('[%s]: each matcher is {"label": string, "op": "=|!=|=~|!~", "value": string}', v_i);
    end if;
    if (m ->> 'label') !~ '^[a-zA-Z_][a-zA-Z0-9_]*$' or pg_catalog.char_length(m ->> 'label') > 100 then
      return pg_catalog.format('[%s].label: invalid label name', v_i);
    end if;
    if (m ->> 'op') not in ('=', '!=', '=~', '!~') then
      return pg_catalog.format('[%s].op: unknown operator %L (use =, !=, =~, !~)', v_i, pg_catalog.left(m ->> 'op', 10));
    end if;
    if pg_catalog.char_length(m ->> 'value') > 1024 then
      return pg_catalog.format('[%s].value: longer than 1024 characters', v_i);
    end if;
    if (m ->> 'op') in ('=~', '!~') then
      if p_regex_max is not null and pg_catalog.char_length(m ->> 'value') > p_regex_max then
        return pg_catalog.format('[%s].value: regex longer than %s characters', v_i, p_regex_max);
      end if;
      begin
        perform '' ~ (m ->> 'value');
      exception when invalid_regular_expression then
        return pg_catalog.format('[%s].value: invalid regex: %s', v_i, sqlerrm);
      end;
    end if;
    v_i := v_i + 1;
  end loop;
  return null;
end
$$;
comment on function metrics.matchers_problem(jsonb, integer) is
  'Why a list of label matchers is invalid, or null: the shape metrics.query takes as p_matchers (an array '
  'of at most 20 {"label", "op", "value"} objects, op one of =, !=, =~, !~, values of at most 1024 '
  'characters, regexes that compile and are at most p_regex_max long; null: no regex limit beyond 1024). '
  'Immutable: the check constraints call it with the fixed bound 1024, so they never depend on '
  'metrics.config and a later change of regex_max_length cannot freeze stored rows.';

create function metrics.matchers_problem(p_matchers jsonb)
returns text
language sql stable parallel safe set search_path = ''
as $$
  select metrics.matchers_problem(p_matchers, coalesce((select c.regex_max_length from metrics.config c), 256))
$$;
comment on function metrics.matchers_problem(jsonb) is
  'metrics.matchers_problem(jsonb, integer) with the configured regex limit (metrics.config.regex_max_length): '
  'the rule for new matchers, asked by the HTTP service, metrics.query and the before-write triggers of '
  'metrics.alert_rules and metrics.alert_silences (which ask it only when the matchers are new or changed).';

create function metrics.annotations_problem(p_annotations jsonb)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_annotations is null then 'required (use {})'
    when pg_catalog.jsonb_typeof(p_annotations) <> 'object' then 'must be an object of string values'
    when exists (
      select from pg_catalog.jsonb_each(p_annotations) e where pg_catalog.jsonb_typeof(e.value) <> 'string'
    ) then 'values must be strings'
    when exists (
      select from pg_catalog.jsonb_object_keys(p_annotations) k
      where k !~ '^[a-zA-Z_][a-zA-Z0-9_]*$' or pg_catalog.char_length(k) > 100
    ) then 'keys match [a-zA-Z_][a-zA-Z0-9_]* and have at most 100 characters'
    when (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(p_annotations)) > 32 then 'at most 32 annotations'
    when pg_catalog.octet_length(p_annotations::text) > 16384 then 'larger than 16 KiB'
  end
$$;
comment on function metrics.annotations_problem(jsonb) is
  'Why a rule''s annotations are invalid, or null: an object of at most 32 string values, keys '
  '[a-zA-Z_][a-zA-Z0-9_]*, at most 16 KiB as JSON.';

create function metrics.receiver_target_problem(p_kind text, p_target text)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_target is null then 'required'
    when p_kind = 'email' then case
      when pg_catalog.char_length(p_target) > 254
        or p_target !~ '^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$'
        then 'must be an e-mail address (local@domain.tld)' end
    when p_kind in ('webhook', 'slack', 'alertmanager') then case
      when pg_catalog.char_length(p_target) > 2048 then 'URL longer than 2048 characters'
      when p_target !~ '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$'
        then 'must be an http(s) URL without credentials (put tokens in the secret)'
      when pg_catalog.substring(p_target, '^https?://[A-Za-z0-9.-]+:([0-9]{1,5})')::integer not between 1 and 65535
        then 'port must be between 1 and 65535'
      when p_kind = 'slack' and p_target !~ '^https://' then 'Slack webhook URLs must use https'
    end
    else 'unknown receiver kind'
  end
$$;
comment on function metrics.receiver_target_problem(text, text) is
  'Why a receiver''s target is invalid for its kind, or null: webhook, slack and alertmanager take an http or '
  'https URL (slack: https only) without user:password and with a port, if any, of 1 to 65535; email an '
  'e-mail address. Whether a URL points at an internal address is for the alert worker to check when it '
  'sends (DNS can change after this check).';

create function metrics.alerting_touch_updated_at()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
comment on function metrics.alerting_touch_updated_at() is
  'Before-update trigger of the alerting configuration tables: keeps updated_at current.';

create function metrics.alerting_check_matchers()
returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_problem text;
begin
  -- only new or changed matchers meet today's limit: a rule or silence written under a higher
  -- regex_max_length stays renamable, disableable and endable (the check constraint has a fixed bound)
  if tg_op = 'INSERT' or new.matchers is distinct from old.matchers then
    v_problem := metrics.matchers_problem(new.matchers);
    if v_problem is not null then
      raise exception using
        errcode = '23514',
        message = pg_catalog.format('matchers: %s', v_problem),
        schema = tg_table_schema,
        table = tg_table_name,
        constraint = tg_table_name || '_matchers_check';
    end if;
  end if;
  return new;
end
$$;
comment on function metrics.alerting_check_matchers() is
  'Before-insert-or-update trigger of metrics.alert_rules and metrics.alert_silences: new or changed '
  'matchers must pass metrics.matchers_problem(jsonb) with the configured regex limit (raises 23514 naming '
  'the table''s matchers check constraint). Unchanged matchers are not re-checked.';

create function metrics.alert_silences_guard()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  -- a silence is a record of who muted what: the only change is ending it early
  if (new.id, new.project_id, new.rule_id, new.matchers, new.starts_at, new.comment, new.created_by, new.created_at)
     is distinct from
     (old.id, old.project_id, old.rule_id, old.matchers, old.starts_at, old.comment, old.created_by, old.created_at) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('silence %s: only ends_at can change', old.id),
      hint = 'create a new silence instead';
  end if;
  if new.ends_at is distinct from old.ends_at then
    if old.ends_at <= pg_catalog.now() then
      raise exception using
        errcode = '42501',
        message = pg_catalog.format('silence %s has ended and cannot be changed', old.id),
        hint = 'create a new silence instead';
    end if;
    if new.ends_at > old.ends_at or new.ends_at < pg_catalog.now() then
      raise exception using
        errcode = '42501',
        message = pg_catalog.format('silence %s: ends_at can only be moved earlier, to now at the earliest', old.id),
        hint = 'end it with metrics.end_alert_silence, or create a new silence';
    end if;
  end if;
  return new;
end
$$;
comment on function metrics.alert_silences_guard() is
  'Before-update trigger of metrics.alert_silences, for every role: a silence that has not ended may be '
  'shortened (ends_at moved earlier, down to now); it cannot be extended, revived after it ended, or '
  'otherwise changed. Raises 42501.';

-- receivers ----------------------------------------------------------------------------------------------
create table metrics.alert_receivers (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  name text not null check (char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]'),
  kind text not null check (kind in ('webhook', 'slack', 'alertmanager', 'email')),
  target text not null,
  secret text check (char_length(secret) between 1 and 1024),
  has_secret boolean generated always as (secret is not null) stored,
  created_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint alert_receivers_target_check check (metrics.receiver_target_problem(kind, target) is null),
  constraint alert_receivers_name_key unique (project_id, name),
  constraint alert_receivers_project_id_id_key unique (project_id, id)
);
comment on table metrics.alert_receivers is
  'Where a project''s alerts are sent: a webhook (JSON POST, signed with the secret when set), a Slack '
  'incoming webhook, an Alertmanager API base URL or an e-mail address. Readable and writable only by the '
  'project''s admins; "secret" is write-only for signed-in users (no select grant on it).';
comment on column metrics.alert_receivers.target is
  'URL (webhook, slack, alertmanager) or e-mail address. A Slack URL is itself a credential: the HTTP '
  'service returns it masked.';
comment on column metrics.alert_receivers.secret is
  'Webhook HMAC signing key or bearer token. Never selectable by authenticated (column grants); the alert '
  'worker reads it as the service role.';
comment on column metrics.alert_receivers.has_secret is 'Whether a secret is set (readable in place of it).';
comment on constraint alert_receivers_name_key on metrics.alert_receivers is 'Receiver names are unique per project.';
comment on constraint alert_receivers_project_id_id_key on metrics.alert_receivers is
  'Target of the composite foreign key of metrics.alert_rule_receivers: a rule links receivers of its own project only.';

create trigger alert_receivers_updated_at
before update on metrics.alert_receivers
for each row execute function metrics.alerting_touch_updated_at();
comment on trigger alert_receivers_updated_at on metrics.alert_receivers is 'Keeps updated_at current.';

-- rules --------------------------------------------------------------------------------------------------
create table metrics.alert_rules (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  name text not null check (char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]'),
  description text not null default '' check (char_length(description) <= 2000),
  metric text not null check (
    metric ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$' and metric not like '\_\_%' and char_length(metric) <= 200
  ),
  matchers jsonb not null default '[]'::jsonb,
  agg text not null default 'sum',
  group_by text[],
  window_length interval not null default '5 minutes'
    check (window_length between interval '1 minute' and interval '1 day'),
  op text not null check (op in ('>', '>=', '<', '<=', '==', '!=')),
  threshold double precision not null
    check (threshold not in ('NaN'::double precision, 'Infinity'::double precision, '-Infinity'::double precision)),
  for_duration interval not null default '0' check (for_duration between interval '0' and interval '1 day'),
  severity text not null default 'warning' check (severity in ('info', 'warning', 'critical')),
  annotations jsonb not null default '{}'::jsonb,
  enabled boolean not null default true,
  created_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- fixed bound (the value length cap): the configured regex limit is the trigger's, for new matchers only
  constraint alert_rules_matchers_check check (metrics.matchers_problem(matchers, 1024) is null),
  constraint alert_rules_agg_check check (metrics.aggregation_problem(agg) is null),
  constraint alert_rules_group_by_check check (metrics.label_names_problem(group_by) is null),
  constraint alert_rules_annotations_check check (metrics.annotations_problem(annotations) is null),
  constraint alert_rules_name_key unique (project_id, name),
  constraint alert_rules_project_id_id_key unique (project_id, id)
);
comment on table metrics.alert_rules is
  'Alert rules: "agg(metric{matchers}) by (group_by) over window_length <op> threshold for for_duration", '
  'evaluated per group by the alert worker with metrics.query''s semantics. Members read, editors and admins write.';
comment on column metrics.alert_rules.group_by is
  'Label names each alert is kept per (as metrics.query''s p_by); null: one alert per series, {}: one for all.';
comment on column metrics.alert_rules.for_duration is 'How long the condition must hold before pending becomes firing.';
comment on constraint alert_rules_name_key on metrics.alert_rules is 'Rule names are unique per project.';
comment on constraint alert_rules_project_id_id_key on metrics.alert_rules is
  'Target of composite foreign keys: links, silences and events refer to a rule of their own project.';

create trigger alert_rules_updated_at
before update on metrics.alert_rules
for each row execute function metrics.alerting_touch_updated_at();
comment on trigger alert_rules_updated_at on metrics.alert_rules is 'Keeps updated_at current.';

create trigger alert_rules_matchers
before insert or update on metrics.alert_rules
for each row execute function metrics.alerting_check_matchers();
comment on trigger alert_rules_matchers on metrics.alert_rules is
  'New or changed matchers meet the configured regex limit (metrics.config.regex_max_length).';

create table metrics.alert_rule_receivers (
  project_id uuid not null,
  rule_id uuid not null,
  receiver_id uuid not null,
  primary key (rule_id, receiver_id),
  constraint alert_rule_receivers_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete cascade,
  constraint alert_rule_receivers_receiver_fkey foreign key (project_id, receiver_id)
    references metrics.alert_receivers (project_id, id) on delete cascade
);
create index alert_rule_receivers_receiver_idx on metrics.alert_rule_receivers (project_id, receiver_id);
comment on table metrics.alert_rule_receivers is
  'Which receivers a rule notifies. Both foreign keys include project_id, so a rule can only link receivers '
  'of its own project. Members read (ids only), editors and admins write (metrics.set_alert_rule_receivers).';
comment on index metrics.alert_rule_receivers_receiver_idx is 'Cascade of a deleted receiver; rules per receiver.';

-- silences -----------------------------------------------------------------------------------------------
create table metrics.alert_silences (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  rule_id uuid,
  matchers jsonb not null default '[]'::jsonb,
  starts_at timestamptz not null default now(),
  ends_at timestamptz not null,
  comment text not null default '' check (char_length(comment) <= 2000),
  created_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  constraint alert_silences_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete cascade,
  constraint alert_silences_matchers_check check (metrics.matchers_problem(matchers, 1024) is null),
  constraint alert_silences_period_check check (ends_at > starts_at and ends_at - starts_at <= interval '90 days'),
  -- every client can read these years back (Python's datetime ends at 9999)
  constraint alert_silences_starts_at_check
    check (starts_at between '2000-01-01 00:00:00+00' and '9000-01-01 00:00:00+00')
);
create index alert_silences_project_ends_idx on metrics.alert_silences (project_id, ends_at desc);
create index alert_silences_rule_idx on metrics.alert_silences (project_id, rule_id) where rule_id is not null;
comment on table metrics.alert_silences is
  'Mutes notifications between starts_at and ends_at (at most 90 days) for alerts whose labels match all '
  'matchers, of one rule (rule_id) or of every rule (rule_id null). Members read, editors and admins create; '
  'a silence is a record of who muted what: it can be ended early (ends_at moved earlier, down to now: '
  'metrics.end_alert_silence), but not extended or revived, and deleted only before it starts.';
comment on index metrics.alert_silences_project_ends_idx is 'Active silences of a project (ends_at > now()).';
comment on index metrics.alert_silences_rule_idx is 'Cascade of a deleted rule.';

create trigger alert_silences_matchers
before insert or update on metrics.alert_silences
for each row execute function metrics.alerting_check_matchers();
comment on trigger alert_silences_matchers on metrics.alert_silences is
  'New or changed matchers meet the configured regex limit (metrics.config.regex_max_length).';
create trigger alert_silences_guard
before update on metrics.alert_silences
for each row execute function metrics.alert_silences_guard();
comment on trigger alert_silences_guard on metrics.alert_silences is
  'A silence can only be shortened (down to now) before it ends: no extension, no revival, no other change.';

-- history ------------------------------------------------------------------------------------------------
create table metrics.alert_events (
  id bigint generated always as identity primary key,
  project_id uuid not null references metrics.projects (id) on delete cascade,
  rule_id uuid,
  rule_name text not null default '' check (char_length(rule_name) <= 200),
  labels jsonb not null default '{}'::jsonb check (pg_catalog.jsonb_typeof(labels) = 'object'),
  state text not null check (state in ('pending', 'firing', 'resolved')),
  value double precision
    check (value not in ('NaN'::double precision, 'Infinity'::double precision, '-Infinity'::double precision)),
  at timestamptz not null default now(),
  -- history outlives its rule: deleting the rule keeps the events (rule_id becomes null, rule_name stays)
  constraint alert_events_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete set null (rule_id)
);
create index alert_events_project_at_idx on metrics.alert_events (project_id, at desc);
create index alert_events_rule_at_idx on metrics.alert_events (project_id, rule_id, at desc) where rule_id is not null;
comment on table metrics.alert_events is
  'Alert history, append-only: state changes (pending, firing, resolved) of an alert (rule + label set) with '
  'the value that caused them. Written by the alert worker as the service role; members read. Deleting a '
  'rule keeps its history (rule_id set null, rule_name kept); deleting the project deletes it.';
comment on index metrics.alert_events_project_at_idx is 'History of a project, newest first.';
comment on index metrics.alert_events_rule_at_idx is 'History of one rule, newest first; the rule''s set-null on delete.';

-- row-level security -------------------------------------------------------------------------------------
alter table metrics.alert_receivers enable row level security;
alter table metrics.alert_rules enable row level security;
alter table metrics.alert_rule_receivers enable row level security;
alter table metrics.alert_silences enable row level security;
alter table metrics.alert_events enable row level security;

create policy alert_receivers_admins_read on metrics.alert_receivers for select to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy alert_receivers_admins_read on metrics.alert_receivers is
  'Notification targets are readable only by the project''s admins.';
create policy alert_receivers_admins_insert on metrics.alert_receivers for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy alert_receivers_admins_insert on metrics.alert_receivers is 'Admins add receivers.';
create policy alert_receivers_admins_update on metrics.alert_receivers for update to authenticated
  using (project_id in (select metrics.user_project_ids('admin')))
  with check (project_id in (select metrics.user_project_ids('admin')));
comment on policy alert_receivers_admins_update on metrics.alert_receivers is 'Admins change receivers.';
create policy alert_receivers_admins_delete on metrics.alert_receivers for delete to authenticated
  using (project_id in (select metrics.user_project_ids('admin')));
comment on policy alert_receivers_admins_delete on metrics.alert_receivers is 'Admins delete receivers.';

create policy alert_rules_members_read on metrics.alert_rules for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_rules_members_read on metrics.alert_rules is 'Members see their projects'' rules.';
create policy alert_rules_editors_insert on metrics.alert_rules for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_rules_editors_insert on metrics.alert_rules is 'Editors and admins create rules.';
create policy alert_rules_editors_update on metrics.alert_rules for update to authenticated
  using (project_id in (select metrics.user_project_ids('editor')))
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_rules_editors_update on metrics.alert_rules is 'Editors and admins change rules.';
create policy alert_rules_editors_delete on metrics.alert_rules for delete to authenticated
  using (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_rules_editors_delete on metrics.alert_rules is 'Editors and admins delete rules.';

create policy alert_rule_receivers_members_read on metrics.alert_rule_receivers for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_rule_receivers_members_read on metrics.alert_rule_receivers is
  'Members see which receiver ids a rule notifies (not the receivers themselves).';
create policy alert_rule_receivers_editors_insert on metrics.alert_rule_receivers for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_rule_receivers_editors_insert on metrics.alert_rule_receivers is
  'Editors and admins link receivers of the same project (the foreign keys check the project).';
create policy alert_rule_receivers_editors_delete on metrics.alert_rule_receivers for delete to authenticated
  using (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_rule_receivers_editors_delete on metrics.alert_rule_receivers is
  'Editors and admins unlink receivers.';

create policy alert_silences_members_read on metrics.alert_silences for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_silences_members_read on metrics.alert_silences is 'Members see their projects'' silences.';
create policy alert_silences_editors_insert on metrics.alert_silences for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_silences_editors_insert on metrics.alert_silences is 'Editors and admins create silences.';
create policy alert_silences_editors_update on metrics.alert_silences for update to authenticated
  using (project_id in (select metrics.user_project_ids('editor')))
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_silences_editors_update on metrics.alert_silences is
  'Editors and admins end silences (the trigger alert_silences_guard allows shortening only).';
create policy alert_silences_editors_delete on metrics.alert_silences for delete to authenticated
  using (project_id in (select metrics.user_project_ids('editor')) and starts_at >= now());
comment on policy alert_silences_editors_delete on metrics.alert_silences is
  'Editors and admins delete silences that have not started yet.';

create policy alert_events_members_read on metrics.alert_events for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_events_members_read on metrics.alert_events is
  'Members read their projects'' alert history; nobody but the service role writes it.';

-- writes that span rows ------------------------------------------------------------------------------------
create function metrics.set_alert_rule_receivers(p_rule_id uuid, p_receiver_ids uuid[])
returns uuid[]
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_project uuid;
  v_ids uuid[] := coalesce(p_receiver_ids, '{}');
  v_i integer;
begin
  if pg_catalog.cardinality(v_ids) > 20 or pg_catalog.array_position(v_ids, null) is not null then
    raise exception using
      errcode = '22023',
      message = 'receiver_ids: at most 20 receiver ids, none null';
  end if;
  -- the rule, if the caller may change it (row-level security: update policy); its project scopes the
  -- receivers. Touching it also locks it against concurrent relinking and bumps updated_at.
  update metrics.alert_rules r set updated_at = pg_catalog.now() where r.id = p_rule_id
  returning r.project_id into v_project;
  if not found then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('not allowed to change alert rule %s', p_rule_id),
      hint = 'rules are changed by editors and admins of their project';
  end if;
  delete from metrics.alert_rule_receivers l where l.rule_id = p_rule_id and l.receiver_id <> all (v_ids);
  for v_i in 1 .. pg_catalog.cardinality(v_ids) loop
    begin
      insert into metrics.alert_rule_receivers (project_id, rule_id, receiver_id)
      values (v_project, p_rule_id, v_ids[v_i])
      on conflict (rule_id, receiver_id) do nothing;
    exception when foreign_key_violation then
      raise exception using
        errcode = '23503',
        message = pg_catalog.format('receiver_ids[%s]: %s is not a receiver of project %s', v_i - 1, v_ids[v_i], v_project),
        hint = 'a rule notifies receivers of its own project only';
    end;
  end loop;
  return array(
    select l.receiver_id from metrics.alert_rule_receivers l where l.rule_id = p_rule_id order by l.receiver_id
  );
end
$$;
comment on function metrics.set_alert_rule_receivers(uuid, uuid[]) is
  'Replaces the receivers a rule notifies (at most 20) and returns them. Security invoker: the caller must '
  'see the rule and be an editor or admin of its project; a receiver of another project (or none) raises '
  '23503 naming receiver_ids[i].';

create function metrics.end_alert_silence(p_id uuid)
returns boolean
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_project uuid;
  v_starts_at timestamptz;
  v_ends_at timestamptz;
  v_changed integer;
begin
  select s.project_id into v_project from metrics.alert_silences s where s.id = p_id;
  if not found then
    return false;
  end if;
  -- the right to write comes first, whatever state the silence is in (a viewer learns nothing from a no-op)
  if not exists (
       select from pg_catalog.pg_roles r where r.rolname = current_user and (r.rolsuper or r.rolbypassrls)
     ) and v_project not in (select metrics.user_project_ids('editor')) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('not allowed to end silence %s', p_id),
      hint = 'silences are ended by editors and admins of their project';
  end if;
  -- lock it: concurrent calls queue here and see each other's effect
  select s.starts_at, s.ends_at into v_starts_at, v_ends_at
  from metrics.alert_silences s where s.id = p_id
  for update;
  if not found then
    return true;  -- deleted meanwhile (by a concurrent call): it is over
  end if;
  if v_ends_at <= pg_catalog.now() then
    return true;  -- already over
  end if;
  if v_starts_at >= pg_catalog.now() then
    -- not started yet: it never had an effect, so it goes
    delete from metrics.alert_silences s where s.id = p_id;
  else
    update metrics.alert_silences s set ends_at = pg_catalog.now() where s.id = p_id;
  end if;
  get diagnostics v_changed = row_count;
  if v_changed = 0 then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('not allowed to end silence %s', p_id),
      hint = 'silences are ended by editors and admins of their project';
  end if;
  return true;
end
$$;
comment on function metrics.end_alert_silence(uuid) is
  'Ends a silence now (a silence that has not started yet is deleted); true when it is over, false when the '
  'caller cannot see it. Raises 42501 for members who may not write silences, whatever state the silence is '
  'in. Locks the row, so concurrent calls agree (one that finds it deleted meanwhile is a no-op). Security invoker.';

-- privileges -----------------------------------------------------------------------------------------------
grant select (id, project_id, name, kind, target, has_secret, created_by, created_at, updated_at)
  on metrics.alert_receivers to authenticated;
grant insert (project_id, name, kind, target, secret) on metrics.alert_receivers to authenticated;
grant update (name, kind, target, secret) on metrics.alert_receivers to authenticated;
grant delete on metrics.alert_receivers to authenticated;

grant select, delete on metrics.alert_rules to authenticated;
grant insert (project_id, name, description, metric, matchers, agg, group_by, window_length, op, threshold,
  for_duration, severity, annotations, enabled) on metrics.alert_rules to authenticated;
-- updated_at: metrics.set_alert_rule_receivers touches it as the caller (the trigger sets the value anyway)
grant update (name, description, metric, matchers, agg, group_by, window_length, op, threshold,
  for_duration, severity, annotations, enabled, updated_at) on metrics.alert_rules to authenticated;

grant select, insert, delete on metrics.alert_rule_receivers to authenticated;

grant select, delete on metrics.alert_silences to authenticated;
grant insert (project_id, rule_id, matchers, starts_at, ends_at, comment) on metrics.alert_silences to authenticated;
grant update (ends_at) on metrics.alert_silences to authenticated;

grant select on metrics.alert_events to authenticated;

grant all on metrics.alert_receivers, metrics.alert_rules, metrics.alert_rule_receivers,
  metrics.alert_silences, metrics.alert_events to service_role;

grant execute on function metrics.aggregation_problem(text), metrics.label_names_problem(text[]),
  metrics.matchers_problem(jsonb), metrics.matchers_problem(jsonb, integer), metrics.annotations_problem(jsonb),
  metrics.receiver_target_problem(text, text),
  metrics.set_alert_rule_receivers(uuid, uuid[]), metrics.end_alert_silence(uuid)
  to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
