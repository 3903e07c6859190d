"""Node 20 + the official OpenTelemetry JS SDK and OTLP exporters (tools/otel/export.mjs, pinned in
tools/package.json) export to the metrics-ingest edge function of the local gateway: counters, up-down counters,
explicit and exponential histograms and observable gauges, over OTLP/HTTP JSON and protobuf (gzip), in delta and
in cumulative temporality. GET /api/metrics and GET /metrics of the HTTP service then show the same values, and
a restarted exporter (a new process, new start times) adds its counts once: no negative or doubled delta.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from meshhook_rt_metrics.api import ApiSettings, create_app
from meshhook_rt_metrics.db.maintenance import publish_once
from tests.localstack.conftest import DENO, REPO, GatewayProcess, free_port
from tests.support import add_member

EXPORT = REPO / "tools" / "otel" / "export.mjs"
COMBOS = [
    (protocol, temporality) for protocol in ("json", "proto") for temporality in ("delta", "cumulative")
]
VALUES = [0.003, 0.02, 0.2, 0.2, 0.7, 3, 0.05, 1.5, 0.4]  # first run (two exports), then the restarted one
# <prefix>_wide_seconds: ten values near 1 in the first export, 1000 in the second (the SDK rescales in between)
WIDE = [1 + i / 1000 for i in range(10)] + [1000.0]
BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
DEADLINE = 30.0


@pytest.fixture(scope="module")
def api(gateway: GatewayProcess) -> Iterator[str]:
    """The HTTP service on the gateway's database, verifying the gateway's JWTs."""
    port = free_port()
    settings = ApiSettings(
        database_url=gateway.db.url,
        jwt_secret=gateway.keys.secret,  # type: ignore[arg-type]
        api_port=port,
        pool_min_size=1,
        pool_max_size=4,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def run_export(config: dict[str, Any]) -> None:
    node = shutil.which("node")
    assert node, "node is not installed"
    result = subprocess.run(
        [node, str(EXPORT), json.dumps(config)],
        cwd=REPO / "tools",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == [] and report["exports"] >= 1, report


def poll(what: str, check: Any, owner: psycopg.Connection[Any]) -> Any:
    """Polls ``check()`` (returns a value or raises AssertionError) until it passes or the deadline passes; each
    round runs one rollup pass first, as the stack's maintenance loop does (rollups may lag ingest)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        publish_once(owner)
        try:
            return check()
        except AssertionError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not so within {DEADLINE}s: {exc}") from None
            time.sleep(0.3)


def assert_exponential(got: dict[str, float]) -> None:
    """Quantiles of the exponential histograms: within half a bucket (<= 2.2 % at the SDK's scale for VALUES) plus
    the sketch's 1 %; the rescaled one keeps its exact sum and its median near 1."""
    exact = sorted(VALUES)
    median = exact[len(exact) // 2]  # 0.2
    p90 = exact[math.floor(0.9 * (len(exact) - 1))]  # 1.5 (the lowest-rank convention of sketch_quantile)
    assert median == 0.2 and p90 == 1.5
    assert abs(got["exp_p50"] - median) <= 0.035 * median, got
    assert abs(got["exp_p90"] - p90) <= 0.035 * p90, got
    # a cumulative exponential histogram that rescaled between two exports: 11 values, not 10 + 11
    assert got["wide_count"] == len(WIDE), got
    assert math.isclose(got["wide_sum"], sum(WIDE), rel_tol=1e-9), got
    assert abs(got["wide_p50"] - 1.005) <= 0.035, got


def test_official_exporters_delta_and_cumulative_show_the_same_values(
    gateway: GatewayProcess, api: str, owner: psycopg.Connection[Any]
) -> None:
    assert DENO.exists() and (REPO / "tools" / "node_modules" / "@opentelemetry" / "sdk-metrics").exists(), (
        "run 'make install' (Deno and tools/node_modules)"
    )
    project, admin = uuid.uuid4(), uuid.uuid4()
    add_member(owner, project, admin, "admin")
    created = httpx.post(
        f"{api}/api/metrics/ingest-tokens",
        json={"project_id": str(project), "name": "node"},
        headers={"Authorization": f"Bearer {gateway.user_token(admin)}"},
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    url = f"{gateway.url}/functions/v1/metrics-ingest/v1/metrics"
    started = time.time()
    for protocol, temporality in COMBOS:
        base = {"url": url, "token": token, "protocol": protocol, "temporality": temporality}
        prefix = f"otel_{protocol}_{temporality}"
        run_export({**base, "prefix": prefix, "run": "first"})
        run_export({**base, "prefix": prefix, "run": "restart"})

    headers = {"Authorization": f"Bearer {gateway.user_token(admin)}"}
    window = {"project_id": str(project), "from": f"{started - 120:.0f}", "to": f"{time.time() + 120:.0f}"}

    def query(metric: str, agg: str) -> list[float]:
        response = httpx.get(
            f"{api}/api/metrics",
            params={**window, "metric": metric, "agg": agg, "step": "1h"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return [v for s in response.json()["series"] for _, v in s["points"] if v is not None]

    def exposition() -> dict[tuple[str, str], float]:
        response = httpx.get(f"{api}/metrics", params={"project_id": str(project)}, headers=headers)
        assert response.status_code == 200, response.text
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                key = (sample.name, sample.labels.get("le", ""))
                out[key] = out.get(key, 0.0) + sample.value
        return out

    exact = sorted(VALUES)
    for protocol, temporality in COMBOS:
        p = f"otel_{protocol}_{temporality}"

        def api_values(p: str = p) -> dict[str, float]:
            jobs = query(f"{p}_jobs_total", "sum")
            assert math.isclose(sum(jobs), 16), (p, jobs)  # 5 + 7, then 4 after the restart
            counts = query(f"{p}_step_seconds", "count")
            assert sum(counts) == len(VALUES), (p, counts)
            assert sum(query(f"{p}_exp_seconds", "count")) == len(VALUES)
            assert query(f"{p}_queue_depth", "last")[-1] == 44
            assert query(f"{p}_inflight", "last")[-1] == 2  # the restarted process counts from zero
            return {
                "jobs": sum(jobs),
                "step_sum": sum(query(f"{p}_step_seconds", "sum")),
                "step_p50": query(f"{p}_step_seconds", "p50")[-1],
                "exp_p50": query(f"{p}_exp_seconds", "p50")[-1],
                "exp_p90": query(f"{p}_exp_seconds", "p90")[-1],
                "wide_count": sum(query(f"{p}_wide_seconds", "count")),
                "wide_sum": sum(query(f"{p}_wide_seconds", "sum")),
                "wide_p50": query(f"{p}_wide_seconds", "p50")[-1],
            }

        got = poll(f"{p} via GET /api/metrics", api_values, owner)
        assert math.isclose(got["step_sum"], sum(VALUES), rel_tol=1e-9)
        median = exact[len(exact) // 2]  # 0.2 (so is its neighbour: any rank convention agrees)
        # explicit buckets: within half the width of the value's bucket (0.1, 0.25], plus the sketch's 1 %
        assert abs(got["step_p50"] - median) <= (0.25 - 0.1) / 2 + 0.01 * median, got
        assert_exponential(got)

        def metrics_values(p: str = p) -> dict[tuple[str, str], float]:
            values = exposition()
            assert values.get((f"{p}_jobs_total", "")) == 16, values
            return values

        values = poll(f"{p} via GET /metrics", metrics_values, owner)
        assert values[(f"{p}_queue_depth", "")] == 44
        assert values[(f"{p}_inflight", "")] == 2
        for hist in (f"{p}_step_seconds", f"{p}_exp_seconds"):
            assert values[(f"{hist}_count", "")] == len(VALUES)
            assert math.isclose(values[(f"{hist}_sum", "")], sum(VALUES), rel_tol=1e-9)
            assert values[(f"{hist}_bucket", "+Inf")] == len(VALUES)
        # the same sum as GET /api/metrics
        assert math.isclose(values[(f"{p}_step_seconds_sum", "")], got["step_sum"], rel_tol=1e-9)

    # never a negative delta, and each export stored once
    negative = owner.execute(
        "select count(*) from metrics.points p join metrics.series s on s.id = p.series_id"
        " where s.project_id = %s and (p.sum < 0 and s.name like '%%_total')",
        (project,),
    ).fetchone()
    assert negative == (0,)


def test_the_documented_worker_setup_runs(gateway: GatewayProcess) -> None:
    """The first code block of docs/ingest-http.md's "OpenTelemetry JS" section, as written, with the packages the
    tests pin: its imports resolve (a named import a package lacks is a SyntaxError in ESM) and its exporter
    exports delta."""
    node = shutil.which("node")
    assert node, "node is not installed"
    doc = (REPO / "docs" / "ingest-http.md").read_text(encoding="utf-8")
    section = doc[doc.index("## OpenTelemetry JS") :]
    block = section[section.index("```js\n") + len("```js\n") :]
    block = block[: block.index("```")]
    assert "temporalityPreference" in block and "new OTLPMetricExporter" in block, block
    check = (
        'import { AggregationTemporality as T_, InstrumentType as I_ } from "@opentelemetry/sdk-metrics";\n'
        "if (exporter.selectAggregationTemporality(I_.COUNTER) !== T_.DELTA) throw new Error('not delta');\n"
        "if (exporter.selectAggregationTemporality(I_.UP_DOWN_COUNTER) !== T_.CUMULATIVE) throw new Error('udc');\n"
        "await provider.shutdown();\nconsole.log('documented setup ok');\nprocess.exit(0);\n"
    )
    script = REPO / "tools" / "otel" / ".doc_worker_check.mjs"
    script.write_text(block + check, encoding="utf-8")
    try:
        result = subprocess.run(
            [node, str(script)],
            cwd=REPO / "tools",
            env={
                "PATH": os.environ.get("PATH", ""),
                "SUPABASE_URL": gateway.url,
                "MESHHOOK_METRICS_INGEST_TOKEN": "mhi_doc_check",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        script.unlink()
    assert result.returncode == 0 and "documented setup ok" in result.stdout, (
        f"{result.stdout}\n{result.stderr}"
    )
