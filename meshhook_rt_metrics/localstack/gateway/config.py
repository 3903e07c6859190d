"""Settings of one gateway process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from meshhook_rt_metrics.localstack.gateway.keys import USER_TOKEN_LIFETIME, JwtKeys

DEFAULT_PORT = 54321
DEFAULT_SCHEMAS = ("public", "graphql_public", "metrics")
ACCESS_TOKEN_LIFETIME_ENV = "MESHHOOK_METRICS_GATEWAY_ACCESS_TOKEN_LIFETIME"
"""Seconds an ``/auth/v1`` access token lives (``gateway --access-token-lifetime``); default 3600, as GoTrue's
``JWT_EXP``. Short values let tests watch clients refresh their sessions."""

MAX_QUEUED_BYTES_ENV = "MESHHOOK_METRICS_GATEWAY_REALTIME_MAX_QUEUED_BYTES"
"""Bytes of outgoing frames one Realtime socket may have pending (default 16 MiB); over it, close 1013."""
CLIENT_BROADCASTS_PER_SECOND_ENV = "MESHHOOK_METRICS_GATEWAY_REALTIME_CLIENT_BROADCASTS_PER_SECOND"
"""Client broadcasts one Realtime socket may send per second (default 100, Supabase's free-plan rate)."""


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def default_max_queued_bytes() -> int:
    return int(_env_number(MAX_QUEUED_BYTES_ENV, 16 * 1024 * 1024))


def default_client_broadcasts_per_second() -> float:
    return _env_number(CLIENT_BROADCASTS_PER_SECOND_ENV, 100.0)


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, which database it fronts and the limits it enforces.

    ``db_url`` connects as the migration owner ``postgres`` (Realtime admin work: probes, the
    replication slot); the Data API connects as ``authenticator`` like PostgREST does.
    """

    db_url: str
    keys: JwtKeys
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    authenticator_password: str = "authenticator"
    exposed_schemas: tuple[str, ...] = DEFAULT_SCHEMAS
    functions_dir: Path | None = None
    deno: str | None = None
    deno_dir: Path | None = None
    idle_timeout: float = 60.0
    """Seconds without any client frame (heartbeats count) before a socket is closed, as Phoenix does."""
    max_frame_bytes: int = 1024 * 1024
    max_channels_per_socket: int = 100
    max_queued_bytes_per_socket: int = field(default_factory=default_max_queued_bytes)
    """Bytes of frames a Realtime socket may have waiting to be sent (a client that does not read);
    over it the socket is closed with 1013. ``MESHHOOK_METRICS_GATEWAY_REALTIME_MAX_QUEUED_BYTES``."""
    client_broadcasts_per_second: float = field(default_factory=default_client_broadcasts_per_second)
    """Client broadcasts per second per socket (bursts as many); the rest are dropped (0: no limit).
    ``MESHHOOK_METRICS_GATEWAY_REALTIME_CLIENT_BROADCASTS_PER_SECOND``."""
    replay_grace: float = 30.0
    """After a restart, messages committed while the gateway was down reach channels joined this soon."""
    poll_interval: float = 1.0
    """Fallback poll of the replication slot; NOTIFY wakes the feed sooner."""
    slot_name: str | None = None
    access_token_lifetime: int = USER_TOKEN_LIFETIME
    """Seconds an access token issued by ``/auth/v1`` (sign-in, refresh) is valid (``expires_in``)."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def public_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def authenticator_url(self) -> str:
        params = conninfo_to_dict(self.db_url)
        params.update(user="authenticator", password=self.authenticator_password)
        return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})

    @property
    def database_name(self) -> str:
        return str(conninfo_to_dict(self.db_url).get("dbname") or "postgres")


def connection_pool(url: str, name: str) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """A gateway pool: autocommit connections named ``name``, opened by the app, checked before each use."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=10,
        open=False,
        timeout=10.0,
        kwargs={"autocommit": True, "application_name": name},
        name=name,
        check=AsyncConnectionPool.check_connection,  # a restarted database costs no failed request
    )
