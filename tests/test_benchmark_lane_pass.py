"""Design L's prototype (``benchmarks.lane_pass``): a round over two lanes merges what one rollup pass merges,
once, with the shipped merge's own text."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from benchmarks import lane_pass
from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, other_databases_finished

MINUTE_ROWS = """
select s.name, s.labels::text, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.sketch::text
from metrics.rollup_1m r join metrics.series s on s.id = r.series_id
where r.project_id = %s
order by 1, 2, 3
"""


def points(k: int, ts: float) -> list[dict[str, Any]]:
    """Twelve series of every kind, histograms with sketches of many buckets, different in each batch."""
    out: list[dict[str, Any]] = []
    for s in range(4):
        labels = {"route": f"/r{s}"}
        out.append(counter("requests_total", k + s + 1, labels, ts=ts))
        out.append(gauge("in_flight", float(k * s), labels, ts=ts))
        values = [0.001 * (1 + k + s) * (1.07**j) for j in range(40)]
        out.append(histogram("latency_seconds", values, labels, ts=ts))
    return out


def load(url: str, project: uuid.UUID, start: float) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    for k in range(5):
        ingest(conn, batch(project, points(k, start + k), batch_id=f"b{k}"), merge=False)
    other_databases_finished(conn)
    return conn


def test_a_round_over_two_lanes_merges_what_one_pass_merges_once(
    db: TestDatabase, fresh_db: TestDatabase
) -> None:
    project, start = uuid.uuid4(), time.time() - 10
    with load(db.url, project, start) as one, load(fresh_db.url, project, start) as two:
        while one.execute("select metrics.rollup_pass()").fetchone()[0]["behind"]:  # type: ignore[index]
            pass
        lane_pass.install(two)
        rounds = lane_pass.Rounds(fresh_db.url, 2)
        try:
            first = rounds.run()
            again = rounds.run()
        finally:
            rounds.close()
        assert first["points"] == 60 and not first["behind"]
        assert again["points"] == 0, "a second round finds nothing new"
        expected = one.execute(MINUTE_ROWS, (project,)).fetchall()
        assert len(expected) >= 12  # 12 series, in one minute or two
        assert two.execute(MINUTE_ROWS, (project,)).fetchall() == expected
        left = two.execute(
            "select count(*) from metrics.points where xid >= (select xid_watermark from metrics.rollup_pass_state)"
        ).fetchone()
        assert left == (0,), "the round moved the watermark past what it merged"
        queued = two.execute("select count(*) from metrics.publish_queue where project_id = %s", (project,))
        assert queued.fetchone() == (0,), "the round published its minutes"


def run_rounds(url: str) -> list[dict[str, Any]]:
    rounds = lane_pass.Rounds(url, 2)
    try:
        done = [rounds.run()]
        while done[-1]["behind"] and len(done) < 20:  # a round that never catches up fails, not hangs
            done.append(rounds.run())
        return done
    finally:
        rounds.close()


def test_rounds_cut_at_the_bound_and_compare_transaction_ids_as_numbers(fresh_db: TestDatabase) -> None:
    """A bounded round says it is behind and the next takes the rest; a watermark with fewer digits than the
    range's end (which sorts after it as text) is still below it."""
    project, start = uuid.uuid4(), time.time() - 10
    with load(fresh_db.url, project, start) as conn:
        lane_pass.install(conn)
        conn.execute("update metrics.config set pass_max_points = 12")  # one 12-point batch a round
        xmin = str(conn.execute("select pg_snapshot_xmin(pg_current_snapshot())").fetchone()[0])  # type: ignore[index]
        first_point = str(conn.execute("select min(xid) from metrics.points").fetchone()[0])  # type: ignore[index]
        fewer_digits = "9" * (len(xmin) - 1)
        if len(first_point) == len(xmin) and fewer_digits > xmin:  # below every point, above xmin as text
            conn.execute("update metrics.rollup_pass_state set xid_watermark = %s", (fewer_digits,))
        done = run_rounds(fresh_db.url)
        assert [r["points"] for r in done] == [12] * 5
        assert [r["behind"] for r in done] == [True] * 4 + [False]
        merged = conn.execute("select sum(count) from metrics.rollup_1m where project_id = %s", (project,))
        sent = conn.execute("select sum(count) from metrics.points where project_id = %s", (project,))
        assert merged.fetchone() == sent.fetchone(), "every point merged once"


def test_a_failed_round_releases_the_pass_lock(fresh_db: TestDatabase) -> None:
    project, start = uuid.uuid4(), time.time() - 10
    with load(fresh_db.url, project, start) as conn:  # no lane function installed: the lanes fail
        rounds = lane_pass.Rounds(fresh_db.url, 2)
        try:
            with pytest.raises(psycopg.errors.UndefinedFunction):
                rounds.run()
        finally:
            rounds.close()
        free = conn.execute("select pg_try_advisory_lock(pg_catalog.hashtext('metrics.rollup_pass'))")
        assert free.fetchone() == (True,)
        conn.execute("select pg_advisory_unlock(pg_catalog.hashtext('metrics.rollup_pass'))")
        assert conn.execute("select metrics.rollup_pass()").fetchone()[0]["points"] == 60  # type: ignore[index]


def test_the_lane_function_is_refused_when_the_shipped_merge_has_changed() -> None:
    with pytest.raises(RuntimeError, match="has changed"):
        lane_pass.lane_function_sql("create function metrics.rollup_points(p_from xid8, p_to xid8) ...")


def test_the_lane_function_filters_the_range_by_series() -> None:
    shipped = f"CREATE FUNCTION {lane_pass.SIGNATURE}\n ... {lane_pass.FILTER}\n"
    sql = lane_pass.lane_function_sql(shipped)
    assert "metrics.bench_rollup_points_lane(" in sql and "p.series_id % p_lanes = p_lane" in sql


def test_a_round_needs_two_lanes() -> None:
    with pytest.raises(ValueError, match="at least 2 lanes"):
        lane_pass.Rounds("postgresql://unused", 1)
