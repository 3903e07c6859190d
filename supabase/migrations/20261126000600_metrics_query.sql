-- Query: a metric's series over a time range, at minute or hour resolution, with label matchers and an
-- aggregation. Runs as the caller (security invoker): row-level security decides what anyone sees.

create function metrics.series_matches(p_labels jsonb, p_matchers jsonb)
returns boolean
language sql immutable parallel safe set search_path = ''
as $$
  select coalesce(bool_and(case m ->> 'op'
      when '=' then coalesce(p_labels ->> (m ->> 'label'), '') = (m ->> 'value')
      when '!=' then coalesce(p_labels ->> (m ->> 'label'), '') <> (m ->> 'value')
      when '=~' then coalesce(p_labels ->> (m ->> 'label'), '') ~ ('^(?:' || (m ->> 'value') || ')$')
      when '!~' then coalesce(p_labels ->> (m ->> 'label'), '') !~ ('^(?:' || (m ->> 'value') || ')$')
    end), true)
  from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) as m
$$;
comment on function metrics.series_matches(jsonb, jsonb) is
  'Prometheus label-matcher semantics (=, !=, =~, !~; regexes fully anchored; a missing label is "").';

create function metrics.hours_complete_until()
returns timestamptz
language sql stable security definer set search_path = ''
as $$
  select ms.hour_watermark from metrics.maintenance_state ms
$$;
comment on function metrics.hours_complete_until() is
  'Hourly rollups are complete for every hour before this instant (the last maintenance run''s hour).';

create function metrics.query(
  p_project_id uuid,
  p_metric text,
  p_from timestamptz,
  p_to timestamptz,
  p_matchers jsonb default '[]'::jsonb,
  p_step interval default null,
  p_agg text default 'sum',
  p_by text[] default null
)
returns table (labels jsonb, ts timestamptz, value double precision)
language plpgsql stable security invoker set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_minute_retention interval;
  v_step interval := p_step;
  v_split timestamptz;
  v_ids bigint[];
  v_q double precision;
  v_agg text := lower(p_agg);
  v_kind text;
  m jsonb;
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
  if pg_catalog.jsonb_typeof(coalesce(p_matchers, '[]'::jsonb)) <> 'array' then
    perform metrics.reject('p_matchers', 'must be an array of {"label", "op", "value"}');
  end if;
  for m in select * from pg_catalog.jsonb_array_elements(coalesce(p_matchers, '[]'::jsonb)) loop
    if pg_catalog.jsonb_typeof(m) <> 'object' or pg_catalog.jsonb_typeof(m -> 'label') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'value') is distinct from 'string' then
      perform metrics.reject('p_matchers', 'each matcher is {"label": string, "op": "=|!=|=~|!~", "value": string}');
    end if;
    if (m ->> 'op') is null or (m ->> 'op') not in ('=', '!=', '=~', '!~') then
      perform metrics.reject('p_matchers', pg_catalog.format('unknown operator %L (use =, !=, =~, !~)', m ->> 'op'));
    end if;
    if (m ->> 'op') in ('=~', '!~') then
      if pg_catalog.char_length(m ->> 'value') > v_cfg.regex_max_length then
        perform metrics.reject('p_matchers', pg_catalog.format('regex longer than %s characters', v_cfg.regex_max_length));
      end if;
      begin
        perform '' ~ (m ->> 'value');
      exception when invalid_regular_expression then
        perform metrics.reject('p_matchers', pg_catalog.format('invalid regex %L: %s', m ->> 'value', sqlerrm));
      end;
    end if;
  end loop;

  if v_agg ~ '^p\d{1,2}(\.\d+)?$' then
    v_q := pg_catalog.substr(v_agg, 2)::double precision / 100;
    v_agg := 'quantile';
  elsif v_agg ~ '^quantile\(0?\.\d+\)$' or v_agg ~ '^quantile\([01]\)$' then
    v_q := substring(v_agg from '\(([^)]*)\)')::double precision;
    v_agg := 'quantile';
  elsif v_agg not in ('rate', 'sum', 'avg', 'min', 'max', 'last', 'count') then
    perform metrics.reject('p_agg', pg_catalog.format(
      'unknown aggregation %L (use rate, sum, avg, min, max, last, count, pNN or quantile(q))', p_agg));
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
  -- hours when the step is whole hours and those hours are complete, or when minutes are gone already
  -- [p_from, v_split) is read from hourly rollups, [v_split, p_to) from minutes: hours for whole-hour steps
  -- as far as they are complete, everything from hours when the range starts beyond minute retention
  v_split := case
    when p_from < now() - v_minute_retention then p_to
    when extract(epoch from v_step)::bigint % 3600 = 0
      then greatest(p_from, least(p_to, metrics.hours_complete_until()))
    else p_from
  end;
  if v_split > p_from and v_split < p_to and extract(epoch from v_split)::bigint % 3600 <> 0 then
    v_split := p_from;  -- a split inside an hour would count that hour twice
  end if;

  -- the chosen series first (a handful or thousands), then one index scan per rollup table over all of them
  select pg_catalog.array_agg(s.id) into v_ids
  from metrics.series s
  where s.project_id = p_project_id and s.name = p_metric and metrics.series_matches(s.labels, p_matchers);

  -- planned per call (not a cached generic plan): a handful of series wants index scans, thousands a scan
  return query execute $q$
  with chosen as materialized (  -- the output labels once per series, not once per row
    select s.id,
      case when $2 is null then s.labels
        else coalesce((select pg_catalog.jsonb_object_agg(k, s.labels -> k) from pg_catalog.unnest($2) k where s.labels ? k), '{}'::jsonb)
      end as out_labels
    from metrics.series s
    where s.id = any($1)
  ),
  rows as (
    select c.out_labels, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.last_ts, r.sketch
    from (
      select h.series_id, h.bucket, h.count, h.sum, h.min, h.max, h.last, h.last_ts, h.sketch
      from metrics.rollup_1h h
      where h.series_id = any($1) and h.bucket >= $3 and h.bucket < $4
      union all
      select m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.last, m.last_ts, m.sketch
      from metrics.rollup_1m m
      where m.series_id = any($1) and m.bucket >= $4 and m.bucket < $5
    ) as r
    join chosen c on c.id = r.series_id
  ),
  stepped as (
    select x.out_labels, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz) as step_ts,
      sum(x.count) as count, sum(x.sum) as sum, min(x.min) as min, max(x.max) as max,
      -- FILTER, not CASE: an aggregate under CASE still runs for every row; these only run when asked for
      (max(array[extract(epoch from x.last_ts)::double precision, x.last])
        filter (where $7 = 'last' and x.last_ts is not null))[2] as last,
      metrics.sketch_union(x.sketch) filter (where $7 = 'quantile') as sketch
    from rows x
    group by x.out_labels, pg_catalog.date_bin($6, x.bucket, '1970-01-01 00:00:00+00'::timestamptz)
  )
  select st.out_labels, st.step_ts, case $7
      when 'rate' then (case when $8 = 'counter' then st.sum else st.count::double precision end)
        / extract(epoch from $6)::double precision
      when 'sum' then st.sum
      when 'avg' then st.sum / nullif(st.count, 0)
      when 'min' then st.min
      when 'max' then st.max
      when 'last' then st.last
      when 'count' then st.count::double precision
      when 'quantile' then metrics.sketch_quantile(st.sketch, $9, st.min, st.max)
    end
  from stepped st
  order by st.out_labels, st.step_ts
  $q$ using v_ids, p_by, p_from, v_split, p_to, v_step, v_agg, v_kind, v_q;
end
$$;
comment on function metrics.query(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) is
  'Series of one metric over [p_from, p_to): label matchers [{"label","op","value"}], step (default: '
  '~300 points), aggregation rate|sum|avg|min|max|last|count|pNN|quantile(q); p_by merges series by those '
  'labels (empty array: all into one). Whole-hour steps read hourly rollups for the complete hours and '
  'minutes for the rest; ranges starting beyond minute retention read hours only. '
  'Runs as the caller, so row-level security applies.';

grant execute on function metrics.series_matches(jsonb, jsonb), metrics.hours_complete_until(),
  metrics.query(uuid, text, timestamptz, timestamptz, jsonb, interval, text, text[]) to authenticated, service_role;

-- PostgreSQL grants EXECUTE to PUBLIC on every new function (a per-schema default privilege cannot
-- revoke that): only the grants above stand
revoke execute on all functions in schema metrics from public;
