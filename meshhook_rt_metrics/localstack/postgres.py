"""An embedded PostgreSQL cluster owned by a state directory.

Uses the system's PostgreSQL binaries (Debian layout or on PATH) and falls back to the ``pgserver``
wheel where none exist. ``initdb`` refuses root, so when running as root the server runs as the
``postgres`` OS user with directories it owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

SUPERUSER = "supabase_admin"
"""Superuser name, as on Supabase; the migrations' owner ``postgres`` is deliberately not a superuser."""

DEFAULT_PORT = 54322
LOGIN_ROLES = ("postgres", "authenticator")
"""Roles that log in with a password: generated once per state dir (``<state-dir>/secrets/db-passwords.json``)."""
LEGACY_PASSWORDS = {"postgres": "postgres", "authenticator": "authenticator"}
"""What state dirs created before per-state-dir passwords used; ``up`` replaces them (``ensure_passwords``)."""

HBA = """# written by meshhook-metrics: every connection, TCP or local socket, authenticates with SCRAM
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""
PRELOAD_CANDIDATES = ("pg_cron",)


class PostgresError(RuntimeError):
    """The local cluster could not be created, started or stopped."""


@dataclass(frozen=True)
class Binaries:
    """Where the PostgreSQL server programs live."""

    bindir: Path

    def path(self, program: str) -> str:
        return str(self.bindir / program)

    @property
    def libdir(self) -> Path:
        out = subprocess.run(
            [self.path("pg_config"), "--pkglibdir"], capture_output=True, text=True, check=False
        )
        return Path(out.stdout.strip()) if out.returncode == 0 else self.bindir.parent / "lib"

    @property
    def sharedir(self) -> Path:
        out = subprocess.run(
            [self.path("pg_config"), "--sharedir"], capture_output=True, text=True, check=False
        )
        return Path(out.stdout.strip()) if out.returncode == 0 else self.bindir.parent / "share"

    def has_extension(self, name: str) -> bool:
        return (self.sharedir / "extension" / f"{name}.control").exists()

    def has_library(self, name: str) -> bool:
        return (self.libdir / f"{name}.so").exists()


def find_binaries(debian_root: Path = Path("/usr/lib/postgresql")) -> Binaries:
    """Locate ``initdb``/``pg_ctl``: ``MESHHOOK_METRICS_PG_BINDIR``, else the newest Debian install, else
    PATH, else the ``pgserver`` wheel (``pip install 'meshhook-rt-metrics[embedded]'``)."""
    override = os.environ.get("MESHHOOK_METRICS_PG_BINDIR")
    if override:
        if not (Path(override) / "pg_ctl").exists():
            raise PostgresError(f"MESHHOOK_METRICS_PG_BINDIR={override} has no pg_ctl")
        return Binaries(Path(override))
    debian = sorted(debian_root.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if debian:
        return Binaries(debian[-1].parent)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Binaries(Path(on_path).resolve().parent)
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError as exc:
        raise PostgresError(
            "no PostgreSQL server binaries found: install PostgreSQL (Debian: postgresql-15) "
            "or the 'pgserver' wheel"
        ) from exc
    return Binaries(Path(pgserver.__file__).parent / "pginstall" / "bin")


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it, else a free ephemeral port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise PostgresError("no free TCP port on 127.0.0.1")


class LocalPostgres:
    """One cluster in ``state_dir/pg``: create, start, stop; connection URLs for its roles."""

    def __init__(self, state_dir: Path, port: int = DEFAULT_PORT, *, fast: bool = False) -> None:
        self.state_dir = state_dir.resolve()
        self.data_dir = self.state_dir / "pg" / "data"
        self.socket_dir = self.state_dir / "pg" / "run"
        self.log_file = self.state_dir / "pg" / "postgres.log"
        self.port_file = self.state_dir / "pg" / "port"
        self.secret_file = self.state_dir / "pg" / "superuser-password"
        self.secrets_dir = self.state_dir / "secrets"
        self.passwords_file = self.secrets_dir / "db-passwords.json"
        self._preferred_port = port
        self._fast = fast
        self.binaries = find_binaries()
        self._run_as = _server_user()

    # -- properties -----------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def port(self) -> int:
        if not self.port_file.exists():
            raise PostgresError(f"no cluster in {self.state_dir}: run 'meshhook-metrics up' first")
        return int(self.port_file.read_text().strip())

    @property
    def superuser_password(self) -> str:
        return self.secret_file.read_text().strip()

    def role_password(self, role: str) -> str:
        """A login role's password: the state dir's generated one; a state dir from before they were generated
        keeps the old fixed one until ``up`` replaces it."""
        if not self.passwords_file.exists():
            return LEGACY_PASSWORDS[role]
        return str(json.loads(self.passwords_file.read_text())[role])

    def ensure_passwords(self) -> dict[str, str]:
        """The login roles' passwords, generated once per state dir: a 0600 file in a 0700 directory."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        if self.passwords_file.exists():
            self.passwords_file.chmod(0o600)
            return {role: str(pw) for role, pw in json.loads(self.passwords_file.read_text()).items()}
        passwords = {role: secrets.token_urlsafe(24) for role in LOGIN_ROLES}
        tmp = self.passwords_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(passwords, out)
        os.replace(tmp, self.passwords_file)
        return passwords

    def url(self, role: str = "postgres", password: str | None = None, database: str = "postgres") -> str:
        secret = self.role_password(role) if password is None else password
        return f"postgresql://{role}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{database}"

    def admin_url(self, database: str = "postgres") -> str:
        return self.url(SUPERUSER, self.superuser_password, database)

    def preload_libraries(self) -> list[str]:
        return [lib for lib in PRELOAD_CANDIDATES if self.binaries.has_library(lib)]

    # -- lifecycle ------------------------------------------------------------------------------
    def init(self) -> bool:
        """Create the cluster when absent; returns True when it was created now."""
        if self.initialised:
            return False
        for directory in (self.data_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._hand_over(self.state_dir / "pg")
        self._allow_traversal()
        self.ensure_passwords()
        password = secrets.token_urlsafe(24)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        pwfile = self.state_dir / "pg" / ".initpw"
        pwfile.write_text(password + "\n")
        self._hand_over(pwfile)
        try:
            self._run(
                [
                    self.binaries.path("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.port_file.write_text(f"{free_port(self._preferred_port)}\n")
        self._write_config()
        return True

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": "logical",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }
        preload = self.preload_libraries()
        if preload:
            settings["shared_preload_libraries"] = "'" + ",".join(preload) + "'"
            settings["cron.database_name"] = "'postgres'"
            settings["cron.use_background_workers"] = "on"
            settings["max_worker_processes"] = "32"
        if self._fast:
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf = "\n".join(f"{key} = {value}" for key, value in settings.items())
        (self.data_dir / "postgresql.auto.conf").write_text(
            "# written by meshhook-metrics; edit with care\n" + conf + "\n"
        )
        self._hand_over(self.data_dir / "postgresql.auto.conf")
        self._write_hba()

    def _write_hba(self) -> bool:
        """SCRAM for every connection (clusters from before trusted local sockets); True when changed."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.exists() and hba.read_text() == HBA:
            return False
        hba.write_text(HBA)
        self._hand_over(hba)
        return True

    def running(self) -> bool:
        if not self.initialised:
            return False
        result = subprocess.run(
            [self.binaries.path("pg_ctl"), "status", "-D", str(self.data_dir)],
            capture_output=True,
            check=False,
            **self._identity(),
        )
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        changed = self._write_hba()
        if self.running():
            if changed:
                self._run([self.binaries.path("pg_ctl"), "reload", "-D", str(self.data_dir)])
            return
        self._run(
            [
                self.binaries.path("pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
            ]
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [self.binaries.path("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(
            f"PostgreSQL did not accept connections within {timeout:.0f}s; see {self.log_file}"
        )

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run([self.binaries.path("pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data_dir)])

    def destroy(self) -> None:
        with contextlib.suppress(PostgresError):
            self.stop("immediate")
        shutil.rmtree(self.state_dir / "pg", ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------
    def _hand_over(self, path: Path) -> None:
        """Give ``path`` (recursively) to the server's OS user when we run as root."""
        if self._run_as is None:
            return
        entry = pwd.getpwnam(self._run_as)
        for target in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.chown(target, entry.pw_uid, entry.pw_gid)

    def _allow_traversal(self) -> None:
        """Let the server's OS user reach ``state_dir/pg`` through directories we own."""
        if self._run_as is None:
            return
        for parent in (self.state_dir / "pg").parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _identity(self) -> dict[str, Any]:
        """subprocess arguments that run a program as the server's OS user, its own group and no others."""
        if self._run_as is None:
            return {}
        entry = pwd.getpwnam(self._run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, args: Sequence[str]) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, cwd="/", check=False, **self._identity()
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise PostgresError(f"{Path(args[0]).name} failed: {detail}")


def _server_user() -> str | None:
    """The OS user the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresError("running as root needs an OS user 'postgres' to run the server") from exc
    return "postgres"
