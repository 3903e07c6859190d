-- Hardening (issue #15): findings 2, 4, 8, 11, 12 (server part) and 17.
--
-- 2  JWT claims are believed only from a session that could act as the role they name. request.jwt.claims is
--    a setting any session can change; the Data API sets it together with SET LOCAL ROLE <role claim>, so a
--    claim is believed when the session's current role (the role set by SET ROLE, else the login role; a
--    security definer function changes neither) is, or may become, the role the claim names; otherwise the
--    claim grants nothing (assert_can_write raises 42501 naming it). metrics.request_role() is that rule;
--    assert_can_write, query_horizon, queue_test_alert and my_projects use it instead of auth.role().
-- 4  maintain() no longer holds ACCESS EXCLUSIVE on metrics.points for its run: partitions are created as
--    plain tables and attached (SHARE UPDATE EXCLUSIVE on the parent: ingest and reads go on), and the
--    partition DDL runs at the very end of the run, each statement under a short lock_timeout with retries
--    (a partition that stays busy is left for the next run), so the parent's ACCESS EXCLUSIVE of a drop
--    lasts from the drop to the commit. The rollups, row retention and publishing come first.
-- 8  The all-projects exposition keeps metric families apart by kind: per name, the oldest family (first
--    registered) is canonical; families of the same name with another kind are left out (listed by
--    metrics.exposition_conflicts) and HELP and UNIT come from the canonical family.
-- 11 Scrape tokens: the token, its hash and prefix and created_by are set by the database (trigger), never
--    by the writer; a revoked token stays revoked and the identity of a token cannot be rewritten (trigger).
-- 12 The batch ledger is kept for the largest timestamp window ever configured (config.max_past_high_water,
--    config.max_future_high_water, maintained by trigger).
-- 17 Quotas: at most config.alert_rules_quota (200) alert rules and config.alert_silences_quota (1,000)
--    silences that have not ended per project (per-project overrides in metrics.projects); a write past
--    them raises 23514 naming alert_rules_quota_check / alert_silences_quota_check.

-- 2: who the caller is ------------------------------------------------------------------------------------------
create function metrics.caller_role()
returns text
language sql stable set search_path = ''
as $$
  -- the role set by SET ROLE (the Data API's SET LOCAL ROLE), else the login role; unlike current_user it is
  -- not changed by security definer functions, and unlike request.jwt.claims no session can set it to a role
  -- it is not a member of
  select case when pg_catalog.current_setting('role') = 'none' then session_user::text
    else pg_catalog.current_setting('role') end
$$;
comment on function metrics.caller_role() is
  'The role the session acts as outside any security definer function: the role of SET ROLE (the Data API '
  'runs SET LOCAL ROLE <role claim>), else the login role (session_user). Only membership lets a session '
  'SET ROLE, so unlike request.jwt.claims it cannot be chosen freely.';

create function metrics.request_role()
returns text
language sql stable set search_path = ''
as $$
  -- the claim counts only when the session acts as that role (or could SET ROLE to it anyway)
  select c.claim
  from (select nullif(auth.role(), '') as claim) as c
  where case when exists (select from pg_catalog.pg_roles r where r.rolname = c.claim)
    then pg_catalog.pg_has_role(metrics.caller_role()::name, c.claim::name, 'MEMBER') else false end
$$;
comment on function metrics.request_role() is
  'The JWT role claim (auth.role()) if the session may act as that role: metrics.caller_role() is a member of '
  'it (the Data API''s SET LOCAL ROLE <role claim>, or a role that could SET ROLE to it anyway). Null without '
  'a role claim and for a claim the session could not have made through the Data API (e.g. a direct login, '
  'or a session acting as authenticated, claiming service_role): such claims grant nothing.';

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
    hint = 'ingest needs the service role, a trusted direct connection, or the editor role in the project';
end
$$;
comment on function metrics.assert_can_write(uuid) is
  'Raises 42501 unless the caller may write the project''s metrics: the service role (a role claim the session '
  'may act as, metrics.request_role), a trusted direct connection without claims (login role superuser or '
  'BYPASSRLS), or an authenticated editor/admin member. A role claim the session cannot act as is refused.';

create or replace function metrics.query_horizon(p_project_id uuid, p_from timestamptz, p_to timestamptz,
  p_step interval default null)
returns table (revision bigint, settled_until timestamptz, minutes_from timestamptz, step interval)
language plpgsql stable security definer set search_path = ''
as $$
begin
  -- definer, for the maintenance state and the late marks; answers only about projects the caller sees
  if coalesce(metrics.request_role(), '') <> 'service_role'
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
  'row for a project the caller does not see (the service role: a role claim the session may act as, '
  'metrics.request_role). As of the statement: call it in the snapshot of the reads.';

create or replace function metrics.queue_test_alert(p_receiver_id uuid)
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
    and (metrics.request_role() = 'service_role' or r.project_id in (select metrics.user_project_ids('admin')));
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
  'its delivery). Security definer: checks itself that the caller is an admin of the receiver''s project or '
  'the service role (a role claim the session may act as, metrics.request_role); 42501 otherwise, also for '
  'receivers the caller cannot see.';

create or replace function metrics.my_projects()
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
  select p.id, p.name, 'admin' from metrics.projects p where metrics.request_role() = 'service_role'
  order by 2 nulls last, 1
$$;
comment on function metrics.my_projects() is
  'The calling user''s projects (metrics.membership through metrics.user_project_ids, so a rewired '
  'membership applies) with their role, viewer, editor or admin, and the name from metrics.projects (null '
  'without a row or a name); by name, then id. The service role (a role claim the session may act as, '
  'metrics.request_role) gets every row of metrics.projects as admin. Security invoker: row-level security '
  'of metrics.projects lets members read their projects'' names.';

-- 11: scrape tokens are issued and revoked by the database's rules -----------------------------------------------
create function metrics.scrape_tokens_issue()
returns trigger
language plpgsql set search_path = ''
as $$
declare
  -- 244 random bits from the server's strong random source (gen_random_uuid is core since PG 13)
  v_token text := 'mhm_' || pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
begin
  -- whatever the writer sent: the secret is the database's, and so are its hash, prefix and author
  new.token_hash := pg_catalog.sha256(pg_catalog.convert_to(v_token, 'UTF8'));
  new.token_prefix := pg_catalog.left(v_token, 12);
  new.created_by := auth.uid();
  new.created_at := pg_catalog.now();
  new.revoked_at := null;
  new.last_used_at := null;
  -- handed to metrics.create_scrape_token, which returns it once and clears it (transaction-local)
  perform pg_catalog.set_config('metrics.issued_scrape_token', v_token, true);
  return new;
end
$$;
comment on function metrics.scrape_tokens_issue() is
  'Trigger scrape_tokens_issue: every new scrape token gets a fresh random secret whose sha256 and first 12 '
  'characters are stored, created_by = auth.uid(), created_at = now(), not revoked, never used, whatever the '
  'writer sent. The secret is left in the transaction-local setting metrics.issued_scrape_token for '
  'metrics.create_scrape_token, which returns it once.';

create trigger scrape_tokens_issue
before insert on metrics.scrape_tokens
for each row execute function metrics.scrape_tokens_issue();
comment on trigger scrape_tokens_issue on metrics.scrape_tokens is
  'The database chooses every token''s secret, hash, prefix and author (metrics.scrape_tokens_issue).';

create function metrics.scrape_tokens_guard()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  if (new.id, new.project_id, new.token_hash, new.token_prefix, new.created_by, new.created_at)
     is distinct from (old.id, old.project_id, old.token_hash, old.token_prefix, old.created_by, old.created_at) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('scrape token %s: only name, expires_at (earlier), revoked_at (once) and '
        'last_used_at can change', old.id),
      hint = 'create a new token instead';
  end if;
  if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('scrape token %s is revoked and stays revoked', old.id),
      hint = 'create a new token instead';
  end if;
  if old.revoked_at is null and new.revoked_at is not null then
    new.revoked_at := pg_catalog.now();  -- the time of the revocation is the database's
  end if;
  if new.expires_at is distinct from old.expires_at
     and (new.expires_at is null or (old.expires_at is not null and new.expires_at > old.expires_at)) then
    raise exception using
      errcode = '42501',
      message = pg_catalog.format('scrape token %s: expires_at can only be moved earlier', old.id),
      hint = 'create a new token instead';
  end if;
  return new;
end
$$;
comment on function metrics.scrape_tokens_guard() is
  'Trigger scrape_tokens_guard (every role): a token''s id, project, hash, prefix, author and creation time '
  'never change; revoked_at goes from null to now() once and never back (no revival of a revoked token); '
  'expires_at only moves earlier. Raises 42501.';

create trigger scrape_tokens_guard
before update on metrics.scrape_tokens
for each row execute function metrics.scrape_tokens_guard();
comment on trigger scrape_tokens_guard on metrics.scrape_tokens is
  'Revoked tokens stay revoked; a token''s identity is not rewritten (metrics.scrape_tokens_guard).';

-- signed-in users no longer write the stored secret's columns (the trigger would override them anyway): they
-- create tokens with metrics.create_scrape_token (or insert project_id, name, expires_at, and get a token
-- nobody knows); setting revoked_at stays theirs (revoking), clearing it is refused by the guard
revoke insert (token_hash, token_prefix, created_by) on metrics.scrape_tokens from authenticated;

create or replace function metrics.create_scrape_token(
  p_project_id uuid, p_name text default '', p_expires_at timestamptz default null
)
returns table (id uuid, token text, token_prefix text, created_at timestamptz, expires_at timestamptz)
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_id uuid;
  v_prefix text;
  v_created_at timestamptz;
  v_expires_at timestamptz;
  v_token text;
begin
  if p_project_id is null then perform metrics.reject('p_project_id', 'required'); end if;
  if p_expires_at is not null and p_expires_at <= now() then
    perform metrics.reject('p_expires_at', 'must be in the future');
  end if;
  -- the trigger scrape_tokens_issue makes the secret and stores its hash and prefix
  insert into metrics.scrape_tokens as t (project_id, name, expires_at)
  values (p_project_id, coalesce(p_name, ''), p_expires_at)
  returning t.id, t.token_prefix, t.created_at, t.expires_at into v_id, v_prefix, v_created_at, v_expires_at;
  v_token := pg_catalog.current_setting('metrics.issued_scrape_token');
  perform pg_catalog.set_config('metrics.issued_scrape_token', '', true);
  return query select v_id, v_token, v_prefix, v_created_at, v_expires_at;
end
$$;
comment on function metrics.create_scrape_token(uuid, text, timestamptz) is
  'Creates a scrape token for a project (row-level security: project admins or the service role) and '
  'returns it ONCE; the secret is made by the database (trigger scrape_tokens_issue), only its sha256 and '
  'prefix are stored.';


-- 12 and 17: settings ---------------------------------------------------------------------------------------------
alter table metrics.config
  add column max_past_high_water interval,
  add column max_future_high_water interval,
  add column alert_rules_quota integer not null default 200 check (alert_rules_quota between 1 and 100000),
  add column alert_silences_quota integer not null default 1000 check (alert_silences_quota between 1 and 1000000);
update metrics.config set max_past_high_water = max_past, max_future_high_water = max_future;
alter table metrics.config
  alter column max_past_high_water set not null,
  alter column max_future_high_water set not null;
comment on column metrics.config.max_past_high_water is
  'The largest max_past ever configured (trigger config_high_water): the batch ledger is kept for the widest '
  'timestamp window ever accepted, so lowering and raising max_past again never lets a forgotten batch id '
  'count twice. Lowered only by writing this column itself (never below max_past).';
comment on column metrics.config.max_future_high_water is
  'The largest max_future ever configured (trigger config_high_water); see max_past_high_water.';
comment on column metrics.config.alert_rules_quota is
  'Most alert rules a project may have, enabled or not (trigger alert_rules_quota; 23514). Per-project '
  'override: projects.alert_rules_quota.';
comment on column metrics.config.alert_silences_quota is
  'Most silences that have not ended (ends_at > now()) a project may have (trigger alert_silences_quota; '
  '23514). Per-project override: projects.alert_silences_quota.';

alter table metrics.projects
  add column alert_rules_quota integer check (alert_rules_quota between 1 and 100000),
  add column alert_silences_quota integer check (alert_silences_quota between 1 and 1000000);
comment on column metrics.projects.alert_rules_quota is 'Per-project override of metrics.config.alert_rules_quota.';
comment on column metrics.projects.alert_silences_quota is
  'Per-project override of metrics.config.alert_silences_quota.';

create function metrics.config_high_water()
returns trigger
language plpgsql set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    new.max_past_high_water := greatest(new.max_past_high_water, new.max_past);
    new.max_future_high_water := greatest(new.max_future_high_water, new.max_future);
    return new;
  end if;
  -- a change of the window only ever raises the marks; writing a mark itself may lower it (not below the window)
  new.max_past_high_water := greatest(
    case when new.max_past_high_water is distinct from old.max_past_high_water
      then new.max_past_high_water else old.max_past_high_water end,
    new.max_past);
  new.max_future_high_water := greatest(
    case when new.max_future_high_water is distinct from old.max_future_high_water
      then new.max_future_high_water else old.max_future_high_water end,
    new.max_future);
  return new;
end
$$;
comment on function metrics.config_high_water() is
  'Trigger config_high_water: keeps config.max_past_high_water / max_future_high_water at least the largest '
  'max_past / max_future configured since; an explicit write of a mark may lower it, never below the current '
  'window.';

create trigger config_high_water
before insert or update on metrics.config
for each row execute function metrics.config_high_water();
comment on trigger config_high_water on metrics.config is
  'Records the widest timestamp window ever configured, for the batch ledger''s retention.';

-- 4 and 12: partitions, retention and maintain --------------------------------------------------------------------
create or replace function metrics.ensure_points_partition(p_day date)
returns boolean
language plpgsql security definer set search_path = ''
as $$
declare
  v_name text := 'points_' || pg_catalog.to_char(p_day, 'YYYYMMDD');
  v_from timestamptz := (p_day::text || ' 00:00:00+00')::timestamptz;
  v_to timestamptz := ((p_day + 1)::text || ' 00:00:00+00')::timestamptz;
begin
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('metrics.points partitions'));
  if pg_catalog.to_regclass('metrics.' || v_name) is not null then
    return false;
  end if;
  begin
    -- a table of its own, then attached: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on metrics.points,
    -- which neither ingest (ROW EXCLUSIVE) nor reads wait for; CREATE TABLE ... PARTITION OF would take
    -- ACCESS EXCLUSIVE until the end of the transaction
    execute pg_catalog.format(
      'create table metrics.%I (like metrics.points including defaults including constraints)', v_name);
  exception when duplicate_table then
    return false;  -- committed by a concurrent transaction after this session cached its absence
  end;
  -- the bound as a constraint first: the attach then skips its validation scan
  execute pg_catalog.format('alter table metrics.%I add constraint %I check (ts >= %L and ts < %L)',
    v_name, v_name || '_bounds', v_from, v_to);
  execute pg_catalog.format('alter table metrics.points attach partition metrics.%I for values from (%L) to (%L)',
    v_name, v_from, v_to);
  execute pg_catalog.format('alter table metrics.%I drop constraint %I', v_name, v_name || '_bounds');
  execute pg_catalog.format('alter table metrics.%I enable row level security', v_name);
  execute pg_catalog.format('comment on table metrics.%I is %L', v_name, 'Raw points of ' || p_day::text || ' (UTC).');
  return true;
end
$$;
comment on function metrics.ensure_points_partition(date) is
  'Creates the raw-points partition of a UTC day when missing (a table of its own, then attached: SHARE UPDATE '
  'EXCLUSIVE on metrics.points, which ingest and reads do not wait for); returns whether it created one (false '
  'also when a concurrent transaction created it first).';

create function metrics.points_partition_ddl(p_drop boolean, p_day date, p_lock_timeout interval,
  p_attempts integer)
returns boolean
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_timeout text := pg_catalog.current_setting('lock_timeout');
begin
  for v_try in 1 .. greatest(p_attempts, 1) loop
    begin
      -- set in the subtransaction: undone with it when the lock is not granted in time
      perform pg_catalog.set_config('lock_timeout',
        greatest(1, (extract(epoch from p_lock_timeout) * 1000)::bigint)::text || 'ms', true);
      if p_drop then
        execute pg_catalog.format('drop table if exists metrics.%I', 'points_' || pg_catalog.to_char(p_day, 'YYYYMMDD'));
      else
        perform metrics.ensure_points_partition(p_day);
      end if;
      perform pg_catalog.set_config('lock_timeout', v_timeout, true);
      return true;
    exception when lock_not_available then
      if v_try < p_attempts then
        perform pg_catalog.pg_sleep(0.05 * v_try);  -- holds no lock of metrics.points meanwhile
      end if;
    end;
  end loop;
  return false;
end
$$;
comment on function metrics.points_partition_ddl(boolean, date, interval, integer) is
  'Creates (metrics.ensure_points_partition) or drops (p_drop) the raw partition of a UTC day with lock_timeout '
  '= p_lock_timeout, retried up to p_attempts times after a short pause (a waiting ACCESS EXCLUSIVE request '
  'would queue every ingest behind it; the pause holds no lock of metrics.points); true when it ran, false when '
  'the lock stayed busy. Internal to maintenance (invoker, granted to no one).';

create function metrics.maintain_points_partitions(
  p_create boolean default true,
  p_drop boolean default true,
  p_lock_timeout interval default '100 milliseconds',
  p_attempts integer default 3
)
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_keep_raw interval;
  v_day date;
  v_part record;
  v_created integer := 0;
  v_dropped integer := 0;
  v_deferred integer := 0;
  v_report jsonb := '{}'::jsonb;
begin
  if p_create then
    for v_day in select pg_catalog.generate_series(current_date - 1, current_date + 2, interval '1 day')::date loop
      if pg_catalog.to_regclass('metrics.points_' || pg_catalog.to_char(v_day, 'YYYYMMDD')) is null then
        if metrics.points_partition_ddl(false, v_day, p_lock_timeout, p_attempts) then
          v_created := v_created + 1;
        else
          v_deferred := v_deferred + 1;
        end if;
      end if;
    end loop;
    v_report := v_report || pg_catalog.jsonb_build_object('partitions_created', v_created);
  end if;
  if p_drop then
    select * into strict v_cfg from metrics.config;
    -- whole partitions go once no project keeps raw points that long
    select greatest(v_cfg.raw_retention, coalesce(max(pr.raw_retention), v_cfg.raw_retention)) into v_keep_raw
    from metrics.projects pr;
    for v_part in
      select c.relname, pg_catalog.to_date(pg_catalog.substr(c.relname, 8), 'YYYYMMDD') as day
      from pg_catalog.pg_inherits i
      join pg_catalog.pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'metrics.points'::regclass and c.relname ~ '^points_\d{8}$'
      order by 1
    loop
      if v_part.day + 1 <= (now() - v_keep_raw)::date then
        -- DROP of a partition takes ACCESS EXCLUSIVE on metrics.points until the transaction ends: done last
        if metrics.points_partition_ddl(true, v_part.day, p_lock_timeout, p_attempts) then
          v_dropped := v_dropped + 1;
        else
          v_deferred := v_deferred + 1;
        end if;
      end if;
    end loop;
    v_report := v_report || pg_catalog.jsonb_build_object('partitions_dropped', v_dropped);
  end if;
  return v_report || pg_catalog.jsonb_build_object('partitions_deferred', v_deferred);
end
$$;
comment on function metrics.maintain_points_partitions(boolean, boolean, interval, integer) is
  'Partition DDL of maintenance: creates the raw partitions of yesterday..+2 days (p_create) and drops those '
  'past the longest raw retention (p_drop), each statement with a short lock_timeout and retries '
  '(metrics.points_partition_ddl); a partition whose lock stays busy is counted in partitions_deferred and left '
  'for the next run. Call it last in a transaction (maintain() does): a drop holds ACCESS EXCLUSIVE on '
  'metrics.points until the commit.';

create function metrics.apply_row_retention()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_points bigint;
  v_minutes bigint;
  v_five_minutes bigint;
  v_five_minute_groups bigint;
  v_hours bigint;
  v_batches bigint;
begin
  select * into strict v_cfg from metrics.config;
  -- projects that keep less than the partitions do
  delete from metrics.points p using metrics.projects pr
  where pr.id = p.project_id and pr.raw_retention is not null and p.ts < now() - pr.raw_retention;
  get diagnostics v_points = row_count;

  delete from metrics.rollup_1m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_minutes = row_count;

  -- the 5-minute tier speeds up minute-resolution queries, so it lives exactly as long as the minutes
  delete from metrics.rollup_5m r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minutes = row_count;
  delete from metrics.rollup_5m_by_label r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.minute_retention, v_cfg.minute_retention);
  get diagnostics v_five_minute_groups = row_count;

  delete from metrics.rollup_1h r using metrics.projects pr
  where pr.id = r.project_id and r.bucket < now() - coalesce(pr.hour_retention, v_cfg.hour_retention);
  get diagnostics v_hours = row_count;

  -- a batch may be resent while its points are inside the timestamp window: keep the ledger past the widest
  -- window ever configured (a batch forgotten under a narrow window must not count twice under a wider one)
  delete from metrics.batches b
  where b.received_at < now() - greatest(
    greatest(v_cfg.max_past, v_cfg.max_past_high_water) + greatest(v_cfg.max_future, v_cfg.max_future_high_water)
      + interval '1 hour',
    v_cfg.raw_retention);
  get diagnostics v_batches = row_count;

  return pg_catalog.jsonb_build_object(
    'points_deleted', v_points, 'minutes_deleted', v_minutes,
    'five_minutes_deleted', v_five_minutes, 'five_minute_groups_deleted', v_five_minute_groups,
    'hours_deleted', v_hours, 'batches_forgotten', v_batches
  );
end
$$;
comment on function metrics.apply_row_retention() is
  'Deletes rows past each project''s retention (raw 2 days; minute, 5-minute and merged 5-minute 14 days; '
  'hour 400 days by default) and forgets batch ids older than the widest timestamp window ever configured '
  '(config.max_past_high_water + max_future_high_water + 1 hour, at least raw_retention). No DDL.';

create or replace function metrics.apply_retention()
returns jsonb
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
begin
  -- rows first, the partition drops (ACCESS EXCLUSIVE on metrics.points until the commit) last
  return metrics.apply_row_retention() || metrics.maintain_points_partitions(p_create => false);
end
$$;
comment on function metrics.apply_retention() is
  'Retention: metrics.apply_row_retention(), then drops raw partitions past the longest raw retention '
  '(metrics.maintain_points_partitions: short lock_timeout, retried; partitions_deferred when busy).';

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
    || pg_catalog.jsonb_build_object('messages_published', metrics.publish_pending());
  update metrics.maintenance_state set last_run_at = now();
  -- partition DDL last, so that its locks on metrics.points last only until the commit: creating takes SHARE
  -- UPDATE EXCLUSIVE (ingest goes on), dropping ACCESS EXCLUSIVE (ingest waits, for the end of this run only)
  v_report := v_report || metrics.maintain_points_partitions();
  update metrics.maintenance_state set last_report = v_report;
  return v_report;
end
$$;
comment on function metrics.maintain() is
  'All periodic work in one call: hourly and 5-minute rollups, row retention, a publish sweep, then the '
  'partition DDL (raw partitions for yesterday..+2 days, drops past retention; short lock timeouts with '
  'retries, busy ones deferred to the next run), last so that its locks on metrics.points are held only until '
  'the commit. Safe to run concurrently (a second run skips). Returns a report.';

-- 17: quotas of alert rules and silences ---------------------------------------------------------------------------
create function metrics.alert_quota_check()
returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  v_limit integer;
  v_count bigint;
begin
  -- one writer per project and table at a time, so concurrent inserts cannot both pass the count
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('metrics.' || tg_table_name || ' quota ' || new.project_id::text, 0));
  if tg_table_name = 'alert_rules' then
    select coalesce(p.alert_rules_quota, c.alert_rules_quota) into v_limit
    from metrics.config c left join metrics.projects p on p.id = new.project_id;
    -- rows inserted earlier by the same statement are counted too (a row trigger's queries see them)
    select count(*) into v_count from metrics.alert_rules r where r.project_id = new.project_id;
    if v_count >= v_limit then
      raise exception using
        errcode = '23514', schema = 'metrics', table = 'alert_rules', constraint = 'alert_rules_quota_check',
        message = pg_catalog.format('quota: the project has %s alert rules, the most allowed (alert_rules_quota)',
          v_limit),
        hint = 'delete rules that are no longer needed, or ask the operator to raise metrics.projects.alert_rules_quota';
    end if;
  else
    if new.ends_at <= pg_catalog.now() then
      return new;  -- already over: not counted
    end if;
    select coalesce(p.alert_silences_quota, c.alert_silences_quota) into v_limit
    from metrics.config c left join metrics.projects p on p.id = new.project_id;
    select count(*) into v_count from metrics.alert_silences s
    where s.project_id = new.project_id and s.ends_at > pg_catalog.now();
    if v_count >= v_limit then
      raise exception using
        errcode = '23514', schema = 'metrics', table = 'alert_silences', constraint = 'alert_silences_quota_check',
        message = pg_catalog.format(
          'quota: the project has %s silences that have not ended, the most allowed (alert_silences_quota)', v_limit),
        hint = 'end silences that are no longer needed, or ask the operator to raise metrics.projects.alert_silences_quota';
    end if;
  end if;
  return new;
end
$$;
comment on function metrics.alert_quota_check() is
  'Triggers alert_rules_quota and alert_silences_quota (before insert, every role): a project keeps at most '
  'alert_rules_quota rules (config 200, projects override) and alert_silences_quota silences that have not '
  'ended (config 1,000). Raises 23514 naming alert_rules_quota_check / alert_silences_quota_check, message '
  '"quota: ..." (the HTTP service answers 422 at field "quota"; the Data API 400). Definer: counts rows the '
  'caller may not see; a per-project advisory lock orders concurrent inserts.';

create trigger alert_rules_quota
before insert on metrics.alert_rules
for each row execute function metrics.alert_quota_check();
comment on trigger alert_rules_quota on metrics.alert_rules is
  'At most alert_rules_quota rules per project (metrics.alert_quota_check).';

create trigger alert_silences_quota
before insert on metrics.alert_silences
for each row execute function metrics.alert_quota_check();
comment on trigger alert_silences_quota on metrics.alert_silences is
  'At most alert_silences_quota silences that have not ended per project (metrics.alert_quota_check).';

-- 8: one family per metric name in the exposition ------------------------------------------------------------------
create or replace function metrics.exposition_rows(
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
  with canonical as materialized (
    -- per metric name the oldest family the caller sees (first registered; ties: project id) decides the kind
    -- and gives HELP and UNIT; decided before the p_kinds filter, so that the service's two fetches (counters
    -- and gauges, histograms) agree. Families of the name with another kind are left out
    -- (metrics.exposition_conflicts lists them).
    select distinct on (f.name) f.name, f.kind, f.unit, f.help
    from metrics.families f
    where p_project_id is null or f.project_id = p_project_id
    order by f.name, f.created_at, f.project_id
  ),
  fam as materialized (
    -- per metric once: its boundaries, their rank edges and its position in the output
    select f.project_id, f.name, f.kind, k.unit, k.help, b.boundaries,
      metrics.histogram_rank_edges(b.boundaries) as edges,
      pg_catalog.row_number() over (order by f.name, f.project_id) as metric_order
    from metrics.families f
    join canonical k on k.name = f.name and k.kind = f.kind
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
  'p_kinds is given, of those kinds. One family per metric name: the kind, HELP and UNIT of the oldest family '
  'of that name among the projects read (first registered); families of the name with another kind are left '
  'out (metrics.exposition_conflicts). Rows come grouped by metric (ordered by name, then project) and by '
  'series id within a metric; bucket counts are computed for all histograms at once (the rule of '
  'metrics.sketch_cumulative_counts).';

create function metrics.exposition_conflicts(p_project_id uuid default null)
returns table (name text, project_id uuid, kind text, exported_kind text, exported_project_id uuid)
language sql stable security invoker set search_path = ''
as $$
  with canonical as (
    select distinct on (f.name) f.name, f.kind, f.project_id
    from metrics.families f
    where p_project_id is null or f.project_id = p_project_id
    order by f.name, f.created_at, f.project_id
  )
  select f.name, f.project_id, f.kind, k.kind, k.project_id
  from metrics.families f
  join canonical k on k.name = f.name and k.kind <> f.kind
  where p_project_id is null or f.project_id = p_project_id
  order by f.name, f.project_id
$$;
comment on function metrics.exposition_conflicts(uuid) is
  'The families metrics.exposition_rows leaves out: a metric name registered with another kind in another '
  'project than its oldest family (exported_kind of exported_project_id). For the operator''s all-projects '
  'GET /metrics (security invoker: row-level security applies).';

-- privileges -------------------------------------------------------------------------------------------------------
grant execute on function metrics.caller_role(), metrics.request_role() to authenticated, service_role;
grant execute on function metrics.exposition_conflicts(uuid) to authenticated, service_role;
grant execute on function metrics.maintain_points_partitions(boolean, boolean, interval, integer),
  metrics.apply_row_retention() to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
