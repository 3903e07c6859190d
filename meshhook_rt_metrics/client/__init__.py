"""Client library for workers: instruments, in-process aggregation, sinks, spool, system metrics."""

from meshhook_rt_metrics.client.client import MetricsClient, default_source
from meshhook_rt_metrics.client.instruments import Counter, Gauge, Histogram, LabelError, Timer
from meshhook_rt_metrics.client.labels import default_redactor, no_redaction
from meshhook_rt_metrics.client.request_log import RequestLog
from meshhook_rt_metrics.client.settings import ClientSettings
from meshhook_rt_metrics.client.shipper import ShipperSink
from meshhook_rt_metrics.client.sinks import (
    BatchTooLargeError,
    InvalidBatchError,
    MemorySink,
    NotAuthorisedError,
    PostgresSink,
    ServerError,
    SinkError,
    SupabaseSink,
)
from meshhook_rt_metrics.client.sketch import MULTIPLIER, Sketch

__all__ = [
    "MULTIPLIER",
    "BatchTooLargeError",
    "ClientSettings",
    "Counter",
    "Gauge",
    "Histogram",
    "InvalidBatchError",
    "LabelError",
    "MemorySink",
    "MetricsClient",
    "NotAuthorisedError",
    "PostgresSink",
    "RequestLog",
    "ServerError",
    "ShipperSink",
    "SinkError",
    "Sketch",
    "SupabaseSink",
    "Timer",
    "default_redactor",
    "default_source",
    "no_redaction",
]
