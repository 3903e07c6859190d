"""The loop that runs the SQL rollup pass and maintenance functions where pg_cron cannot.

Debian's pg_cron 1.4 has no second-level schedules, so the rollup pass runs from here every ``publish_every``
seconds, and again at once while it reports a backlog; ``metrics.maintain()`` runs every ``maintain_every``.
The pass runs in lanes (``metrics.rollup_lanes``, migration 20261207000300): each lane merges its share of the
series on its own connection and thread (``metrics.rollup_pass(lane)``), so a backlog is merged on as many
backends at once; the loop follows the number of lanes as ``metrics.set_pass_lanes`` changes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def maintain_once(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """One full maintenance pass; returns the SQL function's report."""
    row = conn.execute("select metrics.maintain()").fetchone()
    if conn.execute("select to_regprocedure('localstack.ensure_realtime_partitions(int,int)')").fetchone()[0]:  # type: ignore[index]
        conn.execute("select localstack.ensure_realtime_partitions()")
    return dict(row[0]) if row and row[0] else {}


def maintain_when_free(
    conn: psycopg.Connection[Any], wait: float, on_wait: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``maintain_once``, waiting up to ``wait`` seconds while another maintenance run holds the lock (pg_cron's
    job, a ``maintain --loop``): a run asked for by hand does its work instead of reporting ``skipped``. The
    last report, still ``skipped`` if the other run outlasted the wait."""
    deadline = time.monotonic() + wait
    while True:
        report = maintain_once(conn)
        if "skipped" not in report or time.monotonic() >= deadline:
            return report
        if on_wait is not None:
            on_wait(str(report["skipped"]))
            on_wait = None  # said once
        time.sleep(0.2)


def pass_once(conn: psycopg.Connection[Any], lane: int | None = None) -> dict[str, Any]:
    """One rollup pass: merge the committed points (at most ``metrics.config.pass_max_points`` a lane) into the
    rollups, then publish every project's pending live updates that its rate limit allows; returns the pass's
    report (``messages`` sent, ``behind`` when a backlog beyond the bound is left for the next pass, ``lanes``).
    Without a lane, every lane in turn (a one-shot pass); with one, that lane's merge only (the loop then runs
    ``metrics.fold_and_publish()`` after lane 0's)."""
    row = conn.execute("select metrics.rollup_pass(%s)", (lane,)).fetchone()
    return dict(row[0]) if row and row[0] else {}


def publish_once(conn: psycopg.Connection[Any]) -> int:
    """Rollup passes (each committed on its own in autocommit mode) until the watermark reaches where it could
    have gone when this started (the oldest transaction then running: every point then mergeable is merged),
    however fast others keep writing; returns the messages sent."""
    row = conn.execute(
        "select pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text"
    ).fetchone()
    target = row[0] if row else None
    sent = 0
    while True:
        report = pass_once(conn)
        sent += int(report.get("messages") or 0)
        if not report.get("behind") or _merged_up_to(conn, target):
            return sent


def _merged_up_to(conn: psycopg.Connection[Any], target: str | None) -> bool:
    row = conn.execute("select metrics.rollup_watermark() >= %s::xid8", (target,)).fetchone()
    return bool(row and row[0])


BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


def _backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, failures - 1)))


def run_loop(
    db_url: str,
    publish_every: float = 1.0,
    maintain_every: float = 60.0,
    stop: threading.Event | None = None,
) -> None:
    """Run until ``stop`` is set. Nothing ends the loop but ``stop``: a lost connection is re-established with
    backoff, and any other error of a pass is logged with its traceback and that task (maintenance or a lane's
    passes, independently) is retried with backoff (0.5 s doubling to 30 s) while the others go on. Each lane
    of the pass runs in a thread and on a connection of its own (``_Lanes``); this thread runs maintenance and
    follows the number of lanes."""
    stop = stop or threading.Event()
    lanes = _Lanes(db_url, publish_every)
    tasks: list[_Task] = [
        _Task("lanes", publish_every, lanes.follow),
        _Task("maintenance", maintain_every, lambda conn: log.info("maintenance: %s", maintain_once(conn))),
    ]
    try:
        _run_tasks(db_url, tasks, stop, "meshhook-metrics maintain")
    finally:
        lanes.stop_all()


def _run_tasks(db_url: str, tasks: list[_Task], stop: threading.Event, application: str) -> None:
    """Run ``tasks`` on one connection until ``stop``, reconnecting with backoff whenever it is lost."""
    connect_failures = 0
    while not stop.is_set():
        try:
            with psycopg.connect(db_url, autocommit=True, application_name=application) as conn:
                if connect_failures:
                    log.info("%s: database connection re-established", application)
                connect_failures = 0
                while not stop.is_set():
                    for task in tasks:
                        task.run_if_due(conn)
                    stop.wait(min(max(0.0, t.next_at - time.monotonic()) for t in tasks))
        except Exception as exc:
            connect_failures += 1
            delay = _backoff(connect_failures)
            if isinstance(exc, psycopg.OperationalError):
                log.warning(
                    "%s: database unavailable (%s); retrying in %.1fs",
                    application,
                    exc.__class__.__name__,
                    delay,
                )
            else:
                log.exception("%s failed; reconnecting in %.1fs", application, delay)
            stop.wait(delay)


class _Lanes:
    """The pass's lanes, a thread and connection each: started for every lane in ``metrics.rollup_lanes`` that
    has none running, ended when a lane's own pass reports it gone (``metrics.set_pass_lanes``)."""

    def __init__(self, db_url: str, every: float) -> None:
        self.db_url = db_url
        self.every = every
        self.running: dict[int, tuple[threading.Thread, threading.Event]] = {}

    def follow(self, conn: psycopg.Connection[Any]) -> None:
        """A thread for every lane that has none running (a task of the loop's own connection)."""
        row = conn.execute("select count(*) from metrics.rollup_lanes").fetchone()
        for lane in range(int(row[0]) if row else 1):
            running = self.running.get(lane)
            if running and running[0].is_alive() and not running[1].is_set():
                continue
            gone = threading.Event()
            tasks = [_Task(f"publish lane {lane}", self.every, self._pass(lane, gone), aligned=True)]
            thread = threading.Thread(
                target=_run_tasks,
                args=(self.db_url, tasks, gone, f"meshhook-metrics maintain lane {lane}"),
                name=f"rollup-pass-lane-{lane}",
                daemon=True,
            )
            self.running[lane] = (thread, gone)
            thread.start()
            log.info("rollup pass lane %d started", lane)

    @staticmethod
    def _pass(lane: int, gone: threading.Event) -> Callable[[psycopg.Connection[Any]], bool]:
        """A lane's pass for ``_Task`` (lane 0's followed by the fold and the live messages, in a transaction of
        their own): True (run again at once) while a backlog is left."""

        def run(conn: psycopg.Connection[Any]) -> bool:
            report = pass_once(conn, lane)
            if lane == 0:  # waiting for the other lanes' passes of the tick, unless a backlog is left
                conn.execute("select metrics.fold_and_publish(%s)", (not report.get("behind"),))
            lanes = report.get("lanes")
            if isinstance(lanes, int) and lane >= lanes:
                log.info("rollup pass lane %d ended: the pass now runs in %d lane(s)", lane, lanes)
                gone.set()
            return bool(report.get("behind"))

        return run

    def stop_all(self) -> None:
        """Every lane's thread stopped (each ends its pass first) and joined."""
        for _, gone in self.running.values():
            gone.set()
        for thread, _ in self.running.values():
            thread.join(30)


class _Task:
    """One periodic job of the loop with its own schedule and failure backoff; a run that returns True is due
    again at once (the pass, while it reports a backlog). An ``aligned`` task runs on the ticks of its interval
    since the epoch, as every lane's pass does, so that lane 0's live messages carry the other lanes' minutes."""

    def __init__(
        self,
        name: str,
        every: float,
        run: Callable[[psycopg.Connection[Any]], object],
        aligned: bool = False,
    ) -> None:
        self.name = name
        self.every = every
        self.run = run
        self.aligned = aligned
        self.next_at = 0.0
        self.failures = 0

    def run_if_due(self, conn: psycopg.Connection[Any]) -> None:
        if time.monotonic() < self.next_at:
            return
        try:
            again = self.run(conn)
        except psycopg.OperationalError:
            raise  # the connection is gone: the loop reconnects
        except Exception:
            if conn.broken or conn.closed:
                raise
            self.failures += 1
            delay = max(self.every, _backoff(self.failures))
            log.exception("%s failed (%d in a row); retrying in %.1fs", self.name, self.failures, delay)
            self.next_at = time.monotonic() + delay
        else:
            if self.failures:
                log.info("%s recovered after %d failure(s)", self.name, self.failures)
            self.failures = 0
            self.next_at = time.monotonic() + (0.0 if again is True else self._wait())

    def _wait(self) -> float:
        return self.every - time.time() % self.every if self.aligned else self.every
