"""Settings of the HTTP service, read from ``MESHHOOK_METRICS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 54330
REPO_DASHBOARD_BUILD = Path(__file__).resolve().parents[2] / "dashboard" / "build"


def default_dashboard_dir() -> Path | None:
    """The checkout's ``dashboard/build`` when it has been built (``make dashboard``); an installed package
    has none, and the service then answers /dashboard with a 404 that says how to build it."""
    return REPO_DASHBOARD_BUILD if REPO_DASHBOARD_BUILD.is_dir() else None


class ApiSettings(BaseSettings):
    """Where the service listens, how it reaches the database and how it verifies tokens.

    ``database_url`` logs in as a role that may ``SET ROLE`` to ``anon``/``authenticated``/``service_role``
    (``authenticator`` on Supabase, ``postgres`` on the local stack); every request then runs as its caller.
    """

    model_config = SettingsConfigDict(env_prefix="MESHHOOK_METRICS_", extra="ignore")

    database_url: str = Field(
        default="postgresql://postgres:postgres@127.0.0.1:54322/postgres",
        description="DSN of the service's login role (authenticator on Supabase).",
    )
    api_host: str = Field(default="127.0.0.1", description="Listen address of `meshhook-metrics serve`.")
    api_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="Listen port (0: any free port).")
    jwt_secret: SecretStr | None = Field(
        default=None, description="The project's JWT secret (HS256). Local stack: read from the state dir."
    )
    jwks_url: str | None = Field(default=None, description="JWKS URL for asymmetric (RS256/ES256) tokens.")
    jwt_audience: str = Field(default="authenticated", description="Required `aud` when a token carries one.")
    state_dir: Path | None = Field(default=None, description="Local stack state dir (JWT secret source).")
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=200)
    statement_timeout_ms: int = Field(
        default=15000, ge=100, le=600000, description="Per-request SQL time limit."
    )
    query_cache_mb: int = Field(
        default=64,
        ge=0,
        le=65536,
        description="Memory for the points of settled steps of recent GET /api/metrics queries (0: no cache).",
    )
    max_query_steps: int = Field(
        default=11000,
        ge=1,
        le=10_000_000,
        description="GET /api/metrics: most steps ((to - from) / step) one request may ask for (422 beyond).",
    )
    max_query_points: int = Field(
        default=500_000,
        ge=1,
        le=100_000_000,
        description="GET /api/metrics: most points (over all series) one answer may hold (422 beyond).",
    )
    # a live dashboard reads each panel's new steps after each broadcast (about once a second; the default
    # dashboard makes ~25 reads per broadcast, its quantile and ratio panels several): 60 a second leaves
    # room for two open tabs, while a script in a loop is held to it
    query_rate_per_second: float = Field(
        default=60.0,
        ge=0,
        le=100_000,
        description="Per caller (user id; the service role as one): sustained requests per second to "
        "GET /api/metrics, /api/metrics/series and /metrics (JWT callers); 0: no limit.",
    )
    query_rate_burst: int = Field(
        default=240, ge=1, le=100_000, description="Per caller: requests allowed at once above that rate."
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Request body limit."
    )
    max_query_string: int = Field(default=8192, ge=256, le=65536, description="Query string length limit.")
    cors_origins: list[str] = Field(
        default=["http://localhost:5173", "http://127.0.0.1:5173"],
        description="Origins allowed by CORS (the dashboard's); JSON list in the environment.",
    )
    dashboard_dir: Path | None = Field(
        default_factory=default_dashboard_dir,
        description="The built dashboard (adapter-static output) served at /dashboard/; unset: 404.",
    )
    supabase_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s;,'\"]+$",
        description="Supabase URL the dashboard page talks to (its config.json and CSP connect-src).",
    )
    supabase_anon_key: str | None = Field(
        default=None, description="The project's anon key for the dashboard page (public by design)."
    )
