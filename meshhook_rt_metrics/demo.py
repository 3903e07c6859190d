"""A live demo: simulated MeshHook traffic flowing through ingest, rollups and queries.

Ships one batch per second for a demo project (as a worker would) and renders the per-minute
aggregates read back through ``metrics.query`` — the same path every other reader uses.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from meshhook_rt_metrics.client.sketch import Sketch

DEMO_PROJECT = uuid.UUID("00000000-0000-4000-8000-00000000d3e0")


@dataclass
class TrafficSimulator:
    """Webhook requests, workflow step latencies and queue depth, as MeshHook would report them."""

    rng: random.Random = field(default_factory=lambda: random.Random(7))
    queue_depth: float = 5.0

    def batch(self, batch_no: int, source: str) -> dict[str, Any]:
        now = time.time()
        points: list[dict[str, Any]] = []
        for outcome, rate in (("accepted", 40), ("rejected", 3)):
            n = self.rng.randint(rate // 2, rate)
            points.append(
                self._counter(
                    "meshhook_webhook_requests_total", {"outcome": outcome, "signature": "verified"}, n, now
                )
            )
        for node_type, median in (("http_call", 0.120), ("transform", 0.004)):
            values = [self.rng.lognormvariate(0, 0.6) * median for _ in range(self.rng.randint(20, 60))]
            points.append(
                self._histogram(
                    "meshhook_workflow_step_duration_seconds", {"node_type": node_type}, values, now
                )
            )
        self.queue_depth = max(0.0, self.queue_depth + self.rng.uniform(-3, 3))
        points.append(
            {
                "name": "meshhook_queue_messages",
                "kind": "gauge",
                "labels": {"queue": "jobs", "state": "ready"},
                "ts": now,
                "count": 1,
                "sum": self.queue_depth,
                "min": self.queue_depth,
                "max": self.queue_depth,
                "last": self.queue_depth,
                "help": "Messages waiting in a queue",
            }
        )
        return {
            "project_id": str(DEMO_PROJECT),
            "source": source,
            "batch_id": f"{batch_no}",
            "points": points,
        }

    @staticmethod
    def _counter(name: str, labels: dict[str, str], n: int, ts: float) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "counter",
            "labels": labels,
            "ts": ts,
            "count": max(n, 1),
            "sum": float(n),
        }

    @staticmethod
    def _histogram(name: str, labels: dict[str, str], values: list[float], ts: float) -> dict[str, Any]:
        sketch = Sketch()
        for value in values:
            sketch.add(value)
        return {
            "name": name,
            "kind": "histogram",
            "labels": labels,
            "ts": ts,
            "count": len(values),
            "sum": sum(values),
            "min": min(values),
            "max": max(values),
            "sketch": sketch.to_wire(),
            "unit": "seconds",
        }


QUERIES: tuple[tuple[str, str, str], ...] = (
    ("meshhook_webhook_requests_total", "rate", "req/s"),
    ("meshhook_workflow_step_duration_seconds", "p50", "s"),
    ("meshhook_workflow_step_duration_seconds", "p99", "s"),
    ("meshhook_queue_messages", "last", "msgs"),
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


def batches(source: str) -> Iterator[dict[str, Any]]:
    simulator = TrafficSimulator()
    batch_no = 0
    while True:
        batch_no += 1
        yield simulator.batch(batch_no, source)


def run(database_url: str, seconds: float | None = None, console: Console | None = None) -> int:
    """Ingest a batch a second and refresh the table; returns the number of batches sent."""
    console = console or Console()
    source = f"demo-{uuid.uuid4().hex[:8]}"
    sent = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    with (
        psycopg.connect(database_url, autocommit=True) as conn,
        Live(console=console, refresh_per_second=2) as live,
    ):
        for batch in batches(source):
            conn.execute("select metrics.ingest(%s::jsonb)", (json.dumps(batch),))
            sent += 1
            live.update(_render(conn))
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    return sent
