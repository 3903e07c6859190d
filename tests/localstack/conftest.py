"""Gateway fixtures: the real ``meshhook-metrics gateway`` process in front of the module's test database.

A subprocess (not an in-thread server) so that tests see what users run, can restart it, and can
prove that bad input never takes it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from meshhook_rt_metrics.localstack.gateway.keys import JwtKeys, keys_for_state_dir
from meshhook_rt_metrics.localstack.gateway.realtime.feed import drop_slot, slot_name_for
from tests.support import TestDatabase, rollup_loop, stop_group

REPO = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
DENO = JS_DIR / "node_modules" / ".bin" / "deno"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """One gateway subprocess; ``restart()`` keeps its port, keys and replication slot."""

    def __init__(
        self,
        db: TestDatabase,
        state_dir: Path,
        *,
        idle_timeout: float = 60.0,
        functions_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.env = env or {}
        self.functions_dir = functions_dir or REPO / "supabase" / "functions"
        self.state_dir = state_dir
        self.port = free_port()
        self.keys: JwtKeys = keys_for_state_dir(state_dir)
        self.idle_timeout = idle_timeout
        self.log_path = state_dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/v1/websocket"

    @property
    def anon_key(self) -> str:
        return self.keys.anon_key

    @property
    def service_key(self) -> str:
        return self.keys.service_role_key

    def start(self, timeout: float = 60.0) -> None:
        argv = [
            sys.executable, "-m", "meshhook_rt_metrics.cli", "gateway",
            "--state-dir", str(self.state_dir), "--db-url", self.db.url, "--port", str(self.port),
            "--functions-dir", str(self.functions_dir),
            "--idle-timeout", str(self.idle_timeout), "--log-level", "info",
        ]  # fmt: skip
        # the Data API's login password, through the environment (never on a command line)
        env = {
            **os.environ,
            "MESHHOOK_METRICS_AUTHENTICATOR_PASSWORD": self.db.authenticator_password,
            **self.env,
        }
        if DENO.exists():
            env["MESHHOOK_METRICS_DENO"] = str(DENO)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"gateway not healthy within {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.proc, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def user_token(self, user: uuid.UUID, expires_in: float = 3600) -> str:
        return self.keys.user_token(user, expires_in=expires_in)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_gateway(
    db: TestDatabase,
    state_dir: Path,
    *,
    idle_timeout: float = 60.0,
    functions_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(db, state_dir, idle_timeout=idle_timeout, functions_dir=functions_dir, env=env)
    gateway.start()
    try:
        with rollup_loop(db.url):  # the stack runs the gateway beside the maintain loop's rollup pass
            yield gateway
    finally:
        gateway.stop()
        # a database with a logical replication slot cannot be dropped
        asyncio.run(drop_slot(db.url, slot_name_for(db.name)))


@pytest.fixture(scope="module")
def gateway(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A running gateway for the module's database (idle timeout 60 s, as Phoenix)."""
    yield from start_gateway(db, tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="module")
def owner(db: TestDatabase) -> Iterator[psycopg.Connection[object]]:
    """A trusted connection (role postgres) for arranging data."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        yield conn
