"""The `le` boundaries GET /metrics writes for a project's histograms: list, set, reset to the default.

As the caller: row-level security of ``metrics.histogram_boundaries`` lets members read and admins write;
``metrics.boundaries_problem`` is the rule of a boundary list.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from meshhook_rt_metrics.api.deps import ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError
from meshhook_rt_metrics.api.models import METRIC_NAME, Boundaries, BoundariesList, BoundariesPut

router = APIRouter(tags=["exposition"])

PATH = "/api/metrics/histogram-boundaries"


@router.get(PATH, response_model=BoundariesList, responses=ERRORS)
def list_boundaries(who: CallerDep, db: DatabaseDep, project_id: UUID) -> BoundariesList:
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


@router.put(PATH, response_model=Boundaries, responses=ERRORS)
def put_boundaries(who: CallerDep, db: DatabaseDep, body: BoundariesPut) -> Boundaries:
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
    return Boundaries(project_id=body.project_id, metric=body.metric, boundaries=row[0], updated_at=row[1])


@router.delete(
    PATH,
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
)
def delete_boundaries(
    who: CallerDep,
    db: DatabaseDep,
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
