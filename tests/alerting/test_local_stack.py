"""The alert worker's place in the local stack: its settings, its supervisor and the demo receiver."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from meshhook_rt_metrics.alerting.notify import Delivery, build_notifiers
from meshhook_rt_metrics.api.settings import REPO_DASHBOARD_BUILD, ApiSettings
from meshhook_rt_metrics.cli import _alert_settings
from meshhook_rt_metrics.localstack import demo_receiver
from meshhook_rt_metrics.localstack.stack import LocalStack
from tests.localstack.conftest import free_port


def stack_in(path: Path) -> LocalStack:
    """A stack's state dir as ``up`` leaves it (the port it chose), without starting anything."""
    stack = LocalStack(path, 54999)
    stack.postgres.port_file.parent.mkdir(parents=True, exist_ok=True)
    stack.postgres.port_file.write_text("54999\n")
    return stack


def test_the_local_flag_takes_the_stacks_database_gateway_and_keys(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    settings = _alert_settings(stack, None)
    env = stack.gateway_env()
    assert settings.database_url == stack.database_url
    assert settings.supabase_url == env["SUPABASE_URL"]
    assert (
        settings.service_key is not None
        and settings.service_key.get_secret_value() == env["SUPABASE_SERVICE_ROLE_KEY"]
    )
    assert (
        settings.jwt_secret is not None
        and settings.jwt_secret.get_secret_value() == env["SUPABASE_JWT_SECRET"]
    )
    assert _alert_settings(stack, "postgresql://other/db").database_url == "postgresql://other/db"


def test_the_stack_runs_the_worker_supervised_and_lets_it_reach_the_demo_receiver(tmp_path: Path) -> None:
    services = {s.name: s for s in stack_in(tmp_path).services()}
    worker = services["alert-worker"]
    assert worker.supervised and "--local" in worker.argv and "--db-url" not in worker.argv
    assert "127.0.0.0/8" in worker.env["MESHHOOK_METRICS_ALERT_SSRF_ALLOWED_NETWORKS"]
    assert "receiver" in services


def test_the_api_service_serves_the_dashboard_with_the_stacks_public_settings(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    api = {s.name: s for s in stack.services()}["api"]
    gateway = stack.gateway_env()
    assert api.env == {
        "MESHHOOK_METRICS_DATABASE_URL": stack.database_url,  # the service's own login, not the page's
        "MESHHOOK_METRICS_SUPABASE_URL": gateway["SUPABASE_URL"],
        "MESHHOOK_METRICS_SUPABASE_ANON_KEY": gateway["SUPABASE_ANON_KEY"],
        "MESHHOOK_METRICS_DASHBOARD_DIR": str(REPO_DASHBOARD_BUILD),
    }, "the page's config gets the public anon key only: no service key, no JWT secret"
    settings = ApiSettings(**{k.removeprefix("MESHHOOK_METRICS_").lower(): v for k, v in api.env.items()})
    assert settings.supabase_url == gateway["SUPABASE_URL"] and settings.dashboard_dir == REPO_DASHBOARD_BUILD


def test_status_env_prints_the_dashboard_url(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    stack.postgres.data_dir.mkdir(parents=True)
    (stack.postgres.data_dir / "PG_VERSION").write_text("15\n")  # as `up` leaves it; nothing runs
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshhook_rt_metrics.cli",
            "status",
            "--state-dir",
            str(tmp_path),
            "-o",
            "env",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["DASHBOARD_URL"] == f"http://127.0.0.1:{stack.api_port}/dashboard/"
    assert env["DASHBOARD_URL"] == env["METRICS_API_URL"] + "/dashboard/", "same origin as the API"


def test_the_supervisor_restarts_a_service_that_dies_and_stops_with_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    child = f"import pathlib; p = pathlib.Path({str(runs)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x'); raise SystemExit(3)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshhook_rt_metrics.localstack.supervise", "--", sys.executable, "-c", child]
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not runs.exists() or len(runs.read_text()) < 2):
            time.sleep(0.1)
        assert runs.exists() and len(runs.read_text()) >= 2  # died once, started again
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.fixture
def receiver_url() -> str:
    port = free_port()
    threading.Thread(target=demo_receiver.serve, args=(port,), daemon=True).start()
    url = f"http://127.0.0.1:{port}/alerts"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return url


def group() -> dict[str, object]:
    return {"status": "firing", "rule": {"name": "demo"}, "alerts": [
        {"status": "firing", "labels": {"route": "/a"}, "annotations": {"summary": "s"}, "value": 5}
    ]}  # fmt: skip


def test_the_demo_receiver_accepts_our_signed_webhooks_and_refuses_others(
    receiver_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    delivery = Delivery(1, uuid.uuid4().hex, uuid.uuid4(), "demo", "webhook", receiver_url,
                        demo_receiver.DEMO_SECRET, group(), 1, "t")  # fmt: skip
    notifier = build_notifiers()["webhook"]

    async def send() -> tuple[bool, int | None]:
        async with httpx.AsyncClient() as http:
            result = await notifier.send(delivery, http)
        return result.ok, result.status

    assert asyncio.run(send()) == (True, 204)
    assert "FIRING demo" in capsys.readouterr().out
    forged = httpx.post(receiver_url, content=b'{"status": "firing"}',
                        headers={"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"})  # fmt: skip
    assert forged.status_code == 401


def test_the_demo_receivers_check_agrees_with_the_standard_webhooks_library() -> None:
    secret = demo_receiver.DEMO_SECRET
    body = b'{"a": 1}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = Webhook(secret).sign("msg_1", _timestamp(headers), body.decode())
    assert demo_receiver.signature_ok(secret, headers, body)
    assert not demo_receiver.signature_ok(secret, headers, body + b" ")


def _timestamp(headers: dict[str, str]) -> datetime:  # noqa: F821
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
