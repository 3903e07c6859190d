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
