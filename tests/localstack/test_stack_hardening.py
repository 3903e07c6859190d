"""Issue #15: supervision of every service, per-state-dir database passwords kept off command lines, log
redaction on handlers, and ``down`` that never signals a process it did not start. No database needed."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshhook_rt_metrics import logs
from meshhook_rt_metrics.localstack.postgres import HBA, LocalPostgres
from meshhook_rt_metrics.localstack.stack import LocalStack, Service, _alive
from meshhook_rt_metrics.localstack.supervise import RotatingLog

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXZhbHVl"
SLACK = "https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX"


def stack_in(path: Path) -> LocalStack:
    stack = LocalStack(path, 54999)
    stack.postgres.port_file.parent.mkdir(parents=True, exist_ok=True)
    stack.postgres.port_file.write_text("54999\n")
    return stack


def wait_for(predicate, what: str, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Polls without asserting on durations (shared machine): the deadline only stops a hung test."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- finding 5: supervision ------------------------------------------------------------------------------


def test_every_service_of_the_stack_runs_under_the_supervisor(tmp_path: Path) -> None:
    services = stack_in(tmp_path).services()
    assert {s.name for s in services} == {"maintain", "gateway", "receiver", "alert-worker", "api"}
    assert all(s.supervised for s in services), [s.name for s in services if not s.supervised]


class FlakyStack(LocalStack):
    """A stack whose only service prints an error and dies, over and over."""

    def services(self) -> list[Service]:
        code = "import sys; print('starting'); print('RuntimeError: boom', file=sys.stderr); sys.exit(3)"
        return [Service("flaky", [sys.executable, "-c", code])]


def test_a_dying_service_is_restarted_and_status_shows_restarts_and_last_error(tmp_path: Path) -> None:
    stack = FlakyStack(tmp_path, 54999)
    stack.start_services()
    try:
        wait_for(lambda: stack.service_details("flaky")["restarts"] >= 1, "a restart")
        details = stack.service_details("flaky")
        assert details["state"] in {"running", "restarting"} and details["pid"]
        assert details["last_error"] == "exited with code 3: RuntimeError: boom"
        assert details["last_error_at"]
        assert stack.status()["flaky"].startswith(details["state"]) or stack.status()["flaky"] != "stopped"
        log = (tmp_path / "logs" / "flaky.log").read_text()
        assert "RuntimeError: boom" in log and "supervise: flaky exited with code 3" in log
    finally:
        stack.stop_services()
    assert stack.status()["flaky"] == "stopped"
    assert json.loads((tmp_path / "run" / "flaky.json").read_text())["state"] == "stopped"


def test_service_logs_are_rotated_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    log = RotatingLog(path, max_bytes=4096, keep=2)
    for i in range(2000):
        log.line(f"line {i:05d} " + "x" * 50)
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["svc.log", "svc.log.1", "svc.log.2"], files
    assert all(p.stat().st_size < 4096 + 100 for p in tmp_path.iterdir())
    assert "line 01999" in path.read_text()  # the newest lines are in the live file


def test_the_supervisor_redacts_what_its_service_prints(tmp_path: Path) -> None:
    status = tmp_path / "s.json"
    log = tmp_path / "s.log"
    code = f"print('token {JWT} to {SLACK}', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshhook_rt_metrics.localstack.supervise", "--name", "s", "--log", str(log),
         "--status", str(status), "--", sys.executable, "-c", code]
    )  # fmt: skip
    try:
        wait_for(lambda: log.exists() and "token" in log.read_text(), "the service's output")
        text = log.read_text()
        assert (
            JWT not in text and "XXXXsecretXXXX" not in text and "https://hooks.slack.com/<redacted>" in text
        )
        assert json.loads(status.read_text())["state"] == "running"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


# -- finding 6: passwords ----------------------------------------------------------------------------------


def test_database_passwords_are_generated_once_per_state_dir_and_kept_private(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path)
    first = pg.ensure_passwords()
    assert set(first) == {"postgres", "authenticator"}
    assert all(len(p) >= 24 and p not in {"postgres", "authenticator"} for p in first.values())
    assert pg.ensure_passwords() == first, "generated once, then kept"
    assert stat.S_IMODE(pg.secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(pg.passwords_file.stat().st_mode) == 0o600
    pg.port_file.parent.mkdir(parents=True, exist_ok=True)
    pg.port_file.write_text("5\n")
    assert pg.url() == f"postgresql://postgres:{first['postgres']}@127.0.0.1:5/postgres"
    assert LocalPostgres(tmp_path / "other").ensure_passwords() != first, "per state dir"


def test_the_cluster_authenticates_local_sockets_and_tcp_with_scram() -> None:
    rules = [line.split() for line in HBA.splitlines() if line and not line.startswith("#")]
    assert {rule[0] for rule in rules} == {"local", "host"}
    assert all(rule[-1] == "scram-sha-256" for rule in rules), "no trust, no md5"


def test_no_service_gets_a_database_password_on_its_command_line(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    stack.postgres.ensure_passwords()
    secrets = [stack.postgres.role_password("postgres"), stack.postgres.role_password("authenticator")]
    for service in stack.services():
        argv = " ".join(service.argv)
        assert "postgresql://" not in argv and "--db-url" not in argv, service.name
        assert not any(secret in argv for secret in secrets), service.name
    env = {s.name: s.env for s in stack.services()}
    assert env["maintain"]["MESHHOOK_METRICS_DATABASE_URL"] == stack.database_url
    assert env["api"]["MESHHOOK_METRICS_DATABASE_URL"] == stack.database_url
    assert env["gateway"]["MESHHOOK_METRICS_AUTHENTICATOR_PASSWORD"] == secrets[1]


# -- finding 16: redaction on handlers ---------------------------------------------------------------------


def test_redaction_sits_on_the_handlers_so_child_loggers_are_redacted_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logs.redact_handlers()
        child = logging.getLogger("meshhook_rt_metrics.alerting.worker.some_child")
        child.setLevel(logging.INFO)
        child.warning("delivering to %s with apikey=%s", SLACK, "sekrit-key")
        child.warning(
            "db postgresql://postgres:hunter2hunter2@127.0.0.1:5/postgres Authorization: Bearer %s", JWT
        )
        try:
            raise RuntimeError(f"failed for {SLACK} token={JWT}")
        except RuntimeError:
            child.exception("boom")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("XXXXsecretXXXX", "sekrit-key", "hunter2hunter2", JWT, "services/T0001"):
        assert secret not in text, secret
    assert "https://hooks.slack.com/<redacted>" in text and "RuntimeError" in text


def test_redact_keeps_what_is_not_secret() -> None:
    line = "Uvicorn running on http://127.0.0.1:54321 (Press CTRL+C to quit); 3 messages delivered"
    assert logs.redact(line) == line


# -- finding 18: pid reuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pid_file", ["legacy", "other-start-time"])
def test_down_never_signals_a_process_that_reused_a_services_pid(tmp_path: Path, pid_file: str) -> None:
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        stack = stack_in(tmp_path)
        stack.run_dir.mkdir(parents=True)
        # as if the gateway had this pid before a crash or reboot and the pid had been handed out again
        text = f"{stranger.pid}\n" if pid_file == "legacy" else f"{stranger.pid} 12345\n"
        (stack.run_dir / "gateway.pid").write_text(text)
        assert stack.service_pid("gateway") is None
        stack.stop_services()
        assert stranger.poll() is None, "the unrelated process was signalled"
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_status_and_down_still_find_the_services_they_started(tmp_path: Path) -> None:
    class Sleeper(LocalStack):
        def services(self) -> list[Service]:
            return [Service("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])]

    stack = Sleeper(tmp_path, 54999)
    stack.start_services()
    pid = stack.service_pid("sleeper")
    assert pid is not None and len((tmp_path / "run" / "sleeper.pid").read_text().split()) == 2
    stack.stop_services()
    assert stack.service_pid("sleeper") is None
    assert not _alive(pid)  # a zombie until this test process reaps it
