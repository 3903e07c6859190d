"""The set of metrics of one client: registration, policies (mode, cap, redaction) and collection."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from meshhook_rt_metrics.client.instruments import Counter, Gauge, GaugeCallback, Histogram, Metric, Point
from meshhook_rt_metrics.client.labels import Redactor, default_redactor
from meshhook_rt_metrics.client.limits import MAX_POINT_COUNT, MAX_POINT_SUM, within_limits
from meshhook_rt_metrics.client.request_log import RequestLog

log = logging.getLogger("meshhook_rt_metrics.client")

M = TypeVar("M", bound=Metric)

REDACTION_CACHE_SIZE = 4096
"""Distinct label values whose redaction is remembered (FIFO); values longer than
``REDACTION_CACHE_MAX_CHARS`` are redacted on each use instead (≤ ~3 MB at worst, per client)."""
REDACTION_CACHE_MAX_CHARS = 256


class Registry:
    """Owns the metrics; instruments call back into it for policy decisions on their slow paths."""

    def __init__(
        self,
        *,
        strict: bool = False,
        max_label_sets: int = 1000,
        max_label_value_length: int = 128,
        redactor: Redactor | None = None,
    ) -> None:
        self.strict = strict
        self.max_label_sets = max_label_sets
        self.max_label_value_length = max_label_value_length
        self.redact: Redactor = redactor or default_redactor
        # label value -> redacted value, bounded: the redactor runs once per distinct value, not once per
        # slow-path call (values beyond the cardinality cap come back again and again)
        self._redacted: OrderedDict[str, str] = OrderedDict()
        self._redacted_by: Redactor = self.redact
        self._metrics: dict[str, Metric] = {}
        self._request_logs: list[RequestLog] = []
        self._lock = threading.Lock()
        # one reader at a time: the flush (which moves each interval into the series' totals) or a
        # Prometheus scrape (which sums them); each series' own lock already keeps either view whole
        self.read_lock = threading.Lock()
        self._health: Health | None = None
        self._warned: dict[str, float] = {}

    # -- registration -----------------------------------------------------------------------------
    def _register(self, cls: type[M], name: str, factory: Callable[[], M]) -> M:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = factory()
                self._metrics[name] = metric
                return metric
        candidate = factory()
        if type(existing) is not cls or existing._describe() != candidate._describe():
            raise ValueError(
                f"metric {name!r} is already registered as {existing.kind} with labels "
                f"{existing.label_names!r}; a series keeps its kind and labels"
            )
        return existing

    def counter(
        self, name: str, help: str = "", labels: tuple[str, ...] | list[str] = (), unit: str | None = None
    ) -> Counter:
        return self._register(Counter, name, lambda: Counter(self, name, help, labels, unit))

    def histogram(
        self, name: str, help: str = "", labels: tuple[str, ...] | list[str] = (), unit: str | None = None
    ) -> Histogram:
        return self._register(Histogram, name, lambda: Histogram(self, name, help, labels, unit))

    def gauge(
        self,
        name: str,
        help: str = "",
        labels: tuple[str, ...] | list[str] = (),
        unit: str | None = None,
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        return self._register(Gauge, name, lambda: Gauge(self, name, help, labels, unit, callback))

    def request_log(
        self,
        observed: tuple[object, ...],
        outcomes: Mapping[Any, object],
        in_flight: object = None,
        name: str = "request_log",
    ) -> RequestLog:
        """The log named ``name``: a new one, or the one made before with the same series (as a metric's
        registration returns the existing metric)."""
        request_log = RequestLog(self, observed, outcomes, in_flight, name)
        gauge = request_log.in_flight
        with self._lock:
            for other in self._request_logs:
                if other.name == name:
                    if other.same_as(request_log):
                        return other
                    raise ValueError(
                        f"request log {name!r} is already registered with other series; give this one "
                        "another name"
                    )
            if gauge is not None and any(other.in_flight is gauge for other in self._request_logs):
                raise ValueError(
                    f"request log: in_flight {gauge._metric.name!r} is fed by another request log already; "
                    "its values are exact only when one log feeds it"
                )
            self._request_logs.append(request_log)
        return request_log

    def metrics(self) -> list[Metric]:
        return list(self._metrics.values())

    def get(self, name: str) -> Metric | None:
        return self._metrics.get(name)

    # -- collection -------------------------------------------------------------------------------
    def fold_request_logs(self) -> None:
        """Fold the request logs into their series; a reader does, under ``read_lock``, before it reads."""
        for request_log in list(self._request_logs):
            try:
                request_log.fold()
            except Exception:  # never let one log break the flush of the others
                self._warn(
                    "fold:" + request_log.name, "folding request log %s failed", request_log.name, exc=True
                )

    def collect(self, ts: float) -> list[Point]:
        points: list[Point] = []
        with self.read_lock:
            self.fold_request_logs()
            metrics = self.metrics()
            for metric in metrics:  # fold first: invalid values a fold finds reach the health counters
                metric.fold()  # collected in this same flush
            for metric in metrics:
                collected: list[Point] = []
                try:
                    collected.extend(metric.collect(ts))  # the points collected before a failure still ship
                except Exception:  # never let one metric break the flush of the others
                    self._warn("collect:" + metric.name, "collecting %s failed", metric.name, exc=True)
                points.extend(self._shippable(metric.name, collected))
        return points

    def _shippable(self, metric: str, points: list[Point]) -> list[Point]:
        """The points the database takes; one beyond its limits (absurd values: a sum past 1e290) would get
        the whole batch refused, so it is held back and counted as invalid instead."""
        kept = [p for p in points if within_limits(p)]
        if len(kept) < len(points):
            for _ in range(len(points) - len(kept)):
                self.count_invalid(metric)
            self._warn(
                "limits:" + metric,
                "%s: a point beyond the database's limits (count <= %d, |sum| <= %g) was not shipped",
                metric,
                MAX_POINT_COUNT,
                MAX_POINT_SUM,
            )
        return kept

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.read_lock = threading.Lock()
        for metric in self.metrics():
            metric.after_fork()
        for request_log in self._request_logs:
            request_log.after_fork()

    # -- policy callbacks from instruments --------------------------------------------------------
    def redact_cached(self, text: str) -> str:
        """``redact(text)``, remembered for the last ``REDACTION_CACHE_SIZE`` distinct short values
        (a redactor must be a pure function of its input)."""
        cache = self._redacted
        if self._redacted_by is not self.redact:  # replaced at run time: forget the old answers
            cache = self._redacted = OrderedDict()
            self._redacted_by = self.redact
        try:
            return cache[text]
        except KeyError:
            pass
        clean = self.redact(text)
        if len(text) <= REDACTION_CACHE_MAX_CHARS:
            cache[text] = clean
            if len(cache) > REDACTION_CACHE_SIZE:
                # constant time, unlike next(iter(dict)) after many deletions; KeyError: another thread
                # emptied it meanwhile
                with contextlib.suppress(KeyError):
                    cache.popitem(last=False)
        return clean

    def invalid_value(self, metric: str, v: object, reason: str) -> None:
        if self.strict:
            raise ValueError(f"{metric}: {reason}, got {v!r}")
        self.count_invalid(metric)

    def count_invalid(self, metric: str) -> None:
        if self._health is not None:
            self._health.invalid_values.labels(metric).inc()

    def dropped_label_set(self, metric: str) -> None:
        if self._health is not None:
            self._health.dropped_label_sets.labels(metric).inc()
        self._warn(
            "cap:" + metric,
            "%s: more than %d label sets, routing new ones to the overflow series",
            metric,
            self.max_label_sets,
        )

    def callback_failed(self, metric: str) -> None:
        if self._health is not None:
            self._health.callback_errors.labels(metric).inc()
        self._warn("callback:" + metric, "callback gauge %s failed", metric, exc=True)

    def _warn(self, key: str, msg: str, *args: Any, exc: bool = False) -> None:
        """Log at most once a minute per key: a broken metric must not flood the host's logs."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 60.0:
            self._warned[key] = now
            log.warning(msg, *args, exc_info=exc)


class Health:
    """The client's own metrics: how shipping goes, what was dropped and why."""

    def __init__(self, registry: Registry) -> None:
        p = "meshhook_metrics_client_"
        self.batches_sent = registry.counter(p + "batches_sent_total", "Batches accepted by the backend")
        self.batches_failed = registry.counter(p + "batches_failed_total", "Send attempts that failed")
        self.batches_spooled = registry.counter(p + "batches_spooled_total", "Batches written to the spool")
        self.batches_duplicate = registry.counter(
            p + "batches_duplicate_total", "Batches the backend answered 'duplicate' (stored before)"
        )
        self.batches_split = registry.counter(
            p + "batches_split_total", "Batches split in two after HTTP 413 (request too large)"
        )
        self.dropped_batches = registry.counter(
            p + "dropped_batches_total", "Batches dropped unsent", labels=("reason",)
        )
        self.spool_write_errors = registry.counter(
            p + "spool_write_errors_total", "Batches the spool could not write to disk (kept in memory)"
        )
        self.spool_disabled = registry.gauge(
            p + "spool_disabled", "1 when the spool directory was refused or unusable (memory only)"
        )
        self.spool_bytes = registry.gauge(p + "spool_bytes", "Bytes waiting in the spool", unit="bytes")
        self.spool_batches = registry.gauge(p + "spool_batches", "Batches waiting in the spool")
        self.dropped_points = registry.counter(
            p + "dropped_points_total", "Points dropped unsent", labels=("reason",)
        )
        self.dropped_label_sets = registry.counter(
            p + "dropped_label_sets_total", "Label sets beyond the cardinality cap", labels=("metric",)
        )
        self.invalid_values = registry.counter(
            p + "invalid_values_total", "Invalid measurements dropped (production mode)", labels=("metric",)
        )
        self.callback_errors = registry.counter(
            p + "callback_errors_total", "Callback gauges that raised", labels=("metric",)
        )
        self.flush_duration = registry.histogram(
            p + "flush_duration_seconds", "Time to collect and ship one flush", unit="seconds"
        )
        self.flush_cpu = registry.counter(
            p + "flush_cpu_seconds_total", "CPU time the flushes took from the host process", unit="seconds"
        )
        self._registry = registry
        self._shipper_cpu: Counter | None = None  # registered by the first flush through a shipper process
        registry._health = self

    def shipper_cpu_used(self, seconds: float) -> None:
        """Count the shipper process's CPU (``shipper="process"``): the sends' cost, off the host process."""
        if self._shipper_cpu is None:
            self._shipper_cpu = self._registry.counter(
                "meshhook_metrics_client_shipper_cpu_seconds_total",
                "CPU time of the shipper process the flushes send through (start-up included)",
                unit="seconds",
            )
        self._shipper_cpu.inc(seconds)
