"""metrics.maintain: partitions ahead, hourly rollups from closed minutes, retention, batch ledger."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import TestDatabase, batch, counter, gauge, histogram, ingest, merge_points


@pytest.fixture
def conn(fresh_db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_db.url, autocommit=True) as connection:
        yield connection


def partitions(conn: psycopg.Connection[Any]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'metrics.points'::regclass"
        )
    }


def test_partitions_are_created_ahead(conn: psycopg.Connection[Any]) -> None:
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["partitions_created"] == 4
    today = conn.execute(
        "select to_char(current_date, 'YYYYMMDD'), to_char(current_date + 2, 'YYYYMMDD')"
    ).fetchone()
    assert today is not None and {f"points_{today[0]}", f"points_{today[1]}"} <= partitions(conn)
    again = conn.execute("select metrics.maintain()").fetchone()
    assert again is not None and again[0]["partitions_created"] == 0


def test_hourly_rollups_equal_their_minutes(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    base = (int(time.time()) // 3600 - 2) * 3600  # a closed hour, two hours back
    points = []
    for minute in range(0, 60, 7):
        ts = base + minute * 60 + 1
        points += [
            counter("req_total", minute, {"a": "b"}, ts=ts),
            gauge("depth", float(minute), ts=ts),
            histogram("lat_seconds", [0.001 * (minute + 1), 0.5], ts=ts),
        ]
    ingest(conn, batch(project, points))
    conn.execute("select metrics.maintain()")
    rows = conn.execute(
        "select s.name, h.count, h.sum, h.min, h.max, h.last, h.sketch = (select metrics.sketch_union(m.sketch)"
        "   from metrics.rollup_1m m where m.series_id = h.series_id and date_trunc('hour', m.bucket) = h.bucket)"
        " from metrics.rollup_1h h join metrics.series s on s.id = h.series_id where h.project_id = %s order by 1",
        (project,),
    ).fetchall()
    minutes = list(range(0, 60, 7))
    assert rows == [
        ("depth", 9, float(sum(minutes)), 0.0, 56.0, 56.0, None),
        (
            "lat_seconds",
            18,
            pytest.approx(sum(0.001 * (m + 1) for m in minutes) + 4.5),
            0.001,
            0.5,
            None,
            True,
        ),
        ("req_total", 9, float(sum(minutes)), None, None, None, None),
    ]
    # late data for that hour is folded in by the next run
    ingest(conn, batch(project, [counter("req_total", 1000, {"a": "b"}, ts=base + 30)]))
    conn.execute("select metrics.maintain()")
    total = conn.execute(
        "select h.sum from metrics.rollup_1h h join metrics.series s on s.id = h.series_id"
        " where s.project_id = %s and s.name = 'req_total'",
        (project,),
    ).fetchone()
    assert total == (float(sum(minutes)) + 1000,)


def test_five_minute_rollups_equal_their_minutes_and_take_late_points(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    window = (int(time.time()) // 300 - 6) * 300  # a window closed for at least 25 minutes
    points = []
    for minute in range(5):
        ts = window + minute * 60 + 2
        points += [
            counter("req_total", minute + 1, {"a": "b"}, ts=ts),
            gauge("depth", float(minute), ts=ts),
            histogram("lat_seconds", [0.001 * (minute + 1), 0.25], ts=ts),
        ]
    points.append(counter("req_total", 100, {"a": "b"}, ts=window + 300))  # the next window
    ingest(conn, batch(project, points))
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["five_minutes_rolled_up"] >= 4

    def windows() -> list[tuple[Any, ...]]:
        return conn.execute(
            "select s.name, extract(epoch from f.bucket)::bigint, f.count, f.sum, f.min, f.max, f.last,"
            "  f.sketch is not distinct from (select metrics.sketch_union(m.sketch) from metrics.rollup_1m m"
            "   where m.series_id = f.series_id and m.bucket >= f.bucket and m.bucket < f.bucket + interval '5 minutes')"
            " from metrics.rollup_5m f join metrics.series s on s.id = f.series_id where f.project_id = %s order by 1, 2",
            (project,),
        ).fetchall()

    assert windows() == [
        ("depth", window, 5, 10.0, 0.0, 4.0, 4.0, True),
        ("lat_seconds", window, 10, pytest.approx(0.015 + 1.25), 0.001, 0.25, None, True),
        ("req_total", window, 5, 15.0, None, None, None, True),
        ("req_total", window + 300, 1, 100.0, None, None, None, True),
    ]
    # a late point for a rolled-up window marks it; the next run recomputes it from the minutes
    ingest(conn, batch(project, [histogram("lat_seconds", [9.0], ts=window + 10)]))
    marked = conn.execute("select count(*) from metrics.late_five_minutes").fetchone()
    assert marked == (1,)
    conn.execute("select metrics.maintain()")
    assert [w for w in windows() if w[0] == "lat_seconds"] == [
        ("lat_seconds", window, 11, pytest.approx(0.015 + 1.25 + 9.0), 0.001, 9.0, None, True)
    ]
    assert conn.execute("select count(*) from metrics.late_five_minutes").fetchone() == (0,)


def test_five_minute_backfill_runs_in_one_hour_steps_and_queries_stay_exact(
    conn: psycopg.Connection[Any],
) -> None:
    project = uuid.uuid4()
    now = time.time()
    old, recent = (int(now) // 300 - 240) * 300 + 10, (int(now) // 300 - 24) * 300 + 10  # 20 h and 2 h ago
    ingest(conn, batch(project, [counter("jobs_total", 3, ts=old), counter("jobs_total", 4, ts=recent)]))

    def total() -> Any:
        row = conn.execute(
            "select sum(value) from metrics.query(%s, 'jobs_total', to_timestamp(%s), to_timestamp(%s),"
            " '[]', interval '5 minutes', 'sum')",
            (project, old - 10, now),
        ).fetchone()
        return row[0] if row else None

    conn.execute("select metrics.rollup_five_minutes()")
    watermark = conn.execute("select extract(epoch from metrics.five_minutes_complete_until())").fetchone()
    assert watermark is not None and float(watermark[0]) == old - 10 + 3600, "one run: one hour"
    assert total() == 7.0, "windows past the watermark come from minutes"
    for _ in range(20):
        conn.execute("select metrics.rollup_five_minutes()")
    caught_up = conn.execute(
        "select metrics.five_minutes_complete_until() = metrics.five_minute_window(now() - interval '5 minutes')"
    ).fetchone()
    assert caught_up == (True,)
    assert total() == 7.0
    assert conn.execute(
        "select count(*) from metrics.rollup_5m where project_id = %s", (project,)
    ).fetchone() == (2,)


def test_retention_per_project_and_defaults(conn: psycopg.Connection[Any]) -> None:
    keep, trim = uuid.uuid4(), uuid.uuid4()
    old = time.time() - 5 * 3600
    for project in (keep, trim):
        ingest(conn, batch(project, [counter("req_total", 1, ts=old), counter("req_total", 1)]))
    conn.execute(
        "update metrics.projects set minute_retention = '1 hour', raw_retention = '1 hour' where id = %s",
        (trim,),
    )
    # minutes stay while a late point may still reach their hour: the old one, once max_past is shorter
    conn.execute("update metrics.config set max_past = '2 hours'")
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["minutes_deleted"] == 1 and report[0]["points_deleted"] == 1
    counts = dict(
        conn.execute(
            "select project_id, count(*) from metrics.rollup_1m where project_id in (%s, %s) group by 1",
            (keep, trim),
        ).fetchall()
    )
    assert counts == {keep: 2, trim: 1}
    assert report[0]["five_minutes_deleted"] == 1, "5-minute rows live as long as the minutes"
    windows = dict(
        conn.execute(
            "select project_id, count(*) from metrics.rollup_5m where project_id in (%s, %s) group by 1",
            (keep, trim),
        ).fetchall()
    )
    assert windows == {keep: 1}, "the old window of each project was rolled up; trim's is gone again"


def test_old_partitions_and_batch_ids_are_dropped(conn: psycopg.Connection[Any]) -> None:
    conn.execute("select metrics.ensure_points_partition(current_date - 10)")
    old = conn.execute("select 'points_' || to_char(current_date - 10, 'YYYYMMDD')").fetchone()
    assert old is not None and old[0] in partitions(conn)
    project = uuid.uuid4()
    ingest(conn, batch(project, [counter("req_total", 1)], batch_id="ancient"))
    conn.execute(
        "update metrics.batches set received_at = now() - interval '3 days' where batch_id = 'ancient'"
    )
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["partitions_dropped"] == 1 and report[0]["batches_forgotten"] == 1
    assert old[0] not in partitions(conn)


def test_maintenance_schedules_itself_only_where_pg_cron_exists(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("select metrics.schedule_maintenance()").fetchone()
    assert row is not None and row[0].startswith("pg_cron not installed")


def total(conn: psycopg.Connection[Any], project: uuid.UUID) -> float | None:
    row = conn.execute(
        "select sum(t.sum) from metrics.series_totals_current t where t.project_id = %s", (project,)
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def project_and_hour(
    conn: psycopg.Connection[Any], minute_retention: str, hours_back: int
) -> tuple[uuid.UUID, float]:
    """A new project keeping minutes ``minute_retention``, and the start of the hour ``hours_back`` ago."""
    project = uuid.uuid4()
    conn.execute(
        "insert into metrics.projects (id, minute_retention) values (%s, %s)", (project, minute_retention)
    )
    hour = conn.execute(
        "select extract(epoch from date_trunc('hour', now() - make_interval(hours => %s)))", (hours_back,)
    ).fetchone()
    assert hour is not None
    return project, float(hour[0])


def test_retention_keeps_raw_points_the_pass_has_not_merged(conn: psycopg.Connection[Any]) -> None:
    """A point past its project's raw retention (max_past above it) is deleted only once the pass merged it."""
    project = uuid.uuid4()
    conn.execute("insert into metrics.projects (id, raw_retention) values (%s, '1 hour')", (project,))
    ingest(conn, batch(project, [counter("late_total", 7, ts=time.time() - 5 * 3600)]), merge=False)
    report = conn.execute("select metrics.apply_row_retention()").fetchone()
    assert report is not None and report[0]["points_deleted"] == 0
    assert total(conn, project) is None, "setup: not merged yet"
    merge_points(conn)
    assert total(conn, project) == 7
    report = conn.execute("select metrics.apply_row_retention()").fetchone()
    assert report is not None and report[0]["points_deleted"] == 1, "merged: its retention applies"
    assert total(conn, project) == 7


def test_retention_keeps_minutes_the_totals_have_not_folded(
    conn: psycopg.Connection[Any], fresh_db: TestDatabase
) -> None:
    """A minute past a short minute retention, of a closed hour out of late points' reach, stays while the fold
    skips (a merge holds its lock): deleting it before the fold took it lost it from the totals for good."""
    project, hour = project_and_hour(conn, "1 second", 2)
    with psycopg.connect(fresh_db.url) as holder:  # what an uncommitted merge does: every fold skips
        holder.execute("select pg_advisory_xact_lock_shared(hashtext('metrics.fold_totals'))")
        # the fold five minutes before that hour (a fresh database has no minute, so none is folded twice)
        conn.execute(
            "update metrics.rollup_pass_state set totals_folded_before = to_timestamp(%s) - interval '5 minutes'",
            (hour,),
        )
        ingest(conn, batch(project, [counter("recent_total", 5, ts=hour + 60)]))
        conn.execute("update metrics.config set max_past = '1 hour'")  # the hour is out of late points' reach
        report = conn.execute("select metrics.maintain()").fetchone()
        assert report is not None and report[0]["minutes_deleted"] == 0
        assert report[0]["hours_rolled_up"] >= 1, "setup: its hour is rolled up"
        assert total(conn, project) == 5
    conn.execute("select metrics.rollup_pass()")  # the lock is free: the pass's fold takes the minute
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["minutes_deleted"] == 1, "folded and rolled up: now deleted"
    assert total(conn, project) == 5, "the totals kept it"


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "waiting-for-the-pass"])
def test_retention_keeps_the_minutes_a_late_point_may_still_reach(
    conn: psycopg.Connection[Any], merged: bool
) -> None:
    """A late point makes maintenance recompute its hour from the minutes left: minutes within max_past stay
    whatever the minute retention, or the hour would become the late point alone; and so do those of a late
    point accepted while the pass stands still (its hour is marked late only once it is merged), even once
    max_past no longer reaches back to them (time passing, here shortened)."""
    project, hour = project_and_hour(conn, "1 hour", 3)
    ingest(conn, batch(project, [counter("hourly_total", 5, ts=hour + 60)]))
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["hours_rolled_up"] >= 1 and report[0]["minutes_deleted"] == 0
    late = batch(project, [counter("hourly_total", 2, ts=hour + 1800)])  # its hour rolled up
    ingest(conn, late, merge=merged)
    if not merged:
        conn.execute("update metrics.config set max_past = '1 hour'")
        report = conn.execute("select metrics.maintain()").fetchone()
        assert report is not None and report[0]["minutes_deleted"] == 0
        merge_points(conn)  # the pass runs again: the hour is marked late
    conn.execute("select metrics.maintain()")
    rolled = conn.execute(
        "select sum from metrics.rollup_1h where project_id = %s and bucket = to_timestamp(%s)",
        (project, hour),
    ).fetchone()
    assert rolled == (7,)


def test_a_partition_holding_points_not_merged_is_kept(conn: psycopg.Connection[Any]) -> None:
    """A stalled pass costs disk, not data: the daily drop keeps a partition until its points are merged."""
    conn.execute("select metrics.ensure_points_partition(current_date - 10)")
    name = conn.execute("select 'points_' || to_char(current_date - 10, 'YYYYMMDD')").fetchone()
    assert name is not None
    project = uuid.uuid4()
    ingest(conn, batch(project, [counter("stalled_total", 4)]), merge=False)
    # as if the pass had stood still since: the point ten days old, never merged
    conn.execute("update metrics.points set ts = ts - interval '10 days' where project_id = %s", (project,))
    report = conn.execute("select metrics.maintain()").fetchone()
    assert name[0] in partitions(conn)
    assert report is not None and report[0]["partitions_kept_unmerged"] == 1
    merge_points(conn)
    merged = conn.execute(
        "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
    ).fetchone()
    assert merged == (4,)
    report = conn.execute("select metrics.maintain()").fetchone()
    assert report is not None and report[0]["partitions_kept_unmerged"] == 0
    assert name[0] not in partitions(conn)
