"""One JSON error shape for every failure, and the mapping from PostgreSQL errors to HTTP statuses.

Body: ``{"code": str, "message": str, "details": [{"loc": [...], "message": str, "type": str}] | null,
"hint": str | null}``. SQL rejections (SQLSTATE class 22, raised by the data plane's checks) are 400;
boundary validation (types, formats) is 422 with field paths such as ``["query", "from"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description='Where: e.g. ["query", "from"] or ["body", "boundaries", 2].')
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_request, unauthorized.")
    message: str
    details: list[ErrorDetail] | None = None
    hint: str | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        details: Sequence[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.details = list(details) if details is not None else None
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorBody(code=self.code, message=self.message, details=self.details, hint=self.hint)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="meshhook-metrics"'}
    )


def from_database(exc: psycopg.Error, role: str | None) -> ApiError:
    """The HTTP face of a database error (the data plane's rules speak through SQLSTATEs)."""
    diag = exc.diag
    state = exc.sqlstate or ""
    message = diag.message_primary or str(exc)
    hint = diag.message_hint
    if state == "42501":
        if role in (None, "anon"):
            return unauthorized(message)
        return ApiError(403, "forbidden", message, hint=hint)
    if state == "28000":
        return unauthorized(message)
    if state.startswith("22") or state in ("P0001", "23514", "2201B") or isinstance(exc, psycopg.DataError):
        # DataError without a SQLSTATE: refused by the driver (e.g. a NUL character in text)
        return ApiError(400, "invalid_request", message, hint=hint)
    if state == "23505":
        return ApiError(409, "conflict", message, hint=hint)
    if state == "23503":
        return ApiError(404, "not_found", "referenced project does not exist", hint=hint)
    if state == "57014":
        return ApiError(503, "timeout", "the query took too long", hint="narrow the time range or the series")
    if isinstance(exc, psycopg.OperationalError):
        return ApiError(503, "database_unavailable", "the database is not reachable")
    log.error("unexpected database error %s: %s", state, message)
    return ApiError(500, "internal_error", "unexpected database error", hint=state or None)


def _validation_details(errors: Sequence[Any]) -> list[ErrorDetail]:
    details = []
    for err in errors:
        loc = [part if isinstance(part, int) else str(part) for part in err.get("loc", ())]
        details.append(ErrorDetail(loc=loc, message=str(err.get("msg", "")), type=str(err.get("type", ""))))
    return details


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


def invalid_request(details: Sequence[ErrorDetail]) -> ApiError:
    """The 422 for invalid input, naming the first fields in its message (every field in ``details``)."""
    where = ", ".join(".".join(str(p) for p in d.loc) for d in details[:5])
    return ApiError(422, "validation_failed", f"invalid request: {where}", details=list(details))


async def handle_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid_request(_validation_details(exc.errors())).response()


def _allowed_methods(routes: Sequence[Any], scope: Any) -> set[str]:
    """Methods of every route matching the request's path, in routers included with include_router too.

    FastAPI keeps an included router as one entry (``original_router`` holds its routes, whose paths
    already carry the router's prefix).
    """
    methods: set[str] = set()
    for route in routes:
        included = getattr(getattr(route, "original_router", None), "routes", None)
        if included is not None:
            methods |= _allowed_methods(included, scope)
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


async def handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # one path may be served by several routes (GET and POST): Allow lists all of them
        methods = _allowed_methods(request.app.router.routes, request.scope)
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return ApiError(exc.status_code, code, str(exc.detail), headers=headers).response()


async def handle_database(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, psycopg.Error)
    return from_database(exc, None).response()


async def handle_pool(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database pool: %s", exc)
    return ApiError(503, "database_unavailable", "the database is not reachable").response()


async def handle_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return ApiError(500, "internal_error", "internal error").response()


HANDLERS: dict[type[Exception], Any] = {
    ApiError: handle_api_error,
    RequestValidationError: handle_validation,
    StarletteHTTPException: handle_http,
    psycopg_pool.PoolTimeout: handle_pool,
    psycopg.Error: handle_database,
    Exception: handle_unexpected,
}
