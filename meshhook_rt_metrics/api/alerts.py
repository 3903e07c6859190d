"""Alert configuration endpoints: rules, receivers, silences and the alert history (issue 5), and the
helpers every alerting router shares (validity probes, constraint translation, 404/403).

Every statement runs as the caller (``Database.caller``): row-level security of the alerting tables
(migrations ``20261127000500_metrics_alerting.sql`` and ``20261205000100_metrics_alert_worker.sql``) decides
who sees and changes what. Members read rules, silences and history; editors and admins write rules and
silences; receivers are for admins only, and their secret is write-only (``authenticated`` has no select
grant on it). Ids the caller cannot see are 404, projects the caller is not a member of 403. Mute windows
are ``mute_windows.py``'s; active alerts, deliveries, receiver tests and previews ``alert_state.py``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Response
from psycopg import sql
from psycopg.types.json import Jsonb

from meshhook_rt_metrics.api.alert_models import (
    SILENCE_MAX,
    AlertEvent,
    AlertHistory,
    Receiver,
    ReceiverCreate,
    ReceiverList,
    ReceiverPatch,
    Rule,
    RuleCreate,
    RuleList,
    RulePatch,
    Silence,
    SilenceCreate,
    SilenceList,
    duration_seconds,
    format_duration,
    mask_target,
)
from meshhook_rt_metrics.api.deps import CONFLICT, ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError, ErrorDetail, invalid_request
from meshhook_rt_metrics.api.models import QueryTime, utc
from meshhook_rt_metrics.api.pagination import Key, Keyset, PageDep, PageRequest, page_parameters

router = APIRouter(prefix="/api/metrics/alerts", tags=["alerts"])

Conn = psycopg.Connection[Any]
Loc = list[str | int]

# API field <- column, where they differ
RULE_FIELDS = {"by": "group_by", "window": "window_length"}
FIELD_OF_COLUMN = {column: field for field, column in RULE_FIELDS.items()}
RULE_DURATIONS = frozenset(
    {
        "window",
        "for_duration",
        "keep_firing_for",
        "no_data_after",
        "group_wait",
        "group_interval",
        "repeat_interval",
    }
)
# check constraints whose problem is not one column's (the others name theirs: <table>_<column>_check)
CONSTRAINT_FIELDS = {
    "alert_silences_period_check": "ends_at",
    "alert_rules_resolve_side_check": "resolve_threshold",
    "alert_rules_templates_check": "annotations",
    "alert_mute_windows_times_check": "end_time",
}
# what a violation of a constraint means, where its name does not say it
CONSTRAINT_MESSAGES = {
    "alert_rules_resolve_side_check": "must be on the resolving side of the threshold (op > or >=: at most the "
    "threshold; < or <=: at least it); not with == or !=",
    "alert_mute_windows_times_check": "must differ from start_time",
}
# foreign keys that name a rule of the project
RULE_FKEYS = frozenset({"alert_silences_rule_fkey", "alert_mute_windows_rule_fkey"})
_PROBLEM_AT = re.compile(r"^\[(\d+)\](?:\.([a-z_]+))?: (.*)$", re.DOTALL)
_KEY_AT = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*): (.*)$", re.DOTALL)
_RECEIVER_AT = re.compile(r"^receiver_ids\[(\d+)\]: ")

# sort keys of the lists (pagination.py); the last column is unique
RULES_ORDER = Keyset("alert_rules", (Key("r.name", "text"), Key("r.id", "uuid")))
RECEIVERS_ORDER = Keyset("alert_receivers", (Key("name", "text"), Key("id", "uuid")))
SILENCES_ORDER = Keyset(
    "alert_silences", (Key("s.ends_at", "timestamptz", descending=True), Key("s.id", "uuid"))
)
HISTORY_ORDER = Keyset(
    "alert_events", (Key("e.at", "timestamptz", descending=True), Key("e.id", "bigint", descending=True))
)
HistoryPageDep = Annotated[PageRequest, Depends(page_parameters(default=100, most=1000))]
SilenceState = Literal["active", "pending", "expired", "all"]
# the silences of each state= (the state column of SILENCE_SELECT, as a condition)
SILENCE_STATES: dict[str, str] = {
    "active": "s.starts_at <= now() and s.ends_at > now()",
    "pending": "s.starts_at > now() and s.ends_at > now()",
    "expired": "s.ends_at <= now()",
    "all": "true",
}

RULE_SELECT = """
select r.id, r.project_id, r.name, r.description, r.metric, r.matchers, r.agg, r.group_by, r.window_length,
  r.op, r.threshold, r.for_duration, r.severity, r.annotations, r.enabled, r.created_by, r.created_at,
  r.updated_at,
  array(select l.receiver_id from metrics.alert_rule_receivers l where l.rule_id = r.id order by l.receiver_id),
  r.keep_firing_for, r.resolve_threshold, r.labels, r.no_data_after, r.no_data_policy, r.group_wait,
  r.group_interval, r.repeat_interval
from metrics.alert_rules r
"""
RECEIVER_COLUMNS = "id, project_id, name, kind, target, has_secret, created_by, created_at, updated_at"
SILENCE_SELECT = """
select s.id, s.project_id, s.rule_id, s.matchers, s.starts_at, s.ends_at, s.comment,
  case when s.ends_at <= now() then 'expired' when s.starts_at > now() then 'pending' else 'active' end,
  s.created_by, s.created_at
from metrics.alert_silences s
"""


# -- helpers ---------------------------------------------------------------------------------------------------
def field_problem(loc: Loc, message: str) -> ApiError:
    return invalid_request([ErrorDetail(loc=loc, message=message, type="value_error")])


class Probe(NamedTuple):
    """A question to a validity function: field path, SQL expression, its parameter or a tuple of them.

    ``keyed``: the function names the key of an object it found wrong (``summary: ...``), reported at that
    key's path.
    """

    loc: Loc
    expr: str
    value: Any
    keyed: bool = False


def problem_detail(probe: Probe, problem: str) -> ErrorDetail:
    """A problem at its field, or at the list element (``[2].value: ...``) or object key it names."""
    where, message = list(probe.loc), problem
    found = _PROBLEM_AT.match(message)
    if found:
        where.append(int(found[1]))
        if found[2]:
            where.append(found[2])
        message = found[3]
    elif probe.keyed and (keyed := _KEY_AT.match(message)):
        where.append(keyed[1])
        message = keyed[2]
    return ErrorDetail(loc=where, message=message, type="value_error")


def check_problems(conn: Conn, probes: Sequence[Probe]) -> None:
    """Ask the data plane's validity functions (``metrics.*_problem``) about values before writing them, in
    one statement; every problem found is a detail of one 422."""
    if not probes:
        return
    params: list[Any] = []
    for probe in probes:
        params.extend(probe.value if isinstance(probe.value, tuple) else [probe.value])
    row = conn.execute("select " + ", ".join(probe.expr for probe in probes), params).fetchone()
    assert row is not None
    details = [
        problem_detail(probe, str(problem)) for probe, problem in zip(probes, row, strict=True) if problem
    ]
    if details:
        raise invalid_request(details)


def constraint_field(exc: psycopg.errors.CheckViolation) -> str:
    """The API field a violated check constraint is about (``<table>_<column>_check`` names its column)."""
    constraint = exc.diag.constraint_name or ""
    if constraint in CONSTRAINT_FIELDS:
        return CONSTRAINT_FIELDS[constraint]
    table = exc.diag.table_name or ""
    column = constraint.removeprefix(f"{table}_").removesuffix("_check")
    return FIELD_OF_COLUMN.get(column, column)


def violation_message(exc: psycopg.errors.CheckViolation) -> str:
    """What was wrong: the trigger's own words (``time_zone: unknown ...``), the meaning of a known
    constraint, or its name."""
    constraint = exc.diag.constraint_name or ""
    primary = exc.diag.message_primary or ""
    field = constraint_field(exc)
    if primary.startswith(f"{field}: "):
        return primary.removeprefix(f"{field}: ")
    return CONSTRAINT_MESSAGES.get(constraint, f"rejected by the database ({constraint})")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Constraint violations of a write as HTTP errors with field paths (other errors: errors.py)."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise ApiError(409, "conflict", f"a {what} with that name already exists in this project") from exc
    except psycopg.errors.CheckViolation as exc:
        raise field_problem(["body", constraint_field(exc)], violation_message(exc)) from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        message = exc.diag.message_primary or ""
        found = _RECEIVER_AT.match(message)
        if found:
            raise field_problem(["body", "receiver_ids", int(found[1])], message) from exc
        if exc.diag.constraint_name in RULE_FKEYS:
            raise field_problem(["body", "rule_id"], "no such rule in this project") from exc
        raise


def not_found(what: str, ident: UUID) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident} among your projects")


def denied(what: str, ident: UUID) -> ApiError:
    return ApiError(403, "forbidden", f"not allowed to change {what} {ident}", hint="ask a project admin")


def visible(conn: Conn, table: str, ident: UUID) -> bool:
    row = conn.execute(
        sql.SQL("select exists (select from metrics.{} where id = %s)").format(sql.Identifier(table)),
        (ident,),
    ).fetchone()
    return bool(row and row[0])


def require_visible(conn: Conn, table: str, ident: UUID, what: str) -> None:
    if not visible(conn, table, ident):
        raise not_found(what, ident)


def assignments(values: Mapping[str, Any]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder()) for column in values
    )


# -- rules -------------------------------------------------------------------------------------------------
def rule_from(row: Sequence[Any]) -> Rule:
    return Rule(
        id=row[0],
        project_id=row[1],
        name=row[2],
        description=row[3],
        metric=row[4],
        matchers=row[5],
        agg=row[6],
        by=row[7],
        window=format_duration(row[8]),
        op=row[9],
        threshold=row[10],
        for_duration=format_duration(row[11]),
        severity=row[12],
        annotations=row[13],
        enabled=row[14],
        created_by=row[15],
        created_at=row[16],
        updated_at=row[17],
        receiver_ids=list(row[18] or []),
        keep_firing_for=format_duration(row[19]),
        resolve_threshold=row[20],
        labels=row[21],
        no_data_after=format_duration(row[22]) if row[22] is not None else None,
        no_data_policy=row[23],
        group_wait=format_duration(row[24]),
        group_interval=format_duration(row[25]),
        repeat_interval=format_duration(row[26]),
    )


def fetch_rule(conn: Conn, rule_id: UUID) -> Rule:
    row = conn.execute(RULE_SELECT + " where r.id = %s", (rule_id,)).fetchone()
    if row is None:
        raise not_found("alert rule", rule_id)
    return rule_from(row)


def rule_columns(body: RuleCreate | RulePatch, fields: set[str]) -> dict[str, Any]:
    """Column values of the given API fields (receiver_ids are links, not a column)."""
    values: dict[str, Any] = {}
    for field in sorted(fields - {"receiver_ids", "project_id"}):
        value = getattr(body, field)
        if field == "matchers":
            value = Jsonb([m.model_dump() for m in value])
        elif field in ("annotations", "labels"):
            value = Jsonb(value)
        elif field in RULE_DURATIONS and value is not None:
            value = timedelta(seconds=duration_seconds(value))
        values[RULE_FIELDS.get(field, field)] = value
    return values


def rule_probes(body: RuleCreate | RulePatch, fields: set[str], rule_id: UUID | None = None) -> list[Probe]:
    """Probes of the given fields; matchers of a patch equal to the stored ones are not re-checked (as the
    database's trigger does not re-check them: a later, lower regex limit does not freeze a rule)."""
    probes: list[Probe] = []
    if "matchers" in fields:
        value = Jsonb([m.model_dump() for m in body.matchers or []])
        if rule_id is None:
            probes.append(Probe(["body", "matchers"], "metrics.matchers_problem(%s::jsonb)", value))
        else:
            probes.append(
                Probe(
                    ["body", "matchers"],
                    "case when %s::jsonb is not distinct from"
                    " (select r.matchers from metrics.alert_rules r where r.id = %s)"
                    " then null else metrics.matchers_problem(%s::jsonb) end",
                    (value, rule_id, value),
                )
            )
    if "agg" in fields:
        probes.append(Probe(["body", "agg"], "metrics.aggregation_problem(%s::text)", body.agg))
    if "by" in fields and body.by is not None:
        probes.append(Probe(["body", "by"], "metrics.label_names_problem(%s::text[])", body.by))
    for field in ("annotations", "labels"):
        if field in fields:
            value = Jsonb(getattr(body, field))
            probes.append(Probe(["body", field], "metrics.annotations_problem(%s::jsonb)", value))
    if fields & {"annotations", "by", "labels"}:
        probes.append(template_probe(body, fields, rule_id))
    return probes


def template_probe(body: RuleCreate | RulePatch, fields: set[str], rule_id: UUID | None) -> Probe:
    """The annotation templates against the alert's labels (``metrics.template_names_problem``); a patch
    is judged with the stored values of the fields it does not give, since any of the three can break it."""
    annotations = Jsonb(body.annotations) if "annotations" in fields else None
    labels = Jsonb(body.labels) if "labels" in fields else None
    if rule_id is None:
        expr = "metrics.template_names_problem(%s::jsonb, %s::text[], %s::jsonb)"
        return Probe(["body", "annotations"], expr, (annotations, body.by, labels), keyed=True)
    expr = (
        "(select metrics.template_names_problem(coalesce(%s::jsonb, r.annotations),"
        " case when %s then %s::text[] else r.group_by end, coalesce(%s::jsonb, r.labels))"
        " from metrics.alert_rules r where r.id = %s)"
    )
    return Probe(
        ["body", "annotations"], expr, (annotations, "by" in fields, body.by, labels, rule_id), keyed=True
    )


def set_receivers(conn: Conn, rule_id: UUID, receiver_ids: list[UUID]) -> None:
    with translated("rule"):
        conn.execute("select metrics.set_alert_rule_receivers(%s, %s::uuid[])", (rule_id, receiver_ids))


# -- receivers ---------------------------------------------------------------------------------------------
def receiver_from(row: Sequence[Any]) -> Receiver:
    names = RECEIVER_COLUMNS.split(", ")
    data = dict(zip(names, row, strict=True))
    data["target"] = mask_target(data["kind"], data["target"])
    return Receiver.model_validate(data)


def target_probe(kind: str, target: str) -> list[Probe]:
    return [Probe(["body", "target"], "metrics.receiver_target_problem(%s::text, %s::text)", (kind, target))]


def require_routing_key(kind: str, has_secret: bool) -> None:
    """A pagerduty receiver cannot send without its routing key (the secret): refused when written, not
    found out at the first alert."""
    if kind == "pagerduty" and not has_secret:
        raise field_problem(["body", "secret"], "required for pagerduty: the integration's routing key")


# -- silences ----------------------------------------------------------------------------------------------
def silence_from(row: Sequence[Any]) -> Silence:
    return Silence(
        id=row[0],
        project_id=row[1],
        rule_id=row[2],
        matchers=row[3],
        starts_at=row[4],
        ends_at=row[5],
        comment=row[6],
        state=row[7],
        created_by=row[8],
        created_at=row[9],
    )


# == receivers (before /{rule_id}, which would capture the path) ==========================================
@router.post(
    "/receivers",
    status_code=201,
    response_model=Receiver,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Create a notification receiver (project admins)",
)
def create_receiver(who: CallerDep, db: DatabaseDep, body: ReceiverCreate) -> Receiver:
    """The secret is stored write-only: responses carry `has_secret`, never the secret."""
    target = body.effective_target()
    if target is None:
        raise field_problem(["body", "target"], "required (only pagerduty receivers have a default)")
    require_routing_key(body.kind, body.secret is not None)
    with db.caller(who.claims) as conn:
        visible_project(conn, body.project_id, who)
        check_problems(conn, target_probe(body.kind, target))
        with translated("receiver"):
            row = conn.execute(
                f"insert into metrics.alert_receivers (project_id, name, kind, target, secret)"
                f" values (%s, %s, %s, %s, %s) returning {RECEIVER_COLUMNS}",
                (body.project_id, body.name, body.kind, target, body.secret),
            ).fetchone()
    assert row is not None
    return receiver_from(row)


@router.get(
    "/receivers",
    response_model=ReceiverList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Receivers of a project by name (admins; other members get an empty list); paginated",
)
def list_receivers(
    who: CallerDep, db: DatabaseDep, project_id: UUID, paging: PageDep, response: Response
) -> ReceiverList:
    page = paging.of(RECEIVERS_ORDER, project_id=project_id)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            f"select {RECEIVER_COLUMNS} from metrics.alert_receivers where project_id = %s and {page.condition}"
            + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[2], r[0]), response)
    return ReceiverList(receivers=[receiver_from(r) for r in shown])


@router.get(
    "/receivers/{receiver_id}",
    response_model=Receiver,
    responses={**ERRORS, **NOT_FOUND},
    summary="One receiver",
)
def get_receiver(who: CallerDep, db: DatabaseDep, receiver_id: UUID) -> Receiver:
    with db.caller(who.claims) as conn:
        row = conn.execute(
            f"select {RECEIVER_COLUMNS} from metrics.alert_receivers where id = %s", (receiver_id,)
        ).fetchone()
    if row is None:
        raise not_found("receiver", receiver_id)
    return receiver_from(row)


@router.patch(
    "/receivers/{receiver_id}",
    response_model=Receiver,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Change a receiver (only the given fields; `secret: null` removes the secret)",
)
def patch_receiver(who: CallerDep, db: DatabaseDep, receiver_id: UUID, body: ReceiverPatch) -> Receiver:
    fields = body.model_fields_set
    with db.caller(who.claims) as conn:
        current = conn.execute(
            "select kind, target, has_secret from metrics.alert_receivers where id = %s", (receiver_id,)
        ).fetchone()
        if current is None:
            raise not_found("receiver", receiver_id)
        kind = body.kind if "kind" in fields and body.kind else current[0]
        require_routing_key(kind, body.secret is not None if "secret" in fields else current[2])
        if fields & {"kind", "target"}:
            target = body.target if "target" in fields and body.target else current[1]
            check_problems(conn, target_probe(kind, target))
        values = {field: getattr(body, field) for field in sorted(fields)}  # never empty (ReceiverPatch)
        with translated("receiver"):
            row = conn.execute(
                sql.SQL("update metrics.alert_receivers set {} where id = %s returning {}").format(
                    assignments(values), sql.SQL(RECEIVER_COLUMNS)
                ),
                [*values.values(), receiver_id],
            ).fetchone()
        if row is None:
            raise denied("receiver", receiver_id)
    return receiver_from(row)


@router.delete(
    "/receivers/{receiver_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
    summary="Delete a receiver (rules that used it stay)",
)
def delete_receiver(who: CallerDep, db: DatabaseDep, receiver_id: UUID) -> Response:
    with db.caller(who.claims) as conn:
        row = conn.execute(
            "delete from metrics.alert_receivers where id = %s returning id", (receiver_id,)
        ).fetchone()
    if row is None:
        raise not_found("receiver", receiver_id)
    return Response(status_code=204)


# == silences =============================================================================================
@router.post(
    "/silences",
    status_code=201,
    response_model=Silence,
    responses={**ERRORS, **NOT_FOUND},
    summary="Silence alerts of a project (editors and admins)",
)
def create_silence(who: CallerDep, db: DatabaseDep, body: SilenceCreate) -> Silence:
    matchers = Jsonb([m.model_dump() for m in body.matchers])
    with db.caller(who.claims) as conn:
        # the database's clock (now() of this transaction, the column default of starts_at), not this host's
        clock = conn.execute("select now()").fetchone()
        assert clock is not None
        now: datetime = clock[0]
        given_start, end, start = body.period(now)
        if end <= start:
            raise field_problem(["body", "ends_at"], "must be after starts_at")
        if end <= now:
            raise field_problem(["body", "ends_at"], "must be in the future")
        if end - start > SILENCE_MAX:
            raise field_problem(["body", "ends_at"], "a silence lasts at most 90 days")
        visible_project(conn, body.project_id, who)
        check_problems(conn, [Probe(["body", "matchers"], "metrics.matchers_problem(%s::jsonb)", matchers)])
        values: dict[str, Any] = {
            "project_id": body.project_id,
            "rule_id": body.rule_id,
            "matchers": matchers,
            "ends_at": end,
            "comment": body.comment,
        }
        if given_start is not None:  # otherwise the column default, now(), applies
            values["starts_at"] = given_start
        with translated("silence"):
            row = conn.execute(
                sql.SQL(
                    "with s as (insert into metrics.alert_silences ({}) values ({}) returning *) "
                ).format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in values),
                    sql.SQL(", ").join(sql.Placeholder() for _ in values),
                )
                + sql.SQL(SILENCE_SELECT.replace("metrics.alert_silences s", "s")),
                list(values.values()),
            ).fetchone()
    assert row is not None
    return silence_from(row)


@router.get(
    "/silences",
    response_model=SilenceList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Silences of a project, latest end first; paginated",
)
def list_silences(
    who: CallerDep,
    db: DatabaseDep,
    project_id: UUID,
    paging: PageDep,
    response: Response,
    state: Annotated[
        SilenceState | None,
        Query(
            description="active: in effect now; pending: not started yet; expired: ended; all (the default)."
        ),
    ] = None,
    active: Annotated[
        bool | None,
        Query(description="true: not ended yet (active or pending); false: expired. Not with `state`."),
    ] = None,
) -> SilenceList:
    if state is not None and active is not None:
        raise field_problem(["query", "active"], "give state or active, not both")
    page = paging.of(SILENCES_ORDER, project_id=project_id, state=state, active=active)
    condition = SILENCE_STATES[state or "all"]
    if active is not None:
        condition = "s.ends_at > now()" if active else SILENCE_STATES["expired"]
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            SILENCE_SELECT + f" where s.project_id = %s and {condition} and {page.condition}" + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[5], r[0]), response)
    return SilenceList(silences=[silence_from(r) for r in shown])


@router.get(
    "/silences/{silence_id}", response_model=Silence, responses={**ERRORS, **NOT_FOUND}, summary="One silence"
)
def get_silence(who: CallerDep, db: DatabaseDep, silence_id: UUID) -> Silence:
    with db.caller(who.claims) as conn:
        row = conn.execute(SILENCE_SELECT + " where s.id = %s", (silence_id,)).fetchone()
    if row is None:
        raise not_found("silence", silence_id)
    return silence_from(row)


@router.delete(
    "/silences/{silence_id}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
    summary="End a silence now (one that has not started is deleted)",
)
def end_silence(who: CallerDep, db: DatabaseDep, silence_id: UUID) -> Response:
    with db.caller(who.claims) as conn:
        row = conn.execute("select metrics.end_alert_silence(%s)", (silence_id,)).fetchone()
    if not (row and row[0]):
        raise not_found("silence", silence_id)
    return Response(status_code=204)


# == history ==============================================================================================
@router.get(
    "/history",
    response_model=AlertHistory,
    responses={**ERRORS, **NOT_FOUND},
    summary="Alert state changes of a project, newest first; paginated (at most 1000 a page)",
)
def history(
    who: CallerDep,
    db: DatabaseDep,
    project_id: UUID,
    paging: HistoryPageDep,
    response: Response,
    rule_id: Annotated[UUID | None, Query(description="Only this rule's events.")] = None,
    from_: Annotated[
        QueryTime | None, Query(alias="from", description="Events at or after (RFC 3339 or epoch seconds).")
    ] = None,
    to: Annotated[QueryTime | None, Query(description="Events before (RFC 3339 or epoch seconds).")] = None,
) -> AlertHistory:
    start = utc(from_) if from_ else None
    end = utc(to) if to else None
    if start is not None and end is not None and start >= end:
        raise invalid_request(
            [ErrorDetail(loc=["query", "from"], message="must be before to", type="value_error")]
        )
    page = paging.of(HISTORY_ORDER, project_id=project_id, rule_id=rule_id, start=start, end=end)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        found = conn.execute(
            "select e.id, e.project_id, e.rule_id, e.rule_name, e.labels, e.state, e.previous, e.fingerprint,"
            " e.value, e.at from metrics.alert_events e"
            " where e.project_id = %s and (%s::uuid is null or e.rule_id = %s)"
            " and (%s::timestamptz is null or e.at >= %s) and (%s::timestamptz is null or e.at < %s)"
            f" and {page.condition}" + page.tail,
            [project_id, rule_id, rule_id, start, start, end, end, *page.params],
        ).fetchall()
    rows = page.finish(found, lambda r: (r[9], r[0]), response)
    names = (
        "id",
        "project_id",
        "rule_id",
        "rule_name",
        "labels",
        "state",
        "previous",
        "fingerprint",
        "value",
        "at",
    )
    return AlertHistory(events=[AlertEvent.model_validate(dict(zip(names, r, strict=True))) for r in rows])


# == rules ===============================================================================================
# Last, and typed ({rule_id:uuid}): otherwise /{rule_id} would also match PATCH /receivers and the like
# (a 422 for a bad uuid instead of 405); a rule id that is not a uuid is therefore 404.
@router.post(
    "",
    status_code=201,
    response_model=Rule,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Create an alert rule (editors and admins)",
)
def create_rule(who: CallerDep, db: DatabaseDep, body: RuleCreate) -> Rule:
    fields = set(RuleCreate.model_fields)
    values = rule_columns(body, fields)
    with db.caller(who.claims) as conn:
        visible_project(conn, body.project_id, who)
        check_problems(conn, rule_probes(body, fields))
        with translated("rule"):
            row = conn.execute(
                sql.SQL(
                    "insert into metrics.alert_rules (project_id, {}) values (%s, {}) returning id"
                ).format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in values),
                    sql.SQL(", ").join(sql.Placeholder() for _ in values),
                ),
                [body.project_id, *values.values()],
            ).fetchone()
        assert row is not None
        if body.receiver_ids:
            set_receivers(conn, row[0], body.receiver_ids)
        return fetch_rule(conn, row[0])


@router.get(
    "",
    response_model=RuleList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Alert rules of a project, by name; paginated",
)
def list_rules(
    who: CallerDep, db: DatabaseDep, project_id: UUID, paging: PageDep, response: Response
) -> RuleList:
    page = paging.of(RULES_ORDER, project_id=project_id)
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(
            RULE_SELECT + f" where r.project_id = %s and {page.condition}" + page.tail,
            [project_id, *page.params],
        ).fetchall()
    shown = page.finish(rows, lambda r: (r[2], r[0]), response)
    return RuleList(rules=[rule_from(r) for r in shown])


@router.get(
    "/{rule_id:uuid}", response_model=Rule, responses={**ERRORS, **NOT_FOUND}, summary="One alert rule"
)
def get_rule(who: CallerDep, db: DatabaseDep, rule_id: UUID) -> Rule:
    with db.caller(who.claims) as conn:
        return fetch_rule(conn, rule_id)


@router.patch(
    "/{rule_id:uuid}",
    response_model=Rule,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    summary="Change an alert rule (only the given fields; receiver_ids replaces the links)",
)
def patch_rule(who: CallerDep, db: DatabaseDep, rule_id: UUID, body: RulePatch) -> Rule:
    fields = set(body.model_fields_set)
    values = rule_columns(body, fields)
    with db.caller(who.claims) as conn:
        require_visible(conn, "alert_rules", rule_id, "alert rule")
        check_problems(conn, rule_probes(body, fields, rule_id))
        if values:
            with translated("rule"):
                row = conn.execute(
                    sql.SQL("update metrics.alert_rules set {} where id = %s returning id").format(
                        assignments(values)
                    ),
                    [*values.values(), rule_id],
                ).fetchone()
            if row is None:
                raise denied("alert rule", rule_id)
        if "receiver_ids" in fields:
            set_receivers(conn, rule_id, body.receiver_ids or [])
        return fetch_rule(conn, rule_id)


@router.delete(
    "/{rule_id:uuid}",
    status_code=204,
    response_class=Response,
    responses={**ERRORS, **NOT_FOUND},
    summary="Delete an alert rule (its silences go too; its history stays)",
)
def delete_rule(who: CallerDep, db: DatabaseDep, rule_id: UUID) -> Response:
    with db.caller(who.claims) as conn:
        require_visible(conn, "alert_rules", rule_id, "alert rule")
        row = conn.execute(
            "delete from metrics.alert_rules where id = %s returning id", (rule_id,)
        ).fetchone()
        if row is None:
            raise denied("alert rule", rule_id)
    return Response(status_code=204)
