"""What the browser tests (dashboard/e2e/*.mjs) cannot do from Node: a small CLI they call with child_process.

Every command takes the stack from ``MESHHOOK_METRICS_STATE_DIR`` (set by tests/dashboard/test_e2e.py) and
prints one JSON line when done.

* ``record``  — one value through :class:`MetricsClient` (gauge ``set`` or counter ``inc``) via the stack's
  gateway (SupabaseSink, service key), flushed before the command returns.
* ``feed``    — a long-running MeshHook-like worker: every ``--interval`` seconds it sets the gauge
  ``meshhook_queue_messages{queue=<--queue>,state=ready}`` to the number of ticks so far and increments
  webhook and workflow counters (flush interval 1 s, spooling while the gateway is down); prints one JSON
  line per tick; SIGTERM closes the client (ships or spools what is left).
* ``restart-gateway`` — stops the stack's gateway service, keeps it down ``--down`` seconds, starts it again
  and waits until it answers ``/health``.
* ``rule``    — creates an alert rule through the HTTP service as the project's admin (a token minted with
  the stack's secret), prints the stored rule.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from meshhook_rt_metrics.client import MetricsClient
from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir
from meshhook_rt_metrics.localstack.stack import LocalStack


def _stack() -> LocalStack:
    state_dir = os.environ.get("MESHHOOK_METRICS_STATE_DIR")
    if not state_dir:
        sys.exit("MESHHOOK_METRICS_STATE_DIR is not set")
    return LocalStack(Path(state_dir))


def _labels(text: str) -> dict[str, str]:
    pairs = [part.split("=", 1) for part in text.split(",") if part]
    return {k.strip(): v.strip() for k, v in pairs}


def _client(stack: LocalStack, project: str, **options: Any) -> MetricsClient:
    env = stack.gateway_env()
    spool = Path(os.environ.get("E2E_SPOOL_DIR") or Path(tempfile.gettempdir()) / "meshhook-e2e-spool")
    return MetricsClient(
        project_id=project,
        supabase_url=env["SUPABASE_URL"],
        supabase_key=env["SUPABASE_SERVICE_ROLE_KEY"],
        flush_interval=1.0,
        system_metrics=False,
        spool_dir=spool,
        backoff_initial=0.25,
        backoff_max=1.0,
        send_timeout=2.0,
        **options,
    )


def record(args: argparse.Namespace) -> dict[str, Any]:
    stack = _stack()
    labels = _labels(args.labels)
    client = _client(stack, args.project)
    try:
        if args.kind == "gauge":
            client.gauge(args.metric, labels=tuple(labels)).labels(**labels).set(args.value)
        else:
            client.counter(args.metric, labels=tuple(labels)).labels(**labels).inc(args.value)
        shipped = client.flush()
    finally:
        client.close(timeout=10)
    return {"ok": shipped, "metric": args.metric, "labels": labels, "value": args.value}


def feed(args: argparse.Namespace) -> dict[str, Any]:
    stack = _stack()
    client = _client(stack, args.project)
    queue = client.gauge("meshhook_queue_messages", labels=("queue", "state")).labels(
        queue=args.queue, state="ready"
    )
    webhooks = client.counter("meshhook_webhook_requests_total", labels=("outcome", "signature"))
    runs = client.counter("meshhook_workflow_runs_completed_total", labels=("status",))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ticks = 0
    deadline = time.monotonic() + args.seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            ticks += 1
            queue.set(ticks)  # the gauge's value is the tick number: each minute's last value is known
            webhooks.labels(outcome="accepted", signature="verified").inc(20 + ticks % 7)
            if ticks % 3 == 0:
                webhooks.labels(outcome="rejected", signature="invalid").inc(1 + ticks % 2)
            runs.labels(status="succeeded").inc(4 + ticks % 3)
            if ticks % 5 == 0:
                runs.labels(status="failed").inc(1)
            print(json.dumps({"tick": ticks, "at": time.time()}), flush=True)
            stop.wait(args.interval)
    finally:
        client.close(timeout=10)
    return {"ok": True, "ticks": ticks}


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} not healthy within {timeout}s")


def restart_gateway(args: argparse.Namespace) -> dict[str, Any]:
    stack = _stack()
    pid = stack.service_pid("gateway")
    if pid is None:
        raise SystemExit("the stack's gateway is not running")
    stopped_at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while stack.service_pid("gateway") and time.monotonic() < deadline:
        time.sleep(0.05)
    if stack.service_pid("gateway"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    time.sleep(args.down)
    stack.start_services()  # starts only what is not running: the gateway
    _wait_healthy(stack.gateway_env()["SUPABASE_URL"] + "/health", 60)
    return {"ok": True, "stopped_at": stopped_at, "started_at": time.time(), "old_pid": pid}


def rule(args: argparse.Namespace) -> dict[str, Any]:
    stack = _stack()
    body = json.loads(args.body)
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("select id from auth.users where email = %s", (args.email,)).fetchone()
    if row is None:
        raise SystemExit(f"no user {args.email}")
    token = keys_for_state_dir(stack.state_dir).user_token(row[0], expires_in=600, email=args.email)
    api = stack.env()["METRICS_API_URL"]
    answer = httpx.post(
        f"{api}/api/metrics/alerts",
        json={"project_id": args.project, **body},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    if answer.status_code >= 300:
        raise SystemExit(f"rule not created: {answer.status_code} {answer.text}")
    return {"ok": True, "rule": answer.json()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="e2e_control", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("record", help="one value through MetricsClient, flushed")
    p.add_argument("--project", required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--kind", choices=("gauge", "counter"), default="gauge")
    p.add_argument("--labels", default="")
    p.add_argument("--value", type=float, required=True)
    p.set_defaults(run=record)

    p = commands.add_parser("feed", help="a worker ticking every --interval seconds until SIGTERM")
    p.add_argument("--project", required=True)
    p.add_argument("--queue", required=True, help="queue label of the meshhook_queue_messages gauge")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=600.0)
    p.set_defaults(run=feed)

    p = commands.add_parser("restart-gateway", help="stop the gateway, wait --down seconds, start it")
    p.add_argument("--down", type=float, default=3.0)
    p.set_defaults(run=restart_gateway)

    p = commands.add_parser("rule", help="create an alert rule as the given user")
    p.add_argument("--project", required=True)
    p.add_argument("--email", default="admin@demo.meshhook.local")
    p.add_argument("--body", required=True, help="JSON of the rule's fields (without project_id)")
    p.set_defaults(run=rule)

    args = parser.parse_args(argv)
    print(json.dumps(args.run(args)), flush=True)


if __name__ == "__main__":
    main()
