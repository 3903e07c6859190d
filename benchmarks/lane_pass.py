"""Design L of ``benchmarks.ingest``, a prototype (not shipped): the rollup pass split into lanes by series,
merged on as many backends at once.

The default workload's 20-batch burst is bound by its last pass: the writers are done, and one backend
merges the backlog while the other cores idle (docs/architecture.md, "The default workload's ratio is set by
its last pass"). L runs each pass as a *round*:

1. one connection takes the pass's lock (the advisory lock ``metrics.rollup_pass()`` takes, held for the
   round, so no ordinary pass runs meanwhile) and cuts the range as the pass does (the watermark, the
   snapshot's xmin, ``metrics.pass_cut``);
2. ``lanes`` connections each merge the range's points of their series (``series_id % lanes = lane``) at
   once, each in its own transaction, with the shipped merge (``metrics.rollup_points``'s own text, filtered:
   ``lane_function_sql``);
3. the first connection then moves the watermark, folds the totals and publishes, as the pass does.

Lanes touch disjoint rows (minute rows, totals, the publish queue and the late marks are all keyed by series),
so their merges do not wait on each other.

What a shipped design needs and the prototype does not do: a watermark per lane (or the round's lane
transactions and the watermark's move committed together), without which a crash or a lane's error between a
lane's commit and the watermark's move merges that lane's points twice (the benchmark's check of the rollups
would show it); the hour and 5-minute locks ``rollup_pass`` takes for points older than the current hour or
window (nothing in the benchmark runs ``maintain()``); ``run_rollup_passes`` and ``maintain --loop`` running
the lanes.

The filter costs the planner its estimate: PostgreSQL reckons an expression's equality at 0.5 % of the rows,
so the range's estimated rows fall from hundreds to 2, and the merge as it was before migration 20261207000100
then joined the minutes to the sketches with a nested loop (7.7 s for 100,000 points instead of 30 ms for the
join). Statistics taken before the range's points existed do the same to the shipped pass, which is why that
migration runs the merge with hash joins only and without JIT; the lane function inherits its settings.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg

FILTER = "where p.xid >= p_from and p.xid < p_to"
SIGNATURE = "metrics.rollup_points(p_from xid8, p_to xid8)"


def lane_function_sql(shipped: str) -> str:
    """``metrics.rollup_points``'s definition (``pg_get_functiondef``) turned into
    ``metrics.bench_rollup_points_lane(p_from, p_to, p_lane, p_lanes)``: the same merge of the lane's series."""
    out = shipped
    for old, new in (
        (
            SIGNATURE,
            "metrics.bench_rollup_points_lane(p_from xid8, p_to xid8, p_lane integer, p_lanes integer)",
        ),
        (FILTER, FILTER + " and p.series_id % p_lanes = p_lane"),
    ):
        if out.count(old) != 1:
            raise RuntimeError(f"metrics.rollup_points has changed: {old!r} is not in it exactly once")
        out = out.replace(old, new)
    return out


def install(conn: psycopg.Connection[Any]) -> None:
    """Creates the lane function in the design's scratch database, from the shipped merge."""
    row = conn.execute(
        "select pg_get_functiondef('metrics.rollup_points(xid8, xid8)'::regprocedure)"
    ).fetchone()
    if not row:
        raise RuntimeError("metrics.rollup_points(xid8, xid8) is missing")
    conn.execute(lane_function_sql(str(row[0])))


class Rounds:
    """One pass as a round over ``lanes`` connections (the first also coordinates)."""

    LOCK = "select pg_advisory_lock(pg_catalog.hashtext('metrics.rollup_pass'))"
    UNLOCK = "select pg_advisory_unlock(pg_catalog.hashtext('metrics.rollup_pass'))"
    # the range [from, to) and whether there is one and more beyond it, compared in SQL (psycopg reads xid8 as
    # text, whose order is not the numbers')
    CUT = (
        "select r.frm, r.finished, r.upto, r.upto > r.frm, r.upto < r.finished from ("
        " select s.xid_watermark as frm, f.xmin as finished,"
        " case when f.xmin > s.xid_watermark then metrics.pass_cut(s.xid_watermark, f.xmin,"
        " (select c.pass_max_points from metrics.config c)) else s.xid_watermark end as upto"
        " from metrics.rollup_pass_state s,"
        " (select pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) as xmin) f) as r"
    )
    BEHIND = "select exists (select from metrics.points p where p.xid >= %s and p.xid < %s)"

    def __init__(self, url: str, lanes: int) -> None:
        if lanes < 2:
            raise ValueError(f"a round needs at least 2 lanes, got {lanes}")
        self.lanes = lanes
        self.conns: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(lanes):
                self.conns.append(psycopg.connect(url, autocommit=True))
        except BaseException:
            self.close()
            raise
        self.pids = {int(c.execute("select pg_backend_pid()").fetchone()[0]) for c in self.conns}  # type: ignore[index]

    def run(self) -> dict[str, Any]:
        """One round: the range cut, its lanes merged at once, the watermark moved, totals folded, published."""
        lead = self.conns[0]
        lead.execute(self.LOCK)
        try:
            frm, finished, to, some, more = lead.execute(self.CUT).fetchone()  # type: ignore[misc]
            points = self._merge(frm, to) if some else 0
            if some:
                lead.execute(
                    "update metrics.rollup_pass_state set xid_watermark = %s, passes = passes + 1,"
                    " points = points + %s, last_pass_at = now(), last_points = %s",
                    (to, points, points),
                )
            folded = lead.execute("select metrics.fold_totals()").fetchone()[0]  # type: ignore[index]
            lead.execute(
                "select metrics.publish_project(q.project_id)"
                " from (select distinct project_id from metrics.publish_queue) q"
            )
            behind = bool(more and lead.execute(self.BEHIND, (to, finished)).fetchone()[0])  # type: ignore[index]
        finally:
            with contextlib.suppress(psycopg.OperationalError):  # a lost connection has released it already
                lead.execute(self.UNLOCK)
        return {"points": points, "folded": folded, "behind": behind}

    def _merge(self, frm: Any, to: Any) -> int:
        merged = [0] * self.lanes
        errors: list[BaseException] = []

        def lane(k: int) -> None:
            try:
                row = (
                    self.conns[k]
                    .execute(
                        "select metrics.bench_rollup_points_lane(%s, %s, %s, %s)", (frm, to, k, self.lanes)
                    )
                    .fetchone()
                )
                merged[k] = int(row[0]["points"]) if row else 0
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=lane, args=(k,), daemon=True) for k in range(1, self.lanes)]
        for t in threads:
            t.start()
        try:
            lane(0)
        finally:  # every lane done (even on an interrupt) before the caller's lock is released
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return sum(merged)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
