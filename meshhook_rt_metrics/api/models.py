"""Request and response models at the HTTP boundary (their JSON Schemas are the published OpenAPI)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictStr,
    WithJsonSchema,
)

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
MATCHER = r"^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=).*$"
AGGREGATION = r"^(rate|sum|avg|min|max|last|count|p\d{1,2}(\.\d+)?|quantile\((0?\.\d+|0|1)\))$"
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_STEP = re.compile(r"^(\d{1,9})(s|m|h|d|w)?$")
_STEP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MetricName = Annotated[str, Field(min_length=1, max_length=200, pattern=METRIC_NAME)]


def utc(value: datetime) -> datetime:
    """Timestamps without a zone are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Matcher(BaseModel):
    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str


def parse_matcher(text: str) -> Matcher:
    """``label=value``, ``label!="value"``, ``label=~"regex"``, ``label!~regex`` (Prometheus semantics)."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError('expected label<op>value with op one of =, !=, =~, !~ (e.g. status=~"5..")')
    label, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if len(label) > 100 or len(value) > 1024:
        raise ValueError("label name or value too long")
    return Matcher.model_validate({"label": label, "op": op, "value": value})


def parse_step(text: str) -> timedelta:
    """``60``, ``90s``, ``5m``, ``1h``, ``1d``, ``1w`` (a bare number is seconds)."""
    found = _STEP.match(text.strip())
    if not found:
        raise ValueError("expected a duration such as 60s, 5m, 1h or 1d")
    try:
        return timedelta(seconds=int(found[1]) * _STEP_UNITS[found[2] or "s"])
    except OverflowError:  # over ~2.7 million years: not a duration Python (or any query) can hold
        raise ValueError("too long a duration") from None


def text_only(value: object) -> object:
    """JSON strings only (no numbers or booleans coerced into a timestamp)."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 string")
    return value


Timestamp = Annotated[datetime, BeforeValidator(text_only)]
# query parameters: RFC 3339 or epoch seconds (a query string has no types, and numbers are what scripts send);
# the published schema says both, so a number is valid input there too
QueryTime = Annotated[
    datetime, WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]})
]


def finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class SeriesPoints(BaseModel):
    labels: dict[str, str] = Field(description="Label set of the series (only the `by` labels when grouped).")
    points: list[tuple[float, float | None]] = Field(
        description="[epoch seconds of the step start, value] in time order; value null when undefined."
    )


class QueryResponse(BaseModel):
    project_id: UUID
    metric: str
    agg: str
    from_: datetime = Field(alias="from")
    to: datetime
    step: str | None = Field(description="The requested step; null: chosen by the database (~300 points).")
    series: list[SeriesPoints]


class MetricInfo(BaseModel):
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    unit: str
    help: str
    series: int = Field(description="Number of series of the metric.")
    overflow_points: int = Field(description="Points redirected to the overflow series (quota reached).")


class SeriesInfo(BaseModel):
    metric: str
    labels: dict[str, str]
    last_seen: datetime | None = Field(description="When the series' last point was accepted.")


class SeriesResponse(BaseModel):
    project_id: UUID
    metrics: list[MetricInfo]
    series: list[SeriesInfo]
    labels: dict[str, list[str]] = Field(description="Label names of the listed series with their values.")
    truncated: bool = Field(description="True when more series match than `limit`.")


class ProjectTokenCreate(BaseModel):
    """A new per-project bearer token (scrape or ingest): its name and optional expiry."""

    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    name: StrictStr = Field(default="", max_length=200)
    expires_at: Timestamp | None = Field(default=None, description="Optional expiry (must be in the future).")


class ProjectTokenInfo(BaseModel):
    """A per-project token as listed: never the token itself, only its prefix."""

    id: UUID
    project_id: UUID
    name: str
    token_prefix: str
    created_by: UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ProjectTokenCreated(BaseModel):
    """A token just created: the only answer that carries the token."""

    id: UUID
    project_id: UUID
    name: str
    token: str = Field(description="The bearer token; shown once, stored only hashed.")
    token_prefix: str
    created_at: datetime
    expires_at: datetime | None


class ScrapeTokenCreate(ProjectTokenCreate):
    """A scrape token for Prometheus (``GET /metrics`` of one project)."""


class ScrapeTokenInfo(ProjectTokenInfo):
    pass


class ScrapeTokenCreated(ProjectTokenCreated):
    token: str = Field(description="The bearer token for Prometheus; shown once, stored only hashed.")


class ScrapeTokenList(BaseModel):
    tokens: list[ScrapeTokenInfo]


class IngestTokenCreate(ProjectTokenCreate):
    """An ingest token for the metrics-ingest edge function (writes one project, reads nothing)."""


class IngestTokenInfo(ProjectTokenInfo):
    pass


class IngestTokenCreated(ProjectTokenCreated):
    token: str = Field(
        description="The bearer token (mhi_...) for the metrics-ingest edge function; shown once, stored only hashed."
    )


class IngestTokenList(BaseModel):
    tokens: list[IngestTokenInfo]


class BoundariesPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: UUID
    metric: MetricName
    boundaries: list[Annotated[StrictFloat, AfterValidator(finite)]] = Field(
        min_length=1, max_length=64, description="Strictly increasing `le` boundaries (+Inf is implicit)."
    )


class Boundaries(BaseModel):
    project_id: UUID
    metric: str
    boundaries: list[float]
    updated_at: datetime | None


class BoundariesList(BaseModel):
    default: list[float] = Field(description="Boundaries of histograms without configured ones.")
    metrics: list[Boundaries]


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    database: str
    migrations: str
    pending: list[str] = Field(default_factory=list)
    rollups: Literal["current", "stalled", "unknown"] = Field(
        default="unknown",
        description="stalled: points wait and no rollup pass merged any for a minute (no pass runs, or a long "
        "transaction holds the watermark back); unknown: the service's role may not ask.",
    )
    rollup_pending_points: int | None = Field(default=None, description="Points not merged into rollups yet.")
    totals: Literal["current", "stalled", "unknown"] = Field(
        default="unknown",
        description="stalled: a minute that ended more than five minutes ago is not folded into the series' "
        "totals (no rollup pass runs, or a transaction that called metrics.rollup_now() stays open); nothing is "
        "lost, scrapes read more minutes; unknown: the service's role may not ask.",
    )
    detail: str | None = None
