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

create function metrics.json_number(p_value double precision)
returns jsonb
language sql immutable parallel safe set search_path = ''
as $$
  -- JSON has no infinity: a sum that overflowed double precision is sent as null rather than failing the message
  select case when p_value in ('infinity', '-infinity') or p_value <> p_value then null else pg_catalog.to_jsonb(p_value) end
$$;
comment on function metrics.json_number(double precision) is 'A double as JSON, null where JSON has no number for it.';

create function metrics.publish_project(p_project_id uuid)
returns integer
language plpgsql volatile security definer set search_path = '' set timezone = 'UTC'
as $$
declare
  v_cfg metrics.config;
  v_interval interval;
  v_last timestamptz;
  v_parts jsonb[];
  v_seq bigint;
  v_stored_before bigint;
  v_series_ids bigint[];
  v_buckets timestamptz[];
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
    -- dequeue in its own statement: it waits for ingests that still hold queued rows, and the read below
    -- then takes a fresh snapshot that includes their rollup changes
    with dequeued as (
      delete from metrics.publish_queue q where q.project_id = p_project_id returning q.series_id, q.bucket
    )
    select pg_catalog.array_agg(d.series_id), pg_catalog.array_agg(d.bucket) into v_series_ids, v_buckets
    from dequeued d;
    if v_series_ids is null then
      return 0;
    end if;

    with dirty as (
      select * from unnest(v_series_ids, v_buckets) as u (series_id, bucket)  -- multi-array unnest: unqualified syntax
    ),
    items as (
      select x.rn, x.item, pg_catalog.octet_length(x.item::text) + 2 as size  -- + the ", " between items
      from (
        select pg_catalog.row_number() over (order by s.name, s.id, r.bucket) as rn,
          pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'series_id', s.id, 'name', s.name, 'labels', s.labels, 'kind', f.kind,
            'minute', r.bucket, 'count', r.count, 'sum', metrics.json_number(r.sum), 'min', metrics.json_number(r.min),
            'max', metrics.json_number(r.max), 'last', metrics.json_number(r.last),
            'p50', metrics.json_number(qs[1]), 'p90', metrics.json_number(qs[2]), 'p99', metrics.json_number(qs[3])
          )) as item
        from dirty d
        join metrics.rollup_1m r on r.series_id = d.series_id and r.bucket = d.bucket
        join metrics.series s on s.id = d.series_id
        join metrics.families f on f.project_id = s.project_id and f.name = s.name
        cross join lateral (
          select case when f.kind = 'histogram'
            then metrics.sketch_quantiles(r.sketch, '{0.5,0.9,0.99}', r.min, r.max) end as qs
        ) as q
      ) as x
    ),
    placed as (
      -- greedy parts: an item starts a new part once the bytes before it pass the budget, so every part
      -- stays under publish_max_bytes (budget = limit - envelope - the largest item)
      select i.rn, i.item,
        ((pg_catalog.sum(i.size) over (order by i.rn) - i.size)
          / greatest(v_cfg.publish_max_bytes - 300 - max(i.size) over (), 1))::bigint as part
      from items i
    )
    select pg_catalog.array_agg(p.series order by p.part) into v_parts
    from (select pl.part, pg_catalog.jsonb_agg(pl.item order by pl.rn) as series from placed pl group by pl.part) p;

    if v_parts is null then
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
    -- the last value: latest timestamp, ties to the larger value (array comparison, no per-group sort)
    (max(array[extract(epoch from n.ts)::double precision, n.last]) filter (where n.last is not null))[2],
    max(n.ts) filter (where n.last is not null),
    metrics.sketch_union(n.sketch)
  from new_points n
  group by n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts)
  on conflict (series_id, bucket) do update set
    count = r.count + excluded.count,
    sum = r.sum + excluded.sum,
    min = least(r.min, excluded.min),
    max = greatest(r.max, excluded.max),
    last = metrics.later_last(r.last, r.last_ts, excluded.last, excluded.last_ts),
    last_ts = greatest(r.last_ts, excluded.last_ts),
    sketch = metrics.sketch_merge(r.sketch, excluded.sketch),
    updated_at = now();

  -- "do update" locks a row that is already queued, so a publisher dequeuing it waits for this commit
  insert into metrics.publish_queue as q (project_id, series_id, bucket)
  select distinct n.project_id, n.series_id, pg_catalog.date_trunc('minute', n.ts) from new_points n
  on conflict (project_id, series_id, bucket) do update set bucket = excluded.bucket;

  -- points for hours already rolled up make those hours due again; the shared lock orders this against a
  -- running metrics.rollup_hours(), so the watermark read is the one that run leaves behind
  if exists (select from new_points n where n.ts < pg_catalog.date_trunc('hour', now())) then
    perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('metrics.rollup_hours'));
  end if;
  insert into metrics.late_hours (series_id, hour)
  select distinct n.series_id, pg_catalog.date_trunc('hour', n.ts)
  from new_points n
  where n.ts < (select ms.hour_watermark from metrics.maintenance_state ms)
  on conflict do nothing;

  for v_project in select distinct n.project_id from new_points n loop
    perform metrics.publish_project(v_project);
  end loop;
  return null;
end
$$;
comment on function metrics.on_points_inserted() is
  'Statement trigger of metrics.points: merges the inserted deltas into metrics.rollup_1m, queues the '
  'changed minutes, marks already rolled-up hours that got late points, and publishes when the project''s '
  'rate limit allows.';

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
    and metrics.topic_project_id(topic) in (select metrics.user_project_ids('viewer'))
  );
comment on policy metrics_members_receive_live_updates on realtime.messages is
  'Members (any role) of a project may join its private topic metrics:<project_id> (checked on each row''s '
  'own topic, so setting realtime.topic to another topic reveals nothing). No insert policy: only the '
  'database publishes there.';

grant execute on function metrics.topic(uuid), metrics.topic_project_id(text) to anon, authenticated, service_role;
grant execute on function metrics.publish_project(uuid), metrics.publish_pending(), metrics.realtime_rows_inserted()
  to service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
