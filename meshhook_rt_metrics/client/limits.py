"""The database's limits on one point (``metrics.max_point_count()``, ``metrics.max_point_sum()``, migration
20261206001700): they keep every rollup's sums from overflowing. A point beyond them would get its whole batch
refused, so the registry holds such a point back (counted as invalid) and ships the rest of the flush."""

from __future__ import annotations

from typing import Any

MAX_POINT_COUNT = 1_000_000_000
MAX_POINT_SUM = 1e290


def within_limits(point: dict[str, Any]) -> bool:
    """Whether the database would take this point's count and sum."""
    return bool(point["count"] <= MAX_POINT_COUNT and abs(point["sum"]) <= MAX_POINT_SUM)
