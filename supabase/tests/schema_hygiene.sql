-- Schema hygiene: row-level security and comments everywhere, safe security-definer functions, and no
-- function callable by roles it was not granted to.
begin;
select plan(14);

-- a raw-points partition too, as the ingest path creates them
do $$ begin perform metrics.ensure_points_partition(current_date); end $$;

select cmp_ok(
  (select count(*)::integer from pg_catalog.pg_class c
   where c.relnamespace = 'metrics'::regnamespace and c.relkind in ('r', 'p')),
  '>=', 12, 'schema metrics has its tables (the checks below are not vacuous)'
);

select is(
  array(select c.relname::text from pg_catalog.pg_class c
        where c.relnamespace = 'metrics'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity
        order by 1),
  '{}'::text[], 'every table in metrics (partitions included) has row-level security enabled'
);

select is(
  array(select c.relname::text from pg_catalog.pg_class c
        where c.relnamespace = 'metrics'::regnamespace and c.relkind in ('r', 'p')
          and pg_catalog.obj_description(c.oid, 'pg_class') is null
        order by 1),
  '{}'::text[], 'every table in metrics (partitions included) has a comment'
);

select is(
  array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
        where p.pronamespace = 'metrics'::regnamespace and p.prokind in ('f', 'a')
          and pg_catalog.obj_description(p.oid, 'pg_proc') is null
        order by 1),
  '{}'::text[], 'every function and aggregate in metrics has a comment'
);

select is(
  array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
        where p.pronamespace = 'metrics'::regnamespace and p.prosecdef
          and not coalesce(p.proconfig @> array['search_path=""'], false)
        order by 1),
  '{}'::text[], 'every security definer function in metrics pins an empty search_path'
);

select is(
  array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
        where p.pronamespace = 'metrics'::regnamespace
          and exists (select from pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                      where a.grantee = 0 and a.privilege_type = 'EXECUTE')
        order by 1),
  '{}'::text[], 'no function in metrics is executable by PUBLIC (only by the roles granted explicitly)'
);

select is(
  array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
        where p.pronamespace = 'metrics'::regnamespace and pg_catalog.has_function_privilege('anon', p.oid, 'execute')
        order by 1),
  array['metrics.ingest_http(jsonb,text)', 'metrics.role_rank(text)', 'metrics.scrape(text,text[])', 'metrics.topic(uuid)', 'metrics.topic_project_id(text)',
        'metrics.user_project_ids(text)'],
  'anon may execute exactly the helpers granted to it'
);

select is(
  array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
        where p.pronamespace = 'metrics'::regnamespace and p.prosecdef
          and pg_catalog.has_function_privilege('authenticated', p.oid, 'execute')
        order by 1),
  array['metrics.create_ingest_token(uuid,text,timestamp with time zone)',
        'metrics.five_minutes_complete_until()', 'metrics.hours_complete_until()', 'metrics.ingest(jsonb)',
        'metrics.ingest_http(jsonb,text)', 'metrics.list_ingest_tokens(uuid)',
        'metrics.query_horizon(uuid,timestamp with time zone,timestamp with time zone,interval)',
        'metrics.queue_test_alert(uuid)', 'metrics.revoke_ingest_token(uuid)',
        'metrics.scrape(text,text[])', 'metrics.user_project_ids(text)'],
  'the only security definer functions signed-in users may call are the API ones meant for them'
);

select is(
  array(select c.relname::text from pg_catalog.pg_class c
        where c.relnamespace = 'metrics'::regnamespace and c.relkind in ('r', 'p')
          and (pg_catalog.has_table_privilege('anon', c.oid, 'select')
               or pg_catalog.has_table_privilege('anon', c.oid, 'insert'))
        order by 1),
  '{}'::text[], 'anon has no table privileges in metrics'
);

select is(
  array(select c.relname || '.' || p.polname from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid
        where c.relnamespace = 'metrics'::regnamespace and pg_catalog.obj_description(p.oid, 'pg_policy') is null
        order by 1),
  '{}'::text[], 'every row-level security policy in metrics has a comment'
);

select is(
  array(select c.relname || '.' || t.tgname from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid
        where c.relnamespace = 'metrics'::regnamespace and not t.tgisinternal and t.tgparentid = 0
          and pg_catalog.obj_description(t.oid, 'pg_trigger') is null
        order by 1),
  '{}'::text[], 'every trigger in metrics has a comment'
);

select is(
  array(select i.indexrelid::regclass::text from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indrelid
        where c.relnamespace = 'metrics'::regnamespace and not c.relispartition
          and not exists (select from pg_catalog.pg_constraint k where k.conindid = i.indexrelid)
          and pg_catalog.obj_description(i.indexrelid, 'pg_class') is null
        order by 1),
  '{}'::text[], 'every explicitly created index in metrics has a comment (constraint indexes excepted)'
);

-- a policy of a per-project table scopes its rows by the caller's projects, in each of its expressions
select is(
  array(select c.relname || '.' || p.polname from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid
        where c.relnamespace = 'metrics'::regnamespace
          and exists (select from pg_catalog.pg_attribute a
                      where a.attrelid = c.oid and a.attname = 'project_id' and not a.attisdropped)
          and ((p.polqual is not null
                and pg_catalog.pg_get_expr(p.polqual, p.polrelid) !~ 'metrics\.user_project_ids\(')
            or (p.polwithcheck is not null
                and pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) !~ 'metrics\.user_project_ids\('))
        order by 1),
  '{}'::text[], 'every policy of a table with a project_id scopes rows by metrics.user_project_ids'
);

-- tables without any policy are the service role's: signed-in users and anon have no privilege on them
select is(
  array(select c.relname::text from pg_catalog.pg_class c
        where c.relnamespace = 'metrics'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
          and not exists (select from pg_catalog.pg_policy p where p.polrelid = c.oid)
          and (pg_catalog.has_any_column_privilege('authenticated', c.oid, 'select, insert, update, references')
               or pg_catalog.has_table_privilege('authenticated', c.oid, 'delete, truncate, trigger')
               or pg_catalog.has_any_column_privilege('anon', c.oid, 'select, insert, update, references')
               or pg_catalog.has_table_privilege('anon', c.oid, 'delete, truncate, trigger'))
        order by 1),
  '{}'::text[], 'tables without a policy (leases, queues, state) are out of reach of authenticated and anon'
);

select * from finish();
rollback;
