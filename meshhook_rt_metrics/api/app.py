"""The HTTP service's factory: it builds the database, the token verifier, the cache and the rate limit,
puts them on ``app.state`` (the routers read them through the dependencies of ``deps.py``), and wires the
middleware and the routers. The routes live in one router per concept:

- ``query_routes.py``: GET /api/metrics, /api/metrics/series;
- ``scrape_tokens.py``: /api/metrics/scrape-tokens;
- ``ingest_tokens.py``: /api/metrics/ingest-tokens (for the metrics-ingest edge function);
- ``histogram_boundaries.py``: /api/metrics/histogram-boundaries;
- ``exposition_routes.py``: GET /metrics;
- ``alert_routers.py``: /api/metrics/alerts... (rules, receivers, silences, history, mute windows, state);
- ``dashboards.py``: /api/metrics/projects, /api/metrics/dashboards; ``dashboard_site.py``: /dashboard/;
- ``health.py``: /healthz.

Every handler verifies the bearer token, then runs its SQL in a transaction AS THE CALLER
(``set local role`` + ``request.jwt.claims``): row-level security decides what anyone sees. The service
has no tenant logic of its own; the SQL functions it calls are documented in docs/api.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from meshhook_rt_metrics import __version__
from meshhook_rt_metrics.api import (
    exposition_routes,
    health,
    histogram_boundaries,
    ingest_tokens,
    query_routes,
    scrape_tokens,
)
from meshhook_rt_metrics.api.alert_routers import ALERT_ROUTERS
from meshhook_rt_metrics.api.auth import TokenVerifier
from meshhook_rt_metrics.api.dashboard_site import dashboard_router
from meshhook_rt_metrics.api.dashboards import router as dashboards_router
from meshhook_rt_metrics.api.db import Database
from meshhook_rt_metrics.api.errors import HANDLERS
from meshhook_rt_metrics.api.limits import LimitsMiddleware
from meshhook_rt_metrics.api.query_cache import QueryCache
from meshhook_rt_metrics.api.query_parameters import reject_unknown_query_parameters
from meshhook_rt_metrics.api.rate_limit import RateLimiter
from meshhook_rt_metrics.api.settings import ApiSettings
from meshhook_rt_metrics.jwt_keys import load_or_create_secret

__all__ = ["LimitsMiddleware", "build_verifier", "create_app", "reject_unknown_query_parameters"]


def build_verifier(settings: ApiSettings) -> TokenVerifier:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None and settings.state_dir is not None:
        secret = load_or_create_secret(settings.state_dir.resolve())
    if secret is None and settings.jwks_url is None:
        raise ValueError(
            "set MESHHOOK_METRICS_JWT_SECRET (or MESHHOOK_METRICS_JWKS_URL / a local stack state dir)"
        )
    return TokenVerifier(secret, jwks_url=settings.jwks_url, audience=settings.jwt_audience or None)


def create_app(
    settings: ApiSettings | None = None,
    *,
    verifier: TokenVerifier | None = None,
    database: Database | None = None,
) -> FastAPI:
    settings = settings or ApiSettings()
    verifier = verifier or build_verifier(settings)
    db = database or Database(
        settings.database_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_timeout_ms=settings.statement_timeout_ms,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        db.open()
        try:
            yield
        finally:
            db.close()

    app = FastAPI(
        title="MeshHook metrics API",
        version=__version__,
        description="Queries over MeshHook's real-time metrics, Prometheus exposition, scrape tokens and "
        "alert configuration. "
        "Every query runs in PostgreSQL as the caller, so row-level security decides what anyone sees.",
        lifespan=lifespan,
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    app.state.settings = settings
    app.state.database = db
    app.state.query_cache = QueryCache(settings.query_cache_mb * 1024 * 1024)
    app.state.verifier = verifier
    app.state.rate_limiter = RateLimiter(settings.query_rate_per_second, settings.query_rate_burst)
    app.add_middleware(
        LimitsMiddleware, max_body=settings.max_body_bytes, max_query=settings.max_query_string
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["authorization", "content-type", "apikey", "x-client-info"],
        expose_headers=["Link"],  # the next page of a list (pagination.py)
        max_age=600,
    )
    app.include_router(query_routes.router)
    app.include_router(scrape_tokens.router)
    app.include_router(ingest_tokens.router)
    app.include_router(histogram_boundaries.router)
    app.include_router(exposition_routes.router)
    for alert_router in ALERT_ROUTERS:
        app.include_router(alert_router)
    app.include_router(dashboards_router)
    app.include_router(dashboard_router(settings))  # the standalone page at /dashboard/ (no token)
    app.include_router(health.router)
    return app
