"""A real Prometheus (Debian ``prometheus``) scrapes the service with a scrape token; PromQL agrees with
GET /api/metrics for the same data.

Exactness of the comparison: the counter's first scraped value is 0 and the queries are evaluated at the
timestamp of the last scrape, so Prometheus' rate() extrapolation adds nothing and rate(x[1m]) equals the
increase / 60 s, which is what GET /api/metrics?agg=rate&step=60s reports for the minute the increments
were stamped with. Histogram boundaries are configured tightly around the expected p99, so
histogram_quantile's linear interpolation stays within the sketch's 1 %.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshhook_rt_metrics.client import MetricsClient
from tests.api.conftest import ApiServer, World, free_port
from tests.support import TestDatabase, batch, counter, histogram, ingest, merge_points


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    """A missing Prometheus fails these tests (CI installs it): a skip would hide untested work."""
    if shutil.which("prometheus") is None:
        pytest.fail("the Debian package prometheus is missing: run make system-deps")


REQS = "meshhook_test_requests_total"
DUR = "meshhook_test_step_duration_seconds"
ROUTE = {"route": "/api/hooks/[slug]"}
BOUNDARIES = [0.075, 0.15, 0.198, 0.202, 0.3, 1.0, 10.0]
# 1,000 observations: p99 (rank 989 of 0..999) is 0.2 for the sketch; Prometheus interpolates inside
# (0.198, 0.202]
OBSERVED = [0.05] * 500 + [0.1] * 400 + [0.2] * 100


class Prometheus:
    def __init__(self, tmp: Path, target: str, token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
            "scrape_configs:\n"
            "  - job_name: meshhook\n"
            "    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials: {token}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        body = self.http.get("/api/v1/query", params=params).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, check: Any, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.scalar(promql)
            if value is not None and check(value):
                return value
            time.sleep(0.2)
        raise AssertionError(f"{promql} never satisfied the check (last: {self.scalar(promql)})")

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    api: ApiServer,
    client: httpx.Client,
    world: World,
    conn: psycopg.Connection[Any],
) -> Iterator[Prometheus]:
    admin = world.headers(world.admin_a)
    put = client.put(
        "/api/metrics/histogram-boundaries",
        json={"project_id": str(world.project_a), "metric": DUR, "boundaries": BOUNDARIES},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    token = client.post(
        "/api/metrics/scrape-tokens", json={"project_id": str(world.project_a)}, headers=admin
    )
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"), api.url.removeprefix("http://"), token.json()["token"]
    )
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


def api_value(client: httpx.Client, world: World, metric: str, agg: str, start: int, end: int) -> float:
    params = {
        "project_id": str(world.project_a),
        "metric": metric,
        "agg": agg,
        "by": "",
        "step": f"{end - start}s",
        "from": datetime.fromtimestamp(start, UTC).isoformat(),
        "to": datetime.fromtimestamp(end, UTC).isoformat(),
    }
    body = client.get("/api/metrics", params=params, headers=world.headers(world.viewer_a)).json()
    [series] = body["series"]
    values = [v for _, v in series["points"]]
    if agg != "sum":
        assert len(values) == 1, values
    return float(sum(values))


def test_promql_agrees_with_the_api(
    prometheus: Prometheus, client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> None:
    minute = int(time.time() // 60 * 60) - 120
    # baseline, a minute earlier: the counter at 0 and one histogram observation above every boundary
    ingest(
        conn,
        batch(
            world.project_a,
            [
                counter(REQS, 0, ROUTE, ts=minute - 30),
                histogram(DUR, [1000.0], ROUTE, ts=minute - 30),
            ],
        ),
    )
    prometheus.wait_for(f"count_over_time({REQS}[1m])", lambda n: n >= 3)
    assert prometheus.scalar('up{job="meshhook"}') == 1

    for part in range(4):  # the increments, stamped inside `minute`, arrive between scrapes
        ingest(
            conn,
            batch(
                world.project_a,
                [
                    counter(REQS, 150, ROUTE, ts=minute + 10 + part),
                    histogram(DUR, OBSERVED[part::4], ROUTE, ts=minute + 10 + part),
                ],
            ),
        )
        time.sleep(0.3)
    prometheus.wait_for(f"{DUR}_count", lambda n: n == 1001)
    prometheus.wait_for(f"{REQS}", lambda v: v == 600)
    time.sleep(1.2)  # a few more scrapes of the final values
    last = prometheus.scalar(f"timestamp({REQS})")
    assert last is not None

    prom_total = prometheus.scalar(REQS, at=last)
    prom_rate = prometheus.scalar(f"rate({REQS}[1m])", at=last)
    prom_p99 = prometheus.scalar(f"histogram_quantile(0.99, sum by (le) (rate({DUR}_bucket[1m])))", at=last)
    prom_p75 = prometheus.scalar(f"histogram_quantile(0.75, sum by (le) (rate({DUR}_bucket[1m])))", at=last)

    assert prom_total == api_value(client, world, REQS, "sum", minute - 60, minute + 60) == 600
    assert prom_rate == pytest.approx(api_value(client, world, REQS, "rate", minute, minute + 60), rel=1e-9)
    assert prom_rate == pytest.approx(10.0)
    api_p99 = api_value(client, world, DUR, "p99", minute, minute + 60)
    assert prom_p99 == pytest.approx(api_p99, rel=0.02)
    assert api_p99 == pytest.approx(0.2, rel=0.01)
    # p75 falls in the wide (0.075, 0.15] bucket: Prometheus interpolates linearly, so only the bucket agrees
    api_p75 = api_value(client, world, DUR, "p75", minute, minute + 60)
    assert prom_p75 is not None and 0.075 < prom_p75 <= 0.15 and 0.075 < api_p75 <= 0.15


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "meshhook-metrics.json"
ALERT_RULES = DASHBOARD.with_name("alert-rules.yml")
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE", "up"}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges and groupings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for found in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text):
        word = found.group(1)
        if word.lower() not in _PROMQL_WORDS and not word.startswith("$"):
            names.add(word)
    return names


def test_dashboard_queries_only_exported_metrics(
    prometheus: Prometheus, client: httpx.Client, world: World, db: TestDatabase, tmp_path: Path
) -> None:
    """The client library's MeshHook and worker metrics, through ingest and the exporter, feed every panel."""
    worker = MetricsClient(
        project_id=str(world.project_a), database_url=db.url, background=False, spool_dir=tmp_path / "spool"
    )
    try:
        requests = worker.counter(
            "meshhook_webhook_requests_total", "Webhook requests", ("outcome", "signature")
        )
        runs = worker.counter(
            "meshhook_workflow_runs_completed_total", "Completed workflow runs", ("status",)
        )
        steps = worker.histogram(
            "meshhook_workflow_step_duration_seconds",
            "Step duration",
            ("node_type", "outcome"),
            unit="seconds",
        )
        http = worker.histogram(
            "meshhook_http_client_request_duration_seconds",
            "HTTP node request duration",
            ("node_type", "method", "status_class"),
            unit="seconds",
        )
        queue = worker.gauge("meshhook_queue_messages", "Queue depth", ("queue", "state"))
        for round_ in range(3):
            requests.labels("ok", "valid").inc(10)
            requests.labels("error", "invalid").inc(1)
            runs.labels("succeeded").inc(3)
            for v in (0.01, 0.05, 0.2, 1.5):
                steps.labels("http", "ok").observe(v)
                http.labels("http", "POST", "2xx").observe(v / 2)
            queue.labels("default", "ready").set(5 + round_)
            assert worker.flush()
            time.sleep(0.6)
    finally:
        worker.close()

    with psycopg.connect(db.url, autocommit=True) as conn:
        merge_points(conn)  # what the rollup pass has done a second after the flushes
    exported = client.get("/metrics", headers=world.service_headers).text
    sample_names = {s.name for f in text_string_to_metric_families(exported) for s in f.samples}
    queried = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert {
        "meshhook_webhook_requests_total",
        "process_cpu_seconds_total",
        "system_network_io_bytes_total",
    } <= queried
    assert queried - PROMETHEUS_OWN <= sample_names, sorted(queried - PROMETHEUS_OWN - sample_names)

    # and Prometheus, scraping the exporter, answers every panel's query with data
    prometheus.wait_for("count_over_time(system_network_io_bytes_total[1m])", lambda n: n >= 3)
    prometheus.wait_for("count_over_time(meshhook_queue_messages[1m])", lambda n: n >= 3)
    for expr in dashboard_exprs():
        result = prometheus.query(expr.replace("$__rate_interval", "1m"))
        if not metric_names(expr) & PROMETHEUS_OWN:
            assert result, expr
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERT_RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
