"""The local stack in one state directory: embedded PostgreSQL plus the background services.

``up`` is idempotent: it creates what is missing, starts what is stopped and reuses existing data.
Services are detached processes with pid files, so ``down`` and ``status`` work from any shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database
from meshhook_rt_metrics.localstack.gateway.config import DEFAULT_PORT as GATEWAY_PORT
from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir
from meshhook_rt_metrics.localstack.postgres import LocalPostgres, free_port
from meshhook_rt_metrics.localstack.supervise import DEFAULT_KEEP, DEFAULT_MAX_BYTES

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Service:
    """A background process of the stack: its name and command line."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    supervised: bool = True  # restarted when it dies (meshhook_rt_metrics.localstack.supervise)


class LocalStack:
    def __init__(
        self,
        state_dir: Path,
        db_port: int = 54322,
        *,
        fast: bool = False,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_keep: int = DEFAULT_KEEP,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.postgres = LocalPostgres(self.state_dir, db_port, fast=fast)
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "logs"

    # -- database -------------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.postgres.url()

    def start_database(self, progress: Progress = lambda _: None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres.init():
            progress(f"created PostgreSQL cluster in {self.postgres.data_dir}")
        self.postgres.start()
        progress(f"PostgreSQL listening on 127.0.0.1:{self.postgres.port}")
        extensions = bootstrap_database(self.postgres)
        progress(
            "Supabase look-alike bootstrap applied"
            + (f" (extensions: {', '.join(extensions)})" if extensions else "")
        )
        applied = migrator.migrate(
            self.database_url, progress=lambda m: progress(f"applying migration {m.path.name}")
        )
        progress(f"{len(applied)} migration(s) applied, schema up to date")

    # -- services -------------------------------------------------------------------------------
    def services(self) -> list[Service]:
        """The background processes ``up`` starts, each under the supervisor. No DSN on a command line:
        ``ps`` shows every argv, so services get the database URL (with its password) from the environment or
        compute it from the state dir."""
        cli = [sys.executable, "-m", "meshhook_rt_metrics.cli"]
        database = {"MESHHOOK_METRICS_DATABASE_URL": self.database_url}
        return [
            Service("maintain", [*cli, "maintain", "--loop"], env=database),
            Service(
                "gateway",
                [*cli, "gateway", "--state-dir", str(self.state_dir), "--port", str(self.gateway_port)],
                env={"MESHHOOK_METRICS_AUTHENTICATOR_PASSWORD": self.postgres.role_password("authenticator")},
            ),
            Service(
                "receiver",
                [*cli, "demo-receiver", "--port", str(self.receiver_port)],
            ),
            Service(
                "alert-worker",
                [*cli, "alert-worker", "--local", "--state-dir", str(self.state_dir)],
                # the demo receiver listens on loopback, which the SSRF guard refuses unless allowed
                env={"MESHHOOK_METRICS_ALERT_SSRF_ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]'},
            ),
            Service(
                "api",
                [*cli, "serve", "--state-dir", str(self.state_dir), "--port", str(self.api_port)],
                env={**database, **self.dashboard_env()},
            ),
        ]

    # -- HTTP service (meshhook_rt_metrics.api) ---------------------------------------------------
    @property
    def api_port(self) -> int:
        """The metrics API's port, chosen once per state dir (54330 when free): a stable METRICS_API_URL."""
        from meshhook_rt_metrics.api.settings import DEFAULT_PORT as API_PORT

        return self._sticky_port("api", API_PORT)

    @property
    def dashboard_url(self) -> str:
        """The standalone dashboard page, served by the api service (same origin as /api/metrics)."""
        return f"http://127.0.0.1:{self.api_port}/dashboard/"

    @property
    def dashboard_dir(self) -> Path:
        """The checkout's dashboard build (``make dashboard``), which the api service serves."""
        from meshhook_rt_metrics.api.settings import REPO_DASHBOARD_BUILD

        return REPO_DASHBOARD_BUILD

    @property
    def dashboard_built(self) -> bool:
        """Whether there is a page to serve: ``up`` still starts without one, but says how to build it."""
        return (self.dashboard_dir / "index.html").is_file()

    def dashboard_env(self) -> dict[str, str]:
        """What the api service hands the page in config.json: the gateway's URL and its public anon key only
        (the service key and the JWT secret stay out). The build dir is passed even before it exists, so a
        later ``make dashboard`` is served without restarting the stack."""
        gateway = self.gateway_env()
        return {
            "MESHHOOK_METRICS_SUPABASE_URL": gateway["SUPABASE_URL"],
            "MESHHOOK_METRICS_SUPABASE_ANON_KEY": gateway["SUPABASE_ANON_KEY"],
            "MESHHOOK_METRICS_DASHBOARD_DIR": str(self.dashboard_dir),
        }

    @property
    def receiver_port(self) -> int:
        """The demo receiver's port, chosen once per state dir (54340 when free)."""
        return self._sticky_port("receiver", 54340)

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/alerts"

    # -- gateway --------------------------------------------------------------------------------
    @property
    def gateway_port(self) -> int:
        """The gateway's port, chosen once per state dir (54321 when free) so that SUPABASE_URL is stable."""
        return self._sticky_port("gateway", GATEWAY_PORT)

    def _sticky_port(self, service: str, preferred: int) -> int:
        """A service's port, chosen once per state dir (``preferred`` when free) and kept across restarts."""
        path = self.state_dir / service / "port"
        if path.exists():
            return int(path.read_text().strip())
        path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port(preferred)
        path.write_text(f"{port}\n")
        return port

    def gateway_env(self) -> dict[str, str]:
        """What a Supabase client needs: URL and keys (the JWT secret for tools that mint tokens)."""
        keys = keys_for_state_dir(self.state_dir)
        return {
            "SUPABASE_URL": f"http://127.0.0.1:{self.gateway_port}",
            "SUPABASE_ANON_KEY": keys.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
            "SUPABASE_JWT_SECRET": keys.secret,
        }

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _status_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def service_pid(self, name: str) -> int | None:
        """The pid of a service's supervisor while that very process runs. The pid file records the process'
        start time next to its pid: a pid reused by an unrelated process after a crash or reboot does not
        match, so ``down`` never signals someone else's process group."""
        path = self._pid_file(name)
        if not path.exists():
            return None
        try:
            fields = path.read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            path.unlink(missing_ok=True)
            return None
        recorded = fields[1] if len(fields) > 1 else None
        if not _alive(pid) or not _same_process(pid, recorded):
            path.unlink(missing_ok=True)
            return None
        return pid

    def service_details(self, name: str) -> dict[str, Any]:
        """What ``status`` shows of a service: state, pids, restarts and the last error (from its supervisor)."""
        pid = self.service_pid(name)
        info: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(self._status_file(name).read_text())
        if pid is None:
            state = "stopped"
        elif info.get("state") == "backoff":
            state = "restarting"
        else:
            state = "running"
        return {
            "state": state,
            "pid": pid,
            "child_pid": info.get("child_pid") if pid else None,
            "restarts": int(info.get("restarts") or 0),
            "last_error": info.get("last_error"),
            "last_error_at": info.get("last_error_at"),
            "log": str(self.log_dir / f"{name}.log"),
        }

    def start_services(self, progress: Progress = lambda _: None) -> list[str]:
        """Start every service that is not running; returns the names started."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        for service in self.services():
            if self.service_pid(service.name):
                progress(f"{service.name}: already running")
                continue
            log = self.log_dir / f"{service.name}.log"
            argv = service.argv
            if service.supervised:
                argv = [
                    sys.executable,
                    "-m",
                    "meshhook_rt_metrics.localstack.supervise",
                    "--name",
                    service.name,
                    "--log",
                    str(log),
                    "--status",
                    str(self._status_file(service.name)),
                    "--max-bytes",
                    str(self.log_max_bytes),
                    "--keep",
                    str(self.log_keep),
                    "--",
                    *argv,
                ]
                # the supervisor writes the service's log; its own output is only a crash of its own
                output = self.log_dir / "supervisor.log"
            else:
                output = log
            self._status_file(service.name).unlink(missing_ok=True)
            with open(output, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **service.env},
                )
            self._pid_file(service.name).write_text(f"{proc.pid} {process_start_time(proc.pid) or ''}\n")
            started.append(service.name)
            progress(f"{service.name}: started (pid {proc.pid}, log {log})")
        return started

    def stop_services(self, progress: Progress = lambda _: None, timeout: float = 10.0) -> None:
        for service in reversed(self.services()):
            pid = self.service_pid(service.name)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.service_pid(service.name):
                time.sleep(0.1)
            if self.service_pid(service.name):  # checked again: still the same process
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self._pid_file(service.name).unlink(missing_ok=True)
            progress(f"{service.name}: stopped")

    # -- whole stack ----------------------------------------------------------------------------
    def up(self, progress: Progress = lambda _: None, *, services: bool = True) -> None:
        self.start_database(progress)
        if services:
            self.start_services(progress)

    def down(self, progress: Progress = lambda _: None) -> None:
        self.stop_services(progress)
        if self.postgres.initialised:
            self.postgres.stop()
            progress("PostgreSQL stopped")

    def env(self) -> dict[str, str]:
        """Connection settings for tools and tests, as printed by ``status -o env``."""
        return {
            "DATABASE_URL": self.database_url,
            "MESHHOOK_METRICS_DATABASE_URL": self.database_url,
            "MESHHOOK_METRICS_STATE_DIR": str(self.state_dir),
            **self.gateway_env(),
            "METRICS_API_URL": f"http://127.0.0.1:{self.api_port}",
            "DEMO_RECEIVER_URL": self.receiver_url,
            "DASHBOARD_URL": self.dashboard_url,
        }

    def status(self) -> dict[str, str]:
        """One line per process: ``running (pid N)``, ``restarting (pid N)`` (in its supervisor's backoff) or
        ``stopped``; ``service_details`` has the restart counts and last errors."""
        state = {"postgres": "running" if self.postgres.running() else "stopped"}
        for service in self.services():
            details = self.service_details(service.name)
            pid = details["pid"]
            state[service.name] = f"{details['state']} (pid {pid})" if pid else "stopped"
        return state


def process_start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc; psutil elsewhere): with the pid, an identity."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:
        return None


def _same_process(pid: int, recorded: str | None) -> bool:
    """Whether ``pid`` is still the process the pid file was written for. Pid files from before start times
    were recorded are trusted only when the process runs our code."""
    if recorded:
        return process_start_time(pid) == recorded
    try:
        return b"meshhook_rt_metrics" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running, not merely a zombie: a detached service outlives the CLI that started it, so nobody reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
