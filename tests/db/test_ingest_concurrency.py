"""Concurrent ingest: parallel batches, racing resends and racing new series keep exact totals and the quota."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg

from tests.support import TestDatabase, batch, counter, histogram, ingest


def _run_in_threads(url: str, jobs: list[list[dict[str, Any]]]) -> list[str]:
    """Each job list is sent by its own connection, all starting together; returns every status."""
    statuses: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def worker(payloads: list[dict[str, Any]]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                for payload in payloads:
                    status = ingest(conn, payload)["status"]
                    with lock:
                        statuses.append(status)
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return statuses


def test_racing_resends_are_applied_once_and_totals_stay_exact(db: TestDatabase) -> None:
    project = uuid.uuid4()
    rng = random.Random(5)
    batches = [
        batch(
            project,
            [counter("jobs_total", float(i % 7 + 1), {"queue": f"q{i % 3}"})],
            source=f"w{i % 4}",
            batch_id=str(i),
        )
        for i in range(60)
    ]
    # four connections each send every batch, in their own order: each batch races three resends of itself
    jobs = [rng.sample(batches, k=len(batches)) for _ in range(4)]
    statuses = Counter(_run_in_threads(db.url, jobs))
    assert statuses == {"accepted": 60, "duplicate": 180}
    with psycopg.connect(db.url) as conn:
        total = conn.execute(
            "select sum(sum), sum(count) from metrics.rollup_1m where project_id = %s", (project,)
        ).fetchone()
        points = conn.execute(
            "select count(*) from metrics.points where project_id = %s", (project,)
        ).fetchone()
    assert total == (float(sum(i % 7 + 1 for i in range(60))), 60)
    assert points == (60,)


def test_racing_new_series_respect_the_quota_and_lose_nothing(db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id, series_quota) values (%s, 25)", (project,))
    # four connections each create 20 distinct series at once: 80 wanted, 25 allowed
    jobs = [
        [
            batch(
                project,
                [counter("hits_total", 1, {"path": f"/w{w}/p{i}"}) for i in range(20)],
                source=f"w{w}",
                batch_id="1",
            )
        ]
        for w in range(4)
    ]
    assert _run_in_threads(db.url, jobs) == ["accepted"] * 4
    with psycopg.connect(db.url) as conn:
        regular = conn.execute(
            "select count(*) from metrics.series where project_id = %s and not labels ? '__overflow__'",
            (project,),
        ).fetchone()
        overflow = conn.execute(
            "select f.overflow_points, (select count(*) from metrics.series s where s.project_id = f.project_id"
            " and s.labels ? '__overflow__') from metrics.families f where f.project_id = %s",
            (project,),
        ).fetchone()
        total = conn.execute(
            "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
        ).fetchone()
    assert regular == (25,)
    assert overflow == (55, 1), "one overflow series holds the 55 points over the quota"
    assert total == (80.0,), "nothing is dropped"


def test_racing_first_batches_cannot_give_a_metric_two_kinds(db: TestDatabase) -> None:
    project = uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id) values (%s)", (project,))
    counter_batch = batch(project, [counter("mixed", 1, {"a": "1"})], source="c", batch_id="1")
    gauge_batch = batch(
        project,
        [{**counter("mixed", 1, {"a": "2"}), "kind": "gauge", "min": 1, "max": 1, "last": 1}],
        source="g",
        batch_id="1",
    )
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def send(payload: dict[str, Any]) -> None:
        with psycopg.connect(db.url, autocommit=True) as conn:
            start.wait()
            try:
                outcomes.append(ingest(conn, payload)["status"])
            except psycopg.errors.InvalidParameterValue as exc:
                outcomes.append(str(exc.diag.message_primary))

    threads = [threading.Thread(target=send, args=(p,)) for p in (counter_batch, gauge_batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes)[0] == "accepted"
    assert "points[0].kind: metric mixed is a" in sorted(outcomes)[1]
    with psycopg.connect(db.url) as conn:
        kinds = conn.execute("select kind from metrics.families where project_id = %s", (project,)).fetchall()
    assert len(kinds) == 1


def test_overlapping_batches_in_any_order_neither_deadlock_nor_lose_anything(db: TestDatabase) -> None:
    """Four connections send batches that touch the same series and minutes, points shuffled: the
    trigger locks rollup and totals rows in key order, so no batch fails, and minutes, totals and raw
    points agree to the event and to the sketch bucket."""
    project = uuid.uuid4()
    rng = random.Random(11)
    minute_ago = time.time() - 60
    jobs: list[list[dict[str, Any]]] = []
    for worker in range(4):
        payloads = []
        for n in range(6):
            points = [
                point
                for s in range(12)
                for point in (
                    counter("jobs_total", float(s + 1), {"queue": f"q{s}"}, ts=minute_ago + n),
                    histogram(
                        "step_seconds",
                        [0.01 * (s + 1), 0.5, 2.0 + n],
                        {"node": f"n{s}"},
                        ts=minute_ago + 30 * (n % 2),
                    ),
                )
            ]
            rng.shuffle(points)
            payloads.append(batch(project, points, source=f"w{worker}", batch_id=str(n)))
        jobs.append(payloads)
    assert _run_in_threads(db.url, jobs) == ["accepted"] * 24
    with psycopg.connect(db.url) as conn:
        mismatched = conn.execute(
            "select s.name, s.labels from metrics.series s"
            " join metrics.series_totals_current t on t.series_id = s.id"
            " cross join lateral (select sum(r.count) as count, sum(r.sum) as sum, metrics.sketch_union(r.sketch) as sketch"
            "   from metrics.rollup_1m r where r.series_id = s.id) m"
            " cross join lateral (select sum(p.count) as count, sum(p.sum) as sum, metrics.sketch_union(p.sketch) as sketch"
            "   from metrics.points p where p.series_id = s.id) p"
            " where s.project_id = %s and not (t.count = m.count and m.count = p.count"
            "   and abs(t.sum - m.sum) < 1e-9 and abs(m.sum - p.sum) < 1e-9"
            "   and metrics.series_total_sketch(s.id) is not distinct from m.sketch"
            "   and m.sketch is not distinct from p.sketch)",
            (project,),
        ).fetchall()
        events = conn.execute(
            "select sum(count) from metrics.series_totals_current where project_id = %s", (project,)
        ).fetchone()
    assert mismatched == []
    assert events == (4 * 6 * 12 * (1 + 3),)


def test_maintenance_rollups_and_late_ingests_take_locks_in_one_order(db: TestDatabase) -> None:
    """maintain(), the 5-minute rollup called alone and ingests of points older than the current hour (both
    rollup locks) run at once for a while: none of them deadlocks another."""
    project = uuid.uuid4()
    stop = threading.Event()
    errors: list[BaseException] = []
    hour_ago = (int(time.time()) // 3600 - 1) * 3600

    def repeat(statement: str) -> None:
        try:
            with psycopg.connect(db.url, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute(statement)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def ingest_late(worker: int) -> None:
        try:
            with psycopg.connect(db.url, autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    points = [counter("late_total", 1, {"w": str(worker)}, ts=hour_ago + n % 3000)]
                    ingest(conn, batch(project, points, source=f"w{worker}", batch_id=str(n)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=repeat, args=("select metrics.maintain()",)),
        threading.Thread(target=repeat, args=("select metrics.rollup_five_minutes()",)),
        threading.Thread(target=repeat, args=("select metrics.rollup_hours()",)),
        *(threading.Thread(target=ingest_late, args=(w,)) for w in range(3)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
