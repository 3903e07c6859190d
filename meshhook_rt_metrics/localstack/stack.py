"""The local stack in one state directory: embedded PostgreSQL plus the background services.

``up`` is idempotent: it creates what is missing, starts what is stopped and reuses existing data.
Services are detached processes with pid files, so ``down`` and ``status`` work from any shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import bootstrap_database
from meshhook_rt_metrics.localstack.gateway.config import DEFAULT_PORT as GATEWAY_PORT
from meshhook_rt_metrics.localstack.gateway.keys import keys_for_state_dir
from meshhook_rt_metrics.localstack.postgres import LocalPostgres, free_port

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Service:
    """A background process of the stack: its name and command line."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    supervised: bool = False  # restarted when it dies (meshhook_rt_metrics.localstack.supervise)


class LocalStack:
    def __init__(self, state_dir: Path, db_port: int = 54322, *, fast: bool = False) -> None:
        self.state_dir = state_dir.resolve()
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
        """The background processes ``up --detach`` starts (later components add theirs here)."""
        cli = [sys.executable, "-m", "meshhook_rt_metrics.cli"]
        return [
            Service("maintain", [*cli, "maintain", "--loop", "--db-url", self.database_url]),
            Service(
                "gateway",
                [
                    *cli,
                    "gateway",
                    "--state-dir",
                    str(self.state_dir),
                    "--db-url",
                    self.database_url,
                    "--port",
                    str(self.gateway_port),
                ],
            ),
            Service(
                "receiver",
                [*cli, "demo-receiver", "--port", str(self.receiver_port)],
            ),
            Service(
                "alert-worker",
                [
                    *cli,
                    "alert-worker",
                    "--local",
                    "--state-dir",
                    str(self.state_dir),
                    "--db-url",
                    self.database_url,
                ],
                # the demo receiver listens on loopback, which the SSRF guard refuses unless allowed
                env={"MESHHOOK_METRICS_ALERT_SSRF_ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]'},
                supervised=True,
            ),
            Service(
                "api",
                [
                    *cli,
                    "serve",
                    "--state-dir",
                    str(self.state_dir),
                    "--db-url",
                    self.database_url,
                    "--port",
                    str(self.api_port),
                ],
                env=self.dashboard_env(),
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

    def service_pid(self, name: str) -> int | None:
        path = self._pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip())
        if not _alive(pid):
            path.unlink(missing_ok=True)
            return None
        return pid

    def start_services(self, progress: Progress = lambda _: None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services():
            if self.service_pid(service.name):
                progress(f"{service.name}: already running")
                continue
            argv = service.argv
            if service.supervised:
                argv = [sys.executable, "-m", "meshhook_rt_metrics.localstack.supervise", "--", *argv]
            with open(self.log_dir / f"{service.name}.log", "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **service.env},
                )
            self._pid_file(service.name).write_text(f"{proc.pid}\n")
            progress(
                f"{service.name}: started (pid {proc.pid}, log {self.log_dir / (service.name + '.log')})"
            )

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
            if self.service_pid(service.name):
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
        state = {"postgres": "running" if self.postgres.running() else "stopped"}
        for service in self.services():
            pid = self.service_pid(service.name)
            state[service.name] = f"running (pid {pid})" if pid else "stopped"
        return state


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
