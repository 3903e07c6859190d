"""Queries: GET /api/metrics (series of one metric over a range, through the cache of settled steps) and
GET /api/metrics/series (metrics, series and label values of a project).

Both run as the caller (row-level security decides), both take one request of the caller's rate limit
(``rate_limit.py``), and both check their label matchers with ``metrics.matchers_problem`` (the rule of
``metrics.query`` and of alert rules) before reading anything: an invalid one is a 422 at
``["query", "match", i]``. GET /api/metrics is also bounded in cost: at most ``max_query_steps`` steps per
request (checked before the query) and at most ``max_query_points`` points per answer.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response

from meshhook_rt_metrics.api.deps import ERRORS, RATE_LIMITED, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError, ErrorDetail, invalid_request
from meshhook_rt_metrics.api.models import (
    AGGREGATION,
    LABEL_NAME,
    MATCHER,
    METRIC_NAME,
    MetricInfo,
    QueryResponse,
    QueryTime,
    SeriesInfo,
    SeriesResponse,
    parse_matcher,
    parse_step,
    utc,
)
from meshhook_rt_metrics.api.query_cache import QueryCache, SeriesQuery
from meshhook_rt_metrics.api.rate_limit import RateLimitedCallerDep
from meshhook_rt_metrics.api.settings import ApiSettings

router = APIRouter(tags=["query"])

_LABEL = re.compile(LABEL_NAME)
# a problem of metrics.matchers_problem: "[2].value: invalid regex: ..." (or one of the whole list)
_MATCHER_AT = re.compile(r"^\[(\d+)\](?:\.[a-z]+)?: (.*)$", re.DOTALL)


def _cache(request: Request) -> QueryCache:
    cache = request.app.state.query_cache
    assert isinstance(cache, QueryCache)
    return cache


def _settings(request: Request) -> ApiSettings:
    settings = request.app.state.settings
    assert isinstance(settings, ApiSettings)
    return settings


CacheDep = Annotated[QueryCache, Depends(_cache)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]


def matchers(match: list[str]) -> list[dict[str, str]]:
    """The ``match`` texts as ``{"label", "op", "value"}``; 422 at ``["query", "match", i]`` for a bad one."""
    parsed, details = [], []
    for i, text in enumerate(match):
        try:
            parsed.append(parse_matcher(text).model_dump())
        except ValueError as exc:
            details.append(ErrorDetail(loc=["query", "match", i], message=str(exc), type="value_error"))
    if details:
        raise ApiError(422, "validation_failed", "invalid request: query.match", details=details)
    return parsed


def matcher_detail(problem: str) -> ErrorDetail:
    """A problem of ``metrics.matchers_problem`` at its matcher (``["query", "match", i]``)."""
    found = _MATCHER_AT.match(problem)
    if found:
        return ErrorDetail(loc=["query", "match", int(found[1])], message=found[2], type="value_error")
    return ErrorDetail(loc=["query", "match"], message=problem, type="value_error")


def check_matchers(conn: psycopg.Connection[Any], found: list[dict[str, str]]) -> None:
    """422 unless ``metrics.matchers_problem`` (as the caller: regexes that compile, within the configured
    length) accepts the matchers."""
    if not found:
        return
    row = conn.execute("select metrics.matchers_problem(%s::jsonb)", (json.dumps(found),)).fetchone()
    if row and row[0]:
        raise invalid_request([matcher_detail(str(row[0]))])


def check_steps(start: datetime, end: datetime, interval: timedelta | None, most: int) -> None:
    """422 at ``["query", "step"]`` when the range holds more than ``most`` steps (before any SQL runs)."""
    if interval is None or interval <= timedelta(0) or end <= start:
        return  # no step: ~300 points, chosen in SQL; a bad range or step: the data plane's 400
    steps = math.ceil((end - start) / interval)
    if steps > most:
        detail = ErrorDetail(
            loc=["query", "step"],
            message=f"{steps} steps over the range, at most {most} per request: raise the step or "
            "narrow the range",
            type="too_many_steps",
        )
        raise invalid_request([detail])


# -- queries ----------------------------------------------------------------------------------------------
@router.get(
    "/api/metrics",
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
        **RATE_LIMITED,
    },
    summary="Series of one metric over a time range, aggregated",
)
def query_metrics(
    who: RateLimitedCallerDep,
    db: DatabaseDep,
    cache: CacheDep,
    settings: SettingsDep,
    project_id: UUID,
    metric: Annotated[str, Query(min_length=1, max_length=200, pattern=METRIC_NAME)],
    from_: Annotated[
        QueryTime | None, Query(alias="from", description="Start (RFC 3339 or epoch seconds).")
    ] = None,
    to: Annotated[
        QueryTime | None, Query(description="End, exclusive (RFC 3339 or epoch seconds; default: now).")
    ] = None,
    step: Annotated[str | None, Query(pattern=r"^\d{1,9}[smhdw]?$", description="e.g. 60s, 5m, 1h")] = None,
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
    check_steps(start, end, interval, settings.max_query_steps)
    query = SeriesQuery(
        project_id, metric, json.dumps(found), agg, tuple(group) if group is not None else None
    )
    # one snapshot: the cache's horizon and the steps read after it must describe the same moment
    with db.caller(who.claims, one_snapshot=True) as conn:
        visible_project(conn, project_id, who)
        check_matchers(conn, found)
        answer = cache.answer(conn, query, start, end, interval)
    if answer.points > settings.max_query_points:
        raise ApiError(
            422,
            "too_many_points",
            f"the answer would have {answer.points} points, at most {settings.max_query_points} per "
            "request; narrow the matchers or raise the step",
            hint="group with `by`, add `match`, raise `step` or narrow `from`/`to`",
            headers={"X-Metrics-Cache": answer.cache},
        )
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


@router.get(
    "/api/metrics/series",
    response_model=SeriesResponse,
    responses={**ERRORS, **RATE_LIMITED},
    summary="Discover metrics, series and label values of a project",
)
def list_series(
    who: RateLimitedCallerDep,
    db: DatabaseDep,
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
        check_matchers(conn, found)
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
