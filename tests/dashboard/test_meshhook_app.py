"""The package drops into an app shaped like MeshHook's apps/web (tests/meshhook_app: SvelteKit 2, Svelte 5.2.7,
adapter-node, @supabase/ssr) — installed from its ``npm pack`` tarball, built, run with ``node build`` against a
gateway + metrics service of a test database, signed in through the app's own form and rendered in Chromium.

The expensive parts (pack, ``npm ci``, build, the services) run once per module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from meshhook_rt_metrics.localstack.users import add_member
from tests.localstack.conftest import GatewayProcess, free_port, start_gateway
from tests.support import TestDatabase, batch, counter, ingest, stop_group

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboard"
APP = REPO / "tests" / "meshhook_app"
RENDER = APP / "e2e" / "render.mjs"
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = DASHBOARD / "node_modules" / "playwright-core"
EMAIL = "owner@meshhook-app.test"
PASSWORD = "meshhook-app-password"
NPM = ["npm", "--no-audit", "--no-fund", "--loglevel=error"]

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")


def run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout + result.stderr


@dataclass
class BuiltApp:
    dir: Path
    tarball: Path
    build_log: str


@pytest.fixture(scope="module")
def built_app(tmp_path_factory: pytest.TempPathFactory) -> BuiltApp:
    """dashboard -> npm pack tarball -> a copy of tests/meshhook_app with it installed -> ``npm run build``."""
    assert (DASHBOARD / "node_modules").is_dir(), "dashboard deps missing: make install"
    work = tmp_path_factory.mktemp("meshhook-app")
    run(["npm", "run", "package"], DASHBOARD, 120)
    run([*NPM, "pack", "--pack-destination", str(work)], DASHBOARD, 120)
    (tarball,) = work.glob("meshhook-metrics-dashboard-*.tgz")
    app = work / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("node_modules", ".svelte-kit", "build"))
    run([*NPM, "ci"], app, 300)
    # `pnpm add` in MeshHook: the package is a dependency in package.json (the copy's, not the committed one),
    # which is what makes vite-plugin-svelte compile its .svelte files for SSR (not installed --no-save: see
    # docs/dashboard.md)
    run([*NPM, "install", str(tarball)], app, 300)
    log = run(["npm", "run", "build"], app, 300)
    return BuiltApp(app, tarball, log)


def test_the_package_installs_from_its_tarball_and_the_app_builds_on_svelte_5_2(built_app: BuiltApp) -> None:
    installed = json.loads((built_app.dir / "node_modules" / "svelte" / "package.json").read_text())
    assert installed["version"] == "5.2.7", "the app pins the oldest Svelte the package supports"
    package = built_app.dir / "node_modules" / "@meshhook" / "metrics-dashboard"
    assert (package / "dist" / "index.js").is_file() and (package / "dist" / "theme.css").is_file()
    assert not list((package / "dist").rglob("*.test.*")), "tests are not shipped"
    assert (built_app.dir / "build" / "index.js").is_file(), built_app.build_log[-3000:]
    lock = json.loads((APP / "package-lock.json").read_text())
    assert "node_modules/@meshhook/metrics-dashboard" not in lock["packages"], (
        "the committed lockfile stays valid"
    )


# -- the running app ---------------------------------------------------------------------------------------
@dataclass
class Stack:
    gateway: GatewayProcess
    api_url: str
    project: uuid.UUID


@pytest.fixture(scope="module")
def stack(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The gateway (Auth, Realtime) and the metrics HTTP service of the module's database, a user who owns a
    project, and some webhook traffic of the last minutes."""
    state_dir = tmp_path_factory.mktemp("stack")
    project = uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, EMAIL, PASSWORD, project, "admin")
        now = time.time()
        points = [
            counter("meshhook_webhook_requests_total", 5 + i % 3, {"outcome": outcome}, ts=now - 60 * i)
            for i in range(1, 15)
            for outcome in ("ok", "error")
        ]
        ingest(conn, batch(project, points))
    for gateway in start_gateway(db, state_dir):
        port = free_port()
        log = state_dir / "api.log"
        with open(log, "ab") as out:
            api = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meshhook_rt_metrics.cli",
                    "serve",
                    "--state-dir",
                    str(state_dir),
                    "--db-url",
                    db.url,
                    "--port",
                    str(port),
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", api, log)
            yield Stack(gateway, f"http://127.0.0.1:{port}", project)
        finally:
            stop_group(api, signal.SIGTERM)


def node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the process exited:\n{log.read_text(errors='replace')[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise AssertionError(
        f"{url} did not answer within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}"
    )


@pytest.fixture(scope="module")
def app_url(built_app: BuiltApp, stack: Stack) -> Iterator[str]:
    """``node build`` of the app, configured as a MeshHook deployment would be (adapter-node env)."""
    port = free_port()
    url = f"http://localhost:{port}"  # localhost: SvelteKit sets non-Secure cookies for http://localhost only
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ORIGIN": url,
        "PUBLIC_SUPABASE_URL": stack.gateway.url,
        "PUBLIC_SUPABASE_ANON_KEY": stack.gateway.anon_key,
        "METRICS_API_URL": stack.api_url,
    }
    if node_major() < 22:
        # supabase-js >= 2.1xx builds its Realtime client in every createClient (createServerClient too) and wants
        # a global WebSocket: Node 22 has one, Node 20 only behind this flag (docs/dashboard.md, "Node 20")
        env["NODE_OPTIONS"] = f"{os.environ.get('NODE_OPTIONS', '')} --experimental-websocket".strip()
    log = built_app.dir / "app.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["node", "build"],
            cwd=built_app.dir,
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/login", proc, log)
        yield url
    finally:
        stop_group(proc, signal.SIGTERM)


def test_the_proxy_route_forwards_to_the_metrics_service_with_the_callers_token(
    app_url: str, stack: Stack
) -> None:
    anonymous = httpx.get(f"{app_url}/api/metrics/projects", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    signed_in = httpx.post(
        f"{stack.gateway.url}/auth/v1/token?grant_type=password",
        headers={"apikey": stack.gateway.anon_key},
        json={"email": EMAIL, "password": PASSWORD},
        timeout=10,
    )
    token = signed_in.json()["access_token"]
    projects = httpx.get(
        f"{app_url}/api/metrics/projects", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert projects.status_code == 200, projects.text
    assert [p["project_id"] for p in projects.json()["projects"]] == [str(stack.project)]
    query = httpx.get(
        f"{app_url}/api/metrics",
        params={
            "project_id": str(stack.project),
            "metric": "meshhook_webhook_requests_total",
            "agg": "rate",
            "by": "outcome",
            "from": int(time.time()) - 1800,
            "to": int(time.time()),
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert query.status_code == 200, query.text
    assert {s["labels"]["outcome"] for s in query.json()["series"]} == {"ok", "error"}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
@pytest.mark.skipif(not PLAYWRIGHT.is_dir(), reason="needs dashboard/node_modules (make install)")
def test_signing_in_through_the_app_renders_the_live_dashboard(
    app_url: str, stack: Stack, tmp_path: Path
) -> None:
    shot = tmp_path / "metrics.png"
    result = subprocess.run(
        ["node", str(RENDER)],
        check=False,
        env={
            **os.environ,
            "APP_URL": app_url,
            "EMAIL": EMAIL,
            "PASSWORD": PASSWORD,
            "CHROMIUM": str(CHROMIUM),
            "SCREENSHOT": str(shot),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ok"], json.dumps(seen, indent=2)[:6000]
    assert seen["redirectedToLogin"], "no session: /metrics sends to /login"
    assert seen["navHref"] == "/metrics"
    assert "Webhook throughput" in " ".join(seen["figcaptions"])
    assert seen["throughputCanvas"] >= 1, "uPlot drew the chart"
    assert seen["badge"].startswith("Live"), seen["badge"]
    assert not seen["pageErrors"], seen["pageErrors"]
