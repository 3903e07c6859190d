"""GET /metrics: Prometheus text or OpenMetrics (``exposition.py`` renders), for a scrape token or a JWT.

A scrape token (``mhm_...``) is checked by PostgreSQL (``metrics.scrape`` as ``anon``) and implies its
project; a JWT caller reads ``metrics.exposition_rows`` as itself (row-level security decides) and takes one
request of its rate limit (``rate_limit.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from meshhook_rt_metrics.api import exposition
from meshhook_rt_metrics.api.auth import ScrapeToken, TokenVerifier, UnauthorizedError, credential
from meshhook_rt_metrics.api.db import ANON_CLAIMS
from meshhook_rt_metrics.api.deps import ERRORS, RATE_LIMITED, DatabaseDep
from meshhook_rt_metrics.api.errors import unauthorized
from meshhook_rt_metrics.api.rate_limit import check_rate

router = APIRouter(tags=["exposition"])

scrape_bearer = HTTPBearer(
    scheme_name="ScrapeToken",
    auto_error=False,
    description="A per-project scrape token (mhm_...), a service key or a user access token.",
)


@router.get(
    "/metrics",
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
        **RATE_LIMITED,
    },
    summary="Prometheus / OpenMetrics exposition",
)
def metrics_endpoint(
    request: Request,
    db: DatabaseDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(scrape_bearer)],
    project_id: Annotated[
        UUID | None, Query(description="Only this project (JWT callers; a scrape token implies it).")
    ] = None,
) -> Response:
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    verifier = request.app.state.verifier
    assert isinstance(verifier, TokenVerifier)
    try:
        who = credential(header, verifier, allow_scrape_token=True)
    except UnauthorizedError as exc:
        raise unauthorized(str(exc)) from exc
    if not isinstance(who, ScrapeToken):
        check_rate(request, who)
    sql = f"select {exposition.ROW_COLUMNS} from "

    def fetch(kinds: Sequence[str]) -> list[exposition.Row]:
        """The exposition rows of these kinds, in a transaction as the caller (anon with a scrape token).

        Fetched in binary: the numbers and the bucket arrays of 10,000 rows then cost a third less to
        load, and that time holds the GIL the other thread's encoding needs.
        """
        if isinstance(who, ScrapeToken):
            with db.caller(ANON_CLAIMS) as conn:
                cursor = conn.execute(sql + "metrics.scrape(%s, %s)", (who.token, list(kinds)), binary=True)
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
