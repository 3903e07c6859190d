"""The HTTP service: queries, series discovery, scrape tokens, histogram boundaries, /metrics, /healthz;
the alert configuration endpoints are the router of ``alerts.py``.

Every handler verifies the bearer token, then runs its SQL in a transaction AS THE CALLER
(``set local role`` + ``request.jwt.claims``): row-level security decides what anyone sees. The service
has no tenant logic of its own; the SQL functions it calls are documented in docs/api.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from meshhook_rt_metrics import __version__
from meshhook_rt_metrics.api import exposition
from meshhook_rt_metrics.api.alert_routers import ALERT_ROUTERS
from meshhook_rt_metrics.api.auth import ScrapeToken, TokenVerifier, UnauthorizedError, credential
from meshhook_rt_metrics.api.dashboard_site import dashboard_router
from meshhook_rt_metrics.api.dashboards import router as dashboards_router
from meshhook_rt_metrics.api.db import ANON_CLAIMS, Database
from meshhook_rt_metrics.api.deps import ERRORS, NOT_FOUND, CallerDep, visible_project
from meshhook_rt_metrics.api.errors import HANDLERS, ApiError, ErrorDetail, invalid_request, unauthorized
from meshhook_rt_metrics.api.models import (
    AGGREGATION,
    LABEL_NAME,
    MATCHER,
    METRIC_NAME,
    Boundaries,
    BoundariesList,
    BoundariesPut,
    Health,
    MetricInfo,
    QueryResponse,
    QueryTime,
    ScrapeTokenCreate,
    ScrapeTokenCreated,
    ScrapeTokenInfo,
    ScrapeTokenList,
    SeriesInfo,
    SeriesResponse,
    parse_matcher,
    parse_step,
    utc,
)
from meshhook_rt_metrics.api.query_cache import QueryCache, SeriesQuery
from meshhook_rt_metrics.api.settings import ApiSettings

log = logging.getLogger(__name__)
_LABEL = re.compile(LABEL_NAME)

scrape_bearer = HTTPBearer(
    scheme_name="ScrapeToken",
    auto_error=False,
    description="A per-project scrape token (mhm_...), a service key or a user access token.",
)


def build_verifier(settings: ApiSettings) -> TokenVerifier:
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None and settings.state_dir is not None:
        from meshhook_rt_metrics.localstack.gateway.keys import load_or_create_secret

        secret = load_or_create_secret(settings.state_dir.resolve())
    if secret is None and settings.jwks_url is None:
        raise ValueError(
            "set MESHHOOK_METRICS_JWT_SECRET (or MESHHOOK_METRICS_JWKS_URL / a local stack state dir)"
        )
    return TokenVerifier(secret, jwks_url=settings.jwks_url, audience=settings.jwt_audience or None)


class LimitsMiddleware:
    """413 for bodies over ``max_body`` bytes (declared or streamed), 414 for long query strings."""

    def __init__(self, app: Any, max_body: int, max_query: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_query = max_query

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem: ApiError | None = None
        if len(scope.get("query_string", b"")) > self.max_query:
            problem = ApiError(414, "uri_too_long", f"query string longer than {self.max_query} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        problem = ApiError(
                            413, "payload_too_large", f"body larger than {self.max_body} bytes"
                        )
                except ValueError:
                    problem = ApiError(400, "invalid_request", "invalid Content-Length")
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "payload_too_large", f"body larger than {self.max_body} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query_parameters(request: Request) -> None:
    """422 for query parameters the route does not declare: a typo (``stp=1m``) must not be silently ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(key for key in request.query_params if key not in known)
    if unknown:
        details = [
            ErrorDetail(loc=["query", key], message="unknown query parameter", type="extra_forbidden")
            for key in unknown[:20]
        ]
        raise ApiError(
            422,
            "validation_failed",
            "invalid request: unknown query parameter " + ", ".join(unknown[:5]),
            details=details,
        )


def create_app(  # noqa: PLR0915 (the routes are closures over the app's database)
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
    app.state.database = db
    cache = QueryCache(settings.query_cache_mb * 1024 * 1024)
    app.state.query_cache = cache
    app.state.verifier = verifier
    app.add_middleware(
        LimitsMiddleware, max_body=settings.max_body_bytes, max_query=settings.max_query_string
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["authorization", "content-type", "apikey", "x-client-info"],
        max_age=600,
    )

    def matchers(match: list[str]) -> list[dict[str, str]]:
        parsed, details = [], []
        for i, text in enumerate(match):
            try:
                parsed.append(parse_matcher(text).model_dump())
            except ValueError as exc:
                details.append(ErrorDetail(loc=["query", "match", i], message=str(exc), type="value_error"))
        if details:
            raise ApiError(422, "validation_failed", "invalid request: query.match", details=details)
        return parsed

    # -- queries ----------------------------------------------------------------------------------
    @app.get(
        "/api/metrics",
        tags=["query"],
        response_model=None,
        responses={
            200: {
                "model": QueryResponse,
                "description": "Series with their points.",
                "headers": {
                    "X-Metrics-Cache": {
                        "description": "How the cache of settled steps took part (docs/api.md).",
                        "schema": {"type": "string", "enum": ["hit", "miss", "bypass", "off"]},
                    }
                },
            },
            **ERRORS,
        },
        summary="Series of one metric over a time range, aggregated",
    )
    def query_metrics(
        who: CallerDep,
        project_id: UUID,
        metric: Annotated[str, Query(min_length=1, max_length=200, pattern=METRIC_NAME)],
        from_: Annotated[
            QueryTime | None, Query(alias="from", description="Start (RFC 3339 or epoch seconds).")
        ] = None,
        to: Annotated[
            QueryTime | None, Query(description="End, exclusive (RFC 3339 or epoch seconds; default: now).")
        ] = None,
        step: Annotated[
            str | None, Query(pattern=r"^\d{1,9}[smhdw]?$", description="e.g. 60s, 5m, 1h")
        ] = None,
        agg: Annotated[
            str,
            Query(
                max_length=32,
                pattern=AGGREGATION,
                description="rate, sum, avg, min, max, last, count, pNN (p99, p99.9) or quantile(q)",
            ),
        ] = "sum",
        match: Annotated[
            list[Annotated[str, Query(pattern=MATCHER, max_length=1200)]] | None,
            Query(max_length=20, description='Label matchers: outcome=ok, status=~"5.."'),
        ] = None,
        by: Annotated[
            list[str] | None,
            Query(max_length=20, description="Group by these labels; `by=` merges all series."),
        ] = None,
    ) -> Response:
        end = utc(to) if to else datetime.now(UTC)
        start = utc(from_) if from_ else end - timedelta(hours=1)
        group: list[str] | None = None
        if by is not None:
            group = [b for b in by if b]
            bad = [i for i, b in enumerate(by) if b and not _LABEL.fullmatch(b)]
            if bad:
                details = [
                    ErrorDetail(loc=["query", "by", i], message="invalid label name", type="value_error")
                    for i in bad
                ]
                raise ApiError(422, "validation_failed", "invalid request: query.by", details=details)
        found = matchers(match or [])
        try:
            interval = parse_step(step) if step else None
        except ValueError as exc:
            detail = ErrorDetail(loc=["query", "step"], message=str(exc), type="value_error")
            raise invalid_request([detail]) from exc
        query = SeriesQuery(
            project_id, metric, json.dumps(found), agg, tuple(group) if group is not None else None
        )
        # one snapshot: the cache's horizon and the steps read after it must describe the same moment
        with db.caller(who.claims, one_snapshot=True) as conn:
            visible_project(conn, project_id, who)
            answer = cache.answer(conn, query, start, end, interval)
        head = {
            "project_id": str(project_id),
            "metric": metric,
            "agg": agg,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "step": step,
        }
        body = json.dumps(head)[:-1] + ', "series": ' + answer.series + "}"
        return Response(body, media_type="application/json", headers={"X-Metrics-Cache": answer.cache})

    @app.get(
        "/api/metrics/series",
        tags=["query"],
        response_model=SeriesResponse,
        responses=ERRORS,
        summary="Discover metrics, series and label values of a project",
    )
    def list_series(
        who: CallerDep,
        project_id: UUID,
        metric: Annotated[str | None, Query(min_length=1, max_length=200, pattern=METRIC_NAME)] = None,
        match: Annotated[
            list[Annotated[str, Query(pattern=MATCHER, max_length=1200)]] | None, Query(max_length=20)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> SeriesResponse:
        found = matchers(match or [])
        with db.caller(who.claims) as conn:
            visible_project(conn, project_id, who)
            families = conn.execute(
                "select name, kind, unit, help, series, overflow_points from metrics.list_metrics(%s)"
                " where %s::text is null or name = %s",
                (project_id, metric, metric),
            ).fetchall()
            rows = conn.execute(
                "select name, labels::text, last_seen from metrics.list_series(%s, %s, %s::jsonb, %s)",
                (project_id, metric, json.dumps(found), limit + 1),
            ).fetchall()
        series = [SeriesInfo(metric=r[0], labels=json.loads(r[1]), last_seen=r[2]) for r in rows[:limit]]
        values: dict[str, set[str]] = {}
        for s in series:
            for k, v in s.labels.items():
                values.setdefault(k, set()).add(v)
        return SeriesResponse(
            project_id=project_id,
            metrics=[
                MetricInfo(name=f[0], kind=f[1], unit=f[2], help=f[3], series=f[4], overflow_points=f[5])
                for f in families
            ],
            series=series,
            labels={k: sorted(v) for k, v in sorted(values.items())},
            truncated=len(rows) > limit,
        )

    # -- scrape tokens ----------------------------------------------------------------------------
    token_columns = (
        "id, project_id, name, token_prefix, created_by, created_at, expires_at, revoked_at, last_used_at"
    )

    @app.get(
        "/api/metrics/scrape-tokens", tags=["scrape tokens"], response_model=ScrapeTokenList, responses=ERRORS
    )
    def list_tokens(who: CallerDep, project_id: UUID) -> ScrapeTokenList:
        """Tokens of a project (visible to its admins; other members get an empty list)."""
        with db.caller(who.claims) as conn:
            visible_project(conn, project_id, who)
            rows = conn.execute(
                f"select {token_columns} from metrics.scrape_tokens"
                " where project_id = %s order by created_at, id",
                (project_id,),
            ).fetchall()
        names = token_columns.split(", ")
        return ScrapeTokenList(
            tokens=[ScrapeTokenInfo.model_validate(dict(zip(names, r, strict=True))) for r in rows]
        )

    @app.post(
        "/api/metrics/scrape-tokens",
        tags=["scrape tokens"],
        status_code=201,
        response_model=ScrapeTokenCreated,
        responses={**ERRORS, **NOT_FOUND},
    )
    def create_token(who: CallerDep, body: ScrapeTokenCreate) -> ScrapeTokenCreated:
        """Create a scrape token (project admins, service role). The token is returned only here."""
        expires = utc(body.expires_at) if body.expires_at else None
        with db.caller(who.claims) as conn:
            row = conn.execute(
                "select id, token, token_prefix, created_at, expires_at"
                " from metrics.create_scrape_token(%s, %s, %s)",
                (body.project_id, body.name, expires),
            ).fetchone()
        assert row is not None
        return ScrapeTokenCreated(
            id=row[0],
            project_id=body.project_id,
            name=body.name,
            token=row[1],
            token_prefix=row[2],
            created_at=row[3],
            expires_at=row[4],
        )

    @app.delete(
        "/api/metrics/scrape-tokens/{token_id}",
        tags=["scrape tokens"],
        status_code=204,
        response_class=Response,
        responses={**ERRORS, **NOT_FOUND},
    )
    def revoke_token(who: CallerDep, token_id: UUID) -> Response:
        """Revoke a token (admins of its project): the next scrape with it gets 401."""
        with db.caller(who.claims) as conn:
            row = conn.execute("select metrics.revoke_scrape_token(%s)", (token_id,)).fetchone()
        if not (row and row[0]):
            raise ApiError(404, "not_found", "no such token among your projects' tokens")
        return Response(status_code=204)

    # -- histogram boundaries ---------------------------------------------------------------------
    @app.get(
        "/api/metrics/histogram-boundaries",
        tags=["exposition"],
        response_model=BoundariesList,
        responses=ERRORS,
    )
    def list_boundaries(who: CallerDep, project_id: UUID) -> BoundariesList:
        """Configured `le` boundaries of a project's histograms, and the default for the others."""
        with db.caller(who.claims) as conn:
            visible_project(conn, project_id, who)
            default = conn.execute("select metrics.default_histogram_boundaries()").fetchone()
            rows = conn.execute(
                "select metric, boundaries, updated_at from metrics.histogram_boundaries"
                " where project_id = %s order by metric",
                (project_id,),
            ).fetchall()
        return BoundariesList(
            default=list(default[0]) if default else [],
            metrics=[
                Boundaries(project_id=project_id, metric=r[0], boundaries=r[1], updated_at=r[2]) for r in rows
            ],
        )

    @app.put(
        "/api/metrics/histogram-boundaries",
        tags=["exposition"],
        response_model=Boundaries,
        responses=ERRORS,
    )
    def put_boundaries(who: CallerDep, body: BoundariesPut) -> Boundaries:
        """Set a histogram's `le` boundaries (project admins); applies to all data at the next scrape."""
        with db.caller(who.claims) as conn:
            problem = conn.execute(
                "select metrics.boundaries_problem(%s::float8[])", (body.boundaries,)
            ).fetchone()
            if problem and problem[0]:
                raise ApiError(400, "invalid_request", f"boundaries: {problem[0]}")
            row = conn.execute(
                "insert into metrics.histogram_boundaries as h (project_id, metric, boundaries)"
                " values (%s, %s, %s) on conflict (project_id, metric)"
                " do update set boundaries = excluded.boundaries, updated_at = now()"
                " returning h.boundaries, h.updated_at",
                (body.project_id, body.metric, body.boundaries),
            ).fetchone()
        assert row is not None
        return Boundaries(
            project_id=body.project_id, metric=body.metric, boundaries=row[0], updated_at=row[1]
        )

    @app.delete(
        "/api/metrics/histogram-boundaries",
        tags=["exposition"],
        status_code=204,
        response_class=Response,
        responses={**ERRORS, **NOT_FOUND},
    )
    def delete_boundaries(
        who: CallerDep,
        project_id: UUID,
        metric: Annotated[str, Query(min_length=1, max_length=200, pattern=METRIC_NAME)],
    ) -> Response:
        """Reset a histogram to the default boundaries (project admins)."""
        with db.caller(who.claims) as conn:
            row = conn.execute(
                "with d as (delete from metrics.histogram_boundaries where project_id = %s and metric = %s"
                " returning 1) select count(*) from d",
                (project_id, metric),
            ).fetchone()
        if not (row and row[0]):
            raise ApiError(404, "not_found", "no configured boundaries for that metric among your projects")
        return Response(status_code=204)

    # -- exposition -------------------------------------------------------------------------------
    @app.get(
        "/metrics",
        tags=["exposition"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text 0.0.4, or OpenMetrics 1.0 when Accept asks for it.",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                },
            },
            **ERRORS,
        },
        summary="Prometheus / OpenMetrics exposition",
    )
    def metrics_endpoint(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(scrape_bearer)],
        project_id: Annotated[
            UUID | None, Query(description="Only this project (JWT callers; a scrape token implies it).")
        ] = None,
    ) -> Response:
        header = f"{creds.scheme} {creds.credentials}" if creds else None
        try:
            who = credential(header, verifier, allow_scrape_token=True)
        except UnauthorizedError as exc:
            raise unauthorized(str(exc)) from exc
        sql = f"select {exposition.ROW_COLUMNS} from "

        def fetch(kinds: Sequence[str]) -> list[exposition.Row]:
            """The exposition rows of these kinds, in a transaction as the caller (anon with a scrape token).

            Fetched in binary: the numbers and the bucket arrays of 10,000 rows then cost a third less to
            load, and that time holds the GIL the other thread's encoding needs.
            """
            if isinstance(who, ScrapeToken):
                with db.caller(ANON_CLAIMS) as conn:
                    cursor = conn.execute(
                        sql + "metrics.scrape(%s, %s)", (who.token, list(kinds)), binary=True
                    )
                    return exposition.rows_from(cursor.fetchall())
            with db.caller(who.claims) as conn:
                cursor = conn.execute(
                    sql + "metrics.exposition_rows(%s, true, p_kinds => %s)",
                    (project_id, list(kinds)),
                    binary=True,
                )
                return exposition.rows_from(cursor.fetchall())

        with exposition.gc_paused():
            body, content_type = exposition.render_overlapped(fetch, request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    # -- alerting (rules, receivers, silences, history, mute windows, alert state): api/alert_routers.py ------
    for alert_router in ALERT_ROUTERS:
        app.include_router(alert_router)
    app.include_router(dashboards_router)  # saved dashboards, my projects: api/dashboards.py
    app.include_router(dashboard_router(settings))  # the standalone page at /dashboard/ (no token)

    # -- health -----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Any:
        """Database reachable and every migration this service knows applied (no authentication)."""
        try:
            state = db.health()
        except Exception as exc:
            log.warning("health check failed: %s", exc)
            return JSONResponse(
                Health(
                    status="down", database="unreachable", migrations="unknown", detail=type(exc).__name__
                ).model_dump(),
                status_code=503,
            )
        ok = state["migrations"] in ("current", "unknown")
        health = Health(
            status="ok" if ok else "degraded",
            database=state["database"],
            migrations=state["migrations"],
            pending=state.get("pending", []),
            detail=state.get("detail"),
        )
        return JSONResponse(health.model_dump(), status_code=200 if ok else 503)

    return app
