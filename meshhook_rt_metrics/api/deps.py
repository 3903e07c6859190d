"""Pieces every router of the service shares: the caller dependency, the database, error response maps.

The caller is a verified JWT (``CallerDep``); the database is the app's :class:`Database` (``DatabaseDep``),
whose ``caller(claims)`` runs SQL in a transaction as that caller, so row-level security decides.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from meshhook_rt_metrics.api.auth import Caller, UnauthorizedError, credential
from meshhook_rt_metrics.api.db import Database
from meshhook_rt_metrics.api.errors import ApiError, ErrorBody, unauthorized

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Rejected by the data plane's rules (e.g. time range, step, aggregation)."),
        (401, "Missing, expired or invalid token."),
        (403, "The caller may not see or change this project."),
        (413, "Request body too large."),
        (414, "Query string too long."),
        (422, "Invalid parameters; `details[].loc` names each field."),
        (503, "Database unavailable or query timed out."),
    )
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Not found."}}
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many queries by this caller (`rate_limited`); retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    }
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Conflicts with an existing object (e.g. a name already used)."}
}

bearer = HTTPBearer(auto_error=False, description="A Supabase JWT (user access token or service key).")


def _caller(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    try:
        found = credential(header, request.app.state.verifier, allow_scrape_token=False)
    except UnauthorizedError as exc:
        raise unauthorized(str(exc)) from exc
    assert isinstance(found, Caller)
    return found


CallerDep = Annotated[Caller, Depends(_caller)]


def _database(request: Request) -> Database:
    database = request.app.state.database
    assert isinstance(database, Database)
    return database


DatabaseDep = Annotated[Database, Depends(_database)]


def visible_project(conn: psycopg.Connection[Any], project_id: UUID, who: Caller) -> None:
    """403 unless the caller sees the project (RLS on metrics.projects); 404 for the service role."""
    row = conn.execute("select exists (select from metrics.projects where id = %s)", (project_id,)).fetchone()
    if row and row[0]:
        return
    if who.role == "service_role":
        raise ApiError(404, "not_found", f"project {project_id} has no metrics")
    raise ApiError(403, "forbidden", f"project {project_id} is not one of yours", hint="ask a project admin")
