"""HTTP ingest through the metrics-ingest edge function (Deno) vs the Python client's PostgresSink, same run.

One local stack (PostgreSQL, the gateway and its Deno function host). The same workload, requests of
``--points`` data points (60 % counters, 20 % gauges, 20 % explicit-bucket histograms, one series each), is
sent as OTLP/HTTP JSON, as OTLP/HTTP protobuf (delta temporality, an ingest token), as OTLP/HTTP JSON in
cumulative temporality (the conversion state in Postgres), and, as the baseline, as batches of our wire format
through ``PostgresSink`` (``select metrics.ingest(...)`` on a trusted connection). Reported: points per second
of each, their ratio to the baseline, and the CPU the function's Deno process spends per 1,000 points. Run:

    .venv/bin/python -m benchmarks.edge_ingest          # writes benchmarks/results/edge_ingest.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import _report
from benchmarks._gateway import local_gateway
from benchmarks._signals import stop_on_sigterm
from meshhook_rt_metrics.client.sinks import Batch, PostgresSink

REPO = Path(__file__).resolve().parents[1]
DENO = REPO / "tests" / "localstack" / "js" / "node_modules" / ".bin" / "deno"
FUNCTION = REPO / "supabase" / "functions" / "metrics-ingest"
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
# the function may cost at most this much less throughput than the trusted direct path (it adds HTTP, Deno,
# the Data API and a definer function; the baseline is the fastest path there is)
GOAL_MIN_RATIO = 0.1


def otlp_request(points: int, seq: int, cumulative: bool, start_ns: int) -> dict[str, Any]:
    """One export: ``points`` data points over counters, gauges and histograms (one series each)."""
    now = time.time_ns()
    n_counters, n_gauges = int(points * 0.6), int(points * 0.2)
    n_hist = points - n_counters - n_gauges

    def attrs(i: int) -> list[dict[str, Any]]:
        return [{"key": "route", "value": {"stringValue": f"/api/hooks/[slug{i}]"}}]

    times = {"timeUnixNano": str(now), "startTimeUnixNano": str(start_ns if cumulative else now - 10**9)}
    factor = seq + 1 if cumulative else 1
    metrics = [
        {
            "name": "meshhook_bench_requests_total",
            "sum": {
                "aggregationTemporality": 2 if cumulative else 1,
                "isMonotonic": True,
                "dataPoints": [
                    {"attributes": attrs(i), **times, "asInt": str(3 * factor)} for i in range(n_counters)
                ],
            },
        },
        {
            "name": "meshhook_bench_queue_messages",
            "gauge": {
                "dataPoints": [
                    {"attributes": attrs(i), **times, "asDouble": i + seq} for i in range(n_gauges)
                ]
            },
        },
        {
            "name": "meshhook_bench_step_seconds",
            "unit": "s",
            "histogram": {
                "aggregationTemporality": 2 if cumulative else 1,
                "dataPoints": [
                    {
                        "attributes": attrs(i),
                        **times,
                        "count": str(11 * factor),
                        "sum": 4.2 * factor,
                        "bucketCounts": [str(factor)] * (len(BOUNDS) + 1),
                        "explicitBounds": BOUNDS,
                        **({} if cumulative else {"min": 0.001, "max": 7.0}),
                    }
                    for i in range(n_hist)
                ],
            },
        },
    ]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]}
    return {
        "resourceMetrics": [
            {"resource": resource, "scopeMetrics": [{"scope": {"name": "b"}, "metrics": metrics}]}
        ]
    }


def to_protobuf(requests: list[dict[str, Any]], work: Path) -> list[bytes]:
    """Encodes OTLP/JSON requests as protobuf with the function's own proto module (proto.ts) under Deno."""
    src, out = work / "requests.json", work / "requests.pb"
    src.write_text(json.dumps(requests))
    script = work / "encode.ts"
    script.write_text(
        f'import {{ encodeRequest }} from "{(FUNCTION / "proto.ts").as_uri()}";\n'
        f'const requests = JSON.parse(await Deno.readTextFile("{src}"));\n'
        "const parts = requests.map((r: unknown) => encodeRequest(r));\n"
        "const head = new Uint32Array(parts.map((p: Uint8Array) => p.byteLength));\n"
        "const all = new Uint8Array(4 + head.byteLength + parts.reduce((n: number, p: Uint8Array) => n + p.byteLength, 0));\n"
        "new DataView(all.buffer).setUint32(0, parts.length, true);\n"
        "all.set(new Uint8Array(head.buffer), 4);\n"
        "let at = 4 + head.byteLength;\n"
        "for (const p of parts) { all.set(p, at); at += p.byteLength; }\n"
        f'await Deno.writeFile("{out}", all);\n'
    )
    subprocess.run(
        [str(DENO), "run", "--no-config", "--allow-read", "--allow-write", str(script)],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=300,
    )
    data = out.read_bytes()
    n = int.from_bytes(data[:4], "little")
    sizes = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "little") for i in range(n)]
    at, parts = 4 + 4 * n, []
    for size in sizes:
        parts.append(data[at : at + size])
        at += size
    return parts


def deno_process(gateway_pid: int) -> psutil.Process:
    for child in psutil.Process(gateway_pid).children(recursive=True):
        if "deno" in child.name():
            return child
    raise RuntimeError("the function's Deno process is not running")


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def run_function(
    client: httpx.Client,
    url: str,
    token: str,
    bodies: list[bytes],
    content_type: str,
    points: int,
    gateway_pid: int,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    # warm-up (JIT, connections), not counted
    warm = client.post(url, content=bodies[0], headers={**headers, "Idempotency-Key": f"warm-{uuid.uuid4()}"})
    assert warm.status_code == 200, warm.text
    deno = deno_process(gateway_pid)
    cpu_before, started = cpu(deno), time.perf_counter()
    for body in bodies[1:]:
        response = client.post(url, content=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())})
        assert response.status_code == 200 and "partialSuccess" not in response.text, response.text
    wall = time.perf_counter() - started
    cpu_seconds = cpu(deno) - cpu_before
    total = points * (len(bodies) - 1)
    return {
        "requests": len(bodies) - 1,
        "points": total,
        "seconds": wall,
        "points_per_second": total / wall,
        "function_cpu_ms_per_1000_points": 1000.0 * cpu_seconds / total * 1000,
        "bytes_per_request": sum(len(b) for b in bodies) / len(bodies),
    }


def run_sink(db_url: str, project: uuid.UUID, requests: list[dict[str, Any]], points: int) -> dict[str, Any]:
    """The same points as batches of our wire format through the Python client's PostgresSink."""
    sink = PostgresSink(db_url)
    batches: list[Batch] = []
    for seq, req in enumerate(requests):
        pts: list[dict[str, Any]] = []
        for metric in req["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
            for dp in next(v for k, v in metric.items() if k in ("sum", "gauge", "histogram"))["dataPoints"]:
                labels = {"route": dp["attributes"][0]["value"]["stringValue"]}
                ts = int(dp["timeUnixNano"]) / 1e9
                if "sum" in metric:
                    pts.append({"name": metric["name"], "kind": "counter", "labels": labels, "ts": ts, "count": 1,
                                "sum": float(dp["asInt"])})  # fmt: skip
                elif "gauge" in metric:
                    v = float(dp["asDouble"])
                    pts.append({"name": metric["name"], "kind": "gauge", "labels": labels, "ts": ts, "count": 1,
                                "sum": v, "min": v, "max": v, "last": v})  # fmt: skip
                else:
                    pts.append({"name": metric["name"], "kind": "histogram", "labels": labels, "ts": ts,
                                "count": 11, "sum": 4.2, "min": 0.001, "max": 7.0,
                                "sketch": {"z": 0, "p": {str(k): 1 for k in range(-260, -250)} | {"100": 1},
                                           "n": {}}})  # fmt: skip
        batches.append(
            {
                "project_id": str(project),
                "source": "bench-sink",
                "batch_id": f"s{seq}-{uuid.uuid4()}",
                "points": pts,
            }
        )
    sink.send(batches[0])  # warm-up
    started = time.perf_counter()
    for batch in batches[1:]:
        sink.send(batch)
    wall = time.perf_counter() - started
    total = points * (len(batches) - 1)
    return {"requests": len(batches) - 1, "points": total, "seconds": wall, "points_per_second": total / wall}


def measure(
    args: argparse.Namespace, url: str, keys: Any, db_url: str, gateway_pid: int, work: Path
) -> dict[str, dict[str, Any]]:
    """Every path, one after the other, on the running stack."""
    project = uuid.uuid4()
    with httpx.Client(base_url=url, timeout=300) as client:
        created = client.post(
            "/rest/v1/rpc/create_ingest_token",
            json={"p_project_id": str(project), "p_name": "bench"},
            headers={"apikey": keys.anon_key, "Authorization": f"Bearer {keys.service_role_key}",
                     "Content-Profile": "metrics"},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        token = created.json()[0]["token"]
        n = args.requests + 1
        delta = [otlp_request(args.points, i, False, 0) for i in range(n)]
        start_ns = time.time_ns() - 10**9
        cumulative = [otlp_request(args.points, i, True, start_ns) for i in range(n)]
        json_bodies = [json.dumps(r).encode() for r in delta]
        proto_bodies = to_protobuf(delta, work)
        fn = "/functions/v1/metrics-ingest/v1/metrics"
        runs = {
            "function_json": run_function(client, fn, token, json_bodies, "application/json", args.points, gateway_pid),
            "function_protobuf": run_function(
                client, fn, token, proto_bodies, "application/x-protobuf", args.points, gateway_pid
            ),
            "function_json_cumulative": run_function(
                client, fn, token, [json.dumps(r).encode() for r in cumulative], "application/json",
                args.points, gateway_pid,
            ),
        }  # fmt: skip
    runs["postgres_sink"] = run_sink(db_url, uuid.uuid4(), delta, args.points)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1000, help="Data points per request.")
    parser.add_argument("--requests", type=int, default=30, help="Requests per encoding (plus one warm-up).")
    args = parser.parse_args()
    stop_on_sigterm()
    if not DENO.exists():
        raise SystemExit("Deno is not installed: make install")

    env = {"MESHHOOK_METRICS_DENO": str(DENO)}
    with local_gateway(
        "meshhook-edge-bench-", ["--functions-dir", str(REPO / "supabase" / "functions")], env
    ) as stack:
        runs = measure(args, stack.url, stack.keys, stack.db_url, stack.pid, stack.state_dir)

    baseline = runs["postgres_sink"]["points_per_second"]
    for run in runs.values():
        run["ratio_to_postgres_sink"] = run["points_per_second"] / baseline
    worst = min(r["ratio_to_postgres_sink"] for k, r in runs.items() if k != "postgres_sink")
    result = {
        "points_per_request": args.points,
        "runs": runs,
        "goals": {"min_ratio_to_postgres_sink": GOAL_MIN_RATIO, "met": worst >= GOAL_MIN_RATIO},
    }
    print(_report.table(
        ["path", "points", "points/s", "x PostgresSink", "function CPU ms / 1000 points", "bytes/request"],
        [[name, r["points"], r["points_per_second"], r["ratio_to_postgres_sink"],
          r.get("function_cpu_ms_per_1000_points", "-"), r.get("bytes_per_request", "-")] for name, r in runs.items()],
    ))  # fmt: skip
    command = "python -m benchmarks.edge_ingest " + " ".join(sys.argv[1:])
    path = _report.write("edge_ingest", command.strip(), result)
    print(
        f"goals met: {result['goals']['met']} (each function path >= {GOAL_MIN_RATIO}x PostgresSink); {path}"
    )
    if not result["goals"]["met"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
