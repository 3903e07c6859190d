"""What the alert worker made of the rules: active alerts, notification deliveries, receiver tests, previews.

The alert worker (``meshhook_rt_metrics/alerting/``) writes alert instances and the outbox as the service
role; members read them here as themselves (row-level security of migration
``20261205000100_metrics_alert_worker.sql``). Receiver tests queue a message that the worker delivers like
any other (one delivery path) and wait for its outcome; previews replay a rule over past data with the
worker's own state machine (``metrics.preview_alert_rule``). No response carries a receiver's target or
secret: the messages' bodies hold neither, and ``authenticated`` may not read the secret at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from meshhook_rt_metrics.api.alert_models import (
    ActiveAlert,
    ActiveAlertList,
    ActiveState,
    Delivery,
    DeliveryKind,
    DeliveryList,
    DeliveryStatus,
    PreviewTransition,
    ReceiverTest,
    RulePreview,
)
from meshhook_rt_metrics.api.alerts import HistoryPageDep, field_problem, not_found, require_visible
from meshhook_rt_metrics.api.auth import Caller
from meshhook_rt_metrics.api.db import Database
from meshhook_rt_metrics.api.deps import ERRORS, NOT_FOUND, CallerDep, DatabaseDep, visible_project
from meshhook_rt_metrics.api.errors import ApiError
from meshhook_rt_metrics.api.models import QueryTime, parse_step, utc
from meshhook_rt_metrics.api.pagination import Key, Keyset

router = APIRouter(prefix="/api/metrics/alerts", tags=["alerts"])

ACTIVE_SQL = """
select i.rule_id, r.name, i.fingerprint, metrics.alert_labels(r, i.labels), i.state, i.value,
  case i.state when 'pending' then i.active_at when 'recovering' then i.recovering_at else i.fired_at end
    as since,
  i.active_at, i.fired_at, i.recovering_at, i.last_data_at, i.evaluated_at
from metrics.alert_instances i
join metrics.alert_rules r on r.id = i.rule_id
where i.project_id = %(p)s and i.state <> 'inactive' and (%(s)s::text is null or i.state = %(s)s)
  and (%(r)s::uuid is null or i.rule_id = %(r)s)
order by since desc nulls last, r.name, i.fingerprint
"""
ACTIVE_NAMES = (
    "rule_id",
    "rule_name",
    "fingerprint",
    "labels",
    "state",
    "value",
    "since",
    "active_at",
    "fired_at",
    "recovering_at",
    "last_data_at",
    "evaluated_at",
)
# only the columns `authenticated` may read (not locked_by, thread_key); of the body only what the alerts were
DELIVERIES_SQL = """
select m.id, m.key, case when m.kind = 'test' then null else m.rule_id end, m.receiver_id, m.kind, m.status,
  m.attempts, m.last_status, m.last_error, m.created_at, m.sent_at,
  case when m.status = 'pending' then m.next_attempt_at end,
  coalesce((
    select jsonb_agg(jsonb_build_object('fingerprint', a.value ->> 'fingerprint', 'state', a.value ->> 'state',
      'status', a.value ->> 'status') order by a.n)
    from jsonb_array_elements(case when jsonb_typeof(m.body -> 'alerts') = 'array' then m.body -> 'alerts'
      else '[]'::jsonb end) with ordinality as a (value, n)
  ), '[]'::jsonb)
from metrics.alert_messages m
where m.project_id = %s and (%s::text is null or m.status = %s)
  and (%s::text is null or m.kind = %s) and (%s::uuid is null or m.rule_id = %s)
  and (%s::uuid is null or m.receiver_id = %s)
  and {condition}
"""
DELIVERIES_ORDER = Keyset(
    "alert_messages",
    (Key("m.created_at", "timestamptz", descending=True), Key("m.id", "bigint", descending=True)),
)
DELIVERY_NAMES = (
    "id",
    "key",
    "rule_id",
    "receiver_id",
    "kind",
    "status",
    "attempts",
    "last_status",
    "last_error",
    "created_at",
    "sent_at",
    "next_attempt_at",
    "alerts",
)
# whether the caller can know of a receiver: admins see it, other members see the rules that link it and the
# deliveries that went to it (row-level security); anyone else sees none of these
KNOWN_RECEIVER_SQL = """
select exists (select from metrics.alert_receivers where id = %(r)s)
  or exists (select from metrics.alert_rule_receivers where receiver_id = %(r)s)
  or exists (select from metrics.alert_messages where receiver_id = %(r)s)
"""
MESSAGE_SQL = (
    "select id, key, status, attempts, last_status, last_error from metrics.alert_messages where id = %s"
)
POLL_SECONDS = 0.2
TEST_STATUS = {"sent": 200, "pending": 202, "dead": 502}
PREVIEW_PARAMETERS = frozenset({"from", "to", "step"})


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is shown as null (as the data plane's queries do)."""
    return value if value is None or math.isfinite(value) else None


# == active alerts ========================================================================================
@router.get(
    "/active",
    response_model=ActiveAlertList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Alerts of a project that are pending, firing, recovering or without data; latest first",
)
def active_alerts(
    who: CallerDep,
    db: DatabaseDep,
    project_id: UUID,
    state: Annotated[ActiveState | None, Query(description="Only alerts in this state.")] = None,
    rule_id: Annotated[UUID | None, Query(description="Only this rule's alerts.")] = None,
) -> ActiveAlertList:
    """The alert worker's current instances (its state survives restarts); times are data time."""
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        rows = conn.execute(ACTIVE_SQL, {"p": project_id, "s": state, "r": rule_id}).fetchall()
    alerts = []
    for row in rows:
        data = dict(zip(ACTIVE_NAMES, row, strict=True))
        data["value"] = finite(data["value"])
        alerts.append(ActiveAlert.model_validate(data))
    return ActiveAlertList(alerts=alerts)


# == deliveries ===========================================================================================
@router.get(
    "/deliveries",
    response_model=DeliveryList,
    responses={**ERRORS, **NOT_FOUND},
    summary="Notification deliveries of a project (dead letters too), newest first",
)
def deliveries(
    who: CallerDep,
    db: DatabaseDep,
    project_id: UUID,
    paging: HistoryPageDep,
    response: Response,
    status: Annotated[DeliveryStatus | None, Query(description="dead: the dead letters.")] = None,
    kind: Annotated[DeliveryKind | None, Query(description="notification, repeat or test.")] = None,
    rule_id: Annotated[UUID | None, Query(description="Only this rule's messages.")] = None,
    receiver_id: Annotated[UUID | None, Query(description="Only the messages to this receiver.")] = None,
) -> DeliveryList:
    """The outbox's messages with their delivery status and the alerts they carried; never a receiver's
    target or secret. Paginated (at most 1000 a page)."""
    filters = {"status": status, "kind": kind, "rule_id": rule_id, "receiver_id": receiver_id}
    page = paging.of(DELIVERIES_ORDER, project_id=project_id, **filters)
    params = [
        project_id,
        status,
        status,
        kind,
        kind,
        rule_id,
        rule_id,
        receiver_id,
        receiver_id,
        *page.params,
    ]
    with db.caller(who.claims) as conn:
        visible_project(conn, project_id, who)
        found = conn.execute(DELIVERIES_SQL.format(condition=page.condition) + page.tail, params).fetchall()
    rows = page.finish(found, lambda r: (r[9], r[0]), response)
    return DeliveryList(
        deliveries=[Delivery.model_validate(dict(zip(DELIVERY_NAMES, r, strict=True))) for r in rows]
    )


# == receiver tests =======================================================================================
def queue_test_message(db: Database, who: Caller, receiver_id: UUID) -> int:
    """Queues the test message, committed so that a worker can claim it. ``metrics.queue_test_alert``
    decides who may (admins: 42501 for anyone else, a 403); a receiver the caller cannot know of is 404 first,
    as any id outside their projects."""
    with db.caller(who.claims) as conn:
        known = conn.execute(KNOWN_RECEIVER_SQL, {"r": receiver_id}).fetchone()
        if not (known and known[0]):
            raise not_found("receiver", receiver_id)
        row = conn.execute("select metrics.queue_test_alert(%s)", (receiver_id,)).fetchone()
    assert row is not None
    return int(row[0])


def read_test_message(db: Database, who: Caller, message_id: int) -> Sequence[Any]:
    """The message's delivery state, read as the caller in a transaction of its own (to see the worker's)."""
    with db.caller(who.claims) as conn:
        row = conn.execute(MESSAGE_SQL, (message_id,)).fetchone()
    if row is None:  # the receiver was deleted meanwhile (its messages go with it)
        raise ApiError(404, "not_found", f"test message {message_id} is gone: was its receiver deleted?")
    return tuple(row)


def outcome_of(row: Sequence[Any], wait: int) -> ReceiverTest:
    status, attempts = row[2], row[3]
    if status == "sent":
        detail = "delivered"
    elif status == "dead":
        detail = f"not delivered: the receiver failed {attempts} attempt(s) and the message was dead-lettered"
    elif attempts:
        detail = f"not delivered within {wait} s: {attempts} attempt(s) failed so far; the worker retries it"
    else:
        detail = (
            f"not delivered within {wait} s; it stays queued: is an alert worker (meshhook-metrics alert-worker)"
            " running?"
        )
    return ReceiverTest(
        message_id=row[0],
        key=row[1],
        status=status,
        attempts=row[3],
        last_status=row[4],
        last_error=row[5],
        detail=detail,
    )


@router.post(
    "/receivers/{receiver_id}/test",
    response_model=ReceiverTest,
    responses={
        202: {
            "model": ReceiverTest,
            "description": "Still pending after `wait` seconds (no worker running?).",
        },
        502: {
            "model": ReceiverTest,
            "description": "The receiver failed: dead-lettered, `last_error` says why.",
        },
        **ERRORS,
        **NOT_FOUND,
    },
    summary="Send a test notification to a receiver through the alert worker (project admins)",
)
async def send_test_notification(
    who: CallerDep,
    db: DatabaseDep,
    receiver_id: UUID,
    response: Response,
    wait: Annotated[int, Query(ge=0, le=30, description="Seconds to wait for the delivery.")] = 10,
) -> ReceiverTest:
    """200 when it was delivered, 502 when it was dead-lettered, 202 when still pending after ``wait``."""
    message_id = await run_in_threadpool(queue_test_message, db, who, receiver_id)
    deadline = time.monotonic() + wait
    row = await run_in_threadpool(read_test_message, db, who, message_id)
    while row[2] == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        row = await run_in_threadpool(read_test_message, db, who, message_id)
    response.status_code = TEST_STATUS[row[2]]
    return outcome_of(row, wait)


# == previews =============================================================================================
@contextmanager
def rejected_parameters(names: frozenset[str]) -> Iterator[None]:
    """``metrics.reject`` naming one of these query parameters (``from: ...``) as a 422 at that parameter."""
    try:
        yield
    except psycopg.errors.InvalidParameterValue as exc:
        name, _, problem = (exc.diag.message_primary or "").partition(": ")
        if name in names and problem:
            raise field_problem(["query", name], problem) from exc
        raise


def preview_range(from_: datetime | None, to: datetime | None) -> tuple[datetime, datetime]:
    """[from, to) with their defaults: the hour before now."""
    end = utc(to) if to else datetime.now(UTC)
    try:
        return (utc(from_) if from_ else end - timedelta(hours=1)), end
    except OverflowError as exc:  # `to` within the first hour of year 1
        raise field_problem(["query", "to"], "too early for the default range: give from") from exc


def step_of(step: str | None) -> timedelta | None:
    try:
        return parse_step(step) if step else None
    except ValueError as exc:
        raise field_problem(["query", "step"], str(exc)) from exc


def transition_from(row: Sequence[Any]) -> PreviewTransition:
    return PreviewTransition(
        at=row[0], fingerprint=row[1], labels=row[2], state=row[3], previous=row[4], value=finite(row[5])
    )


@router.post(
    "/{rule_id:uuid}/preview",
    response_model=RulePreview,
    responses={**ERRORS, **NOT_FOUND},
    summary="What a rule would have done over past data: every transition, nothing written",
)
def preview_rule(
    who: CallerDep,
    db: DatabaseDep,
    rule_id: UUID,
    from_: Annotated[
        QueryTime | None,
        Query(alias="from", description="Start (RFC 3339 or epoch seconds; default: an hour before `to`)."),
    ] = None,
    to: Annotated[
        QueryTime | None, Query(description="End (RFC 3339 or epoch seconds; default: now).")
    ] = None,
    step: Annotated[
        str | None,
        Query(
            pattern=r"^\d{1,9}[smhdw]?$",
            description="Between evaluations, at least 1m and at most 1,440 evaluations (default: at most 720).",
        ),
    ] = None,
) -> RulePreview:
    """Replays the rule with the worker's state machine (``metrics.preview_alert_rule``), as the caller:
    members of the rule's project. Ranges of at most 7 days; a bad range or step is a 422 at its parameter."""
    start, end = preview_range(from_, to)
    interval = step_of(step)
    with db.caller(who.claims) as conn:
        require_visible(conn, "alert_rules", rule_id, "alert rule")
        with rejected_parameters(PREVIEW_PARAMETERS):
            rows = conn.execute(
                "select at, fingerprint, labels, state, previous, value"
                " from metrics.preview_alert_rule(%s, %s, %s, %s)",
                (rule_id, start, end, interval),
            ).fetchall()
    transitions = [transition_from(r) for r in rows]
    return RulePreview.model_validate(
        {"rule_id": rule_id, "from": start, "to": end, "step": step, "transitions": transitions}
    )
