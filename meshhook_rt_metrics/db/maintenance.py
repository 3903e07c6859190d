"""The loop that runs the SQL maintenance and publish functions where pg_cron cannot.

Debian's pg_cron 1.4 has no second-level schedules, so live publishing of trailing updates is swept
from here every ``publish_every`` seconds; ``metrics.maintain()`` runs every ``maintain_every``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def maintain_once(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """One full maintenance pass; returns the SQL function's report."""
    row = conn.execute("select metrics.maintain()").fetchone()
    if conn.execute("select to_regprocedure('localstack.ensure_realtime_partitions(int,int)')").fetchone()[0]:  # type: ignore[index]
        conn.execute("select localstack.ensure_realtime_partitions()")
    return dict(row[0]) if row and row[0] else {}


def publish_once(conn: psycopg.Connection[Any]) -> int:
    """Publish every project's pending live updates that its rate limit allows; returns messages sent."""
    row = conn.execute("select metrics.publish_pending()").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run_loop(
    db_url: str,
    publish_every: float = 0.5,
    maintain_every: float = 60.0,
    stop: threading.Event | None = None,
) -> None:
    """Run until ``stop`` is set, reconnecting with backoff when the database goes away."""
    stop = stop or threading.Event()
    backoff = 0.5
    next_maintain = 0.0
    while not stop.is_set():
        try:
            with psycopg.connect(
                db_url, autocommit=True, application_name="meshhook-metrics maintain"
            ) as conn:
                backoff = 0.5
                while not stop.is_set():
                    if time.monotonic() >= next_maintain:
                        report = maintain_once(conn)
                        log.info("maintenance: %s", report)
                        next_maintain = time.monotonic() + maintain_every
                    publish_once(conn)
                    stop.wait(publish_every)
        except psycopg.OperationalError as exc:
            log.warning("database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
