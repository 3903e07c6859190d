"""GET /metrics: Prometheus text 0.0.4 / OpenMetrics 1.0 rendered by prometheus_client from SQL rows.

The rows (metrics.exposition_rows / metrics.scrape) already carry cumulative counter totals, gauge values
and cumulative histogram bucket counts; this module only groups them into metric families. It runs once
per scrape over every series (10,000 and more), so the per-row work is kept to building the samples.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

ROW_COLUMNS = "name, kind, unit, help, labels::text, value, count, sum, le, buckets"
Row = tuple[
    str, str, str, str, str, float | None, int | None, float | None, list[float] | None, list[int] | None
]


class RowsCollector(Collector):
    """A one-shot collector over exposition rows: one family per metric name, in the rows' order."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        skipped: set[tuple[str, str]] = set()
        le_texts: dict[tuple[float, ...], list[str]] = {}
        for row, labels in zip(self._rows, _all_labels(self._rows), strict=True):
            name, kind = row[0], row[1]
            family = families.get(name)
            if family is None:
                family = families[name] = _family(name, kind, row[2], row[3])
            elif family.type != kind:
                # the same name with another kind in another project: not representable, skipped
                if (name, kind) not in skipped:
                    skipped.add((name, kind))
                    log.warning(
                        "metric %s is a %s and a %s in different projects; exporting the %s",
                        name,
                        family.type,
                        kind,
                        family.type,
                    )
                continue
            _add_samples(family, row, labels, le_texts)
        return [family for family in families.values() if family.samples]


def _all_labels(rows: Sequence[Row]) -> list[dict[str, str]]:
    """Every row's labels in one ``json.loads``: a call per row costs several times more than its parsing."""
    parsed: list[dict[str, str]] = json.loads("[" + ",".join([row[4] for row in rows]) + "]")
    return parsed


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    # tuple.__new__ skips the NamedTuple constructor's Python-level defaults (~25,000 samples per scrape)
    return tuple.__new__(Sample, (name, labels, value, None, None, None))


def _add_samples(
    family: Metric, row: Row, labels: dict[str, str], le_texts: dict[tuple[float, ...], list[str]]
) -> None:
    _, kind, _, _, _, value, count, total, le, buckets = row
    samples = family.samples
    if kind == "counter":
        if value is not None:
            samples.append(_sample(family.name + "_total", labels, value))
    elif kind == "gauge":
        if value is not None:
            samples.append(_sample(family.name, labels, value))
    elif kind == "histogram" and count is not None and le is not None and buckets is not None:
        key = tuple(le)
        texts = le_texts.get(key)
        if texts is None:
            texts = le_texts[key] = [_go_float(bound) for bound in le]
        bucket = family.name + "_bucket"
        samples.extend(
            [_sample(bucket, {**labels, "le": text}, n) for text, n in zip(texts, buckets, strict=True)]
        )
        samples.append(_sample(bucket, {**labels, "le": "+Inf"}, count))
        samples.append(_sample(family.name + "_count", labels, count))
        samples.append(_sample(family.name + "_sum", labels, total if total is not None else 0.0))


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _family(name: str, kind: str, unit: str, help_text: str) -> Metric:
    base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
    # OpenMetrics wants the unit as the name's suffix; a unit that is not one is left out
    use_unit = unit if unit and unit.isidentifier() and base.endswith("_" + unit) else ""
    return Metric(base, help_text or f"{name} ({kind})", kind, use_unit)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a scrape builds ~25,000 samples (none of them in a cycle).

    Each allocation burst otherwise triggers full collections over the whole service's heap: a quarter of the
    Python time of a 10,000-series scrape. Re-enabled by the first scrape that paused it, so concurrent
    scrapes can only leave it on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def render(rows: Sequence[Row], accept: str | None) -> tuple[bytes, str]:
    """Body and content type for an ``Accept`` header (OpenMetrics when asked for, else text 0.0.4)."""
    encoder, content_type = _encoder(accept)
    return encoder(RowsCollector(rows)), content_type


HISTOGRAMS = ("histogram",)
COUNTERS_AND_GAUGES = ("counter", "gauge")
OPENMETRICS_EOF = b"# EOF\n"


def render_overlapped(
    fetch: Callable[[Sequence[str]], Sequence[Row]], accept: str | None
) -> tuple[bytes, str]:
    """Like :func:`render` over ``fetch(kinds)`` rows, with the histograms fetched on another thread.

    Placing every sketch bucket makes the histograms' SQL the longest part of a scrape, so the database
    works on it while this thread fetches and encodes the counters and gauges. A name that is a counter or
    gauge in one project and a histogram in another is exported once, as the counter or gauge.
    """
    encoder, content_type = _encoder(accept)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrape-histograms") as pool:
        histograms = pool.submit(fetch, HISTOGRAMS)
        first_rows = fetch(COUNTERS_AND_GAUGES)
        first = encoder(RowsCollector(first_rows))
        taken = {row[0] for row in first_rows}
        histogram_rows = histograms.result()
        second_rows = [row for row in histogram_rows if row[0] not in taken]
        if len(second_rows) < len(histogram_rows):
            log.warning("histograms named like counters or gauges of other projects were not exported")
        second = encoder(RowsCollector(second_rows))
    if first.endswith(OPENMETRICS_EOF):  # one exposition, one terminator
        first = first[: -len(OPENMETRICS_EOF)]
    return first + second, content_type


def _encoder(accept: str | None) -> tuple[Callable[[Collector], bytes], str]:
    """prometheus_client's encoder for ``accept``; OpenMetrics with "underscores" escaping as "allow-utf-8".

    Metric and label names here are legacy Prometheus names (the ingest rules check them), which both
    escapings write unchanged; "underscores" would cost a Python loop over every character of every sample
    name (half of an OpenMetrics scrape), and would turn a ':' into '_' in sample lines but not in HELP/TYPE.
    """
    encoder, content_type = choose_encoder(accept or "")
    if (
        isinstance(encoder, partial)
        and encoder.func is openmetrics.generate_latest
        and encoder.keywords.get("escaping") == openmetrics.UNDERSCORES
    ):
        encoder = partial(
            encoder.func, *encoder.args, **{**encoder.keywords, "escaping": openmetrics.ALLOWUTF8}
        )
    return encoder, content_type


def rows_from(cursor_rows: Iterable[tuple[Any, ...]]) -> list[Row]:
    return [tuple(r) for r in cursor_rows]
