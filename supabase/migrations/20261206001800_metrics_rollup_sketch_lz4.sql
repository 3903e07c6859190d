-- Issue #14: the minute rollups' sketches compressed with lz4 instead of pglz, where the server has lz4.
--
-- Every rollup pass rewrites the sketch of each histogram minute it touches (a merge of the stored sketch with
-- the pass's delta). At the reference fleet (20 workers x the same 300 series, 45 of them histograms, a pass
-- every 0.5 s) a minute's sketch holds ~350 keys: 6.8 KB of jsonb, stored as 2.3 KB of pglz out of line, so
-- each pass decompresses and recompresses 45 of them. A helper's profile of such a pass (perf, backend CPU in
-- BEGIN ... ROLLBACK, interleaved, 11 rounds, results and the live message compared: identical) found
-- pglz_compress at 14.6 % of it. The same pass with the column's compression set to lz4:
--   3,000 raw points (the fleet's pass):           66.7 -> 61.7 ms of CPU a pass   (-7.5 %)
--   300 rows (the same points merged per series):  45.0 -> 38.3 ms                 (-15 %)
-- for sketches 15 % larger (2.65 KB against 2.30). Storage EXTERNAL (no compression) saved as much CPU but
-- stores three times the bytes; MAIN with pglz saved nothing.
--
-- lz4 needs a server built with it (PostgreSQL 14+ --with-lz4; Supabase's images have it since early 2023).
-- Without it this migration changes nothing and says so: the ALTER would fail there. Values already stored
-- keep pglz until they are rewritten (every current minute is, at its next pass); reading either works.

do $$
begin
  if exists (select from pg_catalog.pg_settings s
             where s.name = 'default_toast_compression' and 'lz4' = any (s.enumvals)) then
    alter table metrics.rollup_1m alter column sketch set compression lz4;
  else
    raise notice 'this server has no lz4: metrics.rollup_1m.sketch keeps pglz compression';
  end if;
end
$$;

comment on column metrics.rollup_1m.sketch is
  'The minute''s merged sketch (wire form {z, p, n}); null for counters and gauges. Compressed with lz4 where '
  'the server has it (migration 20261206001800: every pass rewrites the current minutes'' sketches, and pglz '
  'was 15 % of a fleet-sized pass).';
