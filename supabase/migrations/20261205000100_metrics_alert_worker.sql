-- The alert worker's data plane (the Alerting issue): rule semantics, alert instances and their state
-- machine, the notification outbox, mute windows and the leases of the evaluating workers. Every rule of
-- alerting lives here; the Python worker (meshhook_rt_metrics/alerting/) only calls these functions:
--
--   metrics.claim_alert_leases        which projects a worker evaluates (rows with an epoch: fencing)
--   metrics.evaluate_alerts           one project's rules: values by metrics.query_series, transitions,
--                                     history, outbox rows and the live "alert" broadcast, in ONE transaction
--   metrics.claim_alert_deliveries    groups due outbox rows into messages and claims messages to send
--   metrics.finish_alert_delivery     records an attempt: sent, retried later (backoff) or dead-lettered
--   metrics.preview_alert_rule        replays a rule over past rollups (what would have fired when)
--
-- Values come from metrics.query_series with a step equal to the window (one point per group over the
-- window), so an alert compares exactly what GET /api/metrics shows for the same query.
--
-- Time: rules are decided on DATA time, not on the worker's clock. A project's data time is when its
-- newest minute was last written (never past that minute's end); a minute is settled once data time is
-- past its end by metrics.config.alert_settle_delay. Averages, rates, quantiles and every resolve read
-- settled minutes only; the monotone cases (max, count, sum of a counter above a threshold; min below one)
-- may fire on the open minute (the first one not settled), whose value can only move further past the
-- threshold as it fills, and are held by it until it is settled.

-- configuration -----------------------------------------------------------------------------------------
alter table metrics.config
  add column alert_settle_delay interval not null default '2 seconds'
    check (alert_settle_delay between interval '0' and interval '1 minute'),
  add column alert_max_rules integer not null default 200 check (alert_max_rules between 1 and 100000),
  add column alert_max_instances integer not null default 2000 check (alert_max_instances between 1 and 1000000),
  add column alert_max_attempts integer not null default 8 check (alert_max_attempts between 1 and 100),
  add column alert_retry_base interval not null default '2 seconds'
    check (alert_retry_base between interval '100 milliseconds' and interval '1 hour'),
  add column alert_retry_max interval not null default '10 minutes'
    check (alert_retry_max between interval '1 second' and interval '1 day'),
  add column alert_history_retention interval not null default '90 days'
    check (alert_history_retention >= interval '1 day');
comment on column metrics.config.alert_settle_delay is
  'How far data time must be past a minute''s end before the minute is settled (covers the workers'' flush '
  'interval): minutes before that decide averages, rates, quantiles and resolves.';
comment on column metrics.config.alert_max_rules is 'Most enabled alert rules a project may have (evaluation cost bound).';
comment on column metrics.config.alert_max_instances is
  'Most alert instances (groups) one project keeps; groups beyond it are not tracked and are reported by evaluate_alerts.';
comment on column metrics.config.alert_max_attempts is 'Delivery attempts of a notification before it is dead-lettered.';
comment on column metrics.config.alert_retry_base is 'First retry delay of a failed delivery; doubles per attempt, with jitter.';
comment on column metrics.config.alert_history_retention is
  'How long alert history, sent and dead messages and their outbox rows are kept (metrics.prune_alert_history).';
comment on column metrics.config.alert_retry_max is 'Longest retry delay of a failed delivery (a Retry-After may ask for more).';

alter table metrics.projects
  add column alert_max_rules integer check (alert_max_rules between 1 and 100000),
  add column alert_max_instances integer check (alert_max_instances between 1 and 1000000);
comment on column metrics.projects.alert_max_rules is 'Per-project override of metrics.config.alert_max_rules.';
comment on column metrics.projects.alert_max_instances is 'Per-project override of metrics.config.alert_max_instances.';

-- data time: the newest minute of a project, found by index
create index rollup_1m_project_bucket_idx on metrics.rollup_1m (project_id, bucket);
comment on index metrics.rollup_1m_project_bucket_idx is
  'A project''s newest minute (its data time, metrics.alert_data_time); rows are added once per series and '
  'minute, never updated in these columns, so the in-minute updates stay HOT.';

create function metrics.alert_data_time(p_project_id uuid)
returns timestamptz
language sql stable security definer set search_path = ''
as $$
  select least(n.bucket + interval '1 minute', (
      select max(r.updated_at) from metrics.rollup_1m r where r.project_id = p_project_id and r.bucket = n.bucket
    ))
  -- a point up to max_future ahead (a fast client clock) must not stop data time: minutes after now are not read
  from (
    select max(r.bucket) as bucket from metrics.rollup_1m r
    where r.project_id = p_project_id and r.bucket <= pg_catalog.now()
  ) as n
  where n.bucket is not null
$$;
comment on function metrics.alert_data_time(uuid) is
  'A project''s data time: when its newest minute was last written, never past that minute''s end; null before '
  'its first point. Alert rules decide on it (for_duration, keep_firing_for, no-data, settled minutes), so an '
  'outage of the worker, or of ingest, is not mistaken for a change in the data.';

-- validity rules --------------------------------------------------------------------------------------------
create function metrics.template_names_problem(p_templates jsonb, p_group_by text[], p_labels jsonb)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_key text;
  v_text text;
  v_name text;
begin
  if p_templates is null or pg_catalog.jsonb_typeof(p_templates) <> 'object' then
    return null;  -- the shape is metrics.annotations_problem's to judge
  end if;
  for v_key, v_text in select e.key, e.value from pg_catalog.jsonb_each_text(p_templates) e loop
    for v_name in select m[1] from pg_catalog.regexp_matches(v_text, '\{\{\s*([^{}]*?)\s*\}\}', 'g') as m loop
      if v_name in ('value', 'threshold', 'rule', 'severity', 'state') then
        continue;
      end if;
      if v_name !~ '^labels\.[a-zA-Z_][a-zA-Z0-9_]*$' then
        return pg_catalog.format('%s: unknown template name %L (use value, threshold, rule, severity, state or labels.<name>)',
          v_key, pg_catalog.left(v_name, 60));
      end if;
      -- with group_by the alert's labels are known: the group's and the rule's own
      if p_group_by is not null and pg_catalog.substr(v_name, 8) <> all (p_group_by)
         and not coalesce(p_labels, '{}'::jsonb) ? pg_catalog.substr(v_name, 8)
         and pg_catalog.substr(v_name, 8) not in ('alertname', 'severity') then
        return pg_catalog.format('%s: {{ %s }} is not a label of the alert (group_by: %s)', v_key, v_name,
          pg_catalog.array_to_string(p_group_by, ', '));
      end if;
    end loop;
    if pg_catalog.regexp_replace(v_text, '\{\{\s*([^{}]*?)\s*\}\}', '', 'g') ~ '\{\{|\}\}' then
      return pg_catalog.format('%s: unbalanced {{ or }}', v_key);
    end if;
  end loop;
  return null;
end
$$;
comment on function metrics.template_names_problem(jsonb, text[], jsonb) is
  'Why annotation templates are invalid, or null: {{ name }} takes value, threshold, rule, severity, state and '
  'labels.<name> (with group_by: a group_by label, a label of the rule or alertname/severity); no stray {{ or }}.';

create function metrics.render_template(p_text text, p_context jsonb)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  -- one pass over the text: what a name renders to (label values come from ingested data) is never read as
  -- a template again
  select pg_catalog.string_agg(p.part || coalesce(case
      when m.name ~ '^labels\.[a-zA-Z_][a-zA-Z0-9_]*$' then coalesce(p_context -> 'labels' ->> pg_catalog.substr(m.name, 8), '')
      when m.name in ('value', 'threshold', 'rule', 'severity', 'state') then coalesce(p_context ->> m.name, '')
      else m.whole end, ''), '' order by p.n)
  from pg_catalog.unnest(pg_catalog.regexp_split_to_array(p_text, '\{\{\s*[^{}]*?\s*\}\}')) with ordinality as p (part, n)
  left join (
    select x.n, x.m[1] as whole, x.m[2] as name
    from pg_catalog.regexp_matches(p_text, '(\{\{\s*([^{}]*?)\s*\}\})', 'g') with ordinality as x (m, n)
  ) as m on m.n = p.n
$$;
comment on function metrics.render_template(text, jsonb) is
  'An annotation with its {{ name }} replaced from the context {value, threshold, rule, severity, state, labels} '
  'in one pass (an absent value renders empty; an unknown name stays as written; what a name renders to is '
  'not expanded again).';

create function metrics.format_alert_value(p_value double precision)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_value is null then ''
    when p_value = 'NaN'::double precision or pg_catalog.abs(p_value) = 'Infinity'::double precision then p_value::text
    when p_value <> 0 and (pg_catalog.abs(p_value) >= 1e15 or pg_catalog.abs(p_value) < 1e-4)
      then pg_catalog.ltrim(pg_catalog.to_char(p_value, '9.999EEEE'))
    else pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.round(p_value::numeric, 4)::text, '0'), '.')
  end
$$;
comment on function metrics.format_alert_value(double precision) is
  'A value as annotations and notifications show it: at most 4 decimals, scientific when very large or small.';

create function metrics.time_zone_problem(p_zone text)
returns text
language sql stable parallel safe set search_path = ''
as $$
  select case
    when p_zone is null then 'required'
    when not exists (select from pg_catalog.pg_timezone_names z where pg_catalog.lower(z.name) = pg_catalog.lower(p_zone))
      then pg_catalog.format('unknown time zone %L (use an IANA name such as Europe/Berlin)', pg_catalog.left(p_zone, 60))
  end
$$;
comment on function metrics.time_zone_problem(text) is
  'Why a time zone name is not an IANA zone PostgreSQL knows (in any letter case, as PostgreSQL reads them), or null.';

-- rules: the new semantics ------------------------------------------------------------------------------------
alter table metrics.alert_rules
  add column keep_firing_for interval not null default '0'
    check (keep_firing_for between interval '0' and interval '1 day'),
  add column resolve_threshold double precision
    check (resolve_threshold not in ('NaN'::double precision, 'Infinity'::double precision, '-Infinity'::double precision)),
  add column labels jsonb not null default '{}'::jsonb,
  add column no_data_after interval check (no_data_after between interval '1 minute' and interval '7 days'),
  add column no_data_policy text not null default 'ok' check (no_data_policy in ('ok', 'alerting', 'keep_last', 'nodata')),
  add column group_wait interval not null default '0' check (group_wait between interval '0' and interval '1 hour'),
  add column group_interval interval not null default '5 minutes'
    check (group_interval between interval '1 second' and interval '1 day'),
  add column repeat_interval interval not null default '4 hours'
    check (repeat_interval between interval '1 minute' and interval '7 days'),
  add constraint alert_rules_labels_check check (metrics.annotations_problem(labels) is null),
  add constraint alert_rules_resolve_side_check check (
    resolve_threshold is null
    or (op in ('>', '>=') and resolve_threshold <= threshold)
    or (op in ('<', '<=') and resolve_threshold >= threshold)
  );
comment on column metrics.alert_rules.keep_firing_for is
  'How long a firing alert stays firing (state recovering) after its condition stopped holding (Grafana''s '
  '"Recovering"); it fires on without a new notice if the condition returns meanwhile.';
comment on column metrics.alert_rules.resolve_threshold is
  'Hysteresis: a firing alert resolves only once the value is past this (e.g. fire above 5, resolve below 3). '
  'Null: the threshold itself. Only for > >= < <=, on the resolving side of the threshold.';
comment on column metrics.alert_rules.labels is 'Extra labels of the rule''s alerts (an object of strings), sent with every notification.';
comment on column metrics.alert_rules.no_data_after is
  'A group whose series sent nothing for this long (data time) is "no data"; null: 3 x window_length, at least 2 minutes.';
comment on column metrics.alert_rules.no_data_policy is
  'What a group without data becomes: ok (quiet: the condition is false), alerting (the condition is true), '
  'keep_last (the state stays as it is) or nodata (a state of its own that notifies).';
comment on column metrics.alert_rules.group_wait is
  'How long a new firing alert waits before its notification (to gather others of its group); 0: sent at '
  'once, also when it joins a group that already notified.';
comment on column metrics.alert_rules.group_interval is
  'With a group_wait, the least time between two notifications of the same group (rule and receiver).';
comment on column metrics.alert_rules.repeat_interval is 'How often a group that is still firing is notified again.';

-- templates are checked when they (or the labels they may name) change: a trigger, not a check constraint,
-- so a rule written before templates were checked can still be renamed, disabled or relinked
create function metrics.alert_rules_check_templates()
returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_problem text;
begin
  if tg_op = 'INSERT'
     or (new.annotations, new.group_by, new.labels) is distinct from (old.annotations, old.group_by, old.labels) then
    v_problem := metrics.template_names_problem(new.annotations, new.group_by, new.labels);
    if v_problem is not null then
      raise exception using
        errcode = '23514',
        message = pg_catalog.format('annotations: %s', v_problem),
        schema = tg_table_schema, table = tg_table_name, constraint = 'alert_rules_templates_check';
    end if;
  end if;
  return new;
end
$$;
comment on function metrics.alert_rules_check_templates() is
  'Before-write trigger of metrics.alert_rules: new or changed annotations, group_by or labels must pass '
  'metrics.template_names_problem (raises 23514 naming alert_rules_templates_check, message "annotations: ...").';
create trigger alert_rules_templates
before insert or update on metrics.alert_rules
for each row execute function metrics.alert_rules_check_templates();
comment on trigger alert_rules_templates on metrics.alert_rules is
  'Annotation templates name only what an alert has; checked when they or the labels change.';

-- receivers: PagerDuty -------------------------------------------------------------------------------------------
alter table metrics.alert_receivers drop constraint alert_receivers_kind_check;
alter table metrics.alert_receivers add constraint alert_receivers_kind_check
  check (kind in ('webhook', 'slack', 'alertmanager', 'email', 'pagerduty'));
alter table metrics.alert_receivers add constraint alert_receivers_pagerduty_key_check
  check (kind <> 'pagerduty' or secret is not null);
comment on constraint alert_receivers_pagerduty_key_check on metrics.alert_receivers is
  'A PagerDuty receiver needs its routing key (the secret).';
comment on constraint alert_receivers_kind_check on metrics.alert_receivers is
  'Receiver kinds: webhook, slack, alertmanager, email, pagerduty (Events API v2; the secret is the routing key).';

create or replace function metrics.receiver_target_problem(p_kind text, p_target text)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_target is null then 'required'
    when p_kind = 'email' then case
      when pg_catalog.char_length(p_target) > 254
        or p_target !~ '^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$'
        then 'must be an e-mail address (local@domain.tld)' end
    when p_kind in ('webhook', 'slack', 'alertmanager', 'pagerduty') then case
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
  'Why a receiver''s target is invalid for its kind, or null: webhook, slack, alertmanager and pagerduty (the '
  'Events API v2 enqueue URL) take an http or https URL (slack: https only) without user:password and with a '
  'port, if any, of 1 to 65535; email an e-mail address. Whether a URL points at an internal address is for '
  'the alert worker''s SSRF guard to check when it sends (DNS can change after this check).';

-- history: every state an alert enters ---------------------------------------------------------------------------
alter table metrics.alert_events drop constraint alert_events_state_check;
alter table metrics.alert_events
  add constraint alert_events_state_check
    check (state in ('pending', 'firing', 'recovering', 'resolved', 'inactive', 'nodata')),
  add column previous text check (previous in ('inactive', 'pending', 'firing', 'recovering', 'nodata')),
  add column fingerprint text check (char_length(fingerprint) <= 64);
comment on constraint alert_events_state_check on metrics.alert_events is
  'What the alert became: pending, firing, recovering, resolved (from firing, recovering or nodata), inactive '
  '(from pending) or nodata.';
comment on column metrics.alert_events.previous is 'The state the alert left.';
comment on column metrics.alert_events.fingerprint is 'The alert instance (metrics.alert_instances.fingerprint).';

-- mute windows ------------------------------------------------------------------------------------------------------
create table metrics.alert_mute_windows (
  id uuid primary key default gen_random_uuid(),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  rule_id uuid,
  name text not null check (char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]'),
  weekdays smallint[] not null default '{1,2,3,4,5,6,7}' check (
    pg_catalog.cardinality(weekdays) between 1 and 7 and pg_catalog.array_ndims(weekdays) = 1
    and weekdays <@ '{1,2,3,4,5,6,7}'::smallint[]
  ),
  start_time time not null,
  end_time time not null,
  time_zone text not null check (char_length(time_zone) <= 64),
  created_by uuid default auth.uid(),
  created_at timestamptz not null default now(),
  constraint alert_mute_windows_times_check check (start_time <> end_time),
  constraint alert_mute_windows_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete cascade,
  constraint alert_mute_windows_name_key unique (project_id, name)
);
create index alert_mute_windows_rule_idx on metrics.alert_mute_windows (project_id, rule_id) where rule_id is not null;
comment on table metrics.alert_mute_windows is
  'Recurring mute windows: notifications of one rule (rule_id) or of all (null) are not sent on the given ISO '
  'weekdays (1 = Monday) from start_time to end_time in time_zone (an end before the start runs past '
  'midnight into the next day). Transitions are still recorded. Members read, editors and admins write.';
comment on index metrics.alert_mute_windows_rule_idx is 'Cascade of a deleted rule.';

create function metrics.alert_mute_windows_check()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  if metrics.time_zone_problem(new.time_zone) is not null then
    raise exception using
      errcode = '23514',
      message = pg_catalog.format('time_zone: %s', metrics.time_zone_problem(new.time_zone)),
      schema = tg_table_schema, table = tg_table_name, constraint = 'alert_mute_windows_time_zone_check';
  end if;
  return new;
end
$$;
comment on function metrics.alert_mute_windows_check() is
  'Before-write trigger of metrics.alert_mute_windows: the time zone is one PostgreSQL knows (raises 23514).';
create trigger alert_mute_windows_check
before insert or update on metrics.alert_mute_windows
for each row execute function metrics.alert_mute_windows_check();
comment on trigger alert_mute_windows_check on metrics.alert_mute_windows is 'IANA time zones only.';

create function metrics.alert_muted(p_project_id uuid, p_rule_id uuid, p_at timestamptz)
returns boolean
language sql stable set search_path = ''
as $$
  select exists (
    select from metrics.alert_mute_windows w
    cross join lateral (select (p_at at time zone w.time_zone) as t) as l
    where w.project_id = p_project_id and (w.rule_id is null or w.rule_id = p_rule_id)
      and case when w.start_time < w.end_time
        then pg_catalog.date_part('isodow', l.t)::smallint = any (w.weekdays)
          and l.t::time >= w.start_time and l.t::time < w.end_time
        else (pg_catalog.date_part('isodow', l.t)::smallint = any (w.weekdays) and l.t::time >= w.start_time)
          or (pg_catalog.date_part('isodow', l.t - interval '1 day')::smallint = any (w.weekdays) and l.t::time < w.end_time)
      end
  )
$$;
comment on function metrics.alert_muted(uuid, uuid, timestamptz) is
  'Whether a mute window of the project covers the rule at p_at (its weekday and local time in its zone; a '
  'window past midnight belongs to the weekday it starts on).';

-- alert instances ------------------------------------------------------------------------------------------------
create table metrics.alert_instances (
  project_id uuid not null,
  rule_id uuid not null,
  fingerprint text not null check (char_length(fingerprint) <= 64),
  labels jsonb not null check (pg_catalog.jsonb_typeof(labels) = 'object'),
  state text not null check (state in ('inactive', 'pending', 'firing', 'recovering', 'nodata')),
  value double precision,
  active_at timestamptz,
  fired_at timestamptz,
  recovering_at timestamptz,
  resolved_at timestamptz,
  last_data_at timestamptz,
  evaluated_at timestamptz not null,
  query_key text not null default '',
  updated_at timestamptz not null default now(),
  primary key (rule_id, fingerprint),
  constraint alert_instances_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete cascade
);
create index alert_instances_project_state_idx on metrics.alert_instances (project_id, state);
comment on table metrics.alert_instances is
  'One row per alert (rule + group of labels): its state (inactive, pending, firing, recovering, nodata), '
  'the last value, since when (active_at: condition first held; fired_at; recovering_at; resolved_at) and the '
  'data time of its last data and evaluation. Written only by metrics.evaluate_alerts (the lease holder); '
  'members read. A restarted worker continues from these rows.';
comment on column metrics.alert_instances.fingerprint is 'md5 of the rule id and the group''s labels: the alert''s stable key (PagerDuty dedup_key).';
comment on column metrics.alert_instances.query_key is
  'metrics.alert_query_key of the rule when the alert was last evaluated: another query makes other groups, so '
  'alerts of a changed query are resolved and dropped (metrics.retire_alert_instances). Empty for a row '
  'written by hand: stale at the next evaluation.';
comment on column metrics.alert_instances.labels is 'The group''s labels (the rule''s group_by labels of its series).';
comment on index metrics.alert_instances_project_state_idx is 'Active alerts of a project; the instance cap.';

-- leases: who evaluates which project -------------------------------------------------------------------------------
create table metrics.alert_leases (
  project_id uuid primary key references metrics.projects (id) on delete cascade,
  owner text not null check (char_length(owner) between 1 and 200),
  epoch bigint not null,
  expires_at timestamptz not null,
  acquired_at timestamptz not null default now()
);
comment on table metrics.alert_leases is
  'The alert worker that evaluates each project: owner, epoch (incremented at every takeover: every state '
  'write checks it, so a worker that lost its lease cannot write) and expiry. Rows, not advisory locks: '
  'Supavisor''s transaction mode has none. Service role only.';

-- the outbox -----------------------------------------------------------------------------------------------------
create table metrics.alert_messages (
  id bigint generated always as identity primary key,
  key text not null unique check (char_length(key) <= 100),
  project_id uuid not null references metrics.projects (id) on delete cascade,
  rule_id uuid not null,
  receiver_id uuid not null,
  thread_key text not null,
  kind text not null check (kind in ('notification', 'repeat', 'test')),
  body jsonb not null,
  status text not null default 'pending' check (status in ('pending', 'sent', 'dead')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  last_status integer,
  last_error text check (char_length(last_error) <= 500),
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  constraint alert_messages_receiver_fkey foreign key (project_id, receiver_id)
    references metrics.alert_receivers (project_id, id) on delete cascade
);
create index alert_messages_due_idx on metrics.alert_messages (next_attempt_at) where status = 'pending';
create index alert_messages_group_idx on metrics.alert_messages (rule_id, receiver_id, created_at desc);
create index alert_messages_project_idx on metrics.alert_messages (project_id, created_at desc);
comment on table metrics.alert_messages is
  'Notifications to send: one message per receiver and alert group (rule), its body the Alertmanager v4 '
  'shaped group, its key the idempotency key every attempt carries (webhook-id, Message-Id, ...). Delivery '
  'workers claim due rows (metrics.claim_alert_deliveries, FOR UPDATE SKIP LOCKED) and record each attempt '
  '(metrics.finish_alert_delivery): sent, retried with backoff, or dead after the last attempt. Members read '
  'the delivery status through the history; bodies hold no receiver target or secret.';
comment on column metrics.alert_messages.thread_key is 'Stable per rule and receiver: e-mail threading (In-Reply-To).';
comment on column metrics.alert_messages.rule_id is 'The rule (kept when the rule is deleted: history).';
comment on index metrics.alert_messages_due_idx is 'Messages due for an attempt.';
comment on index metrics.alert_messages_group_idx is 'A group''s last message (group_interval, repeat_interval).';
comment on index metrics.alert_messages_project_idx is 'Delivery history of a project.';

create table metrics.alert_notifications (
  id bigint generated always as identity primary key,
  key text not null unique check (char_length(key) <= 100),
  project_id uuid not null,
  rule_id uuid not null,
  receiver_id uuid not null,
  fingerprint text not null,
  transition text not null check (transition in ('firing', 'resolved', 'nodata')),
  alert jsonb not null,
  status text not null default 'queued' check (status in ('queued', 'silenced', 'muted', 'grouped')),
  due_at timestamptz not null default now(),
  message_id bigint references metrics.alert_messages (id) on delete set null,
  created_at timestamptz not null default now(),
  constraint alert_notifications_rule_fkey foreign key (project_id, rule_id)
    references metrics.alert_rules (project_id, id) on delete cascade,
  constraint alert_notifications_receiver_fkey foreign key (project_id, receiver_id)
    references metrics.alert_receivers (project_id, id) on delete cascade
);
create index alert_notifications_queued_idx on metrics.alert_notifications (due_at) where status = 'queued';
create index alert_notifications_created_idx on metrics.alert_notifications (created_at);
create index alert_events_at_idx on metrics.alert_events (at);
create index alert_messages_created_idx on metrics.alert_messages (created_at) where status <> 'pending';
create index alert_notifications_message_idx on metrics.alert_notifications (message_id) where message_id is not null;
create index alert_notifications_rule_idx on metrics.alert_notifications (project_id, rule_id);
create index alert_notifications_receiver_idx on metrics.alert_notifications (project_id, receiver_id);
comment on table metrics.alert_notifications is
  'The transactional outbox: one row per (alert instance, transition, receiver), written in the transaction '
  'of the state change; key (the unique idempotency key) makes a replayed transition a no-op. Queued rows '
  'are grouped into metrics.alert_messages when due; silenced or muted ones are kept as a record, never sent.';
comment on column metrics.alert_notifications.alert is 'The Alertmanager v4 alert element (labels, annotations, startsAt, endsAt, fingerprint, value, state).';
comment on index metrics.alert_notifications_queued_idx is 'Queued rows by due time.';
comment on index metrics.alert_notifications_created_idx is 'Retention (metrics.prune_alert_history).';
comment on index metrics.alert_events_at_idx is 'Retention of the history across projects (metrics.prune_alert_history).';
comment on index metrics.alert_messages_created_idx is 'Retention of finished messages (metrics.prune_alert_history).';
comment on index metrics.alert_notifications_message_idx is 'The rows a message carries.';
comment on index metrics.alert_notifications_rule_idx is 'Cascade of a deleted rule.';
comment on index metrics.alert_notifications_receiver_idx is 'Cascade of a deleted receiver.';

-- instant queries: a step equal to the range is one point over the whole range ---------------------------------
create or replace function metrics.query_series(
  p_project_id uuid,
  p_metric text,
  p_from timestamptz,
  p_to timestamptz,
  p_matchers jsonb default '[]'::jsonb,
  p_step interval default null,
  p_agg text default 'sum',
  p_by text[] default null
)
returns table (labels jsonb, points double precision[])
language plpgsql stable security invoker set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_minute_retention interval;
  v_step interval := p_step;
  v_five_from timestamptz;
  v_hours_from timestamptz;
  v_hours_until timestamptz;
  v_five_until timestamptz;
  v_hour timestamptz;
  v_hour_end timestamptz;
  v_ids bigint[];
  v_labels jsonb[];
  v_q double precision;
  v_agg text := lower(p_agg);
  v_kind text;
  v_label text;
  v_groups text;
  v_five text;
  v_hours text;
  v_minutes text;
  v_whole text[];
  v_sources text[];
  v_is_whole boolean[];
  v_none text;
  v_parts text[];
  v_merged boolean;
  v_own boolean;
  v_part_sketches text;
  v_must jsonb;
  v_origin timestamptz := '1970-01-01 00:00:00+00'::timestamptz;
begin
  select * into strict v_cfg from metrics.config;
  if p_project_id is null then perform metrics.reject('p_project_id', 'required'); end if;
  if p_metric is null then perform metrics.reject('p_metric', 'required'); end if;
  if p_from is null or p_to is null or p_from >= p_to then
    perform metrics.reject('p_from', 'p_from and p_to are required and p_from must be before p_to');
  end if;
  if p_to - p_from > interval '400 days' then
    perform metrics.reject('p_to', 'time ranges are limited to 400 days');
  end if;
  if v_step is not null and (v_step < interval '1 minute' or v_step > interval '31 days') then
    perform metrics.reject('p_step', 'must be between 1 minute and 31 days');
  end if;
  if pg_catalog.date_part('month', v_step) <> 0 or pg_catalog.date_part('year', v_step) <> 0 then
    -- '1 mon' compares as 30 days, but steps are bins from the epoch, and months have no fixed length
    perform metrics.reject('p_step', 'in days, hours, minutes or seconds (months have no fixed length)');
  end if;
  -- the rules of matchers and aggregations are those of alert rules too: one function each
  if metrics.matchers_problem(coalesce(p_matchers, '[]'::jsonb)) is not null then
    perform metrics.reject('p_matchers', metrics.matchers_problem(p_matchers));
  end if;
  if metrics.aggregation_problem(p_agg) is not null then
    perform metrics.reject('p_agg', metrics.aggregation_problem(p_agg));
  end if;
  if v_agg ~ '^p' then
    v_q := pg_catalog.substr(v_agg, 2)::double precision / 100;
    v_agg := 'quantile';
  elsif v_agg ~ '^quantile' then
    v_q := substring(v_agg from '\(([^)]*)\)')::double precision;
    v_agg := 'quantile';
  end if;

  select coalesce(pr.minute_retention, v_cfg.minute_retention) into v_minute_retention
  from metrics.projects pr where pr.id = p_project_id;
  v_minute_retention := coalesce(v_minute_retention, v_cfg.minute_retention);
  select f.kind into v_kind from metrics.families f where f.project_id = p_project_id and f.name = p_metric;

  if v_step is null then
    -- about 300 points per series, whole minutes (whole hours past a day)
    v_step := pg_catalog.make_interval(mins => greatest(1, pg_catalog.ceil(extract(epoch from p_to - p_from) / 60 / 300))::integer);
    if v_step > interval '1 hour' then
      v_step := pg_catalog.make_interval(hours => pg_catalog.ceil(extract(epoch from v_step) / 3600)::integer);
    end if;
  end if;
  -- a step as long as the range is ONE point over the whole range, wherever the range starts (an instant
  -- query over a window: what alert rules evaluate); other steps are bins from the epoch
  if v_step = p_to - p_from and pg_catalog.date_bin(v_step, p_from, v_origin) <> p_from then
    v_origin := p_from;
  end if;
  -- Which tier reads which part of [p_from, p_to), in time order:
  --   minutes [p_from, v_five_from), 5-minute rows [v_five_from, v_hours_from), hourly rows
  --   [v_hours_from, v_hours_until), 5-minute rows [v_hours_until, v_five_until), minutes [v_five_until, p_to).
  -- Hours only whole and complete ones inside the range for whole-hour steps; 5-minute windows only whole and
  -- complete ones for steps of whole windows; minutes the edges. Ranges starting beyond minute retention read
  -- the whole complete hours inside them at any step, and minutes after those (the start's minutes and
  -- windows are gone: a partial first hour is absent).
  if p_from < now() - v_minute_retention then
    v_hours_from := least(p_to, pg_catalog.date_bin('1 hour', p_from + interval '1 hour' - interval '1 microsecond',
      '1970-01-01 00:00:00+00'::timestamptz));
    v_hours_until := greatest(v_hours_from, pg_catalog.date_bin('1 hour', least(p_to, metrics.hours_complete_until()),
      '1970-01-01 00:00:00+00'::timestamptz));
    v_five_from := v_hours_from;
    v_five_until := v_hours_until;
  elsif extract(epoch from v_step) % 300 <> 0 then
    v_five_from := p_to;
    v_hours_from := p_to;
    v_hours_until := p_to;
    v_five_until := p_to;
  else
    v_five_from := least(p_to, metrics.five_minute_window(p_from + interval '5 minutes' - interval '1 microsecond'));
    v_five_until := greatest(v_five_from,
      metrics.five_minute_window(least(p_to, metrics.five_minutes_complete_until())));
    v_hours_from := v_five_from;
    v_hours_until := v_five_from;
    if extract(epoch from v_step) % 3600 = 0 then
      v_hour := pg_catalog.date_bin('1 hour', p_from + interval '1 hour' - interval '1 microsecond',
        '1970-01-01 00:00:00+00'::timestamptz);
      v_hour_end := pg_catalog.date_bin('1 hour', least(p_to, metrics.hours_complete_until()),
        '1970-01-01 00:00:00+00'::timestamptz);
      if v_hour < v_hour_end then
        if v_five_until < v_hour then
          v_five_from := v_hour;  -- the 5-minute tier is behind the hourly one: minutes before the first hour
        end if;
        v_hours_from := v_hour;
        v_hours_until := v_hour_end;
        v_five_until := greatest(v_five_until, v_hour_end);
      end if;
    end if;
  end if;

  -- the chosen series first (a handful or thousands), then one index scan per rollup table over all of them;
  -- the equality matchers (non-empty values) as one jsonb containment first: a C operator per series, so
  -- the matcher rules (a SQL function call each, ~20 µs) only run on the series that pass it
  select coalesce(pg_catalog.jsonb_object_agg(m ->> 'label', m -> 'value'), '{}'::jsonb) into v_must
  from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) as m
  where m ->> 'op' = '=' and m ->> 'value' <> '';
  -- ids and labels in label order, read once: the query below takes them from these arrays
  select pg_catalog.array_agg(s.id order by s.labels), pg_catalog.array_agg(s.labels order by s.labels)
  into v_ids, v_labels
  from metrics.series s
  where s.project_id = p_project_id and s.name = p_metric and s.labels @> v_must
    and (coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb or metrics.series_matches(s.labels, p_matchers));

  -- Which series form which output label set: "grouped" (series id -> grp, a small integer per label set in
  -- label-set order, so that rows are grouped and sorted on it rather than on jsonb) and "labelsets" (grp ->
  -- labels). Unfiltered queries that merge all series or group them by one label read the complete 5-minute
  -- windows from the rows merged across series (one per window and label value instead of one per series and
  -- window); the others read every series.
  v_merged := coalesce(p_matchers, '[]'::jsonb) = '[]'::jsonb and coalesce(pg_catalog.cardinality(p_by), 2) <= 1
    and (v_five_from < v_hours_from or v_hours_until < v_five_until);
  -- A rollup row is a whole point already when its width is the step and it is the only row of its label
  -- set in that step: every series on its own (p_by null; series labels are unique per metric) or a merged
  -- row. Those skip the grouping (for 24,000 hourly points of 1,000 series, half the query's time).
  v_own := p_by is null;
  if v_merged then
    v_label := coalesce(p_by[1], '');
    v_groups := $q$
    with keyed as materialized (  -- each series' value of the label ('' stands for no label: all merged)
      select s.id, case when $14 = '' then null else s.labels ->> $14 end as key
      from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) as s (id, labels)
    ),
    labelsets as materialized (
      select d.key, d.out_labels, pg_catalog.dense_rank() over (order by d.out_labels) as grp
      from (
        select k.key, case when k.key is null then '{}'::jsonb else pg_catalog.jsonb_build_object($14, k.key) end as out_labels
        from (select distinct kd.key from keyed kd) as k
      ) as d
    ),
    grouped as materialized (
      select kd.id, l.grp from keyed kd
      join labelsets l on (l.key is null) = (kd.key is null) and coalesce(l.key, '') = coalesce(kd.key, '')
    ),
    $q$;
    v_five := $q$
      -- the complete windows, merged per value of the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch, l.quantiles
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key = l.value
      where l.project_id = $12 and l.metric = $13 and l.label = $14
        and ((l.bucket >= $10 and l.bucket < $3) or (l.bucket >= $4 and l.bucket < $11))
      union all
      -- the group without the label: its merged rows, or the all-series row of a window in which no series
      -- had the label
      select g.grp, l.bucket, l.count, l.sum, l.min, l.max, l.last, l.last_ts, l.sketch, l.quantiles
      from metrics.rollup_5m_by_label l
      join labelsets g on g.key is null
      where l.project_id = $12 and l.metric = $13
        and ((l.bucket >= $10 and l.bucket < $3) or (l.bucket >= $4 and l.bucket < $11))
        and ((l.label = $14 and l.value is null)
          or ($14 <> '' and l.label = '' and (  -- probed per window (an index look-up each)
            select 1 from metrics.rollup_5m_by_label o
            where o.project_id = l.project_id and o.metric = l.metric and o.bucket = l.bucket and o.label = $14 limit 1
          ) is null))
    $q$;
  elsif v_own then
    v_groups := $q$
    with grouped as materialized (  -- every series its own label set, in label order already
      select s.id, s.grp, s.labels as out_labels from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) with ordinality as s (id, labels, grp)
    ),
    labelsets as (select gr.grp, gr.out_labels from grouped gr),
    $q$;
  else
    v_groups := $q$
    with chosen as materialized (  -- the output labels once per series, not once per row
      select s.id,
        coalesce((select pg_catalog.jsonb_object_agg(k, s.labels -> k) from pg_catalog.unnest($2) k where s.labels ? k), '{}'::jsonb)
          as out_labels
      from rows from (pg_catalog.unnest($1), pg_catalog.unnest($16)) as s (id, labels)
    ),
    grouped as materialized (
      select c.id, pg_catalog.dense_rank() over (order by c.out_labels) as grp, c.out_labels from chosen c
    ),
    labelsets as (select distinct gr.grp, gr.out_labels from grouped gr),
    $q$;
  end if;
  if not v_merged then
    v_five := $q$
      select g.grp, f.bucket, f.count, f.sum, f.min, f.max, f.last, f.last_ts, f.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_5m f
      join grouped g on g.id = f.series_id
      where f.series_id = any($1)
        and ((f.bucket >= $10 and f.bucket < $3) or (f.bucket >= $4 and f.bucket < $11))
    $q$;
  end if;
  v_hours := $q$
      select g.grp, h.bucket, h.count, h.sum, h.min, h.max, h.last, h.last_ts, h.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_1h h
      join grouped g on g.id = h.series_id
      where h.series_id = any($1) and h.bucket >= $3 and h.bucket < $4
  $q$;
  v_minutes := $q$
      select g.grp, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch,
        null::double precision[] as quantiles
      from metrics.rollup_1m m
      join grouped g on g.id = m.series_id
      where m.series_id = any($1) and ((m.bucket >= $15 and m.bucket < $10) or (m.bucket >= $11 and m.bucket < $5))
  $q$;
  -- each source of rows goes to "whole" (points as they are) or "parts" (summed per step)
  v_sources := array[v_hours, v_minutes, v_five];
  v_is_whole := array[v_own and v_step = interval '1 hour', v_own and v_step = interval '1 minute',
    (v_own or v_merged) and v_step = interval '5 minutes'];
  if v_origin <> '1970-01-01 00:00:00+00'::timestamptz then
    v_is_whole := array[false, false, false];  -- rows start on the epoch's bins, the one point does not
  end if;
  select pg_catalog.array_agg(x.src) filter (where x.whole), pg_catalog.array_agg(x.src) filter (where not x.whole)
  into v_whole, v_parts
  from rows from (pg_catalog.unnest(v_sources), pg_catalog.unnest(v_is_whole)) as x (src, whole);
  -- a source list with nothing in it: no rows, of the sources' columns
  v_none := $q$
      select null::bigint as grp, null::timestamptz as bucket, null::bigint as count, null::double precision as sum,
        null::double precision as min, null::double precision as max, null::double precision as last,
        null::timestamptz as last_ts, null::jsonb as sketch, null::double precision[] as quantiles where false $q$;

  -- Quantiles: the sketches of the rows summed per step merge set-based, as the rollups merge them (bucket
  -- counts add per label set, step, store and key), not one PL/pgSQL sketch_union call per row: an hour of
  -- 100 histogram series at 1-minute steps merges 6,000 minute sketches. Whole points keep their sketch.
  v_part_sketches := case when v_agg = 'quantile' then $q$
  part_cells as (  -- integer keys: grouping them costs a fraction of grouping their text under a collation
    select x.grp, pg_catalog.date_bin($6, x.bucket, $18) as step_ts, c.store, c.key,
      sum(c.n) as n
    from parts x
    cross join lateral (
      select 'p'::"char" as store, e.key::integer as key, e.value::bigint as n from pg_catalog.jsonb_each_text(x.sketch -> 'p') e
      union all
      select 'n'::"char", e.key::integer, e.value::bigint from pg_catalog.jsonb_each_text(x.sketch -> 'n') e
    ) as c
    where x.sketch is not null
    group by 1, 2, 3, 4
  ),
  part_stores as (
    select c.grp, c.step_ts, c.store::text as store, pg_catalog.jsonb_object_agg(c.key, c.n) as cells
    from part_cells c group by 1, 2, 3
  ),
  part_sketches as (
    select s.grp, s.step_ts, pg_catalog.jsonb_object_agg(s.store, s.cells) as cells
    from part_stores s group by 1, 2
  ),$q$ else $q$
  part_sketches as (select null::bigint as grp, null::timestamptz as step_ts, null::jsonb as cells where false),$q$ end;

  -- planned per call (not a cached generic plan): a handful of series wants index scans, thousands a scan
  return query execute v_groups || $q$
  parts as ($q$ || coalesce(pg_catalog.array_to_string(v_parts, ' union all '), v_none) || $q$
  ),
  whole as ($q$ || coalesce(pg_catalog.array_to_string(v_whole, ' union all '), v_none) || $q$
  ),
  stepped as (
    select x.grp, pg_catalog.date_bin($6, x.bucket, $18) as step_ts,
      sum(x.count)::double precision as count, sum(x.sum) as sum, min(x.min) as min, max(x.max) as max,
      -- FILTER, not CASE: an aggregate under CASE still runs for every row; these only run when asked for
      (max(array[pg_catalog.date_part('epoch', x.last_ts), x.last])
        filter (where $7 = 'last' and x.last_ts is not null))[2] as last,
      -- quantiles: the parts' zero counts here, their bucket counts in part_sketches (below)
      sum((x.sketch ->> 'z')::bigint) filter (where $7 = 'quantile') as zeros,
      count(x.sketch) filter (where $7 = 'quantile') as sketches,
      null::jsonb as sketch, null::double precision[] as quantiles
    from parts x
    group by x.grp, pg_catalog.date_bin($6, x.bucket, $18)
    union all
    select w.grp, w.bucket, w.count::double precision, w.sum, w.min, w.max,
      case when $7 = 'last' and w.last_ts is not null then w.last end, null, null,
      case when $7 = 'quantile' then w.sketch end, case when $7 = 'quantile' then w.quantiles end
    from whole w
  ),$q$ || v_part_sketches || $q$
  valued as (
    select st.grp, st.step_ts, case $7
        when 'rate' then (case when $8 = 'counter' then st.sum else st.count end)
          / extract(epoch from $6)::double precision
        when 'sum' then st.sum
        when 'avg' then st.sum / nullif(st.count, 0)
        when 'min' then st.min
        when 'max' then st.max
        when 'last' then st.last
        when 'count' then st.count
        when 'quantile' then case
          when $17 is not null and st.quantiles is not null then st.quantiles[$17]  -- stored at rollup time
          when st.sketches > 0 then metrics.sketch_quantile(
            metrics.sketch_from_cells(st.zeros::bigint, coalesce(ps.cells, '{}'::jsonb)), $9, st.min, st.max)
          when st.sketch is not null then metrics.sketch_quantile(st.sketch, $9, st.min, st.max)
        end
      end as value
    from stepped st
    left join part_sketches ps on ps.grp = st.grp and ps.step_ts = st.step_ts
  )
  -- one row per label set: its points as [epoch, value] pairs (not finite: null, as JSON has no NaN)
  select g.out_labels, p.points
  from (
    select v.grp, pg_catalog.array_agg(array[pg_catalog.date_part('epoch', v.step_ts),
        case when v.value = 'NaN'::double precision or abs(v.value) = 'Infinity'::double precision then null
          else v.value end] order by v.step_ts) as points
    from valued v
    group by v.grp
  ) as p
  join labelsets g on g.grp = p.grp
  order by p.grp  -- grp follows the order of the label sets: no sort on jsonb
  $q$ using v_ids, p_by, v_hours_from, v_hours_until, p_to, v_step, v_agg, v_kind, v_q, v_five_from, v_five_until,
    p_project_id, p_metric, v_label, p_from, v_labels,
    pg_catalog.array_position(metrics.stored_quantiles(), v_q), v_origin;
end
$$;
comment on function metrics.query_series(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'Series of one metric over [p_from, p_to), one row per label set with its points as [epoch seconds, value] '
  'pairs (value null where undefined or not finite): label matchers [{"label","op","value"}], step (default: '
  '~300 points), aggregation rate|sum|avg|min|max|last|count|pNN|quantile(q); p_by merges series by those '
  'labels (empty array: all into one). Whole-hour steps read hourly rollups for the complete hours, steps of '
  'whole 5-minute windows read 5-minute rollups for the complete windows (merged across series when there are '
  'no matchers and at most one p_by label), and minutes the rest; ranges starting beyond minute retention read '
  'hours only. Rows that are whole points (one per label set and step) are not regrouped, and a stored quantile '
  '(metrics.stored_quantiles) of a whole merged row is read, not computed. Runs as the caller, so row-level '
  'security applies. The HTTP service writes these rows as JSON. A step equal to the range (p_to - p_from) '
  'gives one point over the whole range wherever it starts (the value an alert rule compares).';

-- the state machine: one pure function, used by the worker's evaluation and by the preview ---------------------------
create function metrics.alert_window(p_window interval)
returns interval
language sql immutable parallel safe set search_path = ''
as $$
  select pg_catalog.make_interval(mins => greatest(1, pg_catalog.ceil(extract(epoch from p_window) / 60))::integer)
$$;
comment on function metrics.alert_window(interval) is
  'The window a rule is evaluated over: its window_length in whole minutes (rounded up; rollups are per minute).';

create function metrics.alert_compare(p_value double precision, p_op text, p_threshold double precision)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(case p_op
    when '>' then p_value > p_threshold
    when '>=' then p_value >= p_threshold
    when '<' then p_value < p_threshold
    when '<=' then p_value <= p_threshold
    when '==' then p_value = p_threshold
    when '!=' then p_value <> p_threshold
  end, false)
$$;
comment on function metrics.alert_compare(double precision, text, double precision) is
  'value <op> threshold; false for a null value (a window without a defined value does not hold).';

create function metrics.alert_decides_on_open_minute(p_op text, p_agg text, p_kind text)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select (p_op in ('>', '>=') and (pg_catalog.lower(p_agg) in ('max', 'count')
          or (pg_catalog.lower(p_agg) = 'sum' and p_kind is not distinct from 'counter')))
      or (p_op in ('<', '<=') and pg_catalog.lower(p_agg) = 'min')
$$;
comment on function metrics.alert_decides_on_open_minute(text, text, text) is
  'Whether a rule may FIRE on the open (unsettled) minute: only where the value can only move further past '
  'the threshold as the minute fills (max, count, or a counter''s sum rising above it; min falling below it). '
  'Averages, rates, quantiles and every resolve wait for settled minutes.';

create function metrics.alert_absent_value(p_agg text, p_kind text)
returns double precision
language sql immutable parallel safe set search_path = ''
as $$
  select case when p_kind in ('counter', 'histogram') and pg_catalog.lower(p_agg) in ('sum', 'count', 'rate')
    then 0::double precision end
$$;
comment on function metrics.alert_absent_value(text, text) is
  'The value of a known group without rows in a window: 0 for the sum, count and rate of counters and '
  'histograms (workers send deltas only when something happened, so no rows means no increments); null '
  'otherwise (a gauge, a quantile, an average without rows has no data: the rule''s no_data_policy decides).';

create function metrics.alert_next_state(
  p_rule metrics.alert_rules,
  p_kind text,
  p_state text,
  p_active_at timestamptz,
  p_fired_at timestamptz,
  p_recovering_at timestamptz,
  p_last_data_at timestamptz,
  p_value double precision,
  p_settled boolean,
  p_settled_value double precision,
  p_open boolean,
  p_open_value double precision,
  p_at timestamptz
)
returns table (state text, active_at timestamptz, fired_at timestamptz, recovering_at timestamptz,
  resolved_at timestamptz, last_data_at timestamptz, value double precision, events text[], previous text[])
language plpgsql immutable set search_path = ''
as $$
declare
  v_open boolean := p_open and metrics.alert_decides_on_open_minute(p_rule.op, p_rule.agg, p_kind);
  v_resolve double precision := coalesce(p_rule.resolve_threshold, p_rule.threshold);
  v_no_data_after interval := coalesce(p_rule.no_data_after,
    greatest(3 * metrics.alert_window(p_rule.window_length), interval '2 minutes'));
  v_fire boolean;       -- the condition holds
  v_hold boolean;       -- a firing alert stays (past the resolve threshold)
  v_not_fire boolean;   -- decided that it does not hold (settled data, or no data under policy ok)
  v_not_hold boolean;
begin
  state := coalesce(p_state, 'inactive');
  active_at := p_active_at;
  fired_at := p_fired_at;
  recovering_at := p_recovering_at;
  last_data_at := p_last_data_at;
  value := p_value;
  events := '{}';
  previous := '{}';
  if p_settled or p_open then
    last_data_at := p_at;
    v_fire := (p_settled and metrics.alert_compare(p_settled_value, p_rule.op, p_rule.threshold))
      or (v_open and metrics.alert_compare(p_open_value, p_rule.op, p_rule.threshold));
    v_hold := (p_settled and metrics.alert_compare(p_settled_value, p_rule.op, v_resolve))
      or (v_open and metrics.alert_compare(p_open_value, p_rule.op, p_rule.threshold));
    v_not_fire := p_settled and not v_fire;
    v_not_hold := p_settled and not v_hold;
    value := case when v_open and metrics.alert_compare(p_open_value, p_rule.op, p_rule.threshold) then p_open_value
      when p_settled then p_settled_value else p_value end;
  elsif p_last_data_at is not null and p_at - p_last_data_at < v_no_data_after then
    return next;  -- no data yet, but not for long: nothing is decided
    return;
  elsif p_rule.no_data_policy = 'keep_last' then
    return next;
    return;
  elsif p_rule.no_data_policy = 'nodata' then
    if state <> 'nodata' then
      events := array['nodata'];
      previous := array[state];
      state := 'nodata';
      active_at := p_at;
      fired_at := p_at;
      recovering_at := null;
      value := null;
    end if;
    return next;
    return;
  else
    v_fire := p_rule.no_data_policy = 'alerting';
    v_hold := v_fire;
    v_not_fire := not v_fire;
    v_not_hold := not v_hold;
    value := null;
  end if;

  if state = 'nodata' then  -- data again: the no-data alert resolves, and the data decides from scratch
    events := events || 'resolved'::text;
    previous := previous || state;
    state := 'inactive';
    resolved_at := p_at;
    active_at := null;
  end if;
  if state = 'inactive' and v_fire then
    active_at := p_at;
    previous := previous || state;
    if p_rule.for_duration = interval '0' then
      state := 'firing';
      fired_at := p_at;
    else
      state := 'pending';
    end if;
    events := events || state;
  elsif state = 'pending' and v_fire and p_at - active_at >= p_rule.for_duration then
    events := events || 'firing'::text;
    previous := previous || state;
    state := 'firing';
    fired_at := p_at;
  elsif state = 'pending' and v_not_fire then
    events := events || 'inactive'::text;
    previous := previous || state;
    state := 'inactive';
    active_at := null;
  elsif state = 'firing' and v_not_hold and not v_hold then
    previous := previous || state;
    if p_rule.keep_firing_for > interval '0' then
      state := 'recovering';
      recovering_at := p_at;
      events := events || state;
    else
      state := 'inactive';
      resolved_at := p_at;
      active_at := null;
      events := events || 'resolved'::text;
    end if;
  elsif state = 'recovering' and v_hold then
    events := events || 'firing'::text;  -- back before keep_firing_for ran out: no new notice
    previous := previous || state;
    state := 'firing';
    recovering_at := null;
  elsif state = 'recovering' and v_not_hold and p_at - recovering_at >= p_rule.keep_firing_for then
    events := events || 'resolved'::text;
    previous := previous || state;
    state := 'inactive';
    resolved_at := p_at;
    recovering_at := null;
    active_at := null;
  end if;
  return next;
end
$$;
comment on function metrics.alert_next_state(metrics.alert_rules, text, text, timestamptz, timestamptz, timestamptz,
  timestamptz, double precision, boolean, double precision, boolean, double precision, timestamptz) is
  'The alert state machine, pure: from an alert''s state and the rule''s values at data time p_at (p_settled: the '
  'group has rows in the settled window, p_open: in the window that includes the open minute) to its next '
  'state and the events entered on the way (usually none or one; nodata -> resolved -> pending/firing is two). '
  'inactive -> pending (condition holds, for_duration > 0) -> firing (held for for_duration) -> recovering '
  '(keep_firing_for > 0) -> inactive (resolved); pending -> inactive; recovering -> firing. A group without '
  'data for no_data_after follows no_data_policy. metrics.evaluate_alerts and metrics.preview_alert_rule call it.';

-- what a notification says about one alert -----------------------------------------------------------------------------
create function metrics.alert_labels(p_rule metrics.alert_rules, p_labels jsonb)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  select p_labels || p_rule.labels
    || pg_catalog.jsonb_build_object('alertname', p_rule.name, 'severity', p_rule.severity)
$$;
comment on function metrics.alert_labels(metrics.alert_rules, jsonb) is
  'An alert''s labels: its group''s, the rule''s own labels, alertname (the rule name) and severity.';

create function metrics.alert_element(
  p_rule metrics.alert_rules, p_fingerprint text, p_labels jsonb, p_state text, p_value double precision,
  p_starts_at timestamptz, p_ends_at timestamptz
)
returns jsonb
language sql immutable parallel safe set search_path = '' set timezone = 'UTC'
as $$
  with a as (select metrics.alert_labels(p_rule, p_labels) as labels)
  select pg_catalog.jsonb_build_object(
    'status', case when p_state in ('resolved', 'inactive') then 'resolved' else 'firing' end,
    'state', p_state,
    'labels', a.labels,
    'annotations', coalesce((
      select pg_catalog.jsonb_object_agg(e.key, metrics.render_template(e.value, pg_catalog.jsonb_build_object(
        'value', metrics.format_alert_value(p_value), 'threshold', metrics.format_alert_value(p_rule.threshold),
        'rule', p_rule.name, 'severity', p_rule.severity, 'state', p_state, 'labels', a.labels)))
      from pg_catalog.jsonb_each_text(p_rule.annotations) e
    ), '{}'::jsonb),
    'startsAt', pg_catalog.to_char(p_starts_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'endsAt', coalesce(pg_catalog.to_char(p_ends_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '0001-01-01T00:00:00Z'),
    'generatorURL', '',
    'fingerprint', p_fingerprint,
    'value', metrics.json_number(p_value)
  )
  from a
$$;
comment on function metrics.alert_element(metrics.alert_rules, text, jsonb, text, double precision, timestamptz, timestamptz) is
  'One alert as notifications carry it (the Alertmanager v4 alert: status, labels, rendered annotations, startsAt, '
  'endsAt, generatorURL, fingerprint) plus our state and value.';

create function metrics.alert_silenced(p_rule metrics.alert_rules, p_labels jsonb, p_at timestamptz)
returns boolean
language sql stable set search_path = ''
as $$
  select exists (
    select from metrics.alert_silences s
    where s.project_id = p_rule.project_id and (s.rule_id is null or s.rule_id = p_rule.id)
      and s.starts_at <= p_at and s.ends_at > p_at
      and metrics.series_matches(metrics.alert_labels(p_rule, p_labels), s.matchers)
  )
$$;
comment on function metrics.alert_silenced(metrics.alert_rules, jsonb, timestamptz) is
  'Whether a silence of the rule (or of every rule) covers an alert''s labels at p_at.';

-- leases ----------------------------------------------------------------------------------------------------------
create function metrics.claim_alert_leases(p_owner text, p_ttl interval default '10 seconds', p_max integer default 10000)
returns table (project_id uuid, epoch bigint)
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if p_owner is null or pg_catalog.char_length(p_owner) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_owner: 1 to 200 characters';
  end if;
  if p_ttl is null or p_ttl not between interval '1 second' and interval '10 minutes' then
    raise exception using errcode = '22023', message = 'p_ttl: between 1 second and 10 minutes';
  end if;
  -- ours, renewed (a lease nobody took over is still ours, even past its expiry)
  update metrics.alert_leases l set expires_at = pg_catalog.clock_timestamp() + p_ttl where l.owner = p_owner;
  -- no longer ours to keep: projects without an enabled rule or an alert left to resolve
  delete from metrics.alert_leases l
  where l.owner = p_owner
    and not exists (select from metrics.alert_rules r where r.project_id = l.project_id and r.enabled)
    and not exists (select from metrics.alert_instances i where i.project_id = l.project_id);
  -- projects nobody evaluates yet
  insert into metrics.alert_leases as l (project_id, owner, epoch, expires_at)
  select r.project_id, p_owner, 1, pg_catalog.clock_timestamp() + p_ttl
  from (
    select r.project_id from metrics.alert_rules r where r.enabled
    union
    select i.project_id from metrics.alert_instances i
  ) as r
  where not exists (select from metrics.alert_leases x where x.project_id = r.project_id)
  limit greatest(0, p_max - (select count(*) from metrics.alert_leases x where x.owner = p_owner))
  on conflict on constraint alert_leases_pkey do nothing;
  -- expired leases of other workers: taken over with the next epoch (their writes fail from now on)
  update metrics.alert_leases l
  set owner = p_owner, epoch = l.epoch + 1, expires_at = pg_catalog.clock_timestamp() + p_ttl,
    acquired_at = pg_catalog.clock_timestamp()
  where l.project_id in (
    select x.project_id from metrics.alert_leases x
    where x.expires_at <= pg_catalog.clock_timestamp() and x.owner <> p_owner
      and (exists (select from metrics.alert_rules r where r.project_id = x.project_id and r.enabled)
        or exists (select from metrics.alert_instances i where i.project_id = x.project_id))
    order by x.project_id
    limit greatest(0, p_max - (select count(*) from metrics.alert_leases y where y.owner = p_owner))
    for update skip locked
  );
  return query select l.project_id, l.epoch from metrics.alert_leases l where l.owner = p_owner order by l.project_id;
end
$$;
comment on function metrics.claim_alert_leases(text, interval, integer) is
  'An alert worker''s heartbeat (call it every few seconds): renews its leases, gives up projects without '
  'enabled rules, takes projects nobody evaluates and expired leases of other workers (epoch + 1), at most '
  'p_max in all; returns the projects it evaluates with their epochs. Service role.';

create function metrics.release_alert_leases(p_owner text)
returns integer
language sql volatile security invoker set search_path = ''
as $$
  with gone as (delete from metrics.alert_leases l where l.owner = p_owner returning 1)
  select count(*)::integer from gone
$$;
comment on function metrics.release_alert_leases(text) is
  'A worker that stops hands its projects over at once (no wait for expiry); returns how many it held.';

create function metrics.check_alert_lease(p_project_id uuid, p_owner text, p_epoch bigint)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  -- the shared row lock makes a takeover wait for this transaction: a write is fenced by the epoch it ran under
  perform from metrics.alert_leases l
  where l.project_id = p_project_id and l.owner = p_owner and l.epoch = p_epoch
    and l.expires_at > pg_catalog.clock_timestamp()
  for share;
  if not found then
    raise exception using
      errcode = 'MHL01',
      message = pg_catalog.format('alert lease of project %s lost (owner %s, epoch %s)', p_project_id, p_owner, p_epoch),
      hint = 'another worker evaluates this project now; claim leases again';
  end if;
end
$$;
comment on function metrics.check_alert_lease(uuid, text, bigint) is
  'Fencing: raises MHL01 unless p_owner holds the project''s lease at p_epoch and it has not expired; locks the '
  'lease row (shared) so a takeover waits until the caller''s transaction ends.';

-- a transition: history, outbox and what the live broadcast says -----------------------------------------------------
create function metrics.record_alert_transition(
  p_rule metrics.alert_rules, p_fingerprint text, p_labels jsonb, p_previous text, p_event text,
  p_value double precision, p_at timestamptz, p_fired_at timestamptz
)
returns jsonb
language plpgsql volatile security invoker set search_path = '' set timezone = 'UTC'
as $$
declare
  v_transition text := case
    when p_event = 'firing' and p_previous <> 'recovering' then 'firing'
    when p_event = 'nodata' then 'nodata'
    when p_event = 'resolved' then 'resolved'
  end;
  v_alert jsonb;
  v_status text;
  v_event bigint;
begin
  insert into metrics.alert_events (project_id, rule_id, rule_name, labels, state, previous, value, at, fingerprint)
  values (p_rule.project_id, p_rule.id, p_rule.name, metrics.alert_labels(p_rule, p_labels), p_event, p_previous,
    case when p_value = 'NaN'::double precision or pg_catalog.abs(p_value) = 'Infinity'::double precision then null
      else p_value end,
    p_at, p_fingerprint)
  returning id into v_event;
  if v_transition is not null then
    v_alert := metrics.alert_element(p_rule, p_fingerprint, p_labels, p_event, p_value, coalesce(p_fired_at, p_at),
      case when v_transition = 'resolved' then p_at end);
    v_status := case
      when metrics.alert_silenced(p_rule, p_labels, pg_catalog.now()) then 'silenced'
      when metrics.alert_muted(p_rule.project_id, p_rule.id, pg_catalog.now()) then 'muted'
      else 'queued'
    end;
    insert into metrics.alert_notifications (key, project_id, rule_id, receiver_id, fingerprint, transition, alert,
      status, due_at)
    -- the key is the transition's own (its history row) and the receiver's: one row each, whatever else
    -- happens at the same data time
    select pg_catalog.md5(l.receiver_id::text || '/' || v_event::text),
      p_rule.project_id, p_rule.id, l.receiver_id, p_fingerprint, v_transition, v_alert,
      case
        -- a resolve follows its firing notice: sent if that was, whatever silence or mute window came since
        when v_transition = 'resolved' then coalesce((
          select case when n.status in ('queued', 'grouped') then 'queued' else n.status end
          from metrics.alert_notifications n
          where n.receiver_id = l.receiver_id and n.fingerprint = p_fingerprint and n.rule_id = p_rule.id
          order by n.id desc limit 1
        ), v_status)
        else v_status
      end,
      pg_catalog.now() + case when v_transition = 'resolved' then interval '0' else p_rule.group_wait end
    from metrics.alert_rule_receivers l
    where l.rule_id = p_rule.id
    on conflict (key) do nothing;
  end if;
  return pg_catalog.jsonb_build_object('rule_id', p_rule.id, 'rule', p_rule.name, 'fingerprint', p_fingerprint,
    'labels', metrics.alert_labels(p_rule, p_labels), 'state', p_event, 'previous', p_previous,
    'value', metrics.json_number(p_value), 'at', p_at, 'notified', v_transition is not null);
end
$$;
comment on function metrics.record_alert_transition(metrics.alert_rules, text, jsonb, text, text, double precision,
  timestamptz, timestamptz) is
  'Writes one transition of an alert in the caller''s transaction: its history row, and for the transitions '
  'that notify (to firing except back from recovering, to nodata, resolved) one outbox row per receiver of the '
  'rule, queued (after group_wait for firing), or kept as silenced / muted; returns it for the live broadcast.';

create function metrics.alert_query_key(p_rule metrics.alert_rules)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select pg_catalog.md5(pg_catalog.jsonb_build_array(p_rule.metric, p_rule.matchers, pg_catalog.lower(p_rule.agg),
    p_rule.group_by, metrics.alert_window(p_rule.window_length))::text)
$$;
comment on function metrics.alert_query_key(metrics.alert_rules) is
  'What makes a rule''s groups: its metric, matchers, aggregation, group_by and window (not its threshold).';

create function metrics.retire_alert_instances(p_rule metrics.alert_rules, p_at timestamptz, p_stale_only boolean)
returns jsonb
language plpgsql volatile security invoker set search_path = '' set timezone = 'UTC'
as $$
declare
  i metrics.alert_instances;
  v_done jsonb := '[]'::jsonb;
begin
  -- a disabled rule's alerts (all), or an enabled rule's alerts of another query: resolved with a notice where
  -- they had notified, then forgotten (otherwise they would stay firing, or go "no data", for ever)
  for i in
    delete from metrics.alert_instances x
    where x.rule_id = p_rule.id and (not p_stale_only or x.query_key <> metrics.alert_query_key(p_rule))
    returning x.*
  loop
    if i.state in ('firing', 'recovering', 'nodata') then
      v_done := v_done || metrics.record_alert_transition(p_rule, i.fingerprint, i.labels, i.state, 'resolved',
        i.value, p_at, i.fired_at);
    elsif i.state = 'pending' then
      v_done := v_done || metrics.record_alert_transition(p_rule, i.fingerprint, i.labels, i.state, 'inactive',
        i.value, p_at, i.fired_at);
    end if;
  end loop;
  return v_done;
end
$$;
comment on function metrics.retire_alert_instances(metrics.alert_rules, timestamptz, boolean) is
  'Resolves (with notices where they notified) and deletes the alerts of a disabled rule, or with p_stale_only '
  'those an enabled rule''s changed query no longer makes; returns the transitions. Called by evaluate_alerts.';

-- evaluation ---------------------------------------------------------------------------------------------------------
create function metrics.evaluate_alerts(p_project_id uuid, p_owner text, p_epoch bigint, p_rule_ids uuid[] default null)
returns jsonb
language plpgsql volatile security invoker set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_at timestamptz;
  v_settled timestamptz;
  v_open_end timestamptz;
  v_newest_end timestamptz;
  v_max_rules integer;
  v_max_instances integer;
  v_instances integer;
  v_rule metrics.alert_rules;
  v_kind text;
  v_window interval;
  v_track boolean;
  g record;
  n record;
  v_fp text;
  v_done jsonb := '[]'::jsonb;
  v_rules integer := 0;
  v_capped integer := 0;
begin
  perform metrics.check_alert_lease(p_project_id, p_owner, p_epoch);
  select * into strict v_cfg from metrics.config;
  v_at := metrics.alert_data_time(p_project_id);
  if v_at is null then
    return pg_catalog.jsonb_build_object('data_time', null, 'rules', 0, 'transitions', v_done);
  end if;
  v_settled := pg_catalog.date_bin('1 minute', v_at - v_cfg.alert_settle_delay, '1970-01-01 00:00:00+00'::timestamptz);
  -- the open window ends with the first unsettled minute: in the settle delay after a minute ends, that is the
  -- minute just closed (still filling with the last flushes), not the one data time has moved into; so a rule
  -- that fired on a minute keeps seeing it until it is settled
  v_open_end := v_settled + interval '1 minute';
  -- ... and in those seconds the minute data time is in is an open window too (data may stop there)
  v_newest_end := pg_catalog.date_bin('1 minute', v_at - interval '1 microsecond', '1970-01-01 00:00:00+00'::timestamptz)
    + interval '1 minute';
  select coalesce(p.alert_max_rules, v_cfg.alert_max_rules), coalesce(p.alert_max_instances, v_cfg.alert_max_instances)
  into v_max_rules, v_max_instances
  from metrics.projects p where p.id = p_project_id;
  -- disabled rules' alerts are resolved and forgotten first
  for v_rule in
    select r.* from metrics.alert_rules r
    where r.project_id = p_project_id and not r.enabled
      and exists (select from metrics.alert_instances i where i.rule_id = r.id)
  loop
    v_done := v_done || metrics.retire_alert_instances(v_rule, v_at, false);
  end loop;
  select count(*) into v_instances from metrics.alert_instances i where i.project_id = p_project_id;

  for v_rule in
    select r.* from metrics.alert_rules r
    where r.project_id = p_project_id and r.enabled
    order by r.created_at, r.id
    limit v_max_rules
  loop
    if p_rule_ids is not null and v_rule.id <> all (p_rule_ids) then
      continue;
    end if;
    v_rules := v_rules + 1;
    v_done := v_done || metrics.retire_alert_instances(v_rule, v_at, true);
    select f.kind into v_kind from metrics.families f where f.project_id = p_project_id and f.name = v_rule.metric;
    v_window := metrics.alert_window(v_rule.window_length);
    -- inactive groups are only kept where no data must be noticed (never for counts: quiet is 0)
    v_track := v_rule.no_data_policy in ('alerting', 'nodata') and metrics.alert_absent_value(v_rule.agg, v_kind) is null;
    for g in
      with settled as (
        select s.labels, s.points[1][2] as value
        from metrics.query_series(p_project_id, v_rule.metric, v_settled - v_window, v_settled, v_rule.matchers,
          v_window, v_rule.agg, v_rule.group_by) s
      ),
      opened as (  -- the value furthest past the threshold of the open windows (their values only move that way)
        select o.labels,
          case when v_rule.op in ('<', '<=') then min(o.value) else max(o.value) end as value
        from (
          select s.labels, s.points[1][2] as value
          from pg_catalog.unnest(case when v_newest_end > v_open_end then array[v_open_end, v_newest_end]
            else array[v_open_end] end) as e (window_end)
          cross join lateral metrics.query_series(p_project_id, v_rule.metric, e.window_end - v_window, e.window_end,
            v_rule.matchers, v_window, v_rule.agg, v_rule.group_by) s
          where metrics.alert_decides_on_open_minute(v_rule.op, v_rule.agg, v_kind)
        ) as o
        group by o.labels
      ),
      present as (
        select coalesce(s.labels, o.labels) as labels, s.labels is not null as settled, s.value as settled_value,
          o.labels is not null as open, o.value as open_value
        from settled s full join opened o on o.labels = s.labels
      )
      select coalesce(p.labels, i.labels) as labels,
        coalesce(p.settled, false) or metrics.alert_absent_value(v_rule.agg, v_kind) is not null as settled,
        case when p.settled then p.settled_value else metrics.alert_absent_value(v_rule.agg, v_kind) end
          as settled_value,
        coalesce(p.open, false) as open, p.open_value, i.fingerprint, i.state, i.active_at, i.fired_at,
        i.recovering_at, i.last_data_at, i.value
      from present p
      full join (select * from metrics.alert_instances x where x.rule_id = v_rule.id) as i on i.labels = p.labels
      order by 1
    loop
      v_fp := coalesce(g.fingerprint, pg_catalog.md5(v_rule.id::text || g.labels::text));
      select * into n from metrics.alert_next_state(v_rule, v_kind, g.state, g.active_at, g.fired_at,
        g.recovering_at, g.last_data_at, g.value, g.settled, g.settled_value, g.open, g.open_value, v_at);
      if g.state is null and n.state = 'inactive' and not v_track then
        continue;  -- nothing to remember
      end if;
      if g.state is null then
        if v_instances >= v_max_instances then
          v_capped := v_capped + 1;
          continue;
        end if;
        v_instances := v_instances + 1;
      end if;
      for i in 1 .. coalesce(pg_catalog.cardinality(n.events), 0) loop
        v_done := v_done || metrics.record_alert_transition(v_rule, v_fp, g.labels, n.previous[i], n.events[i],
          n.value, v_at, n.fired_at);
      end loop;
      if n.state = 'inactive' and not v_track then
        delete from metrics.alert_instances x where x.rule_id = v_rule.id and x.fingerprint = v_fp;
        v_instances := v_instances - 1;
        continue;
      end if;
      insert into metrics.alert_instances as x (project_id, rule_id, fingerprint, labels, state, value, active_at,
        fired_at, recovering_at, resolved_at, last_data_at, evaluated_at, query_key)
      values (p_project_id, v_rule.id, v_fp, g.labels, n.state, n.value, n.active_at, n.fired_at, n.recovering_at,
        n.resolved_at, n.last_data_at, v_at, metrics.alert_query_key(v_rule))
      on conflict (rule_id, fingerprint) do update set
        state = excluded.state, value = excluded.value, active_at = excluded.active_at, fired_at = excluded.fired_at,
        recovering_at = excluded.recovering_at, resolved_at = coalesce(excluded.resolved_at, x.resolved_at),
        last_data_at = excluded.last_data_at, evaluated_at = excluded.evaluated_at, updated_at = pg_catalog.now();
    end loop;
  end loop;

  if pg_catalog.jsonb_array_length(v_done) > 0 then
    perform realtime.send(
      pg_catalog.jsonb_build_object('project_id', p_project_id, 'data_time', v_at,
        'transitions', (select pg_catalog.jsonb_agg(t.value) from pg_catalog.jsonb_array_elements(v_done) with ordinality t
          where t.ordinality <= 200),
        'more', greatest(0, pg_catalog.jsonb_array_length(v_done) - 200)),
      'alert', metrics.topic(p_project_id), true);
  end if;
  return pg_catalog.jsonb_build_object('data_time', v_at, 'settled_until', v_settled, 'rules', v_rules,
    'instances', v_instances, 'capped', v_capped, 'transitions', v_done);
end
$$;
comment on function metrics.evaluate_alerts(uuid, text, bigint, uuid[]) is
  'Evaluates a project''s enabled rules (or those of p_rule_ids) at its data time, in one transaction: each '
  'rule''s value per group by metrics.query_series (step = window: one point over the window ending at the '
  'settled minute, and for rules that may fire early the window ending with the open minute), the state '
  'machine (metrics.alert_next_state), the instances, history and outbox rows of every transition, and one '
  '"alert" broadcast on the project''s topic. Fenced by the caller''s lease (raises MHL01 when lost). At most '
  'alert_max_rules rules; groups past alert_max_instances are counted in "capped", not tracked. Returns '
  '{data_time, settled_until, rules, instances, capped, transitions}. Service role.';

-- delivery ------------------------------------------------------------------------------------------------------------
create function metrics.alert_group_body(p_rule metrics.alert_rules, p_receiver_name text, p_changed jsonb)
returns jsonb
language sql stable set search_path = '' set timezone = 'UTC'
as $$
  -- the alerts that changed, then every other alert of the rule that is still firing and not muted by a silence
  with changed as (
    select c.value as alert, c.ordinality as n from pg_catalog.jsonb_array_elements(p_changed) with ordinality c
  ),
  others as (
    select metrics.alert_element(p_rule, i.fingerprint, i.labels, i.state, i.value, i.fired_at, null) as alert,
      1000000 + pg_catalog.row_number() over (order by i.labels) as n
    from metrics.alert_instances i
    where i.rule_id = p_rule.id and i.state in ('firing', 'recovering', 'nodata')
      and i.fingerprint not in (select c.alert ->> 'fingerprint' from changed c)
      and not metrics.alert_silenced(p_rule, i.labels, pg_catalog.now())
  ),
  alerts as (select * from changed union all select * from others),
  shown as (select a.alert from alerts a order by a.n limit 100)
  select pg_catalog.jsonb_build_object(
    'version', '4',
    'groupKey', pg_catalog.format('{}:{rule_id=%s}', p_rule.id),
    'status', case when exists (select from alerts a where a.alert ->> 'status' = 'firing') then 'firing' else 'resolved' end,
    'receiver', p_receiver_name,
    'groupLabels', pg_catalog.jsonb_build_object('alertname', p_rule.name),
    'commonLabels', pg_catalog.jsonb_build_object('alertname', p_rule.name, 'severity', p_rule.severity) || p_rule.labels,
    'commonAnnotations', '{}'::jsonb,
    'externalURL', '',
    'truncatedAlerts', greatest(0, (select count(*) from alerts) - 100),
    'alerts', coalesce((select pg_catalog.jsonb_agg(s.alert) from shown s), '[]'::jsonb),
    'project_id', p_rule.project_id,
    'rule', pg_catalog.jsonb_build_object('id', p_rule.id, 'name', p_rule.name, 'severity', p_rule.severity)
  )
$$;
comment on function metrics.alert_group_body(metrics.alert_rules, text, jsonb) is
  'The body of one notification: the Alertmanager v4 group of a rule (version, groupKey, status, receiver, '
  'groupLabels, commonLabels, commonAnnotations, externalURL, truncatedAlerts, alerts: the changed alerts first, '
  'then the rule''s other firing ones that no silence covers, at most 100) plus project_id and rule.';

create function metrics.assemble_alert_messages()
returns integer
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  g record;
  v_rule metrics.alert_rules;
  v_ids bigint[];
  v_alerts jsonb;
  v_key text;
  v_message bigint;
  v_chunk integer;
  v_made integer := 0;
begin
  -- due outbox rows, one message per (rule, receiver)
  for g in
    select n.rule_id, n.receiver_id, rc.name as receiver_name, bool_or(n.transition = 'resolved') as resolves
    from metrics.alert_notifications n
    join metrics.alert_receivers rc on rc.id = n.receiver_id
    where n.status = 'queued' and n.due_at <= pg_catalog.now()
    group by 1, 2, 3
  loop
    select * into v_rule from metrics.alert_rules r where r.id = g.rule_id;
    -- with a group_wait, a group notifies at most once per group_interval (resolved notices go at once)
    if v_rule.group_wait > interval '0' and not g.resolves and exists (
      select from metrics.alert_messages m
      where m.rule_id = g.rule_id and m.receiver_id = g.receiver_id and m.kind <> 'test'
        and m.created_at > pg_catalog.now() - v_rule.group_interval
    ) then
      continue;
    end if;
    select pg_catalog.array_agg(x.id order by x.id), pg_catalog.jsonb_agg(x.alert order by x.id)
    into v_ids, v_alerts
    from (
      select n.id, n.alert from metrics.alert_notifications n
      where n.rule_id = g.rule_id and n.receiver_id = g.receiver_id and n.status = 'queued'
        and (n.due_at <= pg_catalog.now() or g.resolves)  -- a resolve takes the group's waiting rows along
      order by n.id
      for update skip locked
    ) as x;
    if v_ids is null then
      continue;  -- another worker is assembling them
    end if;
    -- at most 100 changed alerts a message (a body shows 100): more make more messages, none is dropped
    for v_chunk in 0 .. (pg_catalog.cardinality(v_ids) - 1) / 100 loop
      -- the key is the rows' keys: the same rows make the same message, whoever assembles them
      select 'n' || pg_catalog.md5(pg_catalog.string_agg(n.key, ',' order by n.id)) into v_key
      from metrics.alert_notifications n where n.id = any (v_ids[v_chunk * 100 + 1 : v_chunk * 100 + 100]);
      insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body)
      values (v_key, v_rule.project_id, v_rule.id, g.receiver_id,
        pg_catalog.md5(v_rule.id::text || '/' || g.receiver_id::text), 'notification',
        metrics.alert_group_body(v_rule, g.receiver_name, (
          select pg_catalog.jsonb_agg(a.value order by a.ordinality)
          from pg_catalog.jsonb_array_elements(v_alerts) with ordinality a
          where a.ordinality between v_chunk * 100 + 1 and v_chunk * 100 + 100)))
      on conflict (key) do nothing
      returning id into v_message;
      update metrics.alert_notifications n set status = 'grouped', message_id = v_message
      where n.id = any (v_ids[v_chunk * 100 + 1 : v_chunk * 100 + 100]);
      v_made := v_made + 1;
    end loop;
  end loop;
  return v_made + metrics.assemble_alert_repeats();
end
$$;
comment on function metrics.assemble_alert_messages() is
  'Turns due outbox rows into messages: one per rule and receiver, keyed by its rows'' keys (so two workers '
  'cannot make two), honouring group_wait (rows are due after it) and group_interval; then the repeats '
  '(metrics.assemble_alert_repeats). Returns how many messages it made. Service role.';

create function metrics.assemble_alert_repeats()
returns integer
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  g record;
  v_rule metrics.alert_rules;
  v_made integer := 0;
begin
  -- groups still firing whose last notice is older than repeat_interval (an Alertmanager receiver: a minute,
  -- or Alertmanager resolves the alert by itself after its resolve_timeout); an alert that fired while silenced
  -- or muted has no notice yet and is sent once the silence is over
  for g in
    select l.rule_id, l.receiver_id, rc.name as receiver_name, last.id as last_id
    from metrics.alert_rule_receivers l
    join metrics.alert_rules r on r.id = l.rule_id and r.enabled
    join metrics.alert_receivers rc on rc.id = l.receiver_id
    left join lateral (
      select m.id, m.created_at from metrics.alert_messages m
      where m.rule_id = l.rule_id and m.receiver_id = l.receiver_id and m.kind <> 'test'
      order by m.created_at desc limit 1
    ) as last on true
    where exists (
        select from metrics.alert_instances i
        where i.rule_id = l.rule_id and i.state in ('firing', 'recovering', 'nodata')
          and not metrics.alert_silenced(r, i.labels, pg_catalog.now())
      )
      and not metrics.alert_muted(r.project_id, r.id, pg_catalog.now())
      and not exists (  -- what is queued goes out first
        select from metrics.alert_notifications n
        where n.rule_id = l.rule_id and n.receiver_id = l.receiver_id and n.status = 'queued'
      )
      and coalesce(last.created_at, '-infinity') <= pg_catalog.now()
        - case when rc.kind = 'alertmanager' then least(r.repeat_interval, interval '1 minute') else r.repeat_interval end
  loop
    select * into v_rule from metrics.alert_rules r where r.id = g.rule_id;
    insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body)
    values ('r' || pg_catalog.md5(g.rule_id::text || '/' || g.receiver_id::text || '/' || coalesce(g.last_id, 0)::text),
      v_rule.project_id, v_rule.id, g.receiver_id, pg_catalog.md5(v_rule.id::text || '/' || g.receiver_id::text),
      'repeat', metrics.alert_group_body(v_rule, g.receiver_name, '[]'::jsonb))
    on conflict (key) do nothing;
    if found then
      v_made := v_made + 1;
    end if;
  end loop;
  return v_made;
end
$$;
comment on function metrics.assemble_alert_repeats() is
  'Messages that repeat a still-firing group after its repeat_interval (a minute for Alertmanager receivers, '
  'which forget alerts that are not re-sent within their resolve_timeout), skipping silenced and muted alerts; '
  'keyed by the group''s previous message, so a repeat is made once. Returns how many. Service role.';

create function metrics.claim_alert_deliveries(p_worker text, p_limit integer default 20,
  p_lock interval default '1 minute')
returns table (id bigint, key text, receiver_id uuid, receiver_name text, kind text, target text, secret text,
  body jsonb, attempt integer, thread_key text)
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if p_worker is null or pg_catalog.char_length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker: 1 to 200 characters';
  end if;
  perform metrics.assemble_alert_messages();
  return query
  with due as (
    select m.id from metrics.alert_messages m
    where m.status = 'pending' and m.next_attempt_at <= pg_catalog.clock_timestamp()
      and (m.locked_until is null or m.locked_until < pg_catalog.clock_timestamp())
      -- a group's messages in order: a retried "firing" never arrives after the "resolved" that followed it
      and not exists (
        select from metrics.alert_messages o
        where o.rule_id = m.rule_id and o.receiver_id = m.receiver_id and o.status = 'pending' and o.id < m.id
      )
    order by m.next_attempt_at, m.id
    limit greatest(p_limit, 0)
    for update skip locked
  ),
  claimed as (
    update metrics.alert_messages m
    set attempts = m.attempts + 1, locked_by = p_worker, locked_until = pg_catalog.clock_timestamp() + p_lock
    from due where m.id = due.id
    returning m.id, m.key, m.receiver_id, m.body, m.attempts, m.thread_key
  )
  select c.id, c.key, c.receiver_id, rc.name, rc.kind, rc.target, rc.secret, c.body, c.attempts, c.thread_key
  from claimed c join metrics.alert_receivers rc on rc.id = c.receiver_id
  order by c.id;
end
$$;
comment on function metrics.claim_alert_deliveries(text, integer, interval) is
  'A delivery worker''s next batch: assembles due outbox rows into messages, then claims up to p_limit due '
  'messages (FOR UPDATE SKIP LOCKED; locked for p_lock, after which a crashed worker''s claim lapses and the '
  'message is tried again with the same key). Returns what sending needs, receiver target and secret included: '
  'service role only, never logged.';

create function metrics.finish_alert_delivery(p_id bigint, p_worker text, p_ok boolean, p_status integer default null,
  p_error text default null, p_retry_after double precision default null, p_permanent boolean default false)
returns text
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_message metrics.alert_messages;
  v_delay interval;
begin
  select * into strict v_cfg from metrics.config;
  select * into v_message from metrics.alert_messages m where m.id = p_id for update;
  if not found or v_message.status <> 'pending' or v_message.locked_by is distinct from p_worker then
    return 'stale';  -- not (or no longer) this worker's claim: an attempt that lapsed changes nothing
  end if;
  if p_ok then
    update metrics.alert_messages m set status = 'sent', sent_at = pg_catalog.now(), last_status = p_status,
      last_error = null, locked_by = null, locked_until = null
    where m.id = p_id;
    return 'sent';
  end if;
  if p_permanent or v_message.attempts >= v_cfg.alert_max_attempts then
    update metrics.alert_messages m set status = 'dead', last_status = p_status,
      last_error = pg_catalog.left(p_error, 500), locked_by = null, locked_until = null
    where m.id = p_id;
    return 'dead';
  end if;
  -- exponential backoff with jitter (0.5x to 1.5x), at most alert_retry_max; a Retry-After (up to an hour) wins
  v_delay := least(v_cfg.alert_retry_max, v_cfg.alert_retry_base * pg_catalog.power(2, v_message.attempts - 1))
    * (0.5 + pg_catalog.random());
  if p_retry_after is not null and p_retry_after >= 0 then
    v_delay := pg_catalog.make_interval(secs => least(p_retry_after, 3600));
  end if;
  update metrics.alert_messages m set next_attempt_at = pg_catalog.clock_timestamp() + v_delay, last_status = p_status,
    last_error = pg_catalog.left(p_error, 500), locked_by = null, locked_until = null
  where m.id = p_id;
  return 'retry';
end
$$;
comment on function metrics.finish_alert_delivery(bigint, text, boolean, integer, text, double precision, boolean) is
  'Records an attempt of a claimed message: sent; dead (permanent failure, or the last of alert_max_attempts); '
  'or retried after an exponential backoff with jitter (alert_retry_base doubling, at most alert_retry_max) or '
  'the receiver''s Retry-After (at most an hour). Returns sent, dead, retry, or stale when the claim is not this '
  'worker''s any more (nothing changes). p_error is stored and shown: no URL, no secret. Service role.';

create function metrics.prune_alert_history()
returns jsonb
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_before timestamptz := pg_catalog.now() - (select c.alert_history_retention from metrics.config c);
  v_rows integer;
  v_report jsonb := '{}'::jsonb;
begin
  -- outbox rows first (those of a pending message stay with it), then finished messages, then history
  delete from metrics.alert_notifications n
  where n.created_at < v_before and n.status <> 'queued'
    and not exists (select from metrics.alert_messages m where m.id = n.message_id and m.status = 'pending');
  get diagnostics v_rows = row_count;
  v_report := v_report || pg_catalog.jsonb_build_object('notifications', v_rows);
  delete from metrics.alert_messages m where m.created_at < v_before and m.status <> 'pending';
  get diagnostics v_rows = row_count;
  v_report := v_report || pg_catalog.jsonb_build_object('messages', v_rows);
  delete from metrics.alert_events e where e.at < v_before;
  get diagnostics v_rows = row_count;
  return v_report || pg_catalog.jsonb_build_object('events', v_rows);
end
$$;
comment on function metrics.prune_alert_history() is
  'Deletes alert history, sent or dead messages and their outbox rows older than config.alert_history_retention '
  '(pending messages and queued rows stay whatever their age); returns the counts. The alert worker runs it '
  'hourly. Service role.';

create function metrics.queue_test_alert(p_receiver_id uuid)
returns bigint
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_receiver metrics.alert_receivers;
  v_id bigint;
begin
  -- definer (the messages table is the worker's; the receiver's secret is not the caller's to read), so the
  -- rule of receivers is checked here: admins of the receiver's project only
  select * into v_receiver from metrics.alert_receivers r
  where r.id = p_receiver_id
    and (auth.role() = 'service_role' or r.project_id in (select metrics.user_project_ids('admin')));
  if not found then
    raise exception using errcode = '42501', message = pg_catalog.format('not allowed to test receiver %s', p_receiver_id),
      hint = 'receivers are tested by admins of their project';
  end if;
  insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body)
  values ('t' || pg_catalog.md5(gen_random_uuid()::text), v_receiver.project_id, '00000000-0000-0000-0000-000000000000',
    v_receiver.id, pg_catalog.md5('test/' || v_receiver.id::text), 'test',
    pg_catalog.jsonb_build_object('version', '4', 'groupKey', '{}:{test}', 'status', 'firing', 'receiver', v_receiver.name,
      'groupLabels', '{"alertname": "TestNotification"}'::jsonb,
      'commonLabels', '{"alertname": "TestNotification", "severity": "info"}'::jsonb,
      'commonAnnotations', '{"summary": "A test notification from meshhook-rt-metrics"}'::jsonb,
      'externalURL', '', 'truncatedAlerts', 0,
      'alerts', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'status', 'firing', 'state', 'firing', 'labels', '{"alertname": "TestNotification", "severity": "info"}'::jsonb,
        'annotations', '{"summary": "A test notification from meshhook-rt-metrics"}'::jsonb,
        'startsAt', pg_catalog.to_char(pg_catalog.now(), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'endsAt', '0001-01-01T00:00:00Z', 'generatorURL', '', 'fingerprint', pg_catalog.md5('test/' || v_receiver.id::text),
        'value', null)),
      'project_id', v_receiver.project_id,
      'rule', pg_catalog.jsonb_build_object('id', null, 'name', 'TestNotification', 'severity', 'info')))
  returning id into v_id;
  return v_id;
end
$$;
comment on function metrics.queue_test_alert(uuid) is
  'Queues a test notification to a receiver (the HTTP service''s POST .../receivers/{id}/test then waits for '
  'its delivery). Security definer: checks itself that the caller is an admin of the receiver''s project '
  '(42501 otherwise, also for receivers the caller cannot see).';

-- preview -------------------------------------------------------------------------------------------------------------
create function metrics.preview_alert_rule(p_rule_id uuid, p_from timestamptz, p_to timestamptz, p_step interval default null)
returns table (at timestamptz, fingerprint text, labels jsonb, state text, previous text, value double precision)
language plpgsql stable security invoker set search_path = '' set timezone = 'UTC'
as $$
declare
  v_rule metrics.alert_rules;
  v_kind text;
  v_window interval;
  v_step interval := p_step;
  v_t timestamptz;
  v_states jsonb := '{}'::jsonb;  -- fingerprint -> the instance's state fields
  g record;
  n record;
  s jsonb;
  v_fp text;
begin
  -- the caller must see the rule (members: row-level security); the values are read as the caller too
  select * into v_rule from metrics.alert_rules r where r.id = p_rule_id;
  if not found then
    raise exception using errcode = '42501', message = pg_catalog.format('alert rule %s not found', p_rule_id);
  end if;
  if p_from is null or p_to is null or p_from >= p_to then
    perform metrics.reject('from', 'from and to are required and from must be before to');
  end if;
  if p_to - p_from > interval '7 days' then
    perform metrics.reject('to', 'previews cover at most 7 days');
  end if;
  v_step := coalesce(v_step, greatest(interval '1 minute',
    pg_catalog.make_interval(mins => pg_catalog.ceil(extract(epoch from p_to - p_from) / 60 / 720)::integer)));
  if v_step < interval '1 minute' or v_step > interval '7 days'
     or extract(epoch from p_to - p_from) / extract(epoch from v_step) > 1440 then
    perform metrics.reject('step', 'between 1 minute and 7 days, and at most 1,440 evaluations');
  end if;
  select f.kind into v_kind from metrics.families f where f.project_id = v_rule.project_id and f.name = v_rule.metric;
  v_window := metrics.alert_window(v_rule.window_length);
  -- every evaluation at a whole minute, all minutes before it settled (the past is complete)
  v_t := pg_catalog.date_bin('1 minute', p_from, '1970-01-01 00:00:00+00'::timestamptz);
  while v_t <= p_to loop
    for g in
      with present as (
        select q.labels, q.points[1][2] as value
        from metrics.query_series(v_rule.project_id, v_rule.metric, v_t - v_window, v_t, v_rule.matchers, v_window,
          v_rule.agg, v_rule.group_by) q
      ),
      known as (
        select (e.value ->> 'labels')::jsonb as labels, e.value as st from pg_catalog.jsonb_each(v_states) e
      )
      select coalesce(p.labels, k.labels) as labels,
        p.labels is not null or metrics.alert_absent_value(v_rule.agg, v_kind) is not null as settled,
        case when p.labels is not null then p.value else metrics.alert_absent_value(v_rule.agg, v_kind) end as value,
        k.st
      from present p full join known k on k.labels = p.labels
      order by 1
    loop
      v_fp := pg_catalog.md5(v_rule.id::text || g.labels::text);
      s := g.st;
      select * into n from metrics.alert_next_state(v_rule, v_kind, s ->> 'state', (s ->> 'active_at')::timestamptz,
        (s ->> 'fired_at')::timestamptz, (s ->> 'recovering_at')::timestamptz, (s ->> 'last_data_at')::timestamptz,
        (s ->> 'value')::double precision, g.settled, g.value, false, null, v_t);
      for i in 1 .. coalesce(pg_catalog.cardinality(n.events), 0) loop
        at := v_t; fingerprint := v_fp; labels := metrics.alert_labels(v_rule, g.labels);
        state := n.events[i]; previous := n.previous[i]; value := n.value;
        return next;
      end loop;
      v_states := v_states || pg_catalog.jsonb_build_object(v_fp, pg_catalog.jsonb_build_object('labels', g.labels,
        'state', n.state, 'active_at', n.active_at, 'fired_at', n.fired_at, 'recovering_at', n.recovering_at,
        'last_data_at', n.last_data_at, 'value', metrics.json_number(n.value)));
    end loop;
    v_t := v_t + v_step;
  end loop;
end
$$;
comment on function metrics.preview_alert_rule(uuid, timestamptz, timestamptz, interval) is
  'Replays a rule over past rollups: evaluates it every p_step (default: at most 720 evaluations, at least a '
  'minute) from p_from to p_to (at most 7 days) with the state machine of the worker (metrics.alert_next_state, '
  'settled minutes only) and returns every transition it would have made: when, which alert, what it became. '
  'Nothing is written. Runs as the caller: members of the rule''s project.';

-- row-level security ------------------------------------------------------------------------------------------------
alter table metrics.alert_mute_windows enable row level security;
alter table metrics.alert_instances enable row level security;
alter table metrics.alert_leases enable row level security;
alter table metrics.alert_messages enable row level security;
alter table metrics.alert_notifications enable row level security;

create policy alert_mute_windows_members_read on metrics.alert_mute_windows for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_mute_windows_members_read on metrics.alert_mute_windows is 'Members see their projects'' mute windows.';
create policy alert_mute_windows_editors_insert on metrics.alert_mute_windows for insert to authenticated
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_mute_windows_editors_insert on metrics.alert_mute_windows is 'Editors and admins create mute windows.';
create policy alert_mute_windows_editors_update on metrics.alert_mute_windows for update to authenticated
  using (project_id in (select metrics.user_project_ids('editor')))
  with check (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_mute_windows_editors_update on metrics.alert_mute_windows is 'Editors and admins change mute windows.';
create policy alert_mute_windows_editors_delete on metrics.alert_mute_windows for delete to authenticated
  using (project_id in (select metrics.user_project_ids('editor')));
comment on policy alert_mute_windows_editors_delete on metrics.alert_mute_windows is 'Editors and admins delete mute windows.';

create policy alert_instances_members_read on metrics.alert_instances for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_instances_members_read on metrics.alert_instances is
  'Members see their projects'' alerts; only the alert worker (service role) writes them.';
create policy alert_messages_members_read on metrics.alert_messages for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_messages_members_read on metrics.alert_messages is
  'Members see their projects'' notifications and their delivery status (bodies hold no target or secret).';
create policy alert_notifications_members_read on metrics.alert_notifications for select to authenticated
  using (project_id in (select metrics.user_project_ids('viewer')));
comment on policy alert_notifications_members_read on metrics.alert_notifications is
  'Members see their projects'' outbox rows (queued, silenced, muted, grouped).';

-- privileges -----------------------------------------------------------------------------------------------------------
grant select on metrics.alert_mute_windows, metrics.alert_instances, metrics.alert_notifications to authenticated;
grant select (id, key, project_id, rule_id, receiver_id, kind, body, status, attempts, next_attempt_at, last_status,
  last_error, created_at, sent_at) on metrics.alert_messages to authenticated;
grant insert (project_id, rule_id, name, weekdays, start_time, end_time, time_zone) on metrics.alert_mute_windows
  to authenticated;
grant update (name, weekdays, start_time, end_time, time_zone) on metrics.alert_mute_windows to authenticated;
grant delete on metrics.alert_mute_windows to authenticated;
grant insert (keep_firing_for, resolve_threshold, labels, no_data_after, no_data_policy, group_wait, group_interval,
  repeat_interval) on metrics.alert_rules to authenticated;
grant update (keep_firing_for, resolve_threshold, labels, no_data_after, no_data_policy, group_wait, group_interval,
  repeat_interval) on metrics.alert_rules to authenticated;
grant all on metrics.alert_mute_windows, metrics.alert_instances, metrics.alert_leases, metrics.alert_messages,
  metrics.alert_notifications to service_role;

grant execute on function metrics.template_names_problem(jsonb, text[], jsonb), metrics.time_zone_problem(text),
  metrics.alert_window(interval), metrics.alert_compare(double precision, text, double precision),
  metrics.alert_decides_on_open_minute(text, text, text), metrics.format_alert_value(double precision),
  metrics.alert_absent_value(text, text),
  metrics.render_template(text, jsonb), metrics.alert_labels(metrics.alert_rules, jsonb),
  metrics.alert_element(metrics.alert_rules, text, jsonb, text, double precision, timestamptz, timestamptz),
  metrics.alert_next_state(metrics.alert_rules, text, text, timestamptz, timestamptz, timestamptz, timestamptz,
    double precision, boolean, double precision, boolean, double precision, timestamptz),
  metrics.preview_alert_rule(uuid, timestamptz, timestamptz, interval), metrics.queue_test_alert(uuid),
  metrics.alert_muted(uuid, uuid, timestamptz), metrics.alert_silenced(metrics.alert_rules, jsonb, timestamptz)
  to authenticated, service_role;
-- the alert payloads (notifications, preview) write numbers as the live messages do
grant execute on function metrics.json_number(double precision) to authenticated, service_role;
grant execute on function metrics.alert_data_time(uuid), metrics.claim_alert_leases(text, interval, integer),
  metrics.release_alert_leases(text), metrics.check_alert_lease(uuid, text, bigint),
  metrics.record_alert_transition(metrics.alert_rules, text, jsonb, text, text, double precision, timestamptz, timestamptz),
  metrics.evaluate_alerts(uuid, text, bigint, uuid[]), metrics.alert_group_body(metrics.alert_rules, text, jsonb),
  metrics.alert_query_key(metrics.alert_rules), metrics.retire_alert_instances(metrics.alert_rules, timestamptz, boolean),
  metrics.assemble_alert_messages(), metrics.assemble_alert_repeats(),
  metrics.claim_alert_deliveries(text, integer, interval),
  metrics.finish_alert_delivery(bigint, text, boolean, integer, text, double precision, boolean),
  metrics.prune_alert_history(),
  metrics.alert_mute_windows_check()
  to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
