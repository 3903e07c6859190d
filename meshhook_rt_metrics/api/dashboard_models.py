"""Request and response models of the saved dashboards (/api/metrics/dashboards) and of the caller's
projects (/api/metrics/projects).

The spec is taken as any JSON value on purpose: its rule is ``metrics.dashboard_spec_problem`` (migration
``20261206000100_metrics_dashboards.sql``), so a wrong shape is refused once, by SQL, with the JSON path of
the problem, not by a second copy of the rule here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from meshhook_rt_metrics.api.alert_models import Name

SPEC_EXAMPLE: dict[str, Any] = {
    "version": 1,
    "title": "MeshHook",
    "panels": [
        {
            "id": "webhooks",
            "title": "Webhook throughput",
            "type": "timeseries",
            "metric": "meshhook_webhook_requests_total",
            "agg": "rate",
            "by": ["outcome"],
            "match": [],
            "unit": "reqps",
            "thresholds": [{"value": 0.2, "color": "critical"}],
            "width": 6,
            "height": 1,
        }
    ],
}

Spec = Annotated[
    Any,
    Field(
        description='{"version": 1, "title", "panels": [...]} (docs/api.md, "Saved dashboards"); checked by '
        "metrics.dashboard_spec_problem. At most 65536 bytes as JSON.",
        examples=[SPEC_EXAMPLE],
    ),
]
Position = Annotated[
    StrictInt, Field(ge=0, le=1_000_000, description="Order among the project's dashboards (ascending).")
]
Revision = Annotated[
    StrictInt,
    Field(
        ge=1,
        description="The revision you read: 409 if the dashboard changed since (optimistic concurrency).",
    ),
]


class DashboardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    name: Name
    spec: Spec
    position: Position | None = Field(
        default=None, description="Default: after the project's last dashboard."
    )


class DashboardUpdate(BaseModel):
    """The whole spec; name and position only when given; revision to refuse a lost update."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    spec: Spec
    position: Position | None = None
    revision: Revision | None = None


class Dashboard(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    spec: Any = Field(description="As stored (jsonb: object keys come back sorted, not in the order sent).")
    position: int
    revision: int = Field(description="1 when created, bumped by every change.")
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


class DashboardList(BaseModel):
    dashboards: list[Dashboard]


class Project(BaseModel):
    project_id: UUID
    name: str | None = Field(description="metrics.projects.name; null before the project is named.")
    role: Literal["viewer", "editor", "admin"]


class ProjectList(BaseModel):
    projects: list[Project]
