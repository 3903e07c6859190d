-- Local-stack only: what the gateway's Realtime server needs on top of the Supabase look-alike.
-- Never part of supabase/migrations (hosted Supabase has its own Realtime server).

create schema if not exists localstack;

-- Wake the gateway's database feed as soon as a broadcast row commits (the rows themselves are read,
-- in commit order, from a logical replication slot). Durable commit for these transactions: the feed
-- reads only flushed WAL, so a message must be flushed before the wake-up arrives, even on a cluster
-- running with synchronous_commit = off.
create or replace function localstack.realtime_wakeup() returns trigger
language plpgsql set search_path = pg_catalog as $f$
begin
  perform set_config('synchronous_commit', 'on', true);
  perform pg_notify('localstack_realtime', '');
  return null;
end
$f$;

do $$
begin
  if not exists (
    select from pg_trigger
     where tgname = 'localstack_realtime_wakeup' and tgrelid = 'realtime.messages'::regclass
  ) then
    create trigger localstack_realtime_wakeup
      after insert on realtime.messages
      for each statement execute function localstack.realtime_wakeup();
  end if;
end
$$;

-- Sign-in (the gateway's /auth/v1, like Supabase Auth): look-alikes of GoTrue's auth.users,
-- auth.sessions and auth.refresh_tokens with the columns the gateway uses. Local stack only: on
-- Supabase, Auth owns these tables and our migrations never create or alter them. Passwords are bcrypt
-- hashes (as GoTrue stores them); refresh tokens are stored as SHA-256 hex digests, never in clear.
create table if not exists auth.users (
  instance_id uuid,
  id uuid primary key default gen_random_uuid(),
  aud varchar(255) not null default 'authenticated',
  role varchar(255) not null default 'authenticated',
  email varchar(255) not null unique check (email = lower(email)),
  encrypted_password varchar(255) not null,
  email_confirmed_at timestamptz default now(),
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb not null default '{"provider": "email", "providers": ["email"]}',
  raw_user_meta_data jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists auth.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  aal text not null default 'aal1',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  refreshed_at timestamptz
);
create index if not exists sessions_user_id_idx on auth.sessions (user_id);

create table if not exists auth.refresh_tokens (
  id bigserial primary key,
  token varchar(255) not null unique,
  user_id uuid not null references auth.users (id) on delete cascade,
  revoked boolean not null default false,
  parent varchar(255),
  session_id uuid not null references auth.sessions (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists refresh_tokens_session_id_idx on auth.refresh_tokens (session_id);

-- Only the gateway and the CLI (as postgres) read them; API roles never see password hashes.
revoke all on auth.users, auth.sessions, auth.refresh_tokens from public, anon, authenticated;
grant select, insert, update, delete on auth.users, auth.sessions, auth.refresh_tokens to postgres;
grant usage on sequence auth.refresh_tokens_id_seq to postgres;
