"""Realtime fan-out through the local gateway: Broadcast from Database to many private subscribers.

200 WebSocket subscribers (protocol vsn 1.0.0, private channels authorised by RLS) over 50 projects, 4 per
project, each a member of its project only. Every project receives one ``realtime.send`` per second on
``metrics:<project_id>`` for 60 s, the sends spread evenly over each second. Measured:

- delivery latency (commit-side send time → frame received, same host clock): p50 / p99 / max;
- messages lost (expected deliveries never received) and cross-project deliveries (must be 0);
- the gateway process's CPU (% of one core, averaged over the publish phase) and peak RSS.

Goals (issue 4): p99 <= 200 ms on loopback, 0 lost, 0 cross-project.

    .venv/bin/python -m benchmarks.realtime_fanout            # throwaway PostgreSQL + gateway
    .venv/bin/python -m benchmarks.realtime_fanout --duration 10 --subscribers 40 --projects 10

A PostgreSQL cluster with the server's default durable settings is created in a temporary directory,
bootstrapped and migrated, and destroyed at the end. JSON goes to benchmarks/results/realtime_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

import psutil
import psycopg
import websockets

from benchmarks import _report
from benchmarks._gateway import local_gateway
from benchmarks._signals import stop_on_sigterm

GOAL_P99_MS = 200.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Subscriber:
    def __init__(self, project: uuid.UUID, token: str) -> None:
        self.project = project
        self.token = token
        self.latencies: list[float] = []
        self.seen: set[tuple[str, int]] = set()
        self.cross_project = 0
        self.joined = asyncio.Event()
        self.error: str | None = None

    async def run(self, ws_url: str, anon_key: str, stop: asyncio.Event) -> None:
        async with websockets.connect(f"{ws_url}?apikey={anon_key}&vsn=1.0.0", max_size=None) as ws:
            await ws.send(json.dumps({
                "topic": f"realtime:metrics:{self.project}", "event": "phx_join", "ref": "1", "join_ref": "1",
                "payload": {"config": {"private": True, "broadcast": {"self": False}}, "access_token": self.token},
            }))  # fmt: skip
            heartbeat = asyncio.create_task(self._heartbeat(ws))
            try:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    received = time.time()
                    frame = json.loads(raw)
                    if frame["event"] == "phx_reply" and frame["ref"] == "1":
                        if frame["payload"]["status"] != "ok":
                            self.error = json.dumps(frame["payload"])
                        self.joined.set()
                    elif frame["event"] == "broadcast":
                        payload = frame["payload"]["payload"]
                        if payload["project_id"] != str(self.project):
                            self.cross_project += 1
                            continue
                        self.seen.add((payload["project_id"], payload["seq"]))
                        self.latencies.append((received - payload["sent_at"]) * 1000.0)
            finally:
                heartbeat.cancel()

    @staticmethod
    async def _heartbeat(ws: Any) -> None:
        ref = 100
        while True:
            await asyncio.sleep(20)
            ref += 1
            await ws.send(
                json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": str(ref)})
            )


async def publish(db_url: str, projects: list[uuid.UUID], duration: float, connections: int) -> int:
    """One message per project per second, spread evenly; returns how many were sent."""
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(connections)]
    slots: list[asyncio.Queue[tuple[uuid.UUID, int]]] = [asyncio.Queue() for _ in conns]
    sent = 0

    async def worker(conn: psycopg.AsyncConnection[Any], inbox: asyncio.Queue[tuple[uuid.UUID, int]]) -> None:
        nonlocal sent
        while True:
            project, seq = await inbox.get()
            payload = {"project_id": str(project), "seq": seq, "sent_at": time.time()}
            await conn.execute(
                "select realtime.send(%s::jsonb, 'rollup', %s, true)",
                (json.dumps(payload), f"metrics:{project}"),
            )
            sent += 1
            inbox.task_done()

    workers = [asyncio.create_task(worker(c, q)) for c, q in zip(conns, slots, strict=True)]
    start = time.monotonic()
    step = 1.0 / len(projects)
    try:
        for second in range(int(duration)):
            for index, project in enumerate(projects):
                due = start + second + index * step
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                slots[index % len(slots)].put_nowait((project, second))
        for inbox in slots:
            await inbox.join()
    finally:
        for task in workers:
            task.cancel()
        for conn in conns:
            await conn.close()
    return sent


async def run(
    args: argparse.Namespace, gateway_url: str, keys: Any, db_url: str, gateway_pid: int
) -> dict[str, Any]:
    projects = [uuid.uuid4() for _ in range(args.projects)]
    subscribers: list[Subscriber] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for index in range(args.subscribers):
            project = projects[index % len(projects)]
            user = uuid.uuid4()
            conn.execute("insert into metrics.projects (id) values (%s) on conflict do nothing", (project,))
            conn.execute(
                "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, 'viewer')",
                (project, user),
            )
            subscribers.append(Subscriber(project, keys.user_token(user, expires_in=3600)))
    stop = asyncio.Event()
    ws_url = gateway_url.replace("http://", "ws://") + "/realtime/v1/websocket"
    tasks = [asyncio.create_task(s.run(ws_url, keys.anon_key, stop)) for s in subscribers]
    await asyncio.wait_for(asyncio.gather(*(s.joined.wait() for s in subscribers)), 60)
    refused = [s.error for s in subscribers if s.error]
    if refused:
        raise SystemExit(f"{len(refused)} subscriber(s) could not join: {refused[0]}")

    process = psutil.Process(gateway_pid)
    cpu_before = process.cpu_times()
    rss_peak = process.memory_info().rss
    wall_start = time.monotonic()

    async def sample() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, process.memory_info().rss)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    sent = await publish(db_url, projects, args.duration, args.connections)
    await asyncio.sleep(args.drain)
    wall = time.monotonic() - wall_start
    cpu_after = process.cpu_times()
    sampler.cancel()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    latencies = [value for s in subscribers for value in s.latencies]
    per_project: dict[uuid.UUID, int] = defaultdict(int)
    for s in subscribers:
        per_project[s.project] += 1
    expected = sum(per_project[p] for p in projects) * int(args.duration)
    received = sum(len(s.seen) for s in subscribers)
    cpu_seconds = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "subscribers": args.subscribers,
        "projects": args.projects,
        "duration_s": args.duration,
        "messages_sent": sent,
        "deliveries_expected": expected,
        "deliveries_received": received,
        "messages_lost": expected - received,
        "cross_project_deliveries": sum(s.cross_project for s in subscribers),
        "latency_ms": {
            "p50": _percentile(latencies, 0.50),
            "p99": _percentile(latencies, 0.99),
            "max": max(latencies) if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "gateway": {
            "cpu_percent_of_one_core": 100.0 * cpu_seconds / wall,
            "cpu_seconds": cpu_seconds,
            "rss_peak_mib": rss_peak / 2**20,
        },
        "goals": {
            "p99_ms_max": GOAL_P99_MS,
            "met": (_percentile(latencies, 0.99) <= GOAL_P99_MS)
            and expected == received
            and sum(s.cross_project for s in subscribers) == 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of publishing.")
    parser.add_argument("--connections", type=int, default=4, help="Publisher database connections.")
    parser.add_argument("--drain", type=float, default=2.0, help="Seconds to wait for the last deliveries.")
    args = parser.parse_args()
    stop_on_sigterm()

    with local_gateway("meshhook-fanout-") as stack:
        result = asyncio.run(run(args, stack.url, stack.keys, stack.db_url, stack.pid))

    latency = result["latency_ms"]
    print(_report.table(
        ["subscribers", "projects", "sent", "lost", "cross-project", "p50 ms", "p99 ms", "max ms", "gateway CPU %", "RSS MiB"],
        [[result["subscribers"], result["projects"], result["messages_sent"], result["messages_lost"],
          result["cross_project_deliveries"], latency["p50"], latency["p99"], latency["max"],
          result["gateway"]["cpu_percent_of_one_core"], result["gateway"]["rss_peak_mib"]]],
    ))  # fmt: skip
    command = "python -m benchmarks.realtime_fanout " + " ".join(sys.argv[1:])
    path = _report.write("realtime_fanout", command.strip(), result)
    print(
        f"goals met: {result['goals']['met']} (p99 <= {GOAL_P99_MS:.0f} ms, 0 lost, 0 cross-project); {path}"
    )


if __name__ == "__main__":
    main()
