"""The edge-function host running the real function: supabase/functions/metrics-ingest/index.ts under Deno,
proxied by the gateway, calling back into the Data API (metrics.ingest_http) with the caller's rights.

OTLP/HTTP JSON (plain and gzip) and our batch format; ingest tokens, user JWTs and the service key; the
documented errors (400 naming metric and field, 401, 403, 405, 413, 415), never a stack trace; a retried
export stored once. Protobuf through the official exporters: tests/localstack/test_otel_node.py.
"""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.localstack.conftest import DENO, GatewayProcess
from tests.support import add_member

FN = "/functions/v1/metrics-ingest"


@pytest.fixture(autouse=True)
def _deno() -> None:
    if not DENO.exists():
        pytest.fail(
            "Deno is not installed: run 'npm ci --prefix tests/localstack/js' (it ships the deno package)"
        )


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    # the first request starts Deno (and may fill its npm cache)
    with httpx.Client(base_url=gateway.url, timeout=150) as client:
        yield client


def ingest_token(http: httpx.Client, gateway: GatewayProcess, project: uuid.UUID) -> str:
    """An ingest token made through the Data API with the service key."""
    response = http.post(
        "/rest/v1/rpc/create_ingest_token",
        json={"p_project_id": str(project), "p_name": "test"},
        headers={
            "apikey": gateway.anon_key,
            "Authorization": f"Bearer {gateway.service_key}",
            "Content-Profile": "metrics",
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()[0]["token"]
    assert isinstance(token, str)
    return token


def otlp(metrics: list[dict[str, Any]], instance: str = "w1") -> dict[str, Any]:
    attrs = [
        {"key": "service.name", "value": {"stringValue": "meshhook-worker"}},
        {"key": "service.instance.id", "value": {"stringValue": instance}},
    ]
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": attrs},
                "scopeMetrics": [{"scope": {"name": "t"}, "metrics": metrics}],
            }
        ]
    }


def counter(name: str, value: int, *, cumulative: bool = False, start: int = 0) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "name": name,
        "unit": "1",
        "sum": {
            "aggregationTemporality": 2 if cumulative else 1,
            "isMonotonic": True,
            "dataPoints": [
                {
                    "attributes": [{"key": "outcome", "value": {"stringValue": "ok"}}],
                    "startTimeUnixNano": str(start or now - 10**9),
                    "timeUnixNano": str(now),
                    "asInt": str(value),
                }
            ],
        },
    }


def totals(owner: psycopg.Connection[Any], project: uuid.UUID, name: str) -> tuple[int, float]:
    row = owner.execute(
        "select count(*), coalesce(sum(p.sum), 0) from metrics.points p"
        " join metrics.series s on s.id = p.series_id where s.project_id = %s and s.name = %s",
        (project, name),
    ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def no_stack(response: httpx.Response) -> None:
    assert "    at " not in response.text and "Traceback" not in response.text and ".ts:" not in response.text


def test_otlp_json_with_an_ingest_token_is_stored_once(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    token = ingest_token(http, gateway, project)
    body = json.dumps(otlp([counter("meshhook.jobs.done", 5)]))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first = http.post(f"{FN}/v1/metrics", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {}  # everything accepted: no partialSuccess
    again = http.post(f"{FN}/v1/metrics", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {}
    assert totals(owner, project, "meshhook_jobs_done") == (1, 5.0)  # a retried export is stored once
    series = owner.execute(
        "select labels, f.unit from metrics.series s join metrics.families f"
        " on f.project_id = s.project_id and f.name = s.name where s.project_id = %s",
        (project,),
    ).fetchone()
    assert series == ({"outcome": "ok"}, "ratio")
    # the same content under another Idempotency-Key is another export
    keyed = http.post(f"{FN}/v1/metrics", content=body, headers={**headers, "Idempotency-Key": "k1"})
    assert keyed.status_code == 200
    assert http.post(
        f"{FN}/v1/metrics", content=body, headers={**headers, "Idempotency-Key": "k1"}
    ).is_success
    assert totals(owner, project, "meshhook_jobs_done") == (2, 10.0)


def test_cumulative_exports_become_deltas_and_gzip_is_accepted(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    token = ingest_token(http, gateway, project)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    start = time.time_ns() - 60 * 10**9
    for value in (3, 8, 8, 12):
        body = gzip.compress(
            json.dumps(otlp([counter("jobs", value, cumulative=True, start=start)])).encode()
        )
        assert http.post(f"{FN}/v1/metrics", content=body, headers=headers).status_code == 200
        time.sleep(0.002)
    # a restarted exporter: a new start time, a smaller cumulative value
    restarted = otlp([counter("jobs", 2, cumulative=True, start=time.time_ns() - 10**9)])
    assert http.post(
        f"{FN}/v1/metrics", json=restarted, headers={"Authorization": f"Bearer {token}"}
    ).is_success
    count, total = totals(owner, project, "jobs")
    assert total == 14.0  # 3 + 5 + 0 + 4, then 2 after the restart: never negative, never doubled
    assert owner.execute(
        "select count(*) from metrics.points p join metrics.series s on s.id = p.series_id"
        " where s.project_id = %s and p.sum < 0",
        (project,),
    ).fetchone() == (0,)
    assert count == 5


def test_cumulative_exports_of_a_process_with_long_resource_attributes(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    """Kubernetes-style resources (dozens of long attributes): the stream key is a hash, not their JSON."""
    project = uuid.uuid4()
    token = ingest_token(http, gateway, project)
    start = time.time_ns() - 60 * 10**9
    for value in (4, 9):
        request = otlp([counter("pod_jobs", value, cumulative=True, start=start)])
        request["resourceMetrics"][0]["resource"]["attributes"] += [
            {"key": f"k8s.pod.label.{i}", "value": {"stringValue": "x" * 100}} for i in range(40)
        ]
        response = http.post(f"{FN}/v1/metrics", json=request, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        time.sleep(0.002)
    assert totals(owner, project, "pod_jobs") == (2, 9.0)  # 4, then 9 - 4
    (stream,) = owner.execute(
        "select stream from metrics.ingest_streams where project_id = %s", (project,)
    ).fetchone() or ("",)
    assert re.fullmatch(r"[0-9a-f]{64}", stream), stream


def test_secrets_in_otlp_attributes_are_redacted_in_the_stored_labels(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    """A password URL and a JWT in data-point attributes are stored as the Python client would label them."""
    project = uuid.uuid4()
    token = ingest_token(http, gateway, project)
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlX2J5dGVz"
    metric = counter("meshhook.http.client.requests", 2)
    metric["sum"]["dataPoints"][0]["attributes"] = [
        {"key": "url.full", "value": {"stringValue": "https://svc:hunter2pw@hooks.example.com/v1/x"}},
        {"key": "http.request.header.authorization", "value": {"stringValue": f"Bearer {jwt}"}},
        {"key": "upstream.token", "value": {"stringValue": jwt}},
        {"key": "http.route", "value": {"stringValue": "/api/hooks/[slug]"}},
    ]
    response = http.post(
        f"{FN}/v1/metrics", json=otlp([metric]), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    assert totals(owner, project, "meshhook_http_client_requests") == (1, 2.0)
    rows = owner.execute("select labels from metrics.series where project_id = %s", (project,)).fetchall()
    assert rows == [
        (
            {
                "url_full": "https://svc:[REDACTED]@hooks.example.com/v1/x",
                "http_request_header_authorization": "Bearer [REDACTED]",
                "upstream_token": "[REDACTED]",
                "http_route": "/api/hooks/[slug]",
            },
        )
    ]
    assert "hunter2pw" not in json.dumps(rows) and "eyJhbGci" not in json.dumps(rows)


def test_batch_format_with_service_key_and_user_jwts(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    project = uuid.uuid4()
    editor, viewer = uuid.uuid4(), uuid.uuid4()
    add_member(owner, project, editor, "editor")
    add_member(owner, project, viewer, "viewer")
    point = {"name": "meshhook_batches_total", "kind": "counter", "ts": time.time(), "count": 1, "sum": 2}
    batch = {"project_id": str(project), "source": "go-worker", "batch_id": "b1", "points": [point]}
    service = {"Authorization": f"Bearer {gateway.service_key}"}
    stored = http.post(FN, json=batch, headers=service)
    assert stored.status_code == 200, stored.text
    assert stored.json()["status"] == "accepted" and stored.json()["points"] == 1
    assert http.post(FN, json=batch, headers=service).json()["status"] == "duplicate"
    as_editor = {"Authorization": f"Bearer {gateway.user_token(editor)}"}
    assert http.post(FN, json={**batch, "batch_id": "b2"}, headers=as_editor).status_code == 200
    as_viewer = {"Authorization": f"Bearer {gateway.user_token(viewer)}"}
    refused = http.post(FN, json={**batch, "batch_id": "b3"}, headers=as_viewer)
    assert refused.status_code == 403, refused.text
    # OTLP with a user JWT names the project in the URL
    otlp_body = otlp([counter("meshhook_batches_total", 1)])
    assert http.post(f"{FN}/v1/metrics", json=otlp_body, headers=as_editor).status_code == 400
    ok = http.post(f"{FN}/v1/metrics", params={"project_id": str(project)}, json=otlp_body, headers=as_editor)
    assert ok.status_code == 200, ok.text
    assert totals(owner, project, "meshhook_batches_total") == (3, 5.0)
    # a batch that the database refuses names the metric and the field
    bad = http.post(FN, json={**batch, "batch_id": "b4", "points": [{**point, "sum": -1}]}, headers=service)
    assert bad.status_code == 400 and 'metric "meshhook_batches_total"' in bad.json()["message"]
    assert "points[0].sum" in bad.json()["message"]
    no_stack(bad)


def test_tokens_are_scoped_and_revocable(
    http: httpx.Client, gateway: GatewayProcess, owner: psycopg.Connection[Any]
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    token_a = ingest_token(http, gateway, a)
    ingest_token(http, gateway, b)
    headers = {"Authorization": f"Bearer {token_a}"}
    body = otlp([counter("meshhook_cross_total", 1)])
    cross = http.post(f"{FN}/v1/metrics", params={"project_id": str(b)}, json=body, headers=headers)
    assert cross.status_code == 403 and cross.json()["code"] == 7  # google.rpc.Status PERMISSION_DENIED
    batch = {"project_id": str(b), "source": "s", "batch_id": "x", "points": [
        {"name": "meshhook_cross_total", "kind": "counter", "ts": time.time(), "count": 1, "sum": 1}
    ]}  # fmt: skip
    assert http.post(FN, json=batch, headers=headers).status_code == 403
    assert totals(owner, b, "meshhook_cross_total") == (0, 0.0)
    owner.execute("update metrics.ingest_tokens set revoked_at = now() where project_id = %s", (a,))
    revoked = http.post(f"{FN}/v1/metrics", json=body, headers=headers)
    assert revoked.status_code == 401 and revoked.json()["code"] == 16  # UNAUTHENTICATED
    assert http.post(f"{FN}/v1/metrics", json=body).status_code == 401
    bad_jwt = http.post(
        f"{FN}/v1/metrics", params={"project_id": str(a)}, json=body, headers={"Authorization": "Bearer nope"}
    )
    assert bad_jwt.status_code == 401
    assert totals(owner, a, "meshhook_cross_total") == (0, 0.0)


def test_malformed_and_oversized_requests(http: httpx.Client, gateway: GatewayProcess) -> None:
    token = ingest_token(http, gateway, uuid.uuid4())
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{FN}/v1/metrics"
    cases: list[tuple[httpx.Response, int, str]] = [
        (
            http.post(url, content=b"{not json", headers={**auth, "Content-Type": "application/json"}),
            400,
            "JSON",
        ),
        (
            http.post(
                url, content=b"\xff\x01garbage", headers={**auth, "Content-Type": "application/x-protobuf"}
            ),
            400,
            "protobuf",
        ),
        (
            http.post(url, json=otlp([{"name": "meshhook.mystery", "foo": {}}]), headers=auth),
            400,
            'metric "meshhook.mystery": data',
        ),
        (
            http.post(
                url,
                json=otlp(
                    [
                        {
                            "name": "h",
                            "histogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [{"count": "3", "bucketCounts": ["1"], "explicitBounds": [1]}],
                            },
                        }
                    ]
                ),
                headers=auth,
            ),
            400,
            'metric "h": histogram.dataPoints[0].bucketCounts',
        ),
        (
            http.post(
                url,
                content=b"x" * (4 * 1024 * 1024 + 1),
                headers={**auth, "Content-Type": "application/json"},
            ),
            413,
            "limit",
        ),
        (
            http.post(
                url,
                content=b"not gzip",
                headers={**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"},
            ),
            400,
            "gzip",
        ),
        (http.post(url, content=b"a=b", headers={**auth, "Content-Type": "text/plain"}), 415, "Content-Type"),
        (http.get(url, headers=auth), 405, "POST"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, (status, response.text)
        if response.headers["content-type"] == "application/x-protobuf":
            assert fragment.encode() in response.content  # a google.rpc.Status message
        else:
            assert fragment in response.json()["message"], response.text
        no_stack(response)
    # a summary is refused in part, the rest stored: the OTLP partial success
    summary = {"name": "meshhook_s", "summary": {"dataPoints": [{"count": "1", "sum": 1}]}}
    partial = http.post(url, json=otlp([summary, counter("meshhook_fine_total", 1)]), headers=auth)
    assert partial.status_code == 200
    assert partial.json()["partialSuccess"]["rejectedDataPoints"] == 1
    assert 'metric "meshhook_s"' in partial.json()["partialSuccess"]["errorMessage"]


@pytest.mark.parametrize("name", ["missing", "..", "a%2Fb"])
def test_unknown_functions_are_404(gateway: GatewayProcess, name: str) -> None:
    response = httpx.get(f"{gateway.url}/functions/v1/{name}", headers={"apikey": gateway.anon_key})
    assert response.status_code == 404
