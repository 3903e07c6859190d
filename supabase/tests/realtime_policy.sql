-- Live updates: the realtime.messages policy, checked with Realtime's own probe. As admin, insert a row
-- with the channel's topic; set realtime.topic, the role and the JWT claims; count the rows the user sees.
begin;
set local client_min_messages = warning;
select plan(9);

insert into metrics.projects (id) values
  ('0a000000-0000-4000-8000-00000000000a'), ('0b000000-0000-4000-8000-00000000000b');
insert into metrics.project_members (project_id, user_id, role) values
  ('0a000000-0000-4000-8000-00000000000a', 'aa000000-0000-4000-8000-0000000000ee', 'viewer'),
  ('0b000000-0000-4000-8000-00000000000b', 'bb000000-0000-4000-8000-0000000000ad', 'admin');

-- probe rows (rolled back with the test), as the Realtime server inserts them
insert into realtime.messages (topic, extension, private, payload) values
  ('metrics:0a000000-0000-4000-8000-00000000000a', 'broadcast', true, '{"probe": "a"}'),
  ('metrics:0b000000-0000-4000-8000-00000000000b', 'broadcast', true, '{"probe": "b"}'),
  ('metrics:0a000000-0000-4000-8000-00000000000a', 'presence', true, '{"probe": "a-presence"}'),
  ('metrics:not-a-uuid', 'broadcast', true, '{"probe": "malformed"}');

-- rows of p_topic that p_user (or anon when null) sees while joining channel p_channel
create function pg_temp.visible(p_user uuid, p_channel text, p_topic text, p_extension text default 'broadcast')
returns bigint language plpgsql as $$
declare
  v_role text := case when p_user is null then 'anon' else 'authenticated' end;
  v_seen bigint;
begin
  perform set_config('realtime.topic', p_channel, true);
  perform set_config('request.jwt.claims', jsonb_build_object('sub', p_user, 'role', v_role)::text, true);
  perform set_config('request.jwt.claim.sub', coalesce(p_user::text, ''), true);
  perform set_config('request.jwt.claim.role', v_role, true);
  execute format('set local role %I', v_role);
  select count(*) into v_seen from realtime.messages m where m.topic = p_topic and m.extension = p_extension;
  reset role;
  return v_seen;
end
$$;

select is(metrics.topic('0a000000-0000-4000-8000-00000000000a'), 'metrics:0a000000-0000-4000-8000-00000000000a',
  'a project''s topic is metrics:<project_id>');
select is(pg_temp.visible('aa000000-0000-4000-8000-0000000000ee',
    'metrics:0a000000-0000-4000-8000-00000000000a', 'metrics:0a000000-0000-4000-8000-00000000000a'), 1::bigint,
  'a viewer of A may join A''s topic');
select is(pg_temp.visible('bb000000-0000-4000-8000-0000000000ad',
    'metrics:0b000000-0000-4000-8000-00000000000b', 'metrics:0b000000-0000-4000-8000-00000000000b'), 1::bigint,
  'an admin of B may join B''s topic');
select is(pg_temp.visible('aa000000-0000-4000-8000-0000000000ee',
    'metrics:0b000000-0000-4000-8000-00000000000b', 'metrics:0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'a member of A may not join B''s topic');
select is(pg_temp.visible('cc000000-0000-4000-8000-0000000000cc',
    'metrics:0a000000-0000-4000-8000-00000000000a', 'metrics:0a000000-0000-4000-8000-00000000000a'), 0::bigint,
  'a user of no project may not join A''s topic');
select is(pg_temp.visible(null,
    'metrics:0a000000-0000-4000-8000-00000000000a', 'metrics:0a000000-0000-4000-8000-00000000000a'), 0::bigint,
  'anon may not join A''s topic');
select is(pg_temp.visible('aa000000-0000-4000-8000-0000000000ee',
    'metrics:0a000000-0000-4000-8000-00000000000a', 'metrics:0a000000-0000-4000-8000-00000000000a', 'presence'), 0::bigint,
  'the policy admits broadcast only, not presence');
select is(pg_temp.visible('aa000000-0000-4000-8000-0000000000ee',
    'metrics:0a000000-0000-4000-8000-00000000000a', 'metrics:0b000000-0000-4000-8000-00000000000b'), 0::bigint,
  'a member of A who sets realtime.topic to A''s topic still cannot read rows of B''s topic');
select is(pg_temp.visible('aa000000-0000-4000-8000-0000000000ee', 'metrics:not-a-uuid', 'metrics:not-a-uuid'), 0::bigint,
  'a malformed topic admits nobody');

select * from finish();
rollback;
