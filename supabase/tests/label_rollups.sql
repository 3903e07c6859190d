-- 5-minute rows merged across series (rollup_5m_by_label): built from rollup_5m per window, one group per
-- label value plus one for all series, sketches merged exactly; the table's own rules reject bad rows.
begin;
set local client_min_messages = warning;
select plan(8);

insert into metrics.projects (id) values ('0d000000-0000-4000-8000-00000000000d');
insert into metrics.families (project_id, name, kind) values ('0d000000-0000-4000-8000-00000000000d', 'lr_seconds', 'histogram');
insert into metrics.series (id, project_id, name, labels) overriding system value values
  (-31, '0d000000-0000-4000-8000-00000000000d', 'lr_seconds', '{"route": "/a"}'),
  (-32, '0d000000-0000-4000-8000-00000000000d', 'lr_seconds', '{"route": "/a", "pod": "p2"}'),
  (-33, '0d000000-0000-4000-8000-00000000000d', 'lr_seconds', '{}');
insert into metrics.rollup_5m (project_id, series_id, bucket, count, sum, min, max, last, last_ts, sketch)
select '0d000000-0000-4000-8000-00000000000d', s.id, '2026-01-01 00:05:00+00', 3, s.id * -1.0, 1, -s.id, -s.id,
  '2026-01-01 00:06:00+00'::timestamptz + make_interval(secs => -s.id), metrics.sketch_from_values(array[1, 2, -s.id])
from metrics.series s where s.id in (-31, -32, -33);

select is(
  metrics.rollup_label_windows(array['0d000000-0000-4000-8000-00000000000d'::uuid], array['lr_seconds'],
    array['2026-01-01 00:05:00+00'::timestamptz]),
  5, 'one row for all series, two for route (/a, without), two for pod (p2, without)');

select results_eq(
  $$select label, value, series, count, sum, min, max, last from metrics.rollup_5m_by_label
    where metric = 'lr_seconds' order by label, value nulls first$$,
  $$values ('', null::text, 3, 9::bigint, 96::float8, 1::float8, 33::float8, 33::float8),
           ('pod', null, 2, 6, 64, 1, 33, 33), ('pod', 'p2', 1, 3, 32, 1, 32, 32),
           ('route', null, 1, 3, 33, 1, 33, 33), ('route', '/a', 2, 6, 63, 1, 32, 32)$$,
  'counts and sums add, min/max hold, last is the latest series'' value');

select is(
  (select sketch from metrics.rollup_5m_by_label where metric = 'lr_seconds' and label = ''),
  (select metrics.sketch_union(sketch) from metrics.rollup_5m where series_id in (-31, -32, -33)),
  'the all-series sketch is the exact merge of the series'' sketches');

select is(
  metrics.rollup_label_windows(array['0d000000-0000-4000-8000-00000000000d'::uuid], array['lr_seconds'],
    array['2026-01-01 00:05:00+00'::timestamptz]),
  5, 'rebuilding a window replaces its rows');
select is((select count(*)::integer from metrics.rollup_5m_by_label where metric = 'lr_seconds'), 5,
  'no duplicates after a rebuild');

select throws_ok(
  $$insert into metrics.rollup_5m_by_label (project_id, metric, label, value, bucket, series, count, sum)
    values ('0d000000-0000-4000-8000-00000000000d', 'lr_seconds', 'route', null, '2026-01-01 00:05:00+00', 1, 1, 1)$$,
  '23505', null, 'one group without the label per window (nulls are not distinct)');
select throws_ok(
  $$insert into metrics.rollup_5m_by_label (project_id, metric, label, value, bucket, series, count, sum)
    values ('0d000000-0000-4000-8000-00000000000d', 'lr_seconds', '', 'x', '2026-01-01 00:10:00+00', 1, 1, 1)$$,
  '23514', null, 'the all-series group has no value');

set local role authenticated;
select throws_ok(
  $$select metrics.rollup_label_windows('{}', '{}', '{}')$$,
  '42501', null, 'signed-in users cannot rebuild merged rows');

select * from finish();
rollback;
