"""Per-project scrape tokens for GET /metrics: list, create (the token is shown once), revoke.

As the caller: ``metrics.create_scrape_token`` and ``metrics.revoke_scrape_token`` decide who may (project
admins, the service role); row-level security of ``metrics.scrape_tokens`` who sees which.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from meshhook_rt_metrics.api.deps import ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError
from meshhook_rt_metrics.api.models import (
    ScrapeTokenCreate,
    ScrapeTokenCreated,
    ScrapeTokenInfo,
    ScrapeTokenList,
    utc,
)
from meshhook_rt_metrics.api.pagination import Key, Keyset, PageDep

router = APIRouter(tags=["scrape tokens"])

ORDER = Keyset("scrape_tokens", (Key("created_at", "timestamptz"), Key("id", "uuid")))
TOKEN_COLUMNS = (
    "id, project_id, name, token_prefix, created_by, created_at, expires_at, revoked_at, last_used_at"
)


@router.get("/api/metrics/scrape-tokens", response_model=ScrapeTokenList, responses=ERRORS)
def list_tokens(
    who: CallerDep, db: DatabaseDep, project_id: UUID, paging: PageDep, response: Response
) -> ScrapeTokenList:
    """Tokens of a project, oldest first (visible to its admins; other members get an empty list);
    paginated (docs/api.md, "Lists")."""
    page = paging.of(ORDER, project_id=project_id)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            f"select {TOKEN_COLUMNS} from metrics.scrape_tokens where project_id = %s and {page.condition}"
            + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[5], r[0]), response)
    names = TOKEN_COLUMNS.split(", ")
    return ScrapeTokenList(
        tokens=[ScrapeTokenInfo.model_validate(dict(zip(names, r, strict=True))) for r in shown]
    )


@router.post(
    "/api/metrics/scrape-tokens",
    status_code=201,
    response_model=ScrapeTokenCreated,
    responses={**ERRORS, **NOT_FOUND},
)
def create_token(who: CallerDep, db: DatabaseDep, body: ScrapeTokenCreate) -> ScrapeTokenCreated:
    """Create a scrape token (project admins, service role). The token is returned only here."""
    expires = utc(body.expires_at) if body.expires_at else None
    with db.caller(who.claims) as conn:
        row = conn.execute(
            "select id, token, token_prefix, created_at, expires_at from metrics.create_scrape_token(%s, %s, %s)",
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


@router.delete(
    "/api/metrics/scrape-tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
)
def revoke_token(who: CallerDep, db: DatabaseDep, token_id: UUID) -> Response:
    """Revoke a token (admins of its project): the next scrape with it gets 401."""
    with db.caller(who.claims) as conn:
        row = conn.execute("select metrics.revoke_scrape_token(%s)", (token_id,)).fetchone()
    if not (row and row[0]):
        raise ApiError(404, "not_found", "no such token among your projects' tokens")
    return Response(status_code=204)
