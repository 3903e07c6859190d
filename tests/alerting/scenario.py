"""A project with data at chosen past times, rules and receivers, and the worker's SQL calls (no worker process).

Data time is the end of the newest minute with data (for minutes in the past: ``metrics.alert_data_time``), so
a test moves time by sending a point into a later minute; every minute before the newest one is settled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.support import batch, counter, gauge, histogram, ingest

OWNER = "test-worker"


class Scenario:
    """One project: ``at(minute, second)`` is a time relative to a whole minute two hours ago."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.project = uuid.uuid4()
        self.base = (int(time.time()) // 60) * 60 - 7200
        conn.execute("insert into metrics.projects (id) values (%s)", (self.project,))

    def at(self, minute: int, second: float = 0) -> float:
        return self.base + minute * 60 + second

    def send(self, *points: dict[str, Any]) -> None:
        ingest(self.conn, batch(self.project, list(points), batch_id=uuid.uuid4().hex))

    def count(
        self, name: str, value: float, labels: Mapping[str, str], minute: int, second: float = 5
    ) -> None:
        self.send(counter(name, value, labels, ts=self.at(minute, second)))

    def gauge(
        self, name: str, value: float, labels: Mapping[str, str], minute: int, second: float = 5
    ) -> None:
        self.send(gauge(name, value, labels, ts=self.at(minute, second)))

    def observe(self, name: str, values: list[float], labels: Mapping[str, str], minute: int) -> None:
        self.send(histogram(name, values, labels, ts=self.at(minute, 5)))

    def tick(self, minute: int, second: float = 30) -> None:
        """Data time moves on: another series of the project sends in ``minute`` (a worker's heartbeat)."""
        self.count("heartbeat_total", 1, {}, minute, second)

    def written_at(self, minute: int, second: float) -> None:
        """Data time ``second`` s into ``minute``: its rows were last written then (the clock cannot do that)."""
        self.conn.execute("reset role")
        self.conn.execute(
            "update metrics.rollup_1m set updated_at = to_timestamp(%s)"
            " where project_id = %s and bucket = to_timestamp(%s)",
            (self.at(minute, second), self.project, self.at(minute)),
        )
        self.conn.execute("set role service_role")

    def receiver(
        self, name: str = "hook", kind: str = "webhook", target: str = "https://ops.example.com/h"
    ) -> uuid.UUID:
        row = self.conn.execute(
            "insert into metrics.alert_receivers (project_id, name, kind, target) values (%s, %s, %s, %s) returning id",
            (self.project, name, kind, target),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def rule(self, receivers: list[uuid.UUID] | None = None, **columns: Any) -> uuid.UUID:
        values = {"name": f"rule-{uuid.uuid4().hex[:6]}", "op": ">", "threshold": 3, **columns}
        values = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in values.items()}
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        row = self.conn.execute(
            f"insert into metrics.alert_rules (project_id, {names}) values (%s, {marks}) returning id",
            (self.project, *values.values()),
        ).fetchone()
        assert row is not None
        rule_id = uuid.UUID(str(row[0]))
        for receiver in receivers or []:
            self.conn.execute(
                "insert into metrics.alert_rule_receivers values (%s, %s, %s)",
                (self.project, rule_id, receiver),
            )
        return rule_id

    def epoch(self) -> int:
        rows = self.conn.execute(
            "select project_id, epoch from metrics.claim_alert_leases(%s)", (OWNER,)
        ).fetchall()
        return dict(rows)[self.project]

    def evaluate(self) -> list[tuple[str, str, str]]:
        """One evaluation; the transitions as (group labels without alertname/severity, previous, state)."""
        row = self.conn.execute(
            "select metrics.evaluate_alerts(%s, %s, %s)", (self.project, OWNER, self.epoch())
        ).fetchone()
        assert row is not None
        return [(_group(t["labels"]), t["previous"], t["state"]) for t in row[0]["transitions"]]

    def states(self) -> dict[str, str]:
        rows = self.conn.execute(
            "select labels, state from metrics.alert_instances where project_id = %s", (self.project,)
        ).fetchall()
        return {_group(labels): state for labels, state in rows}

    def outbox(self) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "select transition, status from metrics.alert_notifications where project_id = %s order by id",
            (self.project,),
        ).fetchall()
        return [(t, s) for t, s in rows]

    def claim(self, worker: str = "d1") -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "select id, key, kind, body, attempt from metrics.claim_alert_deliveries(%s, 100)", (worker,)
        ).fetchall()
        mine = [r for r in rows if r[3]["project_id"] == str(self.project)]
        return [{"id": r[0], "key": r[1], "kind": r[2], "body": r[3], "attempt": r[4]} for r in mine]

    def finish(self, message_id: int, ok: bool = True, worker: str = "d1", **extra: Any) -> str:
        row = self.conn.execute(
            "select metrics.finish_alert_delivery(%s, %s, %s, %s, %s, %s, %s)",
            (
                message_id,
                worker,
                ok,
                extra.get("status"),
                extra.get("error"),
                extra.get("retry_after"),
                extra.get("permanent", False),
            ),
        ).fetchone()
        assert row is not None
        return str(row[0])


def _group(labels: Mapping[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k not in ("alertname", "severity")}
    return ",".join(f"{k}={v}" for k, v in sorted(shown.items())) or "-"
