-- Per-minute rollups (statement trigger with a transition table) and coalesced live publish on
-- private Realtime topics "metrics:<project_id>".

create function metrics.topic(p_project_id uuid)
returns text
language sql immutable parallel safe set search_path = ''
as $$
  select 'metrics:' || p_project_id::text
$$;
comment on function metrics.topic(uuid) is 'The private Realtime topic of a project''s live updates.';

create function metrics.topic_project_id(p_topic text)
returns uuid
language sql immutable parallel safe set search_path = ''
as $$
  select case
    when p_topic ~* '^metrics:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    then pg_catalog.substr(p_topic, 9)::uuid
  end
$$;
comment on function metrics.topic_project_id(text) is
  'The project of a "metrics:<uuid>" topic, null for any other topic (used by the realtime.messages policy).';

create function metrics.realtime_rows_inserted()
returns bigint
language sql volatile set search_path = ''
as $$
  select coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_inserted(t.relid)), 0)::bigint
  from (
    select 'realtime.messages'::regclass::oid as relid
    union all
    select i.inhrelid from pg_catalog.pg_inherits i where i.inhparent = 'realtime.messages'::regclass
  ) as t
$$;
comment on function metrics.realtime_rows_inserted() is
  'Rows this transaction inserted into realtime.messages (all partitions): realtime.send turns errors into '
  'warnings, so publishing compares this before and after to know a message was really stored.';

create function metrics.publish_project(p_project_id uuid)
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_interval interval;
  v_last timestamptz;
  v_item jsonb;
  v_part jsonb := '[]'::jsonb;
  v_parts jsonb[] := '{}';
  v_bytes integer := 0;
  v_size integer;
  v_seq bigint;
  v_stored_before bigint;
  i integer;
begin
  select * into strict v_cfg from metrics.config;
  select coalesce(pr.publish_interval, v_cfg.publish_interval) into v_interval
  from metrics.projects pr where pr.id = p_project_id;
  if not found then
    return 0;
  end if;

  insert into metrics.publish_state (project_id) values (p_project_id) on conflict do nothing;
  -- whoever holds the row publishes; the others leave their changes queued for the next sweep
  select ps.last_sent_at into v_last
  from metrics.publish_state ps where ps.project_id = p_project_id
  for update skip locked;
  if not found or v_last > pg_catalog.clock_timestamp() - v_interval then
    return 0;
  end if;

  -- a failed send must not lose the queued changes: the block rolls back the dequeue and the rate-limit stamp
  begin
    for v_item in
      with dirty as (
        delete from metrics.publish_queue q where q.project_id = p_project_id returning q.series_id, q.bucket
      )
      select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'series_id', s.id, 'name', s.name, 'labels', s.labels, 'kind', f.kind,
        'minute', r.bucket, 'count', r.count, 'sum', r.sum, 'min', r.min, 'max', r.max, 'last', r.last,
        'p50', case when f.kind = 'histogram' then metrics.sketch_quantile(r.sketch, 0.5, r.min, r.max) end,
        'p90', case when f.kind = 'histogram' then metrics.sketch_quantile(r.sketch, 0.9, r.min, r.max) end,
        'p99', case when f.kind = 'histogram' then metrics.sketch_quantile(r.sketch, 0.99, r.min, r.max) end
      ))
      from dirty d
      join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket = d.bucket
      join metrics.series s on s.id = d.series_id
      join metrics.families f on f.project_id = s.project_id and f.name = s.name
      order by s.name, s.id, r.bucket
    loop
      v_size := pg_catalog.octet_length(v_item::text) + 2;
      if v_bytes + v_size > v_cfg.publish_max_bytes - 200 and pg_catalog.jsonb_array_length(v_part) > 0 then
        v_parts := v_parts || v_part;
        v_part := '[]'::jsonb;
        v_bytes := 0;
      end if;
      v_part := v_part || pg_catalog.jsonb_build_array(v_item);
      v_bytes := v_bytes + v_size;
    end loop;
    if pg_catalog.jsonb_array_length(v_part) > 0 then
      v_parts := v_parts || v_part;
    end if;
    if pg_catalog.cardinality(v_parts) = 0 then
      return 0;
    end if;
    v_stored_before := metrics.realtime_rows_inserted();

    update metrics.publish_state ps
    set last_sent_at = pg_catalog.clock_timestamp(), messages_sent = ps.messages_sent + 1
    where ps.project_id = p_project_id
    returning ps.messages_sent into v_seq;

    for i in 1 .. pg_catalog.cardinality(v_parts) loop
      perform realtime.send(
        pg_catalog.jsonb_build_object(
          'project_id', p_project_id, 'seq', v_seq, 'part', i, 'parts', pg_catalog.cardinality(v_parts),
          'series', v_parts[i]
        ),
        'rollup',
        metrics.topic(p_project_id),
        true
      );
    end loop;
    if metrics.realtime_rows_inserted() - v_stored_before <> pg_catalog.cardinality(v_parts) then
      raise exception 'realtime.send did not store the message (see the preceding ErrorSendingBroadcastMessage warning)';
    end if;
  exception when others then
    raise warning 'metrics: live update of project % not published, changes stay queued: %', p_project_id, sqlerrm;
    return 0;
  end;
  return pg_catalog.cardinality(v_parts);
end
$$;
comment on function metrics.publish_project(uuid) is
  'Sends a project''s queued minute aggregates as ONE live update (split into parts under publish_max_bytes) '
  'on its private topic, at most once per publish interval; returns the number of messages sent.';

create function metrics.publish_pending()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_project uuid;
  v_sent integer := 0;
begin
  for v_project in select distinct q.project_id from metrics.publish_queue q loop
    v_sent := v_sent + metrics.publish_project(v_project);
  end loop;
  return v_sent;
end
$$;
comment on function metrics.publish_pending() is
  'Publishes every project''s queued changes that its rate limit allows (the sweep that delivers the '
  'trailing changes of a burst); run every second by pg_cron >= 1.5 or meshhook-metrics maintain --loop.';

create function metrics.on_points_inserted()
returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  v_project uuid;
begin
  insert into metrics.rollup_1m as r (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
  select n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts), sum(n.count), sum(n.sum),
    min(n.min), max(n.max),
    (pg_catalog.array_agg(n.last order by n.ts desc, n.last desc) filter (where n.last is not null))[1],
    max(n.ts) filter (where n.last is not null),
    metrics.sketch_union(n.sketch)
  from new_points n
  group by n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts)
  on conflict (series_id, bucket) do update set
    count = r.count + excluded.count,
    sum = r.sum + excluded.sum,
    min = least(r.min, excluded.min),
    max = greatest(r.max, excluded.max),
    last = case
      when excluded.last_ts is null then r.last
      when r.last_ts is null or (excluded.last_ts, excluded.last) > (r.last_ts, r.last) then excluded.last
      else r.last
    end,
    last_ts = greatest(r.last_ts, excluded.last_ts),
    sketch = metrics.sketch_merge(r.sketch, excluded.sketch),
    updated_at = now();

  insert into metrics.publish_queue (project_id, series_id, bucket)
  select distinct n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) from new_points n
  on conflict do nothing;

  for v_project in select distinct n.project_id from new_points n loop
    perform metrics.publish_project(v_project);
  end loop;
  return null;
end
$$;
comment on function metrics.on_points_inserted() is
  'Statement trigger of metrics.points: merges the inserted deltas into metrics.rollup_1m, queues the '
  'changed minutes and publishes when the project''s rate limit allows.';

create trigger points_rollup
after insert on metrics.points
referencing new table as new_points
for each statement execute function metrics.on_points_inserted();
comment on trigger points_rollup on metrics.points is
  'Rolls every insert statement (ingest function, COPY by a trusted role) into minute aggregates.';

-- who may receive a project's live updates ----------------------------------------------------------------
create policy metrics_members_receive_live_updates on realtime.messages
  for select to authenticated
  using (
    extension = 'broadcast'
    and metrics.topic_project_id((select realtime.topic())) in (select metrics.user_project_ids('viewer'))
  );
comment on policy metrics_members_receive_live_updates on realtime.messages is
  'Members (any role) of a project may join its private topic metrics:<project_id>. No insert policy: '
  'only the database publishes there.';

grant execute on function metrics.topic(uuid), metrics.topic_project_id(text) to anon, authenticated, service_role;
grant execute on function metrics.publish_project(uuid), metrics.publish_pending(), metrics.realtime_rows_inserted()
  to service_role;
