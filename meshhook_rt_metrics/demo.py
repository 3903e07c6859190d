"""A live demo: a simulated MeshHook worker instrumented with ``MetricsClient``.

The worker records as a real one would (two lines of setup, then ``inc``/``observe``/``set``); the client
aggregates in process and ships a batch a second through ``metrics.ingest``. The table shows the
per-minute aggregates read back through ``metrics.query`` — the same path every other reader uses.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshhook_rt_metrics.client import MetricsClient

DEMO_PROJECT = uuid.UUID("00000000-0000-4000-8000-00000000d3e0")


class SimulatedWorker:
    """Webhook requests, workflow step latencies and queue depth, as MeshHook records them."""

    def __init__(self, client: MetricsClient, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.queue_depth = 5.0
        self.requests = client.counter(
            "meshhook_webhook_requests_total", "Webhook requests", labels=("outcome", "signature")
        )
        self.steps = client.histogram(
            "meshhook_workflow_step_duration_seconds",
            "Workflow step duration",
            labels=("node_type",),
            unit="seconds",
        )
        self.queue = client.gauge(
            "meshhook_queue_messages", "Messages waiting in a queue", labels=("queue", "state")
        )

    def tick(self) -> None:
        """About one second of traffic."""
        for outcome, rate in (("accepted", 40), ("rejected", 3)):
            self.requests.inc(self.rng.randint(rate // 2, rate), outcome=outcome, signature="verified")
        for node_type, median in (("http_call", 0.120), ("transform", 0.004)):
            for _ in range(self.rng.randint(20, 60)):
                self.steps.observe(self.rng.lognormvariate(0, 0.6) * median, node_type=node_type)
        self.queue_depth = max(0.0, self.queue_depth + self.rng.uniform(-3, 3))
        self.queue.set(self.queue_depth, queue="jobs", state="ready")


QUERIES: tuple[tuple[str, str, str], ...] = (
    ("meshhook_webhook_requests_total", "rate", "req/s"),
    ("meshhook_workflow_step_duration_seconds", "p50", "s"),
    ("meshhook_workflow_step_duration_seconds", "p99", "s"),
    ("meshhook_queue_messages", "last", "msgs"),
    ("process_resident_memory_bytes", "last", "bytes"),
)


def _render(conn: psycopg.Connection[Any]) -> Table:
    table = Table(title=f"MeshHook demo project {DEMO_PROJECT} — last minute (metrics.query)")
    for column in ("metric", "labels", "aggregation", "value"):
        table.add_column(column)
    for metric, agg, unit in QUERIES:
        rows = conn.execute(
            "select labels, value from metrics.query(%s, %s, now() - interval '2 minutes', now() + interval '1 minute',"
            " p_step => interval '1 minute', p_agg => %s) order by ts desc",
            (DEMO_PROJECT, metric, agg),
        ).fetchall()
        seen: set[str] = set()
        for labels, value in rows:
            key = json.dumps(labels, sort_keys=True)
            if key in seen or value is None:
                continue
            seen.add(key)
            table.add_row(
                metric, ", ".join(f"{k}={v}" for k, v in sorted(labels.items())), agg, f"{value:,.4g} {unit}"
            )
    return table


def run(database_url: str, seconds: float | None = None, console: Console | None = None) -> int:
    """Simulate traffic and refresh the table every second; returns the number of seconds simulated."""
    console = console or Console()
    ticks = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    with (
        MetricsClient(project_id=str(DEMO_PROJECT), database_url=database_url) as client,
        psycopg.connect(database_url, autocommit=True) as conn,
        Live(console=console, refresh_per_second=2) as live,
    ):
        worker = SimulatedWorker(client)
        while deadline is None or time.monotonic() < deadline:
            worker.tick()
            ticks += 1
            time.sleep(1.0)
            live.update(_render(conn))
        client.flush()
        live.update(_render(conn))
    return ticks
