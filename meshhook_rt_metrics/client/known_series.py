"""PostgresSink's fast path for series it knows: ``metrics.ingest_known``, one call with typed arrays.

A batch whose series ids the sink has learnt goes as arrays (series ids, epoch seconds, count, sum, min, max,
last, sketch) in one statement, which opens the batch (tenancy and the ledger: a resent batch is a duplicate),
applies the rules ``metrics.ingest`` applies (one SQL function for both) and stores the rows. It saves the
database the JSON parse and the look-up of every point's series by name and labels, and the worker the round
trips of a COPY (docs/architecture.md, "Performance"). The arrays are written as PostgreSQL array literals
here, in one go: cheaper for the worker than adapting every value.

This path never has the last word on a batch: when it refuses one (class 22/23), the sink forgets the
project's ids and sends the batch through the RPC, whose verdict (the same rules, the same message) stands;
a series id gone stale is thereby learnt again. Series ids are learnt after the RPC: a batch with a series
this path has not resolved goes through ``metrics.ingest`` (which creates series, checks kinds and the
quota), then the ids of its series are read back. A series the database redirected to its metric's overflow
series, or whose kind differs from its family's, is never resolved, so its batches keep taking the RPC,
which handles both.
"""

from __future__ import annotations

import json
import re
from typing import Any

Batch = dict[str, Any]
SeriesKey = tuple[str, str, str, tuple[tuple[str, Any], ...]]  # project, metric name, kind, sorted labels


def series_key(project: str, point: dict[str, Any]) -> SeriesKey:
    """A point's series; computed for every point of every batch, so a sorted tuple (a fifth of the cost
    of canonical JSON)."""
    return (
        project,
        str(point["name"]),
        str(point["kind"]),
        tuple(sorted((point.get("labels") or {}).items())),
    )


LEARN_CHUNK = 500
"""Series looked up per query after an RPC."""

INGEST_KNOWN = (
    "select metrics.ingest_known(%s, %s, %s, %s::bigint[], %s::float8[], %s::bigint[], %s::float8[],"
    " %s::float8[], %s::float8[], %s::float8[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
)
"""The arrays' overload (migration 20261206002200): each histogram's sketch as its zero count and, per store,
its keys and counts as array literals, which the database parses far more cheaply than jsonb."""


class KnownSeries:
    """Series ids learnt so far, and the one-call path for batches whose series are all known."""

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._rpc_only: set[SeriesKey] = set()  # looked up after an RPC and not found: overflow, kind clash

    def send(self, conn: Any, batch: Batch) -> dict[str, Any] | None:
        """The batch through ``metrics.ingest_known``, or None when a series is not resolved or a value is
        not a number (send it through the RPC)."""
        project = str(batch["project_id"])
        points = batch["points"]
        ids = [self._ids.get(series_key(project, p), 0) for p in points]  # 0: not resolved (ids are > 0)
        if not points or not all(ids):
            return None
        literals = array_literals(points, ids)
        if literals is None:
            return None
        row = conn.execute(
            INGEST_KNOWN, (project, str(batch["source"]), str(batch["batch_id"]), *literals)
        ).fetchone()
        result: dict[str, Any] = dict(row[0]) if row and isinstance(row[0], dict) else {"status": "accepted"}
        result["path"] = "known"
        return result

    def forget(self, project: str) -> None:
        """Drop what was learnt of a project: after this path refused a batch (a bad point, or a series id
        gone stale), the RPC decides, and the ids are learnt again."""
        self._ids = {k: v for k, v in self._ids.items() if k[0] != project}
        self._rpc_only = {k for k in self._rpc_only if k[0] != project}

    def learn(self, conn: Any, batch: Batch) -> None:
        """After an RPC: read back the ids of the batch's series not known yet, ``LEARN_CHUNK`` at a time
        (a first flush of many series would otherwise hold all their rows at once)."""
        project = str(batch["project_id"])
        wanted = sorted({series_key(project, p) for p in batch["points"]} - self._ids.keys() - self._rpc_only)
        for start in range(0, len(wanted), LEARN_CHUNK):
            self._learn_chunk(conn, project, wanted[start : start + LEARN_CHUNK])

    def _learn_chunk(self, conn: Any, project: str, keys: list[SeriesKey]) -> None:
        rows = conn.execute(
            "select s.id, s.name, f.kind, s.labels from metrics.series s"
            " join metrics.families f on f.project_id = s.project_id and f.name = s.name"
            " where s.project_id = %s"
            " and (s.name, s.labels) in (select * from unnest(%s::text[], %s::jsonb[]))",
            (project, [k[1] for k in keys], [json.dumps(dict(k[3])) for k in keys]),
        ).fetchall()
        found = {series_key(project, {"name": n, "kind": k, "labels": lb}): i for i, n, k, lb in rows}
        for key in keys:
            if key in found:
                self._ids[key] = found[key]
            else:
                self._rpc_only.add(key)


def array_literals(points: list[dict[str, Any]], ids: list[int]) -> tuple[str, ...] | None:
    """The batch's columns as PostgreSQL array literals (series ids, ts, count, sum, min, max, last, and each
    sketch's zeros, positive keys and counts, negative keys and counts), or None when a value is not a number
    or a sketch is not the client's own shape (the RPC judges those by their JSON types).

    Each numeric column is encoded by ``json.dumps`` in one C call: a JSON array of numbers (``null`` for
    none, ``NaN``/``Infinity`` for the database to refuse) is an array literal once its brackets are braces.
    A sketch's store becomes one element per point: its keys and its counts each as an inner literal."""
    try:
        return _literals(points, ids)
    except (TypeError, ValueError):  # a value JSON cannot write (a Decimal, a set): the RPC judges the batch
        return None


def _literals(points: list[dict[str, Any]], ids: list[int]) -> tuple[str, ...] | None:
    """``array_literals`` itself; it may raise what ``json.dumps`` raises."""
    sketches = [p.get("sketch") for p in points]
    if any(s is not None and not _client_shaped(s) for s in sketches):
        return None
    columns = (
        ids,
        [p["ts"] for p in points],
        [_count(p["count"]) for p in points],
        [p["sum"] for p in points],
        [p.get("min") for p in points],
        [p.get("max") for p in points],
        [p.get("last") for p in points],
        [None if s is None else _count(s.get("z", 0)) for s in sketches],
    )
    texts = [_dumps(column)[1:-1] for column in columns]
    positive, negative = (
        _store_literals([None if s is None else s.get(name) or {} for s in sketches]) for name in ("p", "n")
    )
    if any(_NOT_A_NUMBER.search(text) for text in texts) or positive is None or negative is None:
        return None
    return (*("{" + text + "}" for text in texts), *positive, *negative)


def _client_shaped(sketch: Any) -> bool:
    """A sketch as the client writes it (``Sketch.to_wire``): a dict of at most z, p and n, stores as dicts."""
    return (
        type(sketch) is dict
        and sketch.keys() <= {"z", "p", "n"}
        and type(sketch.get("p", {})) is dict
        and type(sketch.get("n", {})) is dict
    )


def _store_literals(stores: list[dict[str, Any] | None]) -> tuple[str, str] | None:
    """One store of every point as two text[] literals (keys, counts), an element per point (NULL without a
    sketch); None when a key is not a decimal integer or a count not a number (the RPC judges those)."""
    keys: list[str] = []
    counts: list[str] = []
    for store in stores:
        if store is None:
            keys.append("NULL")
            counts.append("NULL")
            continue
        if not all(type(key) is str for key in store):
            return None
        joined = ",".join(store)
        values = _dumps(list(store.values()))[1:-1]
        if "." in values:  # 2.0 is a count as 2 is (the RPC takes it); 2.5 is left for the database to refuse
            values = _dumps([_count(v) for v in store.values()])[1:-1]
        if store and not (_KEYS.fullmatch(joined) and joined.count(",") == len(store) - 1):
            return None
        if _NOT_A_NUMBER.search(values):
            return None
        keys.append('"{' + joined + '}"')
        counts.append('"{' + values + '}"')
    return "{" + ",".join(keys) + "}", "{" + ",".join(counts) + "}"


_KEYS = re.compile(r"(?:0|-?[1-9][0-9]*)(?:,(?:0|-?[1-9][0-9]*))*")
"""Keys joined by commas, every one a canonical decimal integer as the RPC requires ("01" and "-0" are not:
an integer array would read them as 1 and 0); the database checks the range."""


_NOT_A_NUMBER = re.compile(r'["\[\]{}]|true|false')
"""What the inside of a JSON array of numbers, nulls, NaN and infinities never holds."""


def _count(value: Any) -> Any:
    """An integral float count as an integer (3.0 -> 3); anything else as it is, for the database (a
    number) or the RPC (anything else) to judge."""
    return int(value) if type(value) is float and value.is_integer() else value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
