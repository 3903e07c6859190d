"""GET /metrics: Prometheus text 0.0.4 / OpenMetrics 1.0 rendered by prometheus_client from SQL rows.

The rows (metrics.exposition_rows / metrics.scrape) already carry cumulative counter totals, gauge values
and cumulative histogram bucket counts; this module only groups them into metric families.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

ROW_COLUMNS = "name, kind, unit, help, labels::text, value, count, sum, le, buckets"
Row = tuple[
    str, str, str, str, str, float | None, int | None, float | None, list[float] | None, list[int] | None
]


class RowsCollector(Collector):
    """A one-shot collector over exposition rows (ordered by metric name)."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        family: Metric | None = None
        family_key: tuple[str, str] | None = None
        seen: dict[str, str] = {}
        for name, kind, unit, help_text, labels_text, value, count, total, le, buckets in self._rows:
            if family_key != (name, kind):
                if family is not None and family.samples:
                    yield family
                family_key = (name, kind)
                if seen.setdefault(name, kind) != kind:
                    # the same name with another kind in another project: not representable, skipped
                    log.warning(
                        "metric %s is a %s and a %s in different projects; exporting the %s",
                        name,
                        seen[name],
                        kind,
                        seen[name],
                    )
                    family = None
                    continue
                family = _family(name, kind, unit, help_text)
            if family is None:
                continue
            labels: dict[str, str] = json.loads(labels_text)
            if kind == "counter" and value is not None:
                family.add_sample(family.name + "_total", labels, value)
            elif kind == "gauge" and value is not None:
                family.add_sample(family.name, labels, value)
            elif kind == "histogram" and count is not None and le is not None and buckets is not None:
                for bound, cumulative in zip(le, buckets, strict=True):
                    family.add_sample(family.name + "_bucket", {**labels, "le": _go_float(bound)}, cumulative)
                family.add_sample(family.name + "_bucket", {**labels, "le": "+Inf"}, count)
                family.add_sample(family.name + "_count", labels, count)
                family.add_sample(family.name + "_sum", labels, total if total is not None else 0.0)
        if family is not None and family.samples:
            yield family


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _family(name: str, kind: str, unit: str, help_text: str) -> Metric:
    base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
    # OpenMetrics wants the unit as the name's suffix; a unit that is not one is left out
    use_unit = unit if unit and unit.isidentifier() and base.endswith("_" + unit) else ""
    return Metric(base, help_text or f"{name} ({kind})", kind, use_unit)


def render(rows: Sequence[Row], accept: str | None) -> tuple[bytes, str]:
    """Body and content type for an ``Accept`` header (OpenMetrics when asked for, else text 0.0.4)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(RowsCollector(rows)), content_type


def rows_from(cursor_rows: Iterable[tuple[Any, ...]]) -> list[Row]:
    return [tuple(r) for r in cursor_rows]
