"""Whether the data plane keeps up, as ``metrics.rollup_status()`` reports it: read one way by the metrics
service's ``GET /healthz`` and by ``meshhook-metrics status``."""

from __future__ import annotations

from typing import Any

import psycopg


def rollup_health(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The rollup pass (``rollups``: ``current`` or ``stalled``, with the points not merged yet) and the totals'
    fold (``totals``); ``unknown`` where the role may not call the function or the database predates it."""
    try:
        with conn.transaction():
            row = conn.execute(
                "select pending_points, stalled, fold_stalled from metrics.rollup_status()"
            ).fetchone()
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.UndefinedColumn,  # a database before migration 20261207000700 (reported pending)
    ):
        return {"rollups": "unknown", "totals": "unknown"}
    assert row is not None
    return {
        "rollups": "stalled" if row[1] else "current",
        "rollup_pending_points": int(row[0]),
        "totals": "stalled" if row[2] else "current",
    }
