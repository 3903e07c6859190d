"""The rollup pass in lanes (migration 20261207000300, issue #14): lane k merges the points of the series with
``series_id % lanes = k`` under a lock of its own and moves its own watermark in the same transaction, so lanes
run at once on their own backends and every point is merged exactly once, whatever a lane does or however it
fails. Which series land in which lane is read from ``metrics.series.id`` after ingest, never assumed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.db.maintenance import run_loop
from tests.support import TestDatabase, batch, counter, ingest, other_databases_finished


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def other(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def txn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose statements run in a transaction left open until the test commits it."""
    with psycopg.connect(fresh_db.url, autocommit=False) as connection:
        yield connection


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def send(
    conn: psycopg.Connection[Any],
    project: uuid.UUID,
    labels: range,
    *,
    ts: float | None = None,
    value: float = 1.0,
    name: str = "jobs_total",
) -> None:
    """One point (count 1) for each series ``name{i=...}`` of ``labels``, in one batch (one transaction)."""
    points = [counter(name, value, {"i": str(i)}, ts=ts) for i in labels]
    assert ingest(conn, batch(project, points), merge=False)["status"] == "accepted"


def series_by_lane(conn: psycopg.Connection[Any], project: uuid.UUID, lanes: int = 2) -> dict[int, list[int]]:
    rows = conn.execute(
        "select id from metrics.series where project_id = %s order by id", (project,)
    ).fetchall()
    grouped: dict[int, list[int]] = {lane: [] for lane in range(lanes)}
    for (series_id,) in rows:
        grouped[series_id % lanes].append(series_id)
    return grouped


def two_lanes(conn: psycopg.Connection[Any], project: uuid.UUID) -> tuple[list[int], list[int]]:
    grouped = series_by_lane(conn, project)
    assert grouped[0] and grouped[1], f"setup: series in both lanes: {grouped}"
    return grouped[0], grouped[1]


def sent(conn: psycopg.Connection[Any], ids: list[int]) -> int:
    """The count of every point ingested for the series."""
    return int(
        one(conn, "select coalesce(sum(count), 0) from metrics.points where series_id = any(%s)", (ids,))
    )


def merged(conn: psycopg.Connection[Any], ids: list[int]) -> int:
    """The count the minute rollups hold for the series."""
    return int(
        one(conn, "select coalesce(sum(count), 0) from metrics.rollup_1m where series_id = any(%s)", (ids,))
    )


def project_counts(conn: psycopg.Connection[Any], project: uuid.UUID) -> tuple[int, int]:
    """(points ingested, count in the minute rollups) of a project."""
    row = conn.execute(
        "select (select coalesce(sum(count), 0) from metrics.points where project_id = %s),"
        " (select coalesce(sum(count), 0) from metrics.rollup_1m where project_id = %s)",
        (project, project),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def lanes(conn: psycopg.Connection[Any]) -> dict[int, tuple[int, int]]:
    """lane -> (watermark, passes)."""
    rows = conn.execute(
        "select lane, xid_watermark::text::bigint, passes from metrics.rollup_lanes order by lane"
    ).fetchall()
    return {lane: (watermark, passes) for lane, watermark, passes in rows}


def run_pass(conn: psycopg.Connection[Any], lane: int | None = None) -> dict[str, Any]:
    other_databases_finished(conn)  # the pass's range is then exactly what this test committed
    return dict(one(conn, "select metrics.rollup_pass(%s)", (lane,)))


def rollup_watermark(conn: psycopg.Connection[Any]) -> int:
    return int(one(conn, "select metrics.rollup_watermark()::text::bigint"))


def eventually(check: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"not within {limit:.0f} s: {what}"
        time.sleep(0.05)


# a. ------------------------------------------------------------------------------------------------------------
def test_each_lane_merges_its_own_series_and_moves_its_own_watermark(conn: psycopg.Connection[Any]) -> None:
    """Fails if a lane merged another lane's series (or all of them), moved another lane's watermark, merged a
    range twice, if the one-shot pass skipped a lane, or if rollup_watermark() were not the lowest lane's."""
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    assert lanes(conn).keys() == {0, 1}, "two lanes by default"
    before = lanes(conn)

    first = run_pass(conn, 0)
    assert (first["points"], first["lanes"], first["lane"]) == (len(lane0), 2, 0)
    assert merged(conn, lane0) == sent(conn, lane0) == len(lane0)
    assert merged(conn, lane1) == 0, "lane 0 left lane 1's series alone"
    after0 = lanes(conn)
    assert after0[0][0] > before[0][0] and after0[0][1] == before[0][1] + 1
    assert after0[1] == before[1], "lane 1's watermark and passes unmoved"
    assert rollup_watermark(conn) == min(w for w, _ in after0.values()) == after0[1][0]

    second = run_pass(conn, 1)
    assert (second["points"], second["lane"]) == (len(lane1), 1)
    assert merged(conn, lane1) == sent(conn, lane1) == len(lane1)
    assert merged(conn, lane0) == len(lane0), "lane 1 did not merge lane 0's again"
    after1 = lanes(conn)
    assert after1[1][0] > before[1][0] and after1[0] == after0[0]

    assert run_pass(conn, 0)["points"] == 0 and run_pass(conn, 1)["points"] == 0, "nothing new a second round"

    send(conn, project, range(8), value=2.0)
    both = run_pass(conn)
    assert (both["points"], both["lanes"]) == (8, 2), "the one-shot pass merges every lane: the sum"
    assert project_counts(conn, project) == (16, 16)
    final = lanes(conn)
    assert rollup_watermark(conn) == min(w for w, _ in final.values())
    assert run_pass(conn)["points"] == 0


# b. ------------------------------------------------------------------------------------------------------------
def test_lanes_do_not_wait_on_each_other_and_no_fold_misses_an_open_merge(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Fails if the lanes shared one lock (lane 0's pass would time out behind lane 1's open one), or if
    merge_lane_range did not hold fold_totals' lock shared: lane 0's fold would fold the closed minutes without
    lane 1's uncommitted merge of them, which then never reaches the totals (counts short)."""
    conn.execute(
        "update metrics.rollup_pass_state"
        " set totals_folded_before = date_trunc('minute', now()) - interval '10 minutes'"
    )
    folded_before = one(conn, "select totals_folded_before from metrics.rollup_pass_state")
    project = uuid.uuid4()
    send(conn, project, range(8), ts=time.time() - 200)  # closed minutes after the fold watermark
    lane0, lane1 = two_lanes(conn, project)
    other_databases_finished(conn)

    assert dict(one(txn, "select metrics.rollup_lane(1)"))["points"] == len(lane1)  # left open
    other.execute("set lock_timeout = '2s'")
    result = run_pass(other, 0)
    assert result["points"] == len(lane0), "lane 0's pass ran while lane 1's was open"
    # (it waits up to 2 s for lane 1's pass and 0.5 s for the fold's lock, then leaves the fold to a later pass)
    after = dict(one(other, "select metrics.fold_and_publish()"))
    assert after["folded"] == 0, "no fold while lane 1's merge is uncommitted"
    assert one(conn, "select totals_folded_before from metrics.rollup_pass_state") == folded_before
    txn.commit()

    result = run_pass(conn)
    assert result["points"] == 0, "lane 1's committed merge is not merged again"
    assert result["folded"] == len(lane0) + len(lane1), "every series' closed minute folded once"
    assert one(conn, "select totals_folded_before from metrics.rollup_pass_state") > folded_before
    totals = conn.execute(
        "select c.series_id, c.count, c.sum from metrics.series_totals_current c where c.project_id = %s",
        (project,),
    ).fetchall()
    assert sorted(totals) == [(s, 1, 1.0) for s in sorted(lane0 + lane1)], "each point counted exactly once"


# c. ------------------------------------------------------------------------------------------------------------
def test_a_lane_killed_mid_pass_loses_and_duplicates_nothing(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Fails if a lane's watermark moved outside the transaction of its merge (a killed pass would lose its
    points), if lane 0's pass waited on lane 1's, or if the one-shot pass afterwards merged anything twice."""
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    other_databases_finished(conn)
    before = lanes(conn)
    pid = one(txn, "select pg_backend_pid()")
    assert dict(one(txn, "select metrics.rollup_pass(1)"))["points"] == len(lane1)  # open, then killed

    other.execute("set lock_timeout = '2s'")
    # lane 0's merge only: its publish would wait for lane 1's (test_a_lane_publishing_waits_not_...)
    assert dict(one(other, "select metrics.rollup_lane(0)"))["points"] == len(lane0), "lane 0 did not wait"
    lane0_after = lanes(conn)[0]
    assert one(conn, "select pg_terminate_backend(%s)", (pid,)) is True
    with pytest.raises(psycopg.OperationalError):
        txn.execute("select 1")
    eventually(
        lambda: not one(conn, "select exists (select from pg_stat_activity where pid = %s)", (pid,)),
        "the killed backend gone",
    )
    after = lanes(conn)
    assert after[1] == before[1], "lane 1's watermark and passes as before its killed pass"
    assert after[0] == lane0_after and after[0][1] == before[0][1] + 1, "lane 0 unaffected"
    assert merged(conn, lane1) == 0, "the killed merge left nothing"

    assert run_pass(conn, 0)["points"] == 0, "lane 0 passes on, nothing new"
    result = run_pass(conn)
    assert result["points"] == len(lane1)
    assert project_counts(conn, project) == (8, 8), "every point in the rollups exactly once"
    assert merged(conn, lane0) == len(lane0) and merged(conn, lane1) == len(lane1)


# d. ------------------------------------------------------------------------------------------------------------
def messages(conn: psycopg.Connection[Any], project: uuid.UUID) -> list[dict[str, Any]]:
    topic = one(conn, "select metrics.topic(%s)", (project,))
    rows = conn.execute(
        "select payload from realtime.messages where topic = %s order by inserted_at, id", (topic,)
    ).fetchall()
    return [r[0] for r in rows]


def publishable(conn: psycopg.Connection[Any], project: uuid.UUID) -> None:
    conn.execute(
        "insert into metrics.publish_state (project_id, last_sent_at) values (%s, '-infinity')"
        " on conflict (project_id) do update set last_sent_at = excluded.last_sent_at",
        (project,),
    )


def test_a_publisher_skips_queued_rows_a_running_merge_holds(
    conn: psycopg.Connection[Any], other: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Fails if publish_project waited for queue rows an uncommitted merge holds (with lock_timeout its
    exception handler returns 0 messages instead of lane 0's), if it dequeued them (their changes lost), or if
    the later message did not carry the merge's counts."""
    project = uuid.uuid4()
    conn.execute(
        "insert into metrics.projects (id, publish_interval) values (%s, interval '1 hour')"
        " on conflict (id) do update set publish_interval = excluded.publish_interval",
        (project,),
    )
    ts = (time.time() // 60) * 60 - 30  # one closed minute for every point
    send(conn, project, range(6), ts=ts)
    lane0, lane1 = two_lanes(conn, project)
    other_databases_finished(conn)
    conn.execute("select metrics.rollup_lane(0)")
    conn.execute("select metrics.rollup_lane(1)")
    queued = "select count(*) from metrics.publish_queue where series_id = any(%s)"
    assert one(conn, queued, (lane0 + lane1,)) == 6, "setup: every series' minute queued, committed"

    points = [counter("jobs_total", 5.0, {"i": str(i)}, ts=ts) for i in range(6)]
    lane1_labels = {
        s: one(conn, "select labels ->> 'i' from metrics.series where id = %s", (s,)) for s in lane1
    }
    later = [p for p in points if p["labels"]["i"] in lane1_labels.values()]
    assert ingest(conn, batch(project, later), merge=False)["status"] == "accepted"
    other_databases_finished(conn)
    assert dict(one(txn, "select metrics.rollup_lane(1)"))["points"] == len(
        lane1
    )  # locks lane 1's queue rows

    publishable(conn, project)
    other.execute("set lock_timeout = '1s'")
    assert one(other, "select metrics.publish_project(%s)", (project,)) == 1, "published without waiting"
    first = messages(conn, project)
    assert len(first) == 1
    assert sorted(s["series_id"] for s in first[0]["series"]) == sorted(lane0), "lane 0's rows only"
    assert one(conn, queued, (lane1,)) == len(lane1), "the held rows stay queued"
    assert one(conn, queued, (lane0,)) == 0
    txn.commit()

    publishable(conn, project)
    assert one(conn, "select metrics.publish_project(%s)", (project,)) == 1
    second = messages(conn, project)[1]
    got = {s["series_id"]: (s["count"], s["sum"]) for s in second["series"]}
    assert got == {s: (2, 6.0) for s in lane1}, "the minute with the merge's counts"
    assert one(conn, queued, (lane0 + lane1,)) == 0


# the rollup locks in maintain()'s order (migration 20261207000400) -------------------------------------------
ROLLUP_LOCKS_HELD = """
select count(*) from pg_locks l
where l.pid = pg_backend_pid() and l.locktype = 'advisory' and l.objsubid = 1 and l.mode = 'ShareLock'
  and ((l.classid::bigint << 32) | l.objid::bigint)
    in (hashtext('metrics.rollup_hours'), hashtext('metrics.rollup_five_minutes'))
"""


def test_a_merge_of_points_before_the_current_window_takes_both_rollup_locks(
    conn: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Points six minutes old lie before the current 5-minute window, and in the current hour whenever it is past
    :06 (in the previous hour otherwise). Their merge holds the hourly rollup's lock with the 5-minute one, so
    the one-shot pass, which merges the lanes in turn, never takes the hourly lock after the 5-minute one
    (maintain() takes them in that order: a deadlock). Fails (past :06) if a merge took the 5-minute lock alone."""
    project = uuid.uuid4()
    send(conn, project, range(4), ts=time.time() - 360)
    other_databases_finished(conn)
    assert one(txn, ROLLUP_LOCKS_HELD) == 0
    assert dict(one(txn, "select metrics.rollup_pass()"))["points"] == 4
    assert one(txn, ROLLUP_LOCKS_HELD) == 2, "the hourly and the 5-minute rollup's locks, shared"
    txn.commit()


# e. ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 17, None])
def test_set_pass_lanes_refuses_a_bad_number(conn: psycopg.Connection[Any], n: int | None) -> None:
    """Fails if the bound check (1..16, not null) or its SQLSTATE / message changed, or if a refused call
    changed the lanes."""
    before = lanes(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"runs in 1 to 16 lanes"):
        conn.execute("select metrics.set_pass_lanes(%s)", (n,))
    assert lanes(conn) == before


def test_set_pass_lanes_aligns_a_lagging_lane_and_cuts_the_series_anew(conn: psycopg.Connection[Any]) -> None:
    """Fails if set_pass_lanes did not merge the laggard up to the furthest watermark (lane 1's points lost or,
    with a lower common watermark, merged twice), left unequal watermarks, or added / removed the wrong rows."""
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    assert run_pass(conn, 0)["points"] == len(lane0)

    result = dict(one(conn, "select metrics.set_pass_lanes(3)"))
    assert (result["lanes"], result["previous"], result["points"]) == (3, 2, len(lane1))
    rows = conn.execute("select lane, xid_watermark from metrics.rollup_lanes order by lane").fetchall()
    assert [r[0] for r in rows] == [0, 1, 2] and len({r[1] for r in rows}) == 1, "three lanes, one watermark"
    assert merged(conn, lane0) == len(lane0) and merged(conn, lane1) == len(lane1), "each point merged once"
    assert run_pass(conn)["points"] == 0

    send(conn, project, range(20), value=3.0)  # 12 new series and 8 old ones
    grouped = series_by_lane(conn, project, 3)
    assert all(grouped.values()), f"setup: series in all three lanes: {grouped}"
    result = run_pass(conn)
    assert (result["points"], result["lanes"]) == (20, 3)
    assert project_counts(conn, project) == (28, 28), "every point merged exactly once"
    assert all(merged(conn, ids) == sent(conn, ids) for ids in grouped.values())

    result = dict(one(conn, "select metrics.set_pass_lanes(1)"))
    assert (result["lanes"], result["previous"], result["points"]) == (1, 3, 0)
    assert conn.execute("select lane from metrics.rollup_lanes").fetchall() == [(0,)]
    send(conn, project, range(4))
    assert run_pass(conn)["points"] == 4, "one lane merges every series"
    assert project_counts(conn, project) == (32, 32)


# f. ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "lane"),
    [
        ("rollup_lane", -1),
        ("rollup_lane", 16),
        ("rollup_lane", None),
        ("rollup_pass", -1),
        ("rollup_pass", 16),
    ],
)
def test_a_bad_lane_is_refused(conn: psycopg.Connection[Any], call: str, lane: int | None) -> None:
    """Fails if the lane check (0..15, null for rollup_lane) or its SQLSTATE / message changed."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"a lane is a number from 0 to 15"):
        conn.execute(f"select metrics.{call}(%s::integer)", (lane,))


def test_a_lane_beyond_the_count_merges_nothing(conn: psycopg.Connection[Any]) -> None:
    """Fails if a lane number without a row merged anything (another lane's points, or all) or moved a lane."""
    project = uuid.uuid4()
    send(conn, project, range(4))
    other_databases_finished(conn)
    before = lanes(conn)
    got = dict(one(conn, "select metrics.rollup_lane(5)"))
    assert (got["points"], got["lanes"]) == (0, 2)
    got = run_pass(conn, 5)
    assert (got["points"], got["lanes"], got["lane"]) == (0, 2, 5)
    assert project_counts(conn, project) == (4, 0) and lanes(conn) == before


# g. ------------------------------------------------------------------------------------------------------------
def test_rollup_status_reports_a_stalled_lane(conn: psycopg.Connection[Any]) -> None:
    """Fails if stalled looked at the latest pass of any lane (lane 0 passed just now) instead of each lane's,
    or if pending counted merged points (lane 0's) or points of another lane past a lane's watermark."""
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    run_pass(conn, 0)
    assert merged(conn, lane0) == len(lane0), "setup: lane 0's points merged"
    conn.execute("update metrics.rollup_lanes set last_pass_at = now() - interval '2 minutes' where lane = 1")
    pending, last_merge_at, stalled = conn.execute(
        "select pending_points, last_merge_at, stalled from metrics.rollup_status()"
    ).fetchone() or (None, None, None)
    assert (pending, stalled) == (len(lane1), True)
    assert last_merge_at == one(conn, "select last_pass_at from metrics.rollup_lanes where lane = 0")

    conn.execute(
        "update metrics.rollup_lanes set last_pass_at = now() - interval '30 seconds' where lane = 1"
    )
    assert conn.execute("select pending_points, stalled from metrics.rollup_status()").fetchone() == (
        len(lane1),
        False,
    ), "a lane that passed within the minute is not stalled"
    run_pass(conn, 1)
    assert conn.execute("select pending_points, stalled from metrics.rollup_status()").fetchone() == (
        0,
        False,
    )


# h. ------------------------------------------------------------------------------------------------------------
def test_two_lane_loops_under_writers_merge_every_point_once(
    fresh_db: TestDatabase, conn: psycopg.Connection[Any]
) -> None:
    """Sanity under concurrency: two lanes passing as the loop runs them (each lane's merge; after lane 0's the
    fold and the publish, in a transaction of their own) while two writers ingest into one project over many
    series and the same minutes, and a one-shot pass runs now and then. Fails on any error (a deadlock between
    a lane's merge and the publish, say) or if a point were lost or merged twice."""
    project = uuid.uuid4()
    ts = time.time()
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0, 0]

    def lane_loop(lane: int) -> None:
        try:
            with psycopg.connect(fresh_db.url, autocommit=True) as c:
                k = 0
                while not stop.is_set():
                    report = one(c, "select metrics.rollup_pass(%s)", (lane,))
                    if lane == 0:
                        c.execute("select metrics.fold_and_publish(%s)", (not report["behind"],))
                        k += 1
                        if k % 10 == 0:  # the one-shot pass too, through both lanes' locks
                            c.execute("select metrics.rollup_pass()")
                    stop.wait(0.01)
        except BaseException as exc:
            errors.append(exc)

    def writer(w: int) -> None:
        try:
            with psycopg.connect(fresh_db.url, autocommit=True) as c:
                n = 0
                while not stop.is_set():
                    points = [counter("hits_total", 1.0, {"s": str((n + i) % 40)}, ts=ts) for i in range(20)]
                    assert (
                        ingest(c, batch(project, points, source=f"w{w}"), merge=False)["status"] == "accepted"
                    )
                    written[w] += len(points)
                    n += 7
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=lane_loop, args=(lane,), daemon=True) for lane in (0, 1)]
    threads += [threading.Thread(target=writer, args=(w,), daemon=True) for w in (0, 1)]
    for thread in threads:
        thread.start()
    stop.wait(3.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, repr(errors)

    for _ in range(10):
        if run_pass(conn)["points"] == 0:
            break
    ingested, in_rollups = project_counts(conn, project)
    assert ingested == sum(written) > 0
    assert in_rollups == ingested, "every point merged exactly once"


# i. ------------------------------------------------------------------------------------------------------------
def test_the_maintain_loop_runs_a_thread_per_lane(
    fresh_db: TestDatabase, conn: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Fails if run_loop ran the lanes on one thread (lane 0's points would wait behind lane 1's lock, as in a
    one-shot pass) or did not start a thread for a lane that set_pass_lanes added (lane 2's points never
    merged)."""
    stop = threading.Event()
    loop = threading.Thread(
        target=run_loop,
        args=(fresh_db.url,),
        kwargs={"publish_every": 0.2, "maintain_every": 3600.0, "stop": stop},
        daemon=True,
    )
    loop.start()
    try:
        project = uuid.uuid4()
        txn.execute("select pg_advisory_xact_lock(hashtext('metrics.rollup_pass'), 1)")  # lane 1 blocked
        send(conn, project, range(6))
        lane0, lane1 = two_lanes(conn, project)
        eventually(
            lambda: merged(conn, lane0) == len(lane0), "lane 0's points merged while lane 1 is blocked"
        )
        assert merged(conn, lane1) == 0, "lane 1 waits for its lock"
        txn.commit()
        eventually(lambda: merged(conn, lane1) == len(lane1), "lane 1's points merged once released")

        assert dict(one(conn, "select metrics.set_pass_lanes(3)"))["lanes"] == 3
        send(conn, project, range(6, 12))
        third = series_by_lane(conn, project, 3)[2]
        assert third, "setup: a series in lane 2"
        eventually(
            lambda: merged(conn, third) == sent(conn, third), "lane 2's points merged by a third thread"
        )
        eventually(lambda: project_counts(conn, project) == (12, 12), "every point merged once")
    finally:
        stop.set()
        loop.join(timeout=60)
    assert not loop.is_alive()


# lane 0's publish and the other lanes' passes of the tick ---------------------------------------------------------
def series_in(message: dict[str, Any]) -> set[int]:
    return {int(item["series_id"]) for item in message["series"]}


def test_lane_0s_publish_waits_for_the_other_lanes_pass_of_the_tick(
    fresh_db: TestDatabase,
    conn: psycopg.Connection[Any],
    other: psycopg.Connection[Any],
    txn: psycopg.Connection[Any],
) -> None:
    """The lanes pass on the same ticks, and the fold and publish after lane 0's merge wait for the other lanes'
    passes then running, so that one message carries every lane's minutes. Fails if fold_and_publish did not
    wait for lane 1's lock (the message would hold lane 0's series only: each lane's minutes a second late, live
    p95 1.8 s at the reference fleet when every lane published on its own)."""
    # no fold due, so the only wait is the one on lane 1's pass
    conn.execute("update metrics.rollup_pass_state set totals_folded_before = now() + interval '1 hour'")
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    publishable(conn, project)
    other_databases_finished(conn)
    assert run_pass(other, 0)["points"] == len(lane0)
    assert dict(one(txn, "select metrics.rollup_pass(1)"))["points"] == len(lane1)  # running, not committed
    publisher_pid = one(other, "select pg_backend_pid()")
    published: list[dict[str, Any]] = []
    publisher = threading.Thread(
        target=lambda: published.append(dict(one(other, "select metrics.fold_and_publish()"))), daemon=True
    )
    publisher.start()
    eventually(
        lambda: one(
            conn,
            "select exists (select from pg_locks where pid = %s and locktype = 'advisory' and not granted"
            " and objid = 1 and objsubid = 2)",  # lane 1's lock (two keys: the lane is the second)
            (publisher_pid,),
        ),
        "the publish waits for lane 1's pass",
    )
    txn.commit()
    publisher.join(timeout=30)
    assert published and published[0]["messages"] == 1
    (message,) = messages(conn, project)
    assert series_in(message) == set(lane0 + lane1), "one message with every lane's minutes"


def test_lane_0s_publish_does_not_wait_long_for_another_lane(
    fresh_db: TestDatabase,
    conn: psycopg.Connection[Any],
    other: psycopg.Connection[Any],
    txn: psycopg.Connection[Any],
) -> None:
    """A lane's pass that runs long (a backlog, a large transaction) holds the live messages back 2 s at most:
    then the publish goes out with what is committed, and the lane's minutes go with the next. Fails if
    fold_and_publish waited for the lane as long as its caller's lock_timeout allows (30 s: the statement
    timeout of 8 s cancels it), or if it left its own lock_timeout in the caller's transaction."""
    project = uuid.uuid4()
    send(conn, project, range(8))
    lane0, lane1 = two_lanes(conn, project)
    publishable(conn, project)
    other_databases_finished(conn)
    assert run_pass(other, 0)["points"] == len(lane0)
    assert dict(one(txn, "select metrics.rollup_pass(1)"))["points"] == len(lane1)  # left open
    with psycopg.connect(fresh_db.url) as caller:  # one transaction, its own settings
        caller.execute("set local lock_timeout = '30s'")
        caller.execute("set local statement_timeout = '8s'")
        assert dict(one(caller, "select metrics.fold_and_publish()"))["messages"] == 1
        assert one(caller, "show lock_timeout") == "30s", "the caller's lock_timeout is back"
        assert (
            one(
                caller,
                "select count(*) from pg_locks where pid = pg_backend_pid() and locktype = 'advisory'"
                " and objsubid = 2",
            )
            == 0
        )
    txn.commit()
    publishable(conn, project)
    assert dict(one(conn, "select metrics.fold_and_publish()"))["messages"] == 1
    first, second = messages(conn, project)
    assert series_in(first) == set(lane0) and series_in(second) == set(lane1)


def test_two_passes_publishing_two_projects_in_opposite_orders_do_not_wait(
    fresh_db: TestDatabase, conn: psycopg.Connection[Any], txn: psycopg.Connection[Any]
) -> None:
    """Two lanes' open passes have each published a project; each then reaches the other's project: it skips it
    (the other holds its rate-limit row) instead of waiting. Before the migration inserted the row only when
    missing, A's publish of Q waited for B and B's of P for A: deadlock_detected."""
    p, q = uuid.uuid4(), uuid.uuid4()
    for project in (p, q):
        send(conn, project, range(2))
        publishable(conn, project)
    other_databases_finished(conn)
    conn.execute("select metrics.rollup_lane(0)")
    conn.execute("select metrics.rollup_lane(1)")
    with psycopg.connect(fresh_db.url) as b:
        assert one(txn, "select metrics.publish_project(%s)", (p,)) == 1
        assert one(b, "select metrics.publish_project(%s)", (q,)) == 1
        txn.execute("set lock_timeout = '2s'")
        b.execute("set lock_timeout = '2s'")
        assert one(txn, "select metrics.publish_project(%s)", (q,)) == 0, "B holds Q's row: skipped"
        assert one(b, "select metrics.publish_project(%s)", (p,)) == 0, "A holds P's row: skipped"
        txn.commit()
        b.commit()
    sent = conn.execute(
        "select count(*) from realtime.messages where topic in (metrics.topic(%s), metrics.topic(%s))", (p, q)
    ).fetchone()
    assert sent == (2,), "one message each, none lost to a rollback"
