"""PostgresSink's validated COPY path: a batch of known series as a COPY instead of the JSON RPC.

In one transaction: ``metrics.begin_copy_batch`` (tenancy and the batch ledger: a resent batch is a
duplicate), a COPY of the points with their series ids into ``metrics.points``, and
``metrics.check_copied_points()``, which applies the rules ``metrics.ingest`` applies (one SQL function for
both) and fails the transaction on any bad point with ingest's error. It saves the database the JSON parse and
the look-up of every point's series by name and labels (docs/architecture.md, "Performance").

The COPY path never has the last word on a batch: when it refuses one (class 22/23), the sink forgets the
project's ids and sends the batch through the RPC, whose verdict (the same rules, the same message) stands;
a series id gone stale is thereby learnt again. Series ids are learnt after the RPC: a batch with a series this path has not resolved goes through
``metrics.ingest`` (which creates series, checks kinds and the quota), then the ids of its series are read
back. A series the database redirected to its metric's overflow series, or whose kind differs from its
family's, is never resolved, so its batches keep taking the RPC, which handles both.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

Batch = dict[str, Any]
SeriesKey = tuple[str, str, str, str]  # project, metric name, kind, labels as canonical JSON
COLUMNS = "project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch"


def series_key(project: str, point: dict[str, Any]) -> SeriesKey:
    labels = json.dumps(point.get("labels") or {}, sort_keys=True, separators=(",", ":"))
    return (project, str(point["name"]), str(point["kind"]), labels)


class CopyPath:
    """Series ids learnt so far, and the COPY transaction for batches whose series are all known."""

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._rpc_only: set[SeriesKey] = set()  # looked up after an RPC and not found: overflow, kind clash

    def send(self, conn: Any, batch: Batch) -> dict[str, Any] | None:
        """The batch through COPY, or None when a series is not resolved (send it through the RPC)."""
        project = str(batch["project_id"])
        points = batch["points"]
        ids = [self._ids.get(series_key(project, p), 0) for p in points]  # 0: not resolved (ids are > 0)
        if not points or not all(ids):
            return None
        with conn.transaction(), conn.cursor() as cur:
            row = cur.execute(
                "select metrics.begin_copy_batch(%s, %s, %s, %s, %s)",
                (project, batch["source"], batch["batch_id"], len(points), days(points)),
            ).fetchone()
            if not row or not row[0]:
                return {
                    "status": "duplicate",
                    "points": 0,
                    "series_created": 0,
                    "overflowed": 0,
                    "path": "copy",
                }
            with cur.copy(f"copy metrics.points ({COLUMNS}) from stdin") as copy:
                copy.write(copy_text(project, batch, ids))
            cur.execute("select metrics.check_copied_points()")
        return {
            "status": "accepted",
            "points": len(points),
            "series_created": 0,
            "overflowed": 0,
            "path": "copy",
        }

    def forget(self, project: str) -> None:
        """Drop what was learnt of a project: after the COPY path refused a batch (a bad point, or a series
        id gone stale), the RPC decides, and the ids are learnt again."""
        self._ids = {k: v for k, v in self._ids.items() if k[0] != project}
        self._rpc_only = {k for k in self._rpc_only if k[0] != project}

    def learn(self, conn: Any, batch: Batch) -> None:
        """After an RPC: read back the ids of the batch's series not known yet."""
        project = str(batch["project_id"])
        wanted = {series_key(project, p) for p in batch["points"]} - self._ids.keys() - self._rpc_only
        if not wanted:
            return
        ordered = sorted(wanted)
        rows = conn.execute(
            "select s.id, s.name, f.kind, s.labels from metrics.series s"
            " join metrics.families f on f.project_id = s.project_id and f.name = s.name"
            " where s.project_id = %s"
            " and (s.name, s.labels) in (select * from unnest(%s::text[], %s::jsonb[]))",
            (project, [k[1] for k in ordered], [k[3] for k in ordered]),
        ).fetchall()
        found = {series_key(project, {"name": n, "kind": k, "labels": lb}): i for i, n, k, lb in rows}
        for key in wanted:
            if key in found:
                self._ids[key] = found[key]
            else:
                self._rpc_only.add(key)


def days(points: list[dict[str, Any]]) -> list[date]:
    """The UTC days the points fall on: begin_copy_batch makes their partitions, as ingest does."""
    return sorted({datetime.fromtimestamp(float(p["ts"]), UTC).date() for p in points})


def copy_text(project: str, batch: Batch, ids: list[int]) -> bytes:
    """The batch as COPY text rows, formatted here in one go: cheaper for the worker than psycopg's
    per-value adaptation (``write_row``)."""
    source, batch_id = _text(str(batch["source"])), _text(str(batch["batch_id"]))
    lines = []
    for point, series_id in zip(batch["points"], ids, strict=True):
        sketch = point.get("sketch")
        row = (
            _text(project),
            str(series_id),
            datetime.fromtimestamp(float(point["ts"]), UTC).isoformat(),
            source,
            batch_id,
            _count(point["count"]),
            repr(float(point["sum"])),
            _number(point.get("min")),
            _number(point.get("max")),
            _number(point.get("last")),
            r"\N" if sketch is None else _text(json.dumps(sketch, separators=(",", ":"))),
        )
        lines.append("\t".join(row))
    return ("\n".join(lines) + "\n").encode()


def _count(value: Any) -> str:
    """An integral count as an integer; anything else as written, for the database to refuse."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _number(value: Any) -> str:
    return r"\N" if value is None else repr(float(value))


def _text(value: str) -> str:
    """A COPY text field: backslash, tab, newline and carriage return escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
