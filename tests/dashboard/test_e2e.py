"""The dashboard in a real browser against a whole local stack: dashboard/e2e/dashboard.e2e.mjs.

A module fixture starts ``LocalStack`` (PostgreSQL, gateway, alert worker, receiver, HTTP service serving
``dashboard/build``) in a throwaway state dir on free ports, so it runs next to a developer's own stack,
with a short access-token lifetime so that sessions must refresh during the run. The Node suite
(node:test + playwright-core, Debian's Chromium) signs in through the page and drives it; it calls
tests/dashboard/e2e_control.py for what needs Python (recording through MetricsClient, restarting the
gateway, creating rules). ``make dashboard`` builds the page first (``make test`` does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshhook_rt_metrics.demo import DEMO_PROJECT
from meshhook_rt_metrics.localstack.gateway.config import ACCESS_TOKEN_LIFETIME_ENV
from meshhook_rt_metrics.localstack.stack import LocalStack
from meshhook_rt_metrics.localstack.users import OTHER_PROJECT, ensure_demo_users

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboard"
SUITE = "e2e/dashboard.e2e.mjs"
CHROMIUM = Path(os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium"))
PLAYWRIGHT = DASHBOARD / "node_modules" / "playwright-core"
SCREENSHOT = REPO / "docs" / "img" / "dashboard.png"
TOKEN_LIFETIME = 20
"""Seconds: the page's access token expires (and must be refreshed) several times during the run."""

pytestmark = pytest.mark.timeout(600)  # stack start, about four minutes of browser tests, stack stop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ok(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    if not (DASHBOARD / "build" / "index.html").is_file():
        pytest.fail(
            "dashboard/build is missing: run `make dashboard` (or `cd dashboard && npm run build`) first"
        )
    if not PLAYWRIGHT.is_dir():
        pytest.fail("dashboard/node_modules/playwright-core is missing: run `make install`")
    if not CHROMIUM.exists() or shutil.which("node") is None:
        pytest.skip(f"needs node and Chromium at {CHROMIUM} (E2E_CHROMIUM)")
    # not under pytest's tmp dir: pytest makes that 0700, which locks out the server's OS user (tests/conftest.py)
    state_dir = Path(tempfile.mkdtemp(prefix="meshhook-e2e-"))
    # every port chosen now among the free ones, so a developer's stack on the default ports is left alone
    for service in ("gateway", "api", "receiver"):
        (state_dir / service).mkdir(parents=True)
        (state_dir / service / "port").write_text(f"{_free_port()}\n")
    stack = LocalStack(state_dir, db_port=0, fast=True)
    saved = os.environ.get(ACCESS_TOKEN_LIFETIME_ENV)
    os.environ[ACCESS_TOKEN_LIFETIME_ENV] = str(TOKEN_LIFETIME)  # the services inherit it
    try:
        stack.up()
        ensure_demo_users(stack.database_url)
        env = stack.env()
        _wait_ok(env["SUPABASE_URL"] + "/health")
        _wait_ok(env["METRICS_API_URL"] + "/healthz")
        _wait_ok(env["DASHBOARD_URL"] + "config.json")
        yield stack
    finally:
        if saved is None:
            os.environ.pop(ACCESS_TOKEN_LIFETIME_ENV, None)
        else:
            os.environ[ACCESS_TOKEN_LIFETIME_ENV] = saved
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_dashboard_in_a_browser(stack: LocalStack) -> None:
    env = {
        **os.environ,
        **stack.env(),
        ACCESS_TOKEN_LIFETIME_ENV: str(TOKEN_LIFETIME),  # e2e_control restarts the gateway with the same
        "E2E_REPO": str(REPO),
        "E2E_PYTHON": sys.executable,
        "E2E_CHROMIUM": str(CHROMIUM),
        "E2E_ADMIN_PROJECT": str(DEMO_PROJECT),
        "E2E_OTHER_PROJECT": str(OTHER_PROJECT),
        "E2E_SCREENSHOT": str(SCREENSHOT),
        "E2E_SPOOL_DIR": str(stack.state_dir / "e2e-spool"),
    }
    try:
        result = subprocess.run(
            [
                "node",
                "--test",
                "--test-concurrency=1",
                "--test-reporter=spec",
                "--test-timeout=300000",
                SUITE,
            ],
            cwd=DASHBOARD,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{SUITE} did not finish:\n{exc.stdout!s}\n{exc.stderr!s}")
    output = result.stdout[-12000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert "ℹ fail 0" in result.stdout or "# fail 0" in result.stdout, output
    assert "ℹ pass 0" not in result.stdout and "# pass 0" not in result.stdout, output
    print(result.stdout[-6000:])  # the spec report with timings and diagnostics (pytest -s / -rP)
