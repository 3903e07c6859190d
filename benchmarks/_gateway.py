"""A throwaway local stack for benchmarks that need the gateway: a durable PostgreSQL cluster (the server's
default fsync settings, not the tests' fast mode), the migrations, and ``meshhook-metrics gateway`` in
front of it, torn down afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.jwt_keys import JwtKeys, keys_for_state_dir
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database
from meshhook_rt_metrics.localstack.postgres import LocalPostgres, free_port


@dataclass(frozen=True)
class GatewayStack:
    url: str
    keys: JwtKeys
    db_url: str
    pid: int
    state_dir: Path
    pg: LocalPostgres


@contextlib.contextmanager
def local_gateway(
    prefix: str, extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[GatewayStack]:
    """The stack for one benchmark run; the gateway's log is printed if it dies while starting."""
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    pg = LocalPostgres(state_dir, port=0, fast=False)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        pg.init()
        pg.start()
        bootstrap_database(pg)
        migrator.migrate(pg.url())
        port = free_port(0)
        log = open(state_dir / "gateway.log", "wb")  # noqa: SIM115  (open for the gateway's lifetime)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "meshhook_rt_metrics.cli", "gateway", "--state-dir", str(state_dir),
             "--db-url", pg.url(), "--port", str(port), "--log-level", "warning", *extra_args],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "MESHHOOK_METRICS_AUTHENTICATOR_PASSWORD": pg.role_password("authenticator"),
                 **(env or {})},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, gateway, state_dir)
        yield GatewayStack(url, keys_for_state_dir(state_dir), pg.url(), gateway.pid, state_dir, pg)
    finally:
        if gateway is not None and gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(10)
        pg.destroy()
        shutil.rmtree(state_dir, ignore_errors=True)


def _wait_healthy(url: str, gateway: subprocess.Popen[bytes], state_dir: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        if gateway.poll() is not None:
            raise SystemExit((state_dir / "gateway.log").read_text())
        time.sleep(0.1)
    raise SystemExit(f"the gateway did not become healthy in 60 s; log: {state_dir / 'gateway.log'}")
