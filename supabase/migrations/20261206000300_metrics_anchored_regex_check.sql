-- Matchers: check a regex in the form the query runs it (issue #15, found by tests/fuzz).
-- metrics.series_matches runs a regex as '^(?:' || value || ')$'; matchers_problem compiled the bare value, so
-- a regex with a mode prefix (***=, ***:) or leading inline options ((?i)) passed the check and then failed
-- inside every query, alert evaluation and silence that used it (SQLSTATE 2201B).

create or replace function metrics.matchers_problem(p_matchers jsonb, p_regex_max integer)
returns text
language plpgsql immutable parallel safe set search_path = ''
as $$
declare
  v_i integer := 0;
  m jsonb;
begin
  if p_matchers is null then
    return 'required (an empty array matches every series)';
  end if;
  if pg_catalog.jsonb_typeof(p_matchers) <> 'array' then
    return 'must be an array of {"label", "op", "value"}';
  end if;
  if pg_catalog.jsonb_array_length(p_matchers) > 20 then
    return 'at most 20 matchers';
  end if;
  for m in select e from pg_catalog.jsonb_array_elements(p_matchers) e loop
    if pg_catalog.jsonb_typeof(m) <> 'object'
       or (m - '{label,op,value}'::text[]) <> '{}'::jsonb
       or pg_catalog.jsonb_typeof(m -> 'label') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'op') is distinct from 'string'
       or pg_catalog.jsonb_typeof(m -> 'value') is distinct from 'string' then
      return pg_catalog.format('[%s]: each matcher is {"label": string, "op": "=|!=|=~|!~", "value": string}', v_i);
    end if;
    if (m ->> 'label') !~ '^[a-zA-Z_][a-zA-Z0-9_]*$' or pg_catalog.char_length(m ->> 'label') > 100 then
      return pg_catalog.format('[%s].label: invalid label name', v_i);
    end if;
    if (m ->> 'op') not in ('=', '!=', '=~', '!~') then
      return pg_catalog.format('[%s].op: unknown operator %L (use =, !=, =~, !~)', v_i, pg_catalog.left(m ->> 'op', 10));
    end if;
    if pg_catalog.char_length(m ->> 'value') > 1024 then
      return pg_catalog.format('[%s].value: longer than 1024 characters', v_i);
    end if;
    if (m ->> 'op') in ('=~', '!~') then
      if p_regex_max is not null and pg_catalog.char_length(m ->> 'value') > p_regex_max then
        return pg_catalog.format('[%s].value: regex longer than %s characters', v_i, p_regex_max);
      end if;
      begin
        perform '' ~ ('^(?:' || (m ->> 'value') || ')$');
      exception when invalid_regular_expression then
        return pg_catalog.format('[%s].value: invalid regex: %s', v_i, sqlerrm);
      end;
    end if;
    v_i := v_i + 1;
  end loop;
  return null;
end
$$;
comment on function metrics.matchers_problem(jsonb, integer) is
  'Why a list of label matchers is invalid, or null: the shape metrics.query takes as p_matchers (an array '
  'of at most 20 {"label", "op", "value"} objects, op one of =, !=, =~, !~, values of at most 1024 '
  'characters, regexes that compile as the query runs them (anchored: ^(?:re)$) and are at most p_regex_max long; null: no regex limit beyond 1024). '
  'Immutable: the check constraints call it with the fixed bound 1024, so they never depend on '
