"""Per-project ingest tokens (``mhi_…``) for HTTP ingest through the metrics-ingest edge function: list,
create (the token is shown once), revoke.

As the caller: ``metrics.create_ingest_token``, ``metrics.list_ingest_tokens`` and
``metrics.revoke_ingest_token`` (security definer, migration 20261206000600) decide who may: project admins and
the service role. The token table itself is out of reach of signed-in users.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from meshhook_rt_metrics.api.deps import ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError
from meshhook_rt_metrics.api.models import (
    IngestTokenCreate,
    IngestTokenCreated,
    IngestTokenInfo,
    IngestTokenList,
    utc,
)

router = APIRouter(tags=["ingest tokens"])

TOKEN_COLUMNS = (
    "id, project_id, name, token_prefix, created_by, created_at, expires_at, revoked_at, last_used_at"
)


@router.get("/api/metrics/ingest-tokens", response_model=IngestTokenList, responses=ERRORS)
def list_tokens(who: CallerDep, db: DatabaseDep, project_id: UUID) -> IngestTokenList:
    """Ingest tokens of a project, without their secrets (its admins; other members get an empty list)."""
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            f"select {TOKEN_COLUMNS} from metrics.list_ingest_tokens(%s)", (project_id,)
        ).fetchall()
    names = TOKEN_COLUMNS.split(", ")
    return IngestTokenList(
        tokens=[IngestTokenInfo.model_validate(dict(zip(names, r, strict=True))) for r in rows]
    )


@router.post(
    "/api/metrics/ingest-tokens",
    status_code=201,
    response_model=IngestTokenCreated,
    responses={**ERRORS, **NOT_FOUND},
)
def create_token(who: CallerDep, db: DatabaseDep, body: IngestTokenCreate) -> IngestTokenCreated:
    """Create an ingest token (project admins, service role). The token is returned only here."""
    expires = utc(body.expires_at) if body.expires_at else None
    with db.caller(who.claims) as conn:
        row = conn.execute(
            "select id, project_id, name, token, token_prefix, created_at, expires_at"
            " from metrics.create_ingest_token(%s, %s, %s)",
            (body.project_id, body.name, expires),
        ).fetchone()
    assert row is not None
    return IngestTokenCreated(
        id=row[0],
        project_id=row[1],
        name=row[2],
        token=row[3],
        token_prefix=row[4],
        created_at=row[5],
        expires_at=row[6],
    )


@router.delete(
    "/api/metrics/ingest-tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
)
def revoke_token(who: CallerDep, db: DatabaseDep, token_id: UUID) -> Response:
    """Revoke an ingest token for good (admins of its project): the next export with it gets 401."""
    with db.caller(who.claims) as conn:
        row = conn.execute("select metrics.revoke_ingest_token(%s)", (token_id,)).fetchone()
    if not (row and row[0]):
        raise ApiError(404, "not_found", "no such token among your projects' ingest tokens")
    return Response(status_code=204)
