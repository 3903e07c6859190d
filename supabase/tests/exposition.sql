-- metrics.exposition_rows (GET /metrics): set-based histogram bucket counts agree with the reference rule
-- (metrics.sketch_cumulative_counts), label rewriting, grouping and order of the rows, staleness filters.
begin;
set local client_min_messages = warning;
select plan(13);

insert into metrics.projects (id) values
  ('0e000000-0000-4000-8000-00000000000e'), ('0f000000-0000-4000-8000-00000000000f');
insert into metrics.families (project_id, name, kind, unit) values
  ('0e000000-0000-4000-8000-00000000000e', 'x_custom_seconds', 'histogram', 'seconds'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_default_seconds', 'histogram', 'seconds'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_payload_bytes', 'histogram', 'bytes'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_requests_total', 'counter', ''),
  ('0e000000-0000-4000-8000-00000000000e', 'x_depth', 'gauge', ''),
  ('0f000000-0000-4000-8000-00000000000f', 'x_requests_total', 'counter', '');
insert into metrics.histogram_boundaries (project_id, metric, boundaries) values
  ('0e000000-0000-4000-8000-00000000000e', 'x_custom_seconds', '{-3, -0.5, 0, 0.005, 1, 2.5}');

-- histograms: 40 series of each, with negative, zero and positive values on both sides of every boundary
select setseed(0.27);
insert into metrics.series (project_id, name, labels)
select '0e000000-0000-4000-8000-00000000000e', m.name, jsonb_build_object('shard', i::text)
from (values ('x_custom_seconds'), ('x_default_seconds'), ('x_payload_bytes')) as m (name),
  generate_series(1, 40) as i;
insert into metrics.series_totals (series_id, project_id, count, sum, sketch)
select s.id, s.project_id, metrics.sketch_count(v.sketch), 1, v.sketch
from metrics.series s
cross join lateral (
  select metrics.sketch_from_values(array(
    select case
      when s.name = 'x_payload_bytes' then exp(random() * 22)
      else (case when random() < 0.3 then -1 else 1 end) * exp(random() * 12 - 8) * (random() < 0.95)::integer
    end
    from generate_series(1, 20 + (s.id % 7) * 30) where s.id > 0
  )) as sketch
) as v
where s.project_id = '0e000000-0000-4000-8000-00000000000e';

-- one known histogram, one without any sketch, and the label rewriting cases
insert into metrics.series (project_id, name, labels) values
  ('0e000000-0000-4000-8000-00000000000e', 'x_custom_seconds', '{"shard": "known"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_custom_seconds', '{"shard": "empty", "le": "own"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_requests_total', '{"route": "/a", "le": "kept"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_requests_total', '{"__overflow__": "true"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_requests_total', '{"project_id": "theirs"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_depth', '{"queue": "fresh"}'),
  ('0e000000-0000-4000-8000-00000000000e', 'x_depth', '{"queue": "stale"}'),
  ('0f000000-0000-4000-8000-00000000000f', 'x_requests_total', '{"route": "/b"}');
insert into metrics.series_totals (series_id, project_id, count, sum, last, last_ts, sketch, updated_at)
select s.id, s.project_id, v.count, v.sum, v.last, now(), v.sketch, now() - v.age
from metrics.series s
join (values
  ('{"shard": "known"}'::jsonb, 7::bigint, 1::double precision, null::double precision,
   metrics.sketch_from_values('{-2, -0.1, 0, 0.003, 0.5, 1, 3}'), interval '0'),
  ('{"shard": "empty", "le": "own"}', 0, 0, null, null, interval '0'),
  ('{"route": "/a", "le": "kept"}', 3, 3, 1, null, interval '0'),
  ('{"__overflow__": "true"}', 4, 4, 1, null, interval '6 days'),
  ('{"project_id": "theirs"}', 5, 5, 1, null, interval '0'),
  ('{"queue": "fresh"}', 1, 9, 9, null, interval '14 minutes'),
  ('{"queue": "stale"}', 1, 8, 8, null, interval '16 minutes'),
  ('{"route": "/b"}', 6, 6, 1, null, interval '8 days')
) as v (labels, count, sum, last, sketch, age) on v.labels = s.labels;

select is(
  metrics.histogram_rank_edges('{-1, -0.5, 0, 0.1, 1}'),
  '{-100001, -99966, 0, 99885, 100000}'::double precision[],
  'rank edges: negative boundaries below zero, zero at 0, positive boundaries above, in boundary order'
);
select is(metrics.histogram_rank_edges(null), null, 'rank edges of no boundaries: null (strict)');

select is(
  (select count(*)::integer from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
   where e.kind = 'histogram' and e.labels ? 'shard' and e.labels ->> 'shard' ~ '^\d+$'),
  120, 'setup: 120 random histograms are exported'
);
select is(
  (select count(*)::integer
   from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
   join metrics.series s on s.project_id = '0e000000-0000-4000-8000-00000000000e' and s.name = e.name
     and s.labels = e.labels
   join metrics.series_totals t on t.series_id = s.id
   where e.kind = 'histogram' and e.buckets is distinct from metrics.sketch_cumulative_counts(t.sketch, e.le)),
  0, 'bucket counts of every histogram (custom, default and bytes boundaries) equal sketch_cumulative_counts'
);
select is(
  (select e.le from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
   where e.name = 'x_payload_bytes' limit 1),
  metrics.default_histogram_boundaries('bytes'), 'a bytes histogram without configured boundaries uses the bytes default'
);
select is(
  (select e.buckets from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
   where e.labels = '{"shard": "known"}'),
  '{0, 1, 3, 4, 6, 6}'::bigint[],
  'known values -2, -0.1, 0, 0.003, 0.5, 1, 3 on boundaries -3, -0.5, 0, 0.005, 1, 2.5'
);
select is(
  (select array[e.count::text, e.buckets::text, e.labels::text]
   from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
   where e.labels ->> 'shard' = 'empty'),
  array['0', '{0,0,0,0,0,0}', '{"shard": "empty", "exported_le": "own"}'],
  'a histogram without a sketch: zero in every bucket; its own "le" label becomes exported_le'
);

select is(
  array(select e.labels from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
        where e.kind = 'counter' order by e.labels::text),
  array['{"le": "kept", "route": "/a"}', '{"meshhook_overflow": "true"}', '{"project_id": "theirs"}']::jsonb[],
  'without the project label: labels as stored, the overflow marker renamed, a counter''s "le" kept'
);
select is(
  array(select e.labels from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', true) e
        where e.kind = 'counter' order by e.labels::text),
  array['{"le": "kept", "route": "/a", "project_id": "0e000000-0000-4000-8000-00000000000e"}',
        '{"project_id": "0e000000-0000-4000-8000-00000000000e", "exported_project_id": "theirs"}',
        '{"project_id": "0e000000-0000-4000-8000-00000000000e", "meshhook_overflow": "true"}']::jsonb[],
  'with the project label: project_id added to every series, a series'' own project_id becomes exported_project_id'
);

select is(
  array(select e.labels ->> 'queue' from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
        where e.kind = 'gauge'),
  array['fresh'], 'gauges not updated for 15 minutes are left out'
);
select is(
  (select count(*)::integer from metrics.exposition_rows('0f000000-0000-4000-8000-00000000000f', false)),
  0, 'series not updated for 7 days are left out'
);

select is(
  array(select e.name from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e),
  array(select e.name from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e order by e.name),
  'rows come grouped by metric, metrics in name order'
);
select is(
  array(select e.labels ->> 'shard' from metrics.exposition_rows('0e000000-0000-4000-8000-00000000000e', false) e
        where e.name = 'x_default_seconds'),
  array(select s.labels ->> 'shard' from metrics.series s
        where s.project_id = '0e000000-0000-4000-8000-00000000000e' and s.name = 'x_default_seconds' order by s.id),
  'within a metric, series come in a stable order (by series id)'
);

select * from finish();
rollback;
