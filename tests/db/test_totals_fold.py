"""Totals folded once a minute (migration 20261206000700, issue #14): ``series_totals`` holds the minutes
before the fold watermark, the minute rollups at or after it the rest. Whatever the timing, the whole
(``metrics.series_totals_current``, ``metrics.series_total_sketch``, the exposition) equals what was sent, each
point counted once: folded minutes, open minutes, late points into a folded minute, and a fold deferred by an
open ``metrics.rollup_now()`` transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.db.session import as_caller
from tests.support import (
    TestDatabase,
    add_member,
    batch,
    counter,
    histogram,
    ingest,
    other_databases_finished,
    user_claims,
)


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        # an empty database: moving the watermark back keeps "every sketch before it is in the totals" true
        connection.execute(
            "update metrics.rollup_pass_state"
            " set totals_folded_before = date_trunc('minute', now()) - interval '10 minutes'"
        )
        yield connection


@pytest.fixture
def other(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


def send(conn: psycopg.Connection[Any], project: uuid.UUID, values: list[float], ago: float) -> None:
    point = histogram("step_seconds", values, ts=time.time() - ago)
    assert ingest(conn, batch(project, [point]), merge=False)["status"] == "accepted"


def run_pass(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    other_databases_finished(conn)  # the pass's range is then exactly what this test committed
    row = conn.execute("select metrics.rollup_pass()").fetchone()
    assert row is not None
    return dict(row[0])


def fold_watermark(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("select totals_folded_before from metrics.rollup_pass_state").fetchone()
    assert row is not None
    return row[0]


def parts(conn: psycopg.Connection[Any], project: uuid.UUID) -> dict[str, Any]:
    """The series' folded sketch, the merge of its folded minutes, its whole sketch, and what was sent."""
    row = conn.execute(
        """
        select t.sketch as folded,
          (select metrics.sketch_union(r.sketch) from metrics.rollup_1m r
           where r.series_id = t.series_id and r.bucket < s.totals_folded_before) as folded_minutes,
          metrics.series_total_sketch(t.series_id) as whole,
          (select metrics.sketch_union(metrics.point_sketch(p)) from metrics.points p where p.series_id = t.series_id) as sent,
          (select count(*) from metrics.rollup_1m r
           where r.series_id = t.series_id and r.bucket >= s.totals_folded_before) as open_minutes,
          array[t.count, (select sum(r.count) from metrics.rollup_1m r
                          where r.series_id = t.series_id and r.bucket < s.totals_folded_before)] as counts,
          array[c.count, (select sum(p.count) from metrics.points p where p.series_id = t.series_id)] as current
        from metrics.series_totals t
        join metrics.series_totals_current c using (series_id), metrics.rollup_pass_state s
        where t.project_id = %s
        """,
        (project,),
    ).fetchone()
    assert row is not None
    got = dict(
        zip(
            ("folded", "folded_minutes", "whole", "sent", "open_minutes", "counts", "current"),
            row,
            strict=True,
        )
    )
    assert got["counts"][0] == got["counts"][1], "the totals' count is exactly the folded minutes'"
    assert got["current"][0] == got["current"][1], "current totals = every point sent"
    return got


def test_a_pass_folds_closed_minutes_and_leaves_the_open_one(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    before = fold_watermark(conn)
    send(conn, project, [0.1, 0.2, 0.3], ago=300)  # a closed minute after the watermark
    send(conn, project, [5.0, 6.0], ago=0)  # the open minute
    result = run_pass(conn)
    assert result["folded"] == 1, "one series had sketches in the closed minutes"
    assert fold_watermark(conn) > before
    got = parts(conn, project)
    assert got["folded"] == got["folded_minutes"], "the totals' sketch is exactly the folded minutes"
    assert got["open_minutes"] >= 1, "the current minute stays in the minute rollups"
    assert got["whole"] == got["sent"]
    assert run_pass(conn)["folded"] == 0, "nothing closed since"


def test_a_late_point_into_a_folded_minute_joins_the_totals_once(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    send(conn, project, [0.1, 0.2], ago=300)
    run_pass(conn)
    folded_before = parts(conn, project)["folded"]
    send(conn, project, [0.4, 0.5, 0.6], ago=300)  # late: its minute is folded already
    run_pass(conn)
    got = parts(conn, project)
    assert got["folded"] != folded_before, "the pass merged the late point into the totals' sketch"
    assert got["folded"] == got["folded_minutes"]
    assert got["whole"] == got["sent"]


def test_the_exposition_counts_folded_and_open_minutes(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    send(conn, project, [0.002, 0.03, 0.4], ago=300)
    send(conn, project, [0.05, 2.0], ago=0)
    run_pass(conn)
    row = conn.execute(
        """
        select e.count, e.buckets,
          metrics.sketch_cumulative_counts(metrics.sketch_union(p.sketch), e.le)
        from metrics.exposition_rows(%s, false) e
        join metrics.series s on s.project_id = %s and s.name = e.name
        join metrics.points p on p.series_id = s.id
        group by e.count, e.buckets, e.le
        """,
        (project, project),
    ).fetchone()
    assert row is not None
    count, buckets, expected = row
    assert count == 5
    assert buckets == expected, "le buckets of every value sent, folded or not"
    assert buckets[-1] == 5


def test_an_open_rollup_now_transaction_defers_the_fold(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    before = fold_watermark(conn)
    with other.transaction():
        send(other, project, [0.7, 0.8], ago=300)
        other.execute("select metrics.rollup_now()")  # merged, not committed: a fold would miss it
        result = run_pass(conn)
        assert result.get("folded") == 0
        assert fold_watermark(conn) == before, "the watermark waits for the open transaction"
    result = run_pass(conn)
    assert result["folded"] == 1
    got = parts(conn, project)
    assert got["folded"] == got["folded_minutes"] == got["sent"], "folded once, after the commit"
    assert got["whole"] == got["sent"]


def test_rollup_now_refuses_repeatable_read(other: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    other.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with pytest.raises(psycopg.errors.InvalidTransactionState, match="read committed"), other.transaction():
        send(other, project, [1.0], ago=0)
        other.execute("select metrics.rollup_now()")


def test_open_minutes_count_without_a_totals_row(conn: psycopg.Connection[Any]) -> None:
    """The pass leaves the totals alone for open minutes: a new series has none until the fold, yet current
    totals, series discovery and the exposition see its points."""
    project = uuid.uuid4()
    point = counter("jobs_total", 4)
    assert ingest(conn, batch(project, [point]), merge=False)["status"] == "accepted"
    run_pass(conn)
    assert conn.execute(
        "select count(*) from metrics.series_totals where project_id = %s", (project,)
    ).fetchone() == (0,)
    current = conn.execute(
        "select count, sum, updated_at is not null from metrics.series_totals_current where project_id = %s",
        (project,),
    ).fetchone()
    assert current == (1, 4.0, True)
    seen = conn.execute("select last_seen is not null from metrics.list_series(%s)", (project,)).fetchone()
    assert seen == (True,)
    exported = conn.execute(
        "select value from metrics.exposition_rows(%s, false) where name = 'jobs_total'", (project,)
    ).fetchone()
    assert exported == (4.0,)


def test_members_read_the_current_totals_of_their_projects_only(conn: psycopg.Connection[Any]) -> None:
    mine, theirs, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    add_member(conn, mine, user, "viewer")
    for project in (mine, theirs):
        send(conn, project, [0.1, 0.2], ago=0)  # an open minute: read through the view's second part
        send(conn, project, [0.3], ago=300)  # a folded one: read through series_totals
    run_pass(conn)
    their_series = conn.execute("select id from metrics.series where project_id = %s", (theirs,)).fetchone()
    assert their_series is not None
    with as_caller(conn, user_claims(user)):
        seen = conn.execute(
            "select project_id, count from metrics.series_totals_current where project_id in (%s, %s)",
            (mine, theirs),
        ).fetchall()
        assert seen == [(mine, 3)]
        assert conn.execute(
            "select metrics.series_total_sketch(%s), (select count(*) from metrics.series_sketch_parts(%s))",
            (their_series[0], their_series[0]),
        ).fetchone() == (None, 0)
