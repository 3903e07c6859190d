"""Saved dashboards (/api/metrics/dashboards) and the caller's projects (/api/metrics/projects), for the
live dashboard's project picker and its "Save" (issue #13).

Every statement runs as the caller (``Database.caller``): row-level security of ``metrics.dashboards``
(migration ``20261206000100_metrics_dashboards.sql``) lets members read and editors and admins write. The
spec's rule is ``metrics.dashboard_spec_problem``, enforced by the table's before-write trigger; this module
only turns its message (``spec: panels[2].agg: unknown aggregation ...``) into a 422 whose ``loc`` is the
JSON path. The same trigger bumps ``revision`` and refuses a stale one (SQLSTATE 40001), which is the 409 of
a PUT that names the revision it read. Ids the caller cannot see are 404, projects it is not a member of 403.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Response
from psycopg import sql
from psycopg.types.json import Jsonb

from meshhook_rt_metrics.api.dashboard_models import (
    Dashboard,
    DashboardCreate,
    DashboardList,
    DashboardUpdate,
    Project,
    ProjectList,
)
from meshhook_rt_metrics.api.deps import CONFLICT, ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError, ErrorDetail, invalid_request
from meshhook_rt_metrics.api.pagination import Key, Keyset, PageDep

router = APIRouter(tags=["dashboards"])

BASE = "/api/metrics/dashboards"
COLUMNS = "id, project_id, name, spec, position, revision, created_by, created_at, updated_at"
SPEC_CHECK = "dashboards_spec_check"
ORDER = Keyset("dashboards", (Key("position", "bigint"), Key("name", "text"), Key("id", "uuid")))
# "panels[2].thresholds[0].color: message": a JSON path of names and [indexes], then the message
_PATH_AT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*): (.*)$", re.DOTALL)
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")

Conn = psycopg.Connection[Any]
Loc = list[str | int]


def spec_detail(problem: str) -> ErrorDetail:
    """A problem of ``metrics.dashboard_spec_problem`` at its JSON path under ``body.spec``; a problem of the
    whole spec (no path) at ``body.spec`` itself."""
    loc: Loc = ["body", "spec"]
    message = problem
    found = _PATH_AT.match(problem)
    if found:
        loc.extend(name if name else int(index) for name, index in _STEP.findall(found[1]))
        message = found[2]
    return ErrorDetail(loc=loc, message=message, type="value_error")


def conflict(message: str, hint: str | None = None) -> ApiError:
    return ApiError(409, "conflict", message, hint=hint)


@contextmanager
def translated() -> Iterator[None]:
    """The write's refusals as HTTP errors: a bad spec 422 at its path, a used name or a stale revision 409
    (the other database errors are ``errors.from_database``'s)."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise conflict("a dashboard with that name already exists in this project") from exc
    except psycopg.errors.SerializationFailure as exc:
        raise conflict(exc.diag.message_primary or "changed meanwhile", exc.diag.message_hint) from exc
    except psycopg.errors.CheckViolation as exc:
        primary = exc.diag.message_primary or ""
        if exc.diag.constraint_name == SPEC_CHECK:
            raise invalid_request([spec_detail(primary.removeprefix("spec: "))]) from exc
        raise invalid_request(
            [ErrorDetail(loc=["body", "name"], message="rejected by the database", type="value_error")]
        ) from exc


def dashboard_from(row: Sequence[Any]) -> Dashboard:
    return Dashboard.model_validate(dict(zip(COLUMNS.split(", "), row, strict=True)))


def not_found(dashboard_id: UUID) -> ApiError:
    return ApiError(404, "not_found", f"no dashboard {dashboard_id} among your projects")


def denied(dashboard_id: UUID) -> ApiError:
    return ApiError(
        403,
        "forbidden",
        f"not allowed to change dashboard {dashboard_id}",
        hint="editors and admins change dashboards",
    )


def fetch(conn: Conn, dashboard_id: UUID) -> Dashboard:
    row = conn.execute(f"select {COLUMNS} from metrics.dashboards where id = %s", (dashboard_id,)).fetchone()
    if row is None:
        raise not_found(dashboard_id)
    return dashboard_from(row)


def update_values(body: DashboardUpdate) -> dict[str, Any]:
    """Columns a PUT sets: the spec always; name, position and the revision it read only when given (the
    trigger refuses a revision that is not the current one, then bumps it)."""
    values: dict[str, Any] = {"spec": Jsonb(body.spec)}
    for field in ("name", "position", "revision"):
        if getattr(body, field) is not None:
            values[field] = getattr(body, field)
    return values


# == projects ===============================================================================================
@router.get(
    "/api/metrics/projects",
    response_model=ProjectList,
    responses=ERRORS,
    summary="The caller's projects with its role in each (the service role: every project, as admin)",
    tags=["projects"],
)
def list_projects(who: CallerDep, db: DatabaseDep) -> ProjectList:
    """``metrics.my_projects()``: the membership rule decides, by name then id."""
    with db.caller(who.claims) as conn:
        rows = conn.execute("select project_id, name, role from metrics.my_projects()").fetchall()
    return ProjectList(projects=[Project(project_id=r[0], name=r[1], role=r[2]) for r in rows])


# == dashboards =============================================================================================
@router.get(
    BASE,
    response_model=DashboardList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Dashboards of a project, by position then name; paginated",
)
def list_dashboards(
    who: CallerDep, db: DatabaseDep, project_id: UUID, paging: PageDep, response: Response
) -> DashboardList:
    page = paging.of(ORDER, project_id=project_id)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            f"select {COLUMNS} from metrics.dashboards where project_id = %s and {page.condition}"
            + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[4], r[2], r[0]), response)
    return DashboardList(dashboards=[dashboard_from(r) for r in shown])


@router.post(
    BASE,
    status_code=201,
    response_model=Dashboard,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Save a new dashboard (editors and admins)",
)
def create_dashboard(who: CallerDep, db: DatabaseDep, body: DashboardCreate) -> Dashboard:
    """Names are unique per project (409); without a position it goes last; revision 1."""
    with db.caller(who.claims) as conn:
        visible_project(conn, body.project_id, who)
        with translated():
            row = conn.execute(
                f"insert into metrics.dashboards (project_id, name, spec, position) values (%s, %s, %s, %s)"
                f" returning {COLUMNS}",
                (body.project_id, body.name, Jsonb(body.spec), body.position),
            ).fetchone()
    assert row is not None
    return dashboard_from(row)


@router.get(
    f"{BASE}/{{dashboard_id}}",
    response_model=Dashboard,
    responses={**ERRORS, **NOT_FOUND},
    summary="One dashboard",
)
def get_dashboard(who: CallerDep, db: DatabaseDep, dashboard_id: UUID) -> Dashboard:
    with db.caller(who.claims) as conn:
        return fetch(conn, dashboard_id)


@router.put(
    f"{BASE}/{{dashboard_id}}",
    response_model=Dashboard,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Replace a dashboard's spec (and name, position); 409 when `revision` is not the current one",
)
def put_dashboard(who: CallerDep, db: DatabaseDep, dashboard_id: UUID, body: DashboardUpdate) -> Dashboard:
    values = update_values(body)
    with db.caller(who.claims) as conn:
        fetch(conn, dashboard_id)
        with translated():
            row = conn.execute(
                sql.SQL("update metrics.dashboards set {} where id = %s returning {}").format(
                    sql.SQL(", ").join(
                        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in values
                    ),
                    sql.SQL(COLUMNS),
                ),
                [*values.values(), dashboard_id],
            ).fetchone()
        if row is None:
            raise denied(dashboard_id)  # visible but not updatable: a viewer (row-level security)
    return dashboard_from(row)


@router.delete(
    f"{BASE}/{{dashboard_id}}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
    summary="Delete a dashboard (editors and admins)",
)
def delete_dashboard(who: CallerDep, db: DatabaseDep, dashboard_id: UUID) -> Response:
    with db.caller(who.claims) as conn:
        fetch(conn, dashboard_id)
        row = conn.execute(
            "delete from metrics.dashboards where id = %s returning id", (dashboard_id,)
        ).fetchone()
        if row is None:
            raise denied(dashboard_id)
    return Response(status_code=204)
