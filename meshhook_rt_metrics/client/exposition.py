"""Optional ``/metrics`` of a worker, through prometheus_client, from the same instruments.

The database is the system of record; this is for a Prometheus that already scrapes the workers (or for
a quick look with curl). Values are cumulative since the process started (or forked): counters as
``_total``, gauges as their current value, histograms as summaries (count, sum and quantiles from the
shared sketch). A scrape folds each series' log and reads its totals; it never resets anything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from meshhook_rt_metrics.client.instruments import (
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    Histogram,
    HistogramChild,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from meshhook_rt_metrics.client.registry import Registry

QUANTILES = (0.5, 0.9, 0.95, 0.99)


class PrometheusCollector:
    """A prometheus_client collector over a client's registry."""

    def __init__(self, registry: Registry, quantiles: Iterable[float] = QUANTILES) -> None:
        self._registry = registry
        self._quantiles = tuple(quantiles)

    def describe(self) -> list[Metric]:
        return []  # no auto-describe: metrics appear as they are created

    def collect(self) -> Iterator[Metric]:
        with self._registry.read_lock:
            self._registry.fold_request_logs()
            families = [self._family(m) for m in self._registry.metrics()]
        yield from (f for f in families if f is not None)

    def _family(self, metric: object) -> Metric | None:
        if isinstance(metric, Counter):
            counter = CounterMetricFamily(metric.name, metric.help, labels=metric.label_names)
            for child in metric.children():
                assert isinstance(child, CounterChild)
                counter.add_metric(child.label_values, child.cumulative()[1])
            return counter
        if isinstance(metric, Gauge):
            gauge = GaugeMetricFamily(metric.name, metric.help, labels=metric.label_names)
            for child in metric.children():
                assert isinstance(child, GaugeChild)
                v = child.value  # folds the log first: a gauge only set since the last fold counts
                if child._has:
                    gauge.add_metric(child.label_values, v)
            return gauge
        if isinstance(metric, Histogram):
            summary = Metric(metric.name, metric.help, "summary")
            for child in metric.children():
                assert isinstance(child, HistogramChild)
                n, s, sketch = child.cumulative()
                labels = dict(child.labels)
                if n:
                    for q in self._quantiles:
                        estimate = sketch.quantile(q)
                        if estimate is not None:
                            summary.add_sample(metric.name, {**labels, "quantile": repr(q)}, estimate)
                summary.add_sample(metric.name + "_count", labels, n)
                summary.add_sample(metric.name + "_sum", labels, s)
            return summary
        return None


def prometheus_registry(registry: Registry) -> CollectorRegistry:
    """A prometheus_client registry holding only this client's metrics."""
    target = CollectorRegistry(auto_describe=False)
    target.register(PrometheusCollector(registry))
    return target


def exposition_text(registry: Registry) -> bytes:
    """The Prometheus text format, e.g. to return from an existing web framework's ``/metrics`` route."""
    return generate_latest(prometheus_registry(registry))


def serve(registry: Registry, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on a daemon thread (prometheus_client's server)."""
    return start_http_server(port, addr=addr, registry=prometheus_registry(registry))
