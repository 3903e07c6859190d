-- Lists and series discovery (issue #15, findings 7 and 17).
-- metrics.list_series ran its matchers without checking them: through the Data API (POST
-- /rest/v1/rpc/list_series) an invalid regex was a raw 2201B "invalid regular expression" when some series
-- reached it, and a silent empty answer when none did, while metrics.query refuses the same matchers with
-- 22023 "p_matchers: [i].value: ...". It now checks them as metrics.query does (one rule:
-- metrics.matchers_problem with the configured regex limit, raised by metrics.reject).
-- The HTTP service's list endpoints are paginated by keyset in Python (meshhook_rt_metrics/api/pagination.py)
-- over the tables' existing indexes; nothing else in SQL changes.

create or replace function metrics.list_series(
  p_project_id uuid, p_metric text default null, p_matchers jsonb default '[]'::jsonb, p_limit integer default 1000
)
returns table (name text, labels jsonb, last_seen timestamptz)
language plpgsql stable security invoker set search_path = ''
as $$
#variable_conflict use_column
declare
  v_matchers jsonb := coalesce(p_matchers, '[]'::jsonb);
  v_problem text := metrics.matchers_problem(v_matchers);
begin
  -- the rule and the error of metrics.query's p_matchers (22023, HTTP 400 through the Data API)
  if v_problem is not null then
    perform metrics.reject('p_matchers', v_problem);
  end if;
  return query
    select s.name, s.labels, t.updated_at
    from metrics.series s
    left join metrics.series_totals t on t.series_id = s.id
    where s.project_id = p_project_id
      and (p_metric is null or s.name = p_metric)
      and metrics.series_matches(s.labels, v_matchers)
    order by s.name, s.labels
    limit greatest(least(coalesce(p_limit, 1000), 10000), 0);
end
$$;
comment on function metrics.list_series(uuid, text, jsonb, integer) is
  'Series of a project (optionally one metric, label matchers as in metrics.query; null: none) with the time '
  'of their last accepted point; at most p_limit (<= 10000) rows. Invalid matchers raise 22023 '
  '"p_matchers: <metrics.matchers_problem>", as in metrics.query, whether or not a series would reach them. '
  'Row-level security applies.';
