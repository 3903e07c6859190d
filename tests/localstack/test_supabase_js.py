"""Runs the supabase-js conformance suite (tests/localstack/js, Node's test runner) against a gateway.

Needs Node 20+ and ``npm ci --prefix tests/localstack/js``. On Node < 22 the clients get the ``ws``
package as their WebSocket transport (js/transport.mjs), as supabase-js documents for old Node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.localstack.conftest import JS_DIR, GatewayProcess, start_gateway
from tests.support import TestDatabase, add_member

IDLE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def idle_gateway(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with a short idle timeout, so that heartbeats are what keeps sockets open."""
    yield from start_gateway(db, tmp_path_factory.mktemp("gateway-js"), idle_timeout=IDLE_TIMEOUT)


def node_command(*files: str) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required for the supabase-js conformance tests")
    if not (JS_DIR / "node_modules" / "@supabase" / "supabase-js").exists():
        pytest.fail(f"supabase-js is not installed: run 'npm ci --prefix {JS_DIR}'")
    return [node, *files]


def run_node_suite(test_file: str, env: dict[str, str], timeout: float) -> None:
    """Run one ``node --test`` file of tests/localstack/js and fail with its output unless every test passed."""
    try:
        result = subprocess.run(
            node_command("--test", "--test-reporter=spec", "--test-timeout=60000", test_file),
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{test_file} did not finish:\n{exc.stdout!s}\n{exc.stderr!s}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout or "ℹ fail 0" in result.stdout, result.stdout[-3000:]


def test_supabase_js_conformance(idle_gateway: GatewayProcess, db: TestDatabase) -> None:
    project, member = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, project, member, "viewer")
    env = {
        **os.environ,
        "GATEWAY_URL": idle_gateway.url,
        "ANON_KEY": idle_gateway.anon_key,
        "SERVICE_KEY": idle_gateway.service_key,
        "JWT_SECRET": idle_gateway.keys.secret,
        "PROJECT_ID": str(project),
        "MEMBER_TOKEN": idle_gateway.user_token(member),
        "IDLE_TIMEOUT_MS": str(int(IDLE_TIMEOUT * 1000)),
    }
    run_node_suite("realtime.test.mjs", env, timeout=180)


def test_silent_socket_is_closed_after_the_idle_timeout(idle_gateway: GatewayProcess) -> None:
    """The negative control of the heartbeat test: without heartbeats the server does close."""
    import asyncio

    from websockets.exceptions import ConnectionClosed

    from tests.localstack.realtime_helpers import RawClient

    async def scenario() -> int | None:
        client = await RawClient.connect(idle_gateway.ws_url, idle_gateway.anon_key)
        await client.join("quiet")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv(timeout=IDLE_TIMEOUT * 10)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario()) == 1000
    assert Path(idle_gateway.log_path).exists()
