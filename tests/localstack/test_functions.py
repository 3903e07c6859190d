"""The edge-function host: supabase/functions/<name>/index.ts under Deno, proxied by the gateway."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.localstack.conftest import DENO, GatewayProcess


@pytest.fixture(autouse=True)
def _deno() -> None:
    if not DENO.exists():
        pytest.fail(
            "Deno is not installed: run 'npm ci --prefix tests/localstack/js' (it ships the deno package)"
        )


def test_function_runs_under_deno_with_supabase_environment(gateway: GatewayProcess) -> None:
    project = uuid.uuid4()
    response = httpx.post(
        f"{gateway.url}/functions/v1/hello/sub/path",
        params={"project": str(project)},
        headers={"Authorization": f"Bearer {gateway.anon_key}"},
        json={"hello": "world"},
        timeout=150,
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["path"] == "/hello/sub/path"
    assert data["method"] == "POST" and data["body"] == {"hello": "world"}
    assert data["topic"] == f"metrics:{project}"  # the function called back into the Data API
    assert data["env"] == {"url": True, "anon": True, "service": True, "db": True}
    assert data["authorization"] is True
    # the process is reused, and status codes pass through
    again = httpx.get(
        f"{gateway.url}/functions/v1/hello", params={"status": "418"}, headers={"apikey": gateway.anon_key}
    )
    assert again.status_code == 418 and again.json()["method"] == "GET"


def test_function_calls_need_a_valid_jwt(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/functions/v1/hello").status_code == 401
    bad = httpx.get(f"{gateway.url}/functions/v1/hello", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


@pytest.mark.parametrize("name", ["missing", "..", "a%2Fb"])
def test_unknown_functions_are_404(gateway: GatewayProcess, name: str) -> None:
    response = httpx.get(f"{gateway.url}/functions/v1/{name}", headers={"apikey": gateway.anon_key})
    assert response.status_code == 404
