-- Issue #14: metrics.rollup_status() reports the totals' fold too. The fold (migration 20261206000700) folds the
-- closed minutes into metrics.series_totals after a pass, about once a minute, and skips while a merge holds its
-- lock (a metrics.rollup_now() transaction left open skips every fold). A fold that stands still loses nothing
-- (the totals read the minutes not folded; retention keeps them since migration 20261207000600) but makes every
-- scrape read more minutes and the minute rows stay past their retention: health checks should see it.
-- New columns: totals_folded_before (the fold watermark) and fold_stalled (a minute that ended more than five
-- minutes ago is not folded; a healthy fold is at most about 1.5 minutes behind). GET /healthz reports it as
-- "totals": "stalled".

drop function metrics.rollup_status();
create function metrics.rollup_status(out pending_points bigint, out last_merge_at timestamptz, out stalled boolean,
  out totals_folded_before timestamptz, out fold_stalled boolean)
language sql stable security definer set search_path = ''
as $$
  -- per lane: its points at or past its watermark (committed, or of transactions still running)
  select coalesce(sum(x.pending), 0)::bigint, max(x.last_pass_at),
    coalesce(bool_or(x.pending > 0 and coalesce(x.last_pass_at, '-infinity') < now() - interval '1 minute'), false),
    (select s.totals_folded_before from metrics.rollup_pass_state s),
    -- rollup_1m_bucket_idx: an empty range while the fold keeps up
    exists (
      select from metrics.rollup_1m r
      where r.bucket >= (select s.totals_folded_before from metrics.rollup_pass_state s)
        and r.bucket < now() - interval '6 minutes'
    )
  from (
    select l.last_pass_at, (
      select pg_catalog.count(*) from metrics.points p
      where p.xid >= l.xid_watermark and (n.lanes = 1 or p.series_id % n.lanes = l.lane)
    ) as pending
    from metrics.rollup_lanes l, (select count(*)::integer as lanes from metrics.rollup_lanes) as n
  ) as x
$$;
comment on function metrics.rollup_status() is
  'How far the rollup pass and the totals'' fold are: points not merged yet, when a lane last merged any, stalled '
  '(a lane with points waiting and no merge for a minute: its pass does not run, or a long transaction holds its '
  'watermark back), the fold watermark, and fold_stalled (a minute that ended more than five minutes ago not folded: '
  'no pass runs, or a transaction that called metrics.rollup_now() stays open). For health checks; counts and '
  'times only, no tenant data.';
revoke execute on function metrics.rollup_status() from public;
grant execute on function metrics.rollup_status() to service_role;
