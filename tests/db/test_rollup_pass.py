"""The rollup pass (migration 20261206000500, issue #14): ingest only appends; ``metrics.rollup_pass()`` merges
the points of finished transactions exactly once. These scenarios need several sessions (a transaction held
open across passes, two passes at once, a rollup running while late points arrive); the single-session rules
are in supabase/tests/ingest.sql and publish.sql, and rollups equal to a recomputation from the raw points in
tests/db/test_rollup_property.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.db import maintenance
from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, other_databases_finished


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def other(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


def events(conn: psycopg.Connection[Any], project: uuid.UUID) -> int:
    row = conn.execute(
        "select coalesce(sum(count), 0)::int from metrics.rollup_1m where project_id = %s", (project,)
    ).fetchone()
    return int(row[0]) if row else 0


def run_pass(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    other_databases_finished(conn)  # the pass's range is then exactly what this test committed
    row = conn.execute("select metrics.rollup_pass()").fetchone()
    assert row is not None
    return dict(row[0])


def send(conn: psycopg.Connection[Any], project: uuid.UUID, value: float, ts: float | None = None) -> str:
    point = gauge("check_gauge", value)
    if ts is not None:
        point["ts"] = ts
    return str(ingest(conn, batch(project, [point]), merge=False)["status"])


def test_ingest_appends_and_the_pass_merges_once(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    send(conn, project, 1)
    assert events(conn, project) == 0, "ingest itself merges nothing"
    assert run_pass(conn)["points"] == 1
    assert run_pass(conn)["points"] == 0, "a second pass finds nothing new"
    assert events(conn, project) == 1
    state = conn.execute(
        "select sum(passes) >= 1, sum(points) >= 1, max(last_pass_at) is not null from metrics.rollup_lanes"
    )
    assert state.fetchone() == (True, True, True)


def test_a_transaction_held_open_across_passes_is_merged_once_after_it_commits(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    send(conn, project, 1)
    run_pass(conn)
    other.execute("begin")
    send(other, project, 2)
    send(conn, project, 3)  # commits while the older transaction is still open
    for _ in range(3):
        run_pass(conn)
    held_back = events(conn, project)
    other.execute("commit")
    run_pass(conn)
    after = events(conn, project)
    run_pass(conn)
    # the later commit waits behind the open transaction (the watermark is the oldest running xid)
    assert (held_back, after, events(conn, project)) == (1, 3, 3)


def test_a_rolled_back_ingest_leaves_nothing_and_a_resend_is_a_duplicate(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    payload = batch(project, [gauge("check_gauge", 4)])
    other.execute("begin")
    ingest(other, payload, merge=False)
    other.execute("rollback")
    run_pass(conn)
    assert events(conn, project) == 0
    assert ingest(conn, payload, merge=False)["status"] == "accepted"
    assert ingest(conn, payload, merge=False)["status"] == "duplicate"
    run_pass(conn)
    assert events(conn, project) == 1


def test_a_rolled_back_pass_is_redone_by_the_next(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    """A pass that dies before its commit (here: rolled back) leaves the watermark where it was."""
    project = uuid.uuid4()
    send(conn, project, 5)
    other.execute("begin")
    assert run_pass(other)["points"] == 1
    other.execute("rollback")
    assert events(conn, project) == 0
    assert run_pass(conn)["points"] == 1
    assert events(conn, project) == 1


def test_a_second_pass_waits_for_the_first_and_merges_nothing_twice(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], fresh_db: TestDatabase
) -> None:
    project = uuid.uuid4()
    send(conn, project, 1)
    other.execute("begin")
    first = run_pass(other)  # holds the pass's lock until it commits
    thread, second = pass_waiting_for_a_lock(conn, fresh_db.url)
    send(conn, project, 2)  # committed while the second pass waits: it merges this one only
    other.execute("commit")
    thread.join(timeout=30)
    assert (first["points"], second["points"]) == (1, 1)
    assert events(conn, project) == 2


def test_rollup_now_merges_a_transactions_points_and_the_pass_skips_them(
    conn: psycopg.Connection[Any],
) -> None:
    project = uuid.uuid4()
    conn.execute("begin")
    send(conn, project, 1)
    assert conn.execute("select metrics.rollup_now() ->> 'points'").fetchone() == ("1",)
    send(conn, project, 2)
    assert conn.execute("select metrics.rollup_now() ->> 'points'").fetchone() == ("1",)
    conn.execute("commit")
    assert run_pass(conn)["points"] == 0
    assert events(conn, project) == 2


def test_late_points_wait_for_a_running_hourly_rollup_and_are_marked_late(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], fresh_db: TestDatabase
) -> None:
    """A point of an hour that a rollup is rolling up right now: the pass waits for that rollup's commit, so it
    compares with the watermark the rollup leaves behind and marks the hour late (not lost from the hour)."""
    project = uuid.uuid4()
    two_hours_ago = time.time() - 7200
    send(conn, project, 1, ts=two_hours_ago)
    run_pass(conn)
    send(conn, project, 2, ts=two_hours_ago)  # committed, not merged yet, when the hourly rollup starts
    other.execute("begin")
    assert other.execute("select metrics.rollup_hours()").fetchone()[0] >= 1  # type: ignore[index]
    thread, report = pass_waiting_for_a_lock(conn, fresh_db.url)
    other.execute("commit")
    thread.join(timeout=30)
    assert report["points"] == 1
    late = conn.execute("select count(*) from metrics.late_hours").fetchone()
    assert late == (1,), "the hour rolled up meanwhile is due again"


def test_a_running_writer_delays_current_points_without_blocking_the_pass(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any]
) -> None:
    """The known cost of the watermark: points committed after a writing transaction began wait for its end
    (never lost or doubled), and the pass does not block on it."""
    project = uuid.uuid4()
    other.execute("begin")
    other.execute("select metrics.rollup_hours(), metrics.rollup_five_minutes()")  # writes: has an xid
    send(conn, project, 1)
    conn.execute("set statement_timeout = '5s'")
    assert run_pass(conn)["points"] == 0
    other.execute("rollback")
    assert run_pass(conn)["points"] == 1
    assert events(conn, project) == 1


def test_the_pass_publishes_the_merged_minute(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    send(conn, project, 77)
    run_pass(conn)
    row = conn.execute(
        "select count(*) from realtime.messages where topic = metrics.topic(%s)"
        " and payload -> 'series' @> '[{\"last\": 77}]'",
        (project,),
    ).fetchone()
    assert row == (1,)


def pass_waiting_for_a_lock(
    conn: psycopg.Connection[Any], url: str
) -> tuple[threading.Thread, dict[str, Any]]:
    """A rollup pass on a connection of its own, started in a thread and returned once it waits for a lock;
    its report fills the dict when it ends."""
    report: dict[str, Any] = {}

    def waiting_pass() -> None:
        with psycopg.connect(url, autocommit=True, application_name="waiting-pass") as c:
            report.update(run_pass(c))

    thread = threading.Thread(target=waiting_pass)
    thread.start()
    wait_for_lock_wait(conn, "waiting-pass")
    return thread, report


def wait_for_lock_wait(conn: psycopg.Connection[Any], application: str) -> None:
    for _ in range(400):
        row = conn.execute(
            "select 1 from pg_stat_activity where application_name = %s and wait_event_type = 'Lock'",
            (application,),
        ).fetchone()
        if row:
            return
        time.sleep(0.025)
    raise AssertionError(f"{application} never waited for a lock")


def test_run_rollup_passes_commits_every_pass_while_it_runs(
    conn: psycopg.Connection[Any], fresh_db: TestDatabase
) -> None:
    """What pg_cron calls every minute: passes every ``p_every`` seconds, each committed on its own, so a
    point is merged and visible long before the procedure returns."""
    project = uuid.uuid4()
    before = conn.execute("select sum(passes) from metrics.rollup_lanes").fetchone()[0]  # type: ignore[index]

    def passes() -> None:
        with psycopg.connect(fresh_db.url, autocommit=True) as c:
            c.execute("call metrics.run_rollup_passes(3, 0.2)")

    thread = threading.Thread(target=passes)
    thread.start()
    try:
        send(conn, project, 1)
        deadline = time.monotonic() + 2
        while events(conn, project) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events(conn, project) == 1, "not merged within 2 s"
        assert thread.is_alive(), "merged only when the procedure ended"
    finally:
        thread.join(timeout=30)
    after = conn.execute("select sum(passes) from metrics.rollup_lanes").fetchone()[0]  # type: ignore[index]
    assert after - before >= 1
    # 3 s at 0.2 s: many passes, each its own transaction (only those with points count in `passes`)
    assert conn.execute(
        "select count(*) from realtime.messages where topic = metrics.topic(%s)", (project,)
    ).fetchone() == (1,)


@pytest.mark.parametrize(
    ("seconds", "every", "lane"),
    [(0, 0.5, 0), (55, 0.01, 0), (4000, 0.5, 0), (55, 61, 0), (55, 1, -1), (55, 1, 16)],
)
def test_run_rollup_passes_refuses_bad_arguments(
    conn: psycopg.Connection[Any], seconds: float, every: float, lane: int
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"seconds must be in.*lane from 0 to 15"):
        conn.execute("call metrics.run_rollup_passes(%s, %s, %s)", (seconds, every, lane))


def test_the_largest_counts_cannot_stop_the_pass(conn: psycopg.Connection[Any]) -> None:
    """Every point may carry metrics.max_point_count() and max_point_sum() (migration 20261206001700): ten
    such counter and histogram points of one series in one minute are merged, and so is another project's
    point in the same pass. Before the caps, ten points of 18-digit counts overflowed the minute's bigint count
    (two of sum 1.7e308 its double sum), and every pass failed for every project."""
    row = conn.execute("select metrics.max_point_count()").fetchone()
    assert row is not None
    largest = int(row[0])
    project, bystander = uuid.uuid4(), uuid.uuid4()
    now = time.time()
    for k in range(10):
        spike = counter("spike_total", 1e290, ts=now, count=largest)  # metrics.max_point_sum() too
        spread = {
            "name": "spread_seconds",
            "kind": "histogram",
            "labels": {},
            "ts": now,
            "count": largest,
            "sum": 1.0,
            "min": 1.0,
            "max": 1.0,
            "sketch": {"z": 0, "p": {"0": largest}, "n": {}},
        }
        assert ingest(conn, batch(project, [spike, spread]), merge=False)["status"] == "accepted", k
    send(conn, bystander, 7)
    assert run_pass(conn)["points"] == 21
    merged = conn.execute(
        "select s.name, r.count, r.sketch -> 'p' ->> '0', r.sum from metrics.rollup_1m r"
        " join metrics.series s on s.id = r.series_id where r.project_id = %s order by 1",
        (project,),
    ).fetchall()
    assert merged == [
        ("spike_total", 10 * largest, None, pytest.approx(1e291)),
        ("spread_seconds", 10 * largest, str(10 * largest), 10.0),
    ]
    assert events(conn, bystander) == 1


def test_minute_sketches_are_stored_with_lz4_where_the_server_has_it(conn: psycopg.Connection[Any]) -> None:
    """Migration 20261206001800: every pass rewrites the current minutes' sketches; lz4 costs less CPU to
    write and read than pglz. A server without lz4 keeps pglz (the migration changes nothing there)."""
    row = conn.execute(
        "select 'lz4' = any(enumvals) from pg_settings where name = 'default_toast_compression'"
    ).fetchone()
    assert row is not None
    has_lz4 = bool(row[0])
    setting = conn.execute(
        "select attcompression from pg_attribute"
        " where attrelid = 'metrics.rollup_1m'::regclass and attname = 'sketch'"
    ).fetchone()
    assert setting == ("l" if has_lz4 else "",)
    project = uuid.uuid4()
    wide = [1.021**i for i in range(500)]  # a bucket each: a sketch past TOAST's 2 KB threshold
    for _ in range(2):  # two points of the minute: the stored sketch is merged and written again
        ingest(conn, batch(project, [histogram("wide_seconds", wide)]), merge=False)
        run_pass(conn)
    stored = conn.execute(
        "select pg_column_compression(sketch), jsonb_array_length(jsonb_path_query_array(sketch, '$.p.*'))"
        " from metrics.rollup_1m where project_id = %s",
        (project,),
    ).fetchone()
    assert stored == ("lz4" if has_lz4 else "pglz", 500)


# -- a backlog is merged in bounded passes (migration 20261206002100) ---------------------------------------------
def bound_passes(conn: psycopg.Connection[Any], points: int) -> None:
    conn.execute("update metrics.config set pass_max_points = %s", (points,))


def send_points(conn: psycopg.Connection[Any], project: uuid.UUID, n: int) -> None:
    """One transaction of ``n`` points (one series each)."""
    points = [counter("backlog_total", 1, {"n": str(i)}) for i in range(n)]
    assert ingest(conn, batch(project, points), merge=False)["status"] == "accepted"


def backlog(conn: psycopg.Connection[Any], bound: int, transactions: list[int]) -> uuid.UUID:
    """A project whose points wait for the pass: one transaction per size in ``transactions``, under a bound of
    ``bound`` points a pass, in one lane (each lane has its own bound: tests/db/test_pass_lanes.py)."""
    project = uuid.uuid4()
    conn.execute("select metrics.set_pass_lanes(1)")
    bound_passes(conn, bound)
    for n in transactions:
        send_points(conn, project, n)
    other_databases_finished(conn)
    return project


def test_a_backlog_is_merged_in_passes_of_at_most_pass_max_points(conn: psycopg.Connection[Any]) -> None:
    project = backlog(conn, 3, [2, 2, 2, 2])
    reports = [run_pass(conn) for _ in range(5)]
    # a transaction is never split: 2 + 2 would exceed 3, so every pass takes one transaction's two points
    assert [(r["points"], r["behind"]) for r in reports] == [
        (2, True),
        (2, True),
        (2, True),
        (2, False),
        (0, False),
    ]
    assert events(conn, project) == 8, "every point merged once"


def test_a_transaction_larger_than_the_bound_is_merged_whole(conn: psycopg.Connection[Any]) -> None:
    project = backlog(conn, 2, [5, 1])
    first, second = run_pass(conn), run_pass(conn)
    assert (first["points"], first["behind"]) == (5, True)
    assert (second["points"], second["behind"]) == (1, False)
    assert events(conn, project) == 6


def test_run_rollup_passes_does_not_wait_while_a_backlog_is_left(conn: psycopg.Connection[Any]) -> None:
    project = backlog(conn, 1, [1, 1, 1, 1])
    # 0.2 s of passes every 2 s: one pass and its wait, unless the passes behind a backlog skip the wait
    conn.execute("call metrics.run_rollup_passes(0.2, 2)")
    assert events(conn, project) == 4


def test_the_maintain_loop_and_a_one_shot_maintain_catch_up_a_backlog(fresh_db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        bound_passes(conn, 1)
        for _ in range(3):
            send_points(conn, project, 1)
        maintenance.publish_once(conn)  # the one-shot `maintain`: passes until the backlog it found is merged
        assert events(conn, project) == 3
        for _ in range(3):
            send_points(conn, project, 1)
        stop = threading.Event()
        loop = threading.Thread(
            target=maintenance.run_loop, args=(fresh_db.url, 60.0, 3600.0, stop), daemon=True
        )
        loop.start()
        try:  # one pass a minute, so only the passes run at once after a backlog can merge all three in time
            deadline = time.monotonic() + 20
            while events(conn, project) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            loop.join(30)
        assert events(conn, project) == 6


def test_a_one_shot_maintain_stops_at_the_points_mergeable_when_it_started(fresh_db: TestDatabase) -> None:
    """Writers outpacing passes of one transaction each: the one-shot catch-up still returns, with every point
    mergeable when it started merged (it used to pass until no backlog was left, which never came)."""
    project = uuid.uuid4()
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(fresh_db.url, autocommit=True) as writer:
            while not stop.is_set():
                send_points(writer, project, 1)

    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        bound_passes(conn, 1)
        for _ in range(20):
            send_points(conn, project, 1)
        writers = [threading.Thread(target=write, daemon=True) for _ in range(2)]
        for w in writers:
            w.start()
        time.sleep(0.5)  # a backlog the writers keep growing
        before = conn.execute("select count(*) from metrics.points").fetchone()
        done = threading.Event()

        def catch_up() -> None:
            with psycopg.connect(fresh_db.url, autocommit=True) as own:
                maintenance.publish_once(own)
            done.set()

        catcher = threading.Thread(target=catch_up, daemon=True)
        catcher.start()
        try:
            returned = done.wait(120)  # while the writers still write
        finally:
            stop.set()
            for w in writers:
                w.join(30)
        catcher.join(120)
        assert returned, "the one-shot catch-up returned while the writers were still writing"
        assert before is not None and events(conn, project) >= before[0]
