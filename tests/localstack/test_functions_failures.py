"""Edge functions that fail: at boot (503, the gateway stays up) and at run time (restarted on next call)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.localstack.conftest import DENO, GatewayProcess, start_gateway
from tests.support import TestDatabase

FUNCTIONS = {
    "broken": 'throw new Error("boom at import");\n',
    "noserve": "console.log('forgot to serve');\n",
    "crashy": (
        "Deno.serve((req) => {\n"
        "  if (new URL(req.url).searchParams.has('crash')) Deno.exit(3);\n"
        "  return new Response('alive');\n"
        "});\n"
    ),
}


@pytest.fixture(scope="module")
def failing_gateway(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if not DENO.exists():
        pytest.fail("Deno is not installed: run 'npm ci --prefix tests/localstack/js'")
    functions: Path = tmp_path_factory.mktemp("functions")
    for name, source in FUNCTIONS.items():
        (functions / name).mkdir()
        (functions / name / "index.ts").write_text(source)
    yield from start_gateway(db, tmp_path_factory.mktemp("gateway-fn"), functions_dir=functions)


@pytest.mark.parametrize("name", ["broken", "noserve"])
def test_function_that_cannot_boot_is_503(failing_gateway: GatewayProcess, name: str) -> None:
    response = httpx.get(
        f"{failing_gateway.url}/functions/v1/{name}", headers={"apikey": failing_gateway.anon_key}, timeout=60
    )
    assert response.status_code == 503 and response.json()["code"] == "BOOT_ERROR"
    assert failing_gateway.alive()


def test_crashed_function_is_restarted(failing_gateway: GatewayProcess) -> None:
    url, headers = f"{failing_gateway.url}/functions/v1/crashy", {"apikey": failing_gateway.anon_key}
    assert httpx.get(url, headers=headers, timeout=60).text == "alive"
    crashed = httpx.get(url, params={"crash": "1"}, headers=headers, timeout=60)
    assert crashed.status_code == 502 and crashed.json()["code"] == "WORKER_ERROR"
    assert httpx.get(url, headers=headers, timeout=60).text == "alive"
