"""HTTP service fixtures: the real app on uvicorn (a thread, a free port) in front of the module's database.

Two projects with their own admins and a viewer of A; tokens are signed with the module's JWT secret,
exactly as the local gateway (and Supabase Auth) would sign them.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from meshhook_rt_metrics.api import ApiSettings, create_app
from meshhook_rt_metrics.jwt_keys import JwtKeys
from tests.support import TestDatabase, add_member

SECRET = "test-secret-of-the-api-tests-0123456789abcdef-0123456789abcdef-xyz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# the suites send hundreds of queries a second as one user: a limit no test reaches unless it sets its own
# (test_query_limits.py tests the limit itself)
GENEROUS_RATE = {"query_rate_per_second": 1000.0, "query_rate_burst": 1000}


class ApiServer:
    """create_app() served by uvicorn in a background thread; restartable (a new app, same database)."""

    def __init__(self, db: TestDatabase, **overrides: Any) -> None:
        self.db = db
        self.overrides = {**GENEROUS_RATE, **overrides}
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        settings = ApiSettings(
            database_url=self.db.url,
            jwt_secret=SECRET,  # type: ignore[arg-type]
            api_port=self.port,
            pool_min_size=1,
            pool_max_size=8,
            **self.overrides,
        )
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class World:
    """Projects, users and tokens of one test module."""

    keys: JwtKeys
    project_a: uuid.UUID = field(default_factory=uuid.uuid4)
    project_b: uuid.UUID = field(default_factory=uuid.uuid4)
    admin_a: uuid.UUID = field(default_factory=uuid.uuid4)
    viewer_a: uuid.UUID = field(default_factory=uuid.uuid4)
    admin_b: uuid.UUID = field(default_factory=uuid.uuid4)
    outsider: uuid.UUID = field(default_factory=uuid.uuid4)

    def token(self, user: uuid.UUID, **extra: Any) -> str:
        return self.keys.user_token(user, extra=extra or None)

    def headers(self, user: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    @property
    def service_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.service_role_key}"}


@pytest.fixture(scope="module")
def world(db: TestDatabase) -> World:
    w = World(keys=JwtKeys(SECRET))
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, w.project_a, w.admin_a, "admin")
        add_member(conn, w.project_a, w.viewer_a, "viewer")
        add_member(conn, w.project_b, w.admin_b, "admin")
    return w


@pytest.fixture(scope="module")
def admin_a(world: World) -> dict[str, str]:
    """The headers of project A's admin."""
    return world.headers(world.admin_a)


@pytest.fixture(scope="module")
def editor_a(world: World, conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The headers of an editor of project A (test_alerts.py has its own: the user id)."""
    user = uuid.uuid4()
    add_member(conn, world.project_a, user, "editor")
    return world.headers(user)


@pytest.fixture(scope="module")
def api(db: TestDatabase) -> Iterator[ApiServer]:
    server = ApiServer(db)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A trusted connection (the migration owner) for ingesting test data."""
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


@dataclass(frozen=True)
class Seed:
    """Known data: minute ``minute`` (epoch seconds) of project A and B."""

    minute: int
    latencies: list[float]


LATENCIES = [0.01 * (i % 50 + 1) for i in range(200)] + [1.5, 2.5]


@pytest.fixture(scope="module")
def seeded(world: World, conn: psycopg.Connection[Any]) -> Seed:
    from tests.support import batch, counter, gauge, histogram, ingest

    minute = int(time.time() // 60 * 60) - 600
    a, b = world.project_a, world.project_b
    ok = {"outcome": "ok", "signature": "valid"}
    err = {"outcome": "error", "signature": "valid"}
    name = "meshhook_webhook_requests_total"
    for i, value in enumerate((10, 20, 30)):
        ingest(conn, batch(a, [counter(name, value, ok, ts=minute + 5 + i * 10)]))
    ingest(conn, batch(a, [counter(name, 6, err, ts=minute + 30)]))
    ingest(
        conn,
        batch(
            a,
            [
                histogram(
                    "meshhook_workflow_step_duration_seconds",
                    LATENCIES[:100],
                    {"node_type": "http"},
                    ts=minute + 1,
                ),
                histogram(
                    "meshhook_workflow_step_duration_seconds",
                    LATENCIES[100:],
                    {"node_type": "http"},
                    ts=minute + 40,
                ),
                gauge(
                    "meshhook_queue_messages", 7, {"queue": "default", "state": "ready"}, ts=time.time() - 5
                ),
            ],
        ),
    )
    ingest(
        conn,
        batch(
            b,
            [
                counter(name, 999, {"outcome": "ok", "signature": "secret_b"}, ts=minute + 5),
                counter("meshhook_b_only_total", 1, {"tenant_secret": "b"}, ts=minute + 5),
            ],
        ),
    )
    return Seed(minute=minute, latencies=LATENCIES)
