"""GET /healthz: the database reachable, every migration this service knows applied, and the rollup pass and the
totals' fold keeping up (no token)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from meshhook_rt_metrics.api.deps import DatabaseDep
from meshhook_rt_metrics.api.models import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(db: DatabaseDep) -> Any:
    """Database reachable, every migration this service knows applied, rollups and totals not stalled (no
    authentication)."""
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
    ok = state["migrations"] in ("current", "unknown") and "stalled" not in (
        state.get("rollups"),
        state.get("totals"),
    )
    health = Health(
        status="ok" if ok else "degraded",
        database=state["database"],
        migrations=state["migrations"],
        pending=state.get("pending", []),
        rollups=state.get("rollups", "unknown"),
        rollup_pending_points=state.get("rollup_pending_points"),
        totals=state.get("totals", "unknown"),
        detail=state.get("detail"),
    )
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)
