-- Issue #14, after migration 20261206001700: the caps on a point's count and sum held by the table itself.
--
-- 0017 made every ingest path refuse a point counting more than metrics.max_point_count() or summing more than
-- metrics.max_point_sum() either way, because the rollup pass adds counts as bigint and sums as double
-- precision, and one overflow stops the pass for every project. A producer that writes metrics.points without
-- those paths (service_role has ALL on the table: a direct COPY that skips metrics.check_copied_points, a script,
-- a bug) could still store such a row. The table now refuses it (23514) whoever writes it. The COPY path
-- therefore refuses such a point at the COPY itself (23514, an invalid batch for the client, as a row of a day
-- without partition already was) rather than with check_copied_points' "points[i].count: ..."; the JSON RPC and
-- ingest_known check their rows before they insert and keep their named errors.
--
-- NOT VALID: rows stored before are not scanned (on a busy database that scan would hold the table's lock for
-- as long as it reads every partition); the constraint binds every row written from now on, and partitions
-- made later carry it. Both limits are the functions' (immutable SQL, inlined and folded to constants when a
-- statement is planned, so the check costs a comparison a row).

-- (an infinite or NaN sum raises nothing when added, so it is left to the paths' named errors: the COPY path's
-- metrics.check_copied_points refuses it in the same transaction)
alter table metrics.points add constraint points_within_rollup_limits
  check (count <= metrics.max_point_count()
    and (abs(sum) <= metrics.max_point_sum() or abs(sum) = 'infinity' or sum = 'NaN')) not valid;

comment on constraint points_within_rollup_limits on metrics.points is
  'A row counts at most metrics.max_point_count() and sums at most metrics.max_point_sum() either way, so that '
  'no rollup''s bigint or double sum can overflow (one overflow would stop the rollup pass for every project). '
  'NOT VALID: rows stored before migration 20261206001900 were not scanned.';
