"""Mute windows (/api/metrics/alerts/mute-windows): recurring times in which notifications are not sent.

A window mutes one rule (``rule_id``) or every rule of its project on the given ISO weekdays from
``start_time`` to ``end_time`` in ``time_zone`` (``metrics.alert_muted`` decides; transitions are still
recorded). Row-level security of ``metrics.alert_mute_windows`` decides who may do what: members read,
editors and admins write. Times are strings, not ``datetime.time``: ``24:00`` (the end of a day) is a time
PostgreSQL knows and Python does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response
from psycopg import sql

from meshhook_rt_metrics.api.alert_models import MuteWindow, MuteWindowCreate, MuteWindowList, MuteWindowPatch
from meshhook_rt_metrics.api.alerts import (
    Conn,
    Probe,
    assignments,
    check_problems,
    denied,
    not_found,
    require_visible,
    translated,
)
from meshhook_rt_metrics.api.deps import CONFLICT, ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.pagination import Key, Keyset, PageDep

router = APIRouter(prefix="/api/metrics/alerts/mute-windows", tags=["alerts"])

ORDER = Keyset("alert_mute_windows", (Key("name", "text"), Key("id", "uuid")))
COLUMNS = "id, project_id, rule_id, name, weekdays, start_time::text, end_time::text, time_zone, created_by, created_at"


def clock(text: str) -> str:
    """``HH:MM:SS`` as PostgreSQL writes a time, shortened to ``HH:MM`` on the minute (as they are given)."""
    return text.removesuffix(":00") if text.count(":") == 2 else text


def window_from(row: Sequence[Any]) -> MuteWindow:
    return MuteWindow(
        id=row[0],
        project_id=row[1],
        rule_id=row[2],
        name=row[3],
        weekdays=list(row[4]),
        start_time=clock(row[5]),
        end_time=clock(row[6]),
        time_zone=row[7],
        created_by=row[8],
        created_at=row[9],
    )


def time_zone_probe(zone: str) -> list[Probe]:
    return [Probe(["body", "time_zone"], "metrics.time_zone_problem(%s::text)", zone)]


def fetch_window(conn: Conn, window_id: UUID) -> MuteWindow:
    row = conn.execute(
        f"select {COLUMNS} from metrics.alert_mute_windows where id = %s", (window_id,)
    ).fetchone()
    if row is None:
        raise not_found("mute window", window_id)
    return window_from(row)


@router.post(
    "",
    status_code=201,
    response_model=MuteWindow,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Create a mute window (editors and admins)",
)
def create_window(who: CallerDep, db: DatabaseDep, body: MuteWindowCreate) -> MuteWindow:
    """Names are unique per project (409); ``rule_id`` must be a rule of the same project (422)."""
    values = body.model_dump()
    with db.caller(who.claims) as conn:
        visible_project(conn, body.project_id, who)
        check_problems(conn, time_zone_probe(body.time_zone))
        with translated("mute window"):
            row = conn.execute(
                sql.SQL("insert into metrics.alert_mute_windows ({}) values ({}) returning {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in values),
                    sql.SQL(", ").join(sql.Placeholder() for _ in values),
                    sql.SQL(COLUMNS),
                ),
                list(values.values()),
            ).fetchone()
    assert row is not None
    return window_from(row)


@router.get(
    "",
    response_model=MuteWindowList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Mute windows of a project, by name; paginated",
)
def list_windows(
    who: CallerDep, db: DatabaseDep, project_id: UUID, paging: PageDep, response: Response
) -> MuteWindowList:
    page = paging.of(ORDER, project_id=project_id)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            f"select {COLUMNS} from metrics.alert_mute_windows where project_id = %s and {page.condition}"
            + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[3], r[0]), response)
    return MuteWindowList(mute_windows=[window_from(r) for r in shown])


@router.get(
    "/{window_id}", response_model=MuteWindow, responses={**ERRORS, **NOT_FOUND}, summary="One mute window"
)
def get_window(who: CallerDep, db: DatabaseDep, window_id: UUID) -> MuteWindow:
    with db.caller(who.claims) as conn:
        return fetch_window(conn, window_id)


@router.patch(
    "/{window_id}",
    response_model=MuteWindow,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Change a mute window (only the given fields; its project and rule are fixed)",
)
def patch_window(who: CallerDep, db: DatabaseDep, window_id: UUID, body: MuteWindowPatch) -> MuteWindow:
    values = {field: getattr(body, field) for field in sorted(body.model_fields_set)}  # never empty
    with db.caller(who.claims) as conn:
        require_visible(conn, "alert_mute_windows", window_id, "mute window")
        if body.time_zone is not None:
            check_problems(conn, time_zone_probe(body.time_zone))
        with translated("mute window"):
            row = conn.execute(
                sql.SQL("update metrics.alert_mute_windows set {} where id = %s returning {}").format(
                    assignments(values), sql.SQL(COLUMNS)
                ),
                [*values.values(), window_id],
            ).fetchone()
        if row is None:
            raise denied("mute window", window_id)
    return window_from(row)


@router.delete(
    "/{window_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
    summary="Delete a mute window (editors and admins)",
)
def delete_window(who: CallerDep, db: DatabaseDep, window_id: UUID) -> Response:
    with db.caller(who.claims) as conn:
        require_visible(conn, "alert_mute_windows", window_id, "mute window")
        row = conn.execute(
            "delete from metrics.alert_mute_windows where id = %s returning id", (window_id,)
        ).fetchone()
        if row is None:
            raise denied("mute window", window_id)
    return Response(status_code=204)
