-- Issue #14, review of the validated COPY path (migration 20261206000800): metrics.check_copied_points read
-- the transaction's copied rows twice (once to build them, once to find a row of another batch or series),
-- each time with its own numbering and series join. One scan now does both; the rules, errors and their
-- order are unchanged (tests/db/test_copy_ingest.py).

create or replace function metrics.check_copied_points()
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_cfg metrics.config;
  v_setting text := pg_catalog.current_setting('metrics.copy_batch', true);
  v_batch jsonb;
  v_rows metrics.ingest_row[];
  v_count integer;
  v_stray jsonb;
begin
  select * into strict v_cfg from metrics.config;
  if v_setting = 'checked' then
    raise exception 'the batch of this transaction was checked already: one batch per transaction'
      using errcode = '55000';
  elsif coalesce(v_setting, '') = '' then
    raise exception 'no batch begun in this transaction: call metrics.begin_copy_batch before the COPY'
      using errcode = '55000';
  end if;
  v_batch := v_setting::jsonb;
  with copied as (
    select p.*, pg_catalog.row_number() over (order by p.tableoid, p.ctid) - 1 as idx,
      p.project_id = (v_batch ->> 'project_id')::uuid and p.source = v_batch ->> 'source'
        and p.batch_id = v_batch ->> 'batch_id' as of_batch
    from metrics.points p
    where p.xid = pg_catalog.pg_current_xact_id()
  )
  select pg_catalog.array_agg(row(
      c.idx, s.name, f.kind, s.labels, c.ts, c.count, c.sum, c.min, c.max, c.last, c.sketch, null, null,
      -- what the JSON shape check ensures on the RPC path: an integer count in range, finite numbers
      c.count between 1 and 999999999999999999
        and c.sum = c.sum and abs(c.sum) < 'infinity'
        and coalesce(c.min = c.min and abs(c.min) < 'infinity', true)
        and coalesce(c.max = c.max and abs(c.max) < 'infinity', true)
        and coalesce(c.last = c.last and abs(c.last) < 'infinity', true),
      c.series_id
    )::metrics.ingest_row order by c.idx),
    count(*),
    -- the first row of another batch, or of no series of the batch's project
    (pg_catalog.array_agg(pg_catalog.jsonb_build_object('idx', c.idx, 'series_id', c.series_id,
       'project_id', c.project_id, 'of_batch', c.of_batch) order by c.idx)
     filter (where not c.of_batch or s.id is null))[1]
  into v_rows, v_count, v_stray
  from copied c
  left join metrics.series s on s.id = c.series_id and s.project_id = c.project_id
  left join metrics.families f on f.project_id = s.project_id and f.name = s.name;

  if v_stray is not null then
    if (v_stray ->> 'of_batch')::boolean then
      perform metrics.reject(pg_catalog.format('points[%s].series_id', v_stray ->> 'idx'),
        pg_catalog.format('%s is not a series of project %s', v_stray ->> 'series_id', v_stray ->> 'project_id'));
    end if;
    perform metrics.reject(pg_catalog.format('points[%s]', v_stray ->> 'idx'),
      'project_id, source and batch_id must be those of the batch begun (metrics.begin_copy_batch)');
  end if;
  if v_count is distinct from (v_batch ->> 'points')::integer then
    perform metrics.reject('batch.points',
      pg_catalog.format('%s rows copied, the batch declared %s', coalesce(v_count, 0), v_batch ->> 'points'));
  end if;

  perform metrics.check_ingest_rows(v_rows, null, v_cfg);
  perform pg_catalog.set_config('metrics.copy_batch', 'checked', true);
  return v_count;
end
$$;
