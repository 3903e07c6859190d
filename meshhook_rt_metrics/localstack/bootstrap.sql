-- Supabase look-alike objects for a plain PostgreSQL (local stack and tests).
--
-- Same names and signatures as on a Supabase database; every object is created only where it does not
-- exist yet, so this script is a no-op on a real Supabase project. The project's own migrations never
-- create any of these. Runs as a superuser, once per database (roles once per cluster).

-- roles ------------------------------------------------------------------------------------------------
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;  -- password: bootstrap_database() (per state dir)
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'postgres') then
    -- as on hosted Supabase: owns the migrations, NOT a superuser
    create role postgres login nosuperuser createdb createrole replication bypassrls;  -- password: as above
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role, supabase_realtime_admin to postgres with admin option;

do $$
begin
  execute format('grant create, connect, temporary on database %I to postgres', current_database());
  execute format('alter database %I set search_path = "$user", public, extensions', current_database());
end
$$;
set search_path = "$user", public, extensions;

grant usage, create on schema public to postgres;
grant usage on schema public to anon, authenticated, service_role;

create schema if not exists extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;

-- auth helpers -----------------------------------------------------------------------------------------
create schema if not exists auth;
grant usage on schema auth to postgres, anon, authenticated, service_role;

do $$
begin
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
      )::uuid
    $f$;
  end if;
  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
      )::text
    $f$;
  end if;
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
end
$$;
grant execute on all functions in schema auth to postgres, anon, authenticated, service_role;

-- realtime ---------------------------------------------------------------------------------------------
create schema if not exists realtime;
grant usage on schema realtime to postgres, anon, authenticated, service_role, supabase_realtime_admin;

do $$
begin
  if to_regclass('realtime.messages') is null then
    create table realtime.messages (
      topic text not null,
      extension text not null,
      payload jsonb,
      event text,
      private boolean default false,
      updated_at timestamp without time zone not null default now(),
      inserted_at timestamp without time zone not null default now(),
      id uuid not null default gen_random_uuid(),
      primary key (id, inserted_at)
    ) partition by range (inserted_at);
    alter table realtime.messages enable row level security;
    alter table realtime.messages owner to supabase_realtime_admin;
    grant select, insert, update on realtime.messages to anon, authenticated;
    grant all on realtime.messages to postgres, service_role;
  end if;

  if to_regprocedure('realtime.topic()') is null then
    create function realtime.topic() returns text language sql stable as $f$
      select nullif(current_setting('realtime.topic', true), '')::text
    $f$;
  end if;

  if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
    create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
    returns void language plpgsql as $f$
    begin
      begin
        perform set_config('realtime.topic', topic, true);
        insert into realtime.messages (payload, event, topic, private, extension)
        values (
          case when payload ? 'id' then payload else payload || jsonb_build_object('id', gen_random_uuid()) end,
          event, topic, private, 'broadcast'
        );
      exception when others then
        raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
      end;
    end
    $f$;
  end if;

  if to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') is null then
    create function realtime.broadcast_changes(
      topic_name text, event_name text, operation text, table_name text, table_schema text,
      new record, old record, level text default 'ROW'
    ) returns void language plpgsql as $f$
    declare
      row_data jsonb := jsonb_build_object(
        'old_record', case when old is null then null else to_jsonb(old) end,
        'record', case when new is null then null else to_jsonb(new) end,
        'operation', operation, 'table', table_name, 'schema', table_schema
      );
    begin
      if level = 'STATEMENT' then
        raise exception 'function can only be triggered for each row, not for each statement';
      end if;
      perform realtime.send(row_data, event_name, topic_name, true);
    end
    $f$;
  end if;

  if not exists (select from pg_publication where pubname = 'supabase_realtime_messages_publication') then
    create publication supabase_realtime_messages_publication for table realtime.messages;
  end if;
end
$$;
grant execute on all functions in schema realtime to postgres, anon, authenticated, service_role;

-- local-stack helpers (not part of Supabase; schema "localstack") ----------------------------------------
create schema if not exists localstack;

create or replace function localstack.ensure_realtime_partitions(days_back int default 1, days_ahead int default 3)
returns int language plpgsql security definer set search_path = pg_catalog as $f$
declare
  d date;
  made int := 0;
  part text;
begin
  -- on Supabase the Realtime server keeps these daily partitions; locally we do
  for d in select generate_series(current_date - days_back, current_date + days_ahead, interval '1 day')::date loop
    part := format('messages_%s', to_char(d, 'YYYY_MM_DD'));
    if to_regclass(format('realtime.%I', part)) is null then
      execute format(
        'create table realtime.%I partition of realtime.messages for values from (%L) to (%L)',
        part, d, d + 1
      );
      execute format('alter table realtime.%I owner to supabase_realtime_admin', part);
      made := made + 1;
    end if;
  end loop;
  for part in
    select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'realtime.messages'::regclass
      and c.relname ~ '^messages_\d{4}_\d{2}_\d{2}$'
      and to_date(substr(c.relname, 10), 'YYYY_MM_DD') < current_date - days_back - 2
  loop
    execute format('drop table realtime.%I', part);
  end loop;
  return made;
end
$f$;
select localstack.ensure_realtime_partitions();
grant usage on schema localstack to postgres;
grant execute on function localstack.ensure_realtime_partitions(int, int) to postgres;
