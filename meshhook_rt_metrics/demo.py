"""A live demo: a simulated MeshHook worker instrumented with ``MetricsClient``.

The worker records as a real one would (two lines of setup, then ``inc``/``observe``/``set``); the client
aggregates in process and ships a batch a second through ``metrics.ingest``. The table shows the
per-minute aggregates read back through ``metrics.query`` — the same path every other reader uses.

A scripted incident (a burst of rejected webhooks for a minute, every few minutes) fires the demo's alert
rule; the alert worker notifies the local demo receiver, and the table shows the alert's state.
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
INCIDENT_EVERY = 240  # seconds between the starts of two incidents
INCIDENT_LENGTH = 60  # seconds of rejected webhooks at INCIDENT_RATE a second
INCIDENT_RATE = 40
RULE_NAME = "Webhook rejections spike"


class SimulatedWorker:
    """Webhook requests, workflow runs and step latencies, outgoing HTTP calls and queue depth, as MeshHook
    records them (every panel of the dashboard's default spec has data)."""

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
        self.runs = client.counter(
            "meshhook_workflow_runs_completed_total", "Workflow runs completed", labels=("status",)
        )
        self.http_calls = client.histogram(
            "meshhook_http_client_request_duration_seconds",
            "Outgoing HTTP request duration",
            labels=("node_type", "method", "status_class"),
            unit="seconds",
        )
        self.queue = client.gauge(
            "meshhook_queue_messages", "Messages waiting in a queue", labels=("queue", "state")
        )

    def tick(self, incident: bool = False) -> None:
        """About one second of traffic; during an incident, many webhooks are rejected."""
        for outcome, rate in (("accepted", 40), ("rejected", INCIDENT_RATE if incident else 3)):
            self.requests.inc(self.rng.randint(rate // 2, rate), outcome=outcome, signature="verified")
        for node_type, median in (("http_call", 0.120), ("transform", 0.004)):
            for _ in range(self.rng.randint(20, 60)):
                self.steps.observe(self.rng.lognormvariate(0, 0.6) * median, node_type=node_type)
        for status, rate in (("succeeded", 12), ("failed", 1)):
            self.runs.inc(self.rng.randint(0, rate), status=status)
        for _ in range(self.rng.randint(10, 30)):
            status_class = "5xx" if self.rng.random() < 0.03 else "2xx"
            duration = self.rng.lognormvariate(0, 0.5) * 0.090
            self.http_calls.observe(duration, node_type="http_call", method="POST", status_class=status_class)
        self.queue_depth = max(0.0, self.queue_depth + self.rng.uniform(-3, 3))
        self.queue.set(self.queue_depth, queue="jobs", state="ready")


QUERIES: tuple[tuple[str, str, str], ...] = (
    ("meshhook_webhook_requests_total", "rate", "req/s"),
    ("meshhook_workflow_step_duration_seconds", "p50", "s"),
    ("meshhook_workflow_step_duration_seconds", "p99", "s"),
    ("meshhook_queue_messages", "last", "msgs"),
    ("process_resident_memory_bytes", "last", "bytes"),
)


def _render(conn: psycopg.Connection[Any], caption: str | None = None) -> Table:
    table = Table(
        title=f"MeshHook demo project {DEMO_PROJECT} — last minute (metrics.query)", caption=caption
    )
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


def ensure_alerting(conn: psycopg.Connection[Any], receiver_url: str, secret: str) -> None:
    """The demo's receiver and rule (kept if they exist): more than 400 rejected webhooks within a minute."""
    conn.execute("insert into metrics.projects (id) values (%s) on conflict do nothing", (DEMO_PROJECT,))
    conn.execute(
        "insert into metrics.alert_receivers (project_id, name, kind, target, secret)"
        " values (%s, 'demo receiver', 'webhook', %s, %s)"
        " on conflict (project_id, name) do update set target = excluded.target, secret = excluded.secret",
        (DEMO_PROJECT, receiver_url, secret),
    )
    conn.execute(
        """insert into metrics.alert_rules (project_id, name, metric, matchers, agg, group_by, window_length, op,
             threshold, resolve_threshold, severity, annotations)
           values (%s, %s, 'meshhook_webhook_requests_total', '[{"label": "outcome", "op": "=", "value": "rejected"}]',
             'sum', '{}', '1 minute', '>', 400, 300, 'critical',
             '{"summary": "{{ value }} webhooks rejected within a minute (threshold {{ threshold }})"}')
           on conflict (project_id, name) do nothing""",
        (DEMO_PROJECT, RULE_NAME),
    )
    conn.execute(
        """insert into metrics.alert_rule_receivers (project_id, rule_id, receiver_id)
           select r.project_id, r.id, rc.id from metrics.alert_rules r
           join metrics.alert_receivers rc on rc.project_id = r.project_id and rc.name = 'demo receiver'
           where r.project_id = %s and r.name = %s
           on conflict do nothing""",
        (DEMO_PROJECT, RULE_NAME),
    )


def _alert_caption(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        """select coalesce((select i.state from metrics.alert_instances i join metrics.alert_rules r on r.id = i.rule_id
                            where r.project_id = %s and r.name = %s limit 1), 'inactive'),
                  (select m.status || ' ' || to_char(m.created_at, 'HH24:MI:SS') || ' (' || (m.body ->> 'status') || ')'
                   from metrics.alert_messages m where m.project_id = %s order by m.id desc limit 1)""",
        (DEMO_PROJECT, RULE_NAME, DEMO_PROJECT),
    ).fetchone()
    state, last = row if row else ("inactive", None)
    return f"alert '{RULE_NAME}': {state}; last notification: {last or 'none yet'}"


def run(
    database_url: str,
    seconds: float | None = None,
    console: Console | None = None,
    receiver: tuple[str, str] | None = None,
) -> int:
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
        if receiver is not None:
            ensure_alerting(conn, *receiver)
        started = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            # the first incident a minute after the start, then one every INCIDENT_EVERY seconds
            phase = (time.monotonic() - started + INCIDENT_EVERY - INCIDENT_LENGTH - 60) % INCIDENT_EVERY
            worker.tick(incident=receiver is not None and phase >= INCIDENT_EVERY - INCIDENT_LENGTH)
            ticks += 1
            time.sleep(1.0)
            live.update(_render(conn, _alert_caption(conn) if receiver is not None else None))
        client.flush()
        live.update(_render(conn, _alert_caption(conn) if receiver is not None else None))
    return ticks
