"""Asking SQL to evaluate a project's rules: one round trip per project (``metrics.evaluate_alerts``).

Values, the state machine, history, outbox rows and the live broadcast are all SQL's, in one transaction;
this module only calls it and reads the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from meshhook_rt_metrics.alerting.database import Conn

LEASE_LOST = "MHL01"


class LeaseLostError(Exception):
    """Another worker evaluates the project now (the epoch moved on); nothing was written."""


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did: the project's data time, rules evaluated, alerts tracked, transitions."""

    project_id: UUID
    data_time: str | None
    rules: int
    instances: int
    capped: int
    transitions: list[dict[str, Any]]


async def evaluate(
    conn: Conn, project_id: UUID, owner: str, epoch: int, rule_ids: Sequence[UUID] | None = None
) -> Evaluation:
    """Evaluate the project's enabled rules (or ``rule_ids``) at its data time; raises ``LeaseLostError``."""
    try:
        cursor = await conn.execute(
            "select metrics.evaluate_alerts(%s, %s, %s, %s)",
            (project_id, owner, epoch, list(rule_ids) if rule_ids is not None else None),
        )
    except psycopg.Error as exc:
        if exc.sqlstate == LEASE_LOST:
            raise LeaseLostError(str(exc)) from exc
        raise
    row = await cursor.fetchone()
    report: dict[str, Any] = row[0] if row else {}
    return Evaluation(
        project_id=project_id,
        data_time=report.get("data_time"),
        rules=int(report.get("rules") or 0),
        instances=int(report.get("instances") or 0),
        capped=int(report.get("capped") or 0),
        transitions=list(report.get("transitions") or []),
    )


async def rules_of_metrics(conn: Conn, project_id: UUID, metrics: Sequence[str]) -> list[UUID]:
    """The enabled rules of a project that read any of ``metrics`` (what a live message woke)."""
    cursor = await conn.execute(
        "select id from metrics.alert_rules where project_id = %s and enabled and metric = any(%s)",
        (project_id, list(metrics)),
    )
    return [row[0] for row in await cursor.fetchall()]
