"""Settings of one gateway process."""

from __future__ import annotations

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
