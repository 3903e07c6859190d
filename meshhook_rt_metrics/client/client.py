"""``MetricsClient``: instruments for user code, and the background machinery that ships them.

Background machinery (flush thread, sinks, spool, collectors) never raises into user code: every
failure is logged (rate-limited), counted in the client's own metrics and retried or spooled.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing.util
import os
import random
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from meshhook_rt_metrics.client.collectors import PROCESS_LABELS, LoopLagMonitor, SystemCollector
from meshhook_rt_metrics.client.instruments import Counter, Gauge, GaugeCallback, Histogram
from meshhook_rt_metrics.client.labels import Redactor
from meshhook_rt_metrics.client.registry import Health, Registry
from meshhook_rt_metrics.client.request_log import RequestLog
from meshhook_rt_metrics.client.settings import ClientSettings
from meshhook_rt_metrics.client.shipper import ShipperSink, answer_timeout
from meshhook_rt_metrics.client.sinks import BatchTooLargeError, InvalidBatchError, Sink, SinkSpec, sink_for
from meshhook_rt_metrics.client.spool import Batch, Spool

log = logging.getLogger("meshhook_rt_metrics.client")

_CLIENTS: weakref.WeakSet[MetricsClient] = weakref.WeakSet()
MAX_INVALID_STRIKES = 5
"""A batch the backend calls invalid (SQLSTATE class 22/23) this many times is dropped; every other
failure is retried with backoff for as long as the spool's byte cap allows."""
MAX_BATCH_ID = 100
"""The wire format's limit on ``batch_id`` (split batches append ``.0`` / ``.1``)."""


def default_source() -> str:
    """``host:pid:random6``: unique per process, readable in dashboards."""
    return f"{socket.gethostname()[:150]}:{os.getpid()}:{secrets.token_hex(3)}"


class MetricsClient:
    """Entry point: create instruments, flush every ``flush_interval`` seconds, close at exit.

    ``MetricsClient(project_id=..., database_url=...)`` or ``supabase_url=`` + ``supabase_key=``; every
    setting of :class:`ClientSettings` may be passed as a keyword or set as ``MESHHOOK_METRICS_*``.
    """

    def __init__(
        self,
        project_id: str | None = None,
        database_url: str | None = None,
        *,
        supabase_url: str | None = None,
        supabase_key: str | None = None,
        sink: Sink | None = None,
        redactor: Redactor | None = None,
        settings: ClientSettings | None = None,
        **options: Any,
    ) -> None:
        given = {
            "project_id": project_id,
            "database_url": database_url,
            "supabase_url": supabase_url,
            "supabase_key": supabase_key,
            **options,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if settings is None:
            settings = ClientSettings(**given)
        elif given:
            settings = ClientSettings(**{**settings.model_dump(exclude_unset=True), **given})
        self.settings = s = settings
        if s.project_id is None:
            raise ValueError("project_id is required (argument or MESHHOOK_METRICS_PROJECT_ID)")
        self.project_id = str(s.project_id)
        self._sink = sink if sink is not None else self._make_sink()
        self.registry = Registry(
            strict=s.mode == "development",
            max_label_sets=s.max_label_sets,
            max_label_value_length=s.max_label_value_length,
            redactor=redactor,
        )
        self.health = Health(self.registry)
        self._constant_labels = self._checked_identity()
        self._loop_lag = self.registry.histogram(
            "asyncio_event_loop_lag_seconds",
            "Event-loop timer lateness",
            labels=PROCESS_LABELS,
            unit="seconds",
        )
        self._system = (
            SystemCollector(
                self.registry,
                host=s.host_metrics,
                host_lock=s.spool_dir / self.project_id / ".host-metrics.lock",
                service=s.resolved_service_name(),
                instance=s.service_instance,
                host_name=s.resolved_host_name(),
                host_interval=s.host_metrics_interval,
            )
            if s.system_metrics
            else None
        )
        self._monitors: list[LoopLagMonitor] = []
        self._servers: list[Any] = []
        self._flush_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()
        self._forked = False
        self._start_identity()
        with contextlib.suppress(RuntimeError):
            self.monitor_event_loop(asyncio.get_running_loop())
        _CLIENTS.add(self)
        atexit.register(_close_at_exit, weakref.ref(self))
        # multiprocessing children leave through os._exit (no atexit) after clearing its finalizers:
        # its own after-fork hook registers the final flush with its exit finalizers instead
        multiprocessing.util.register_after_fork(self, _register_multiprocessing_exit)
        if s.background:
            self._start_thread()

    # -- construction helpers ---------------------------------------------------------------------
    def _make_sink(self) -> Sink:
        s = self.settings
        spec = self._sink_spec()
        if s.shipper == "process":
            return ShipperSink(spec, answer_timeout=answer_timeout(s.send_timeout))
        return sink_for(spec)

    def _sink_spec(self) -> SinkSpec:
        s = self.settings
        if s.database_url is not None:
            return {"kind": "postgres", "url": s.database_url.get_secret_value(), "timeout": s.send_timeout}
        if s.supabase_url and s.supabase_key is not None:
            key = s.supabase_key.get_secret_value()
            return {"kind": "supabase", "url": s.supabase_url, "key": key, "timeout": s.send_timeout}
        raise ValueError(
            "no backend: pass database_url= (or MESHHOOK_METRICS_DATABASE_URL), or supabase_url= and "
            "supabase_key=, or sink="
        )

    def _checked_identity(self) -> dict[str, str]:
        """Refuse configured label values the redactor would change (they look like secrets); returns
        the constant labels."""
        s = self.settings
        configured = {
            "service_name": s.service_name,
            "service_instance": s.service_instance,
            "host_name": s.host_name,
            **{f"constant_labels[{k!r}]": v for k, v in s.constant_labels.items()},
        }
        for what, value in configured.items():
            if value is not None and self.registry.redact(value) != value:
                raise ValueError(f"{what}: label value looks like a secret (the redactor would change it)")
        return dict(s.constant_labels)

    @property
    def process_labels(self) -> dict[str, str]:
        """``service`` and ``instance`` of this process's process metrics (empty without system metrics)."""
        return self._system.process_labels() if self._system is not None else {}

    @property
    def host_name(self) -> str | None:
        """``host`` label of the host metrics (None without host metrics)."""
        s = self.settings
        return s.resolved_host_name() if s.system_metrics and s.host_metrics else None

    def _start_identity(self) -> None:
        """Source, batch numbering, spool and backoff state of *this process*."""
        s = self.settings
        if s.source and not self._forked:
            self.source = s.source
        elif s.source:  # a forked child must never reuse its parent's source (batch ids would collide)
            self.source = f"{s.source[:180]}:{os.getpid()}:{secrets.token_hex(3)}"
        else:
            self.source = default_source()
        # start time + 48 random bits: two processes sharing a source (a configured one reused by a
        # restart or by another host, a fork) never build the same id, even in the same millisecond
        self._batch_prefix = f"{int(time.time() * 1000)}-{secrets.token_hex(6)}"
        self._batch_seq = 0
        root = s.spool_dir if s.spool_enabled else None
        self.spool = Spool(root, self.project_id, self.source, s.spool_max_bytes)
        self._reported: dict[str, float] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._next_adopt = 0.0
        self._strikes: tuple[tuple[str, str], int] = (("", ""), 0)

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshhook-metrics-flush", daemon=True)
        self._thread.start()

    # -- instruments ------------------------------------------------------------------------------
    def counter(
        self, name: str, help: str = "", labels: tuple[str, ...] | list[str] = (), unit: str | None = None
    ) -> Counter:
        """A monotonic counter (``inc(**labels)``, ``labels(...).inc(n)``)."""
        return self.registry.counter(name, help, labels, unit)

    def histogram(
        self, name: str, help: str = "", labels: tuple[str, ...] | list[str] = (), unit: str | None = None
    ) -> Histogram:
        """A distribution (``observe(v, **labels)``, ``time(**labels)``) with the shared 1 % sketch."""
        return self.registry.histogram(name, help, labels, unit)

    def gauge(
        self,
        name: str,
        help: str = "",
        labels: tuple[str, ...] | list[str] = (),
        unit: str | None = None,
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        """A level (``set``/``inc``/``dec``), or read from ``callback`` at every flush."""
        return self.registry.gauge(name, help, labels, unit, callback)

    def up_down_counter(
        self, name: str, help: str = "", labels: tuple[str, ...] | list[str] = (), unit: str | None = None
    ) -> Gauge:
        """A gauge driven by ``inc``/``dec`` (in-flight requests, queue depth)."""
        return self.registry.gauge(name, help, labels, unit)

    def request_log(
        self,
        *observed: object,
        outcomes: Mapping[Any, object],  # any hashable keys (Mapping is invariant in them)
        in_flight: object = None,
        name: str = "request_log",
    ) -> RequestLog:
        """Bare C appends instead of a call per metric: ``start()`` when a request begins (only for
        ``in_flight``), ``end[outcome]()`` and each of ``observe`` (one value each, in the order of
        ``observed``) when it ends; the flush folds them into the counter series ``outcomes[outcome]`` (+1),
        the ``observed`` series and the ``in_flight`` up-down counter, exactly as the calls would have."""
        return self.registry.request_log(observed, outcomes, in_flight, name)

    def monitor_event_loop(
        self, loop: asyncio.AbstractEventLoop | None = None, interval: float = 0.25
    ) -> None:
        """Measure the lag of ``loop`` (default: the running one) into ``asyncio_event_loop_lag_seconds``."""
        if self._system is None:
            return
        loop = loop or asyncio.get_running_loop()
        series = self._loop_lag.labels(**self._system.process_labels())
        try:
            self._monitors.append(LoopLagMonitor(series, loop, interval))
        except RuntimeError:  # loop closed: nothing to watch
            log.debug("event loop closed; lag not monitored")

    # -- Prometheus (optional) ------------------------------------------------------------------------
    def prometheus_text(self) -> bytes:
        """This worker's metrics in the Prometheus text format (cumulative since start)."""
        from meshhook_rt_metrics.client.exposition import exposition_text

        return exposition_text(self.registry)

    def serve_prometheus(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` for a Prometheus scraping the workers; returns the bound port."""
        from meshhook_rt_metrics.client.exposition import serve

        server, _ = serve(self.registry, port, addr)
        self._servers.append(server)
        return int(server.server_port)

    # -- flushing ---------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = self.settings.flush_interval
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            if next_at < time.monotonic():  # fell behind (slow backend): do not burst
                next_at = time.monotonic() + interval
            try:
                self.flush(replay_deadline=time.monotonic() + interval)
            except Exception:
                self.registry._warn("flush", "metrics flush failed", exc=True)

    def flush(self, *, replay_deadline: float | None = None) -> bool:
        """Collect and ship one batch now; True when nothing is left waiting in the spool.

        Blocks the caller while the batch is sent: at most about a connect and two statements under the
        statement timeout (``max(30 s, 6 * send_timeout)`` each); never raises on backend failure.
        """
        with self._flush_lock:
            if os.getpid() != self._pid:
                return False
            started, cpu = time.perf_counter(), time.thread_time()
            for batch in self._collect():
                self._dispatch(batch)
            self._replay(replay_deadline)
            self._report(time.perf_counter() - started, time.thread_time() - cpu)
            return self.spool.pending == 0

    async def aflush(self) -> bool:
        """``flush`` without blocking the event loop."""
        return await asyncio.to_thread(self.flush)

    def _collect(self) -> list[Batch]:
        if self._system is not None:
            self._system.collect()
        ts = time.time()
        points = self.registry.collect(ts)
        if not points:
            return []
        if self._constant_labels:  # opt-in; a metric's own label of the same name wins
            const = self._constant_labels
            for point in points:
                point["labels"] = {**const, **point["labels"]}
        size = self.settings.max_points_per_batch
        return [self._batch(points[i : i + size]) for i in range(0, len(points), size)]

    def _batch(self, points: list[dict[str, Any]]) -> Batch:
        self._batch_seq += 1
        return {
            "project_id": self.project_id,
            "source": self.source,
            "batch_id": f"{self._batch_prefix}-{self._batch_seq:010d}",
            "points": points,
        }

    def _dispatch(self, batch: Batch) -> None:
        """Send directly when healthy; otherwise queue behind what is spooled (order is kept)."""
        if self.spool.pending or time.monotonic() < self._retry_at:
            self._to_spool(batch)
            return
        self._send(batch, spooled_name=None)

    def _send(self, batch: Batch, spooled_name: str | None) -> bool:
        """Ship one batch; True when the queue may move on (sent, dropped or split), False to back off."""
        try:
            result = self._sink.send(batch)
        except BatchTooLargeError as exc:
            if self._split(batch, spooled_name):
                return True
            return self._invalid(batch, spooled_name, exc)  # one point over the limit: counts as invalid
        except InvalidBatchError as exc:
            return self._invalid(batch, spooled_name, exc)
        except Exception as exc:  # connection, authorisation, configuration, server: retried forever
            self._failed(batch, spooled_name)
            self.registry._warn("send", "metrics backend unavailable (%s); spooling, retry with backoff", exc)
            return False
        if isinstance(result, dict) and result.get("status") == "duplicate":
            self.health.batches_duplicate.inc()
            if spooled_name is None:  # a fresh batch the backend already had: its id was reused
                self.registry._warn(
                    "duplicate",
                    "metrics backend answered 'duplicate' for new batch %s of source %s (not stored again)",
                    batch["batch_id"],
                    batch["source"],
                )
            else:  # a replay of a batch whose acknowledgement was lost: expected
                log.debug("spooled metrics batch %s was already stored", batch["batch_id"])
        else:
            self.health.batches_sent.inc()
        self._failures = 0
        self._retry_at = 0.0
        self._strikes = (("", ""), 0)
        if spooled_name is not None:
            self.spool.remove(spooled_name)
        return True

    def _failed(self, batch: Batch, spooled_name: str | None) -> None:
        """Back off (exponential, equal jitter) and keep the batch at its place in the spool."""
        self.health.batches_failed.inc()
        self._failures += 1
        delay = min(
            self.settings.backoff_max, self.settings.backoff_initial * 2 ** min(self._failures - 1, 30)
        )
        self._retry_at = time.monotonic() + random.uniform(delay / 2, delay)
        if spooled_name is None:
            self._to_spool(batch)

    def _invalid(self, batch: Batch, spooled_name: str | None, exc: Exception) -> bool:
        """A strike for a batch the backend calls invalid; dropped (and counted) at the last strike."""
        key = (str(batch.get("source")), str(batch.get("batch_id")))
        strikes = self._strikes[1] + 1 if self._strikes[0] == key else 1
        self._strikes = (key, strikes)
        if strikes < MAX_INVALID_STRIKES:
            self._failed(batch, spooled_name)
            self.registry._warn(
                "invalid",
                "metrics batch refused as invalid (%s); retrying it %d more times",
                exc,
                MAX_INVALID_STRIKES - strikes,
            )
            return False
        self._strikes = (("", ""), 0)
        self.health.dropped_points.inc(len(batch["points"]), reason="rejected")
        self.health.dropped_batches.inc(reason="rejected")
        log.error(
            "dropped metrics batch %s (%d points) after %d attempts: the backend calls it invalid: %s",
            batch.get("batch_id"),
            len(batch["points"]),
            strikes,
            exc,
        )
        if spooled_name is not None:
            self.spool.remove(spooled_name)
        return True

    def _split(self, batch: Batch, spooled_name: str | None) -> bool:
        """HTTP 413: replace the batch by its two halves (ids ``<id>.0``, ``<id>.1``, deterministic so a
        crash mid-way stays exactly-once), queued where it was; False when it cannot be split."""
        points = batch["points"]
        batch_id = str(batch.get("batch_id"))
        if len(points) < 2 or len(batch_id) + 2 > MAX_BATCH_ID:
            return False
        mid = len(points) // 2
        halves = [
            {**batch, "batch_id": f"{batch_id}.{i}", "points": part}
            for i, part in enumerate((points[:mid], points[mid:]))
        ]
        try:
            if spooled_name is not None:
                self.spool.split(spooled_name, halves)
            else:  # the spool is empty when a batch is sent directly: appended, they stay in order
                for half in halves:
                    self.spool.append(half)
        except Exception:
            self.registry._warn("split", "could not split a metrics batch", exc=True)
            return False
        self.health.batches_split.inc()
        log.info("metrics batch %s too large for the backend (HTTP 413): split in two", batch_id)
        return True

    def _to_spool(self, batch: Batch) -> None:
        try:
            self.spool.append(batch)
            self.health.batches_spooled.inc()
        except Exception:
            self.health.dropped_points.inc(len(batch["points"]), reason="spool_error")
            self.health.dropped_batches.inc(reason="spool_error")
            self.registry._warn("spool", "could not spool a metrics batch", exc=True)

    def _replay(self, deadline: float | None) -> None:
        now = time.monotonic()
        if self.settings.spool_enabled and now >= self._next_adopt:
            self._next_adopt = now + 30.0
            try:
                if self.spool.adopt_orphans():
                    log.info("adopted metrics batches spooled by a previous process")
            except Exception:
                self.registry._warn("adopt", "spool adoption failed", exc=True)
        while self.spool.pending and time.monotonic() >= self._retry_at:
            if deadline is not None and time.monotonic() >= deadline:
                break
            entry = self.spool.peek()
            if entry is None:
                break
            name, batch = entry
            if not self._send(batch, spooled_name=name):
                break

    def _report(self, duration: float, cpu: float) -> None:
        spool = self.spool
        self.health.spool_bytes.set(spool.bytes)
        self.health.spool_batches.set(spool.pending)
        self.health.spool_disabled.set(1 if spool.disabled_reason is not None else 0)
        for key, value, counter, reason in (
            ("cap_points", spool.dropped_points, self.health.dropped_points, "spool_cap"),
            ("cap_batches", spool.dropped_batches, self.health.dropped_batches, "spool_cap"),
            ("foreign_points", spool.foreign_points, self.health.dropped_points, "foreign_project"),
            ("foreign_batches", spool.foreign_batches, self.health.dropped_batches, "foreign_project"),
            ("write_errors", spool.write_errors, self.health.spool_write_errors, None),
        ):
            delta = value - self._reported.get(key, 0)
            if delta > 0:
                if reason is None:
                    counter.inc(delta)
                else:
                    counter.inc(delta, reason=reason)
            self._reported[key] = value
        self.health.flush_duration.observe(duration)
        self.health.flush_cpu.inc(max(0.0, cpu))
        if isinstance(self._sink, ShipperSink):
            shipped = self._sink.cpu_seconds - self._reported.get("shipper_cpu", 0.0)
            self._reported["shipper_cpu"] = self._sink.cpu_seconds
            self.health.shipper_cpu_used(max(0.0, shipped))

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Stop the flush thread, ship what is recorded within ``timeout`` (default ``close_timeout``),
        and leave the rest in the spool for this or a later process to replay."""
        if self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        _CLIENTS.discard(self)
        deadline = time.monotonic() + (self.settings.close_timeout if timeout is None else timeout)
        for monitor in self._monitors:
            monitor.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.shutdown()
                server.server_close()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        worker = threading.Thread(target=self._final_flush, args=(deadline,), daemon=True)
        try:
            worker.start()
        except RuntimeError:  # interpreter shutdown (3.12+ refuses new threads in atexit): inline
            self._final_flush(deadline)
        else:
            worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            log.warning("metrics close deadline reached; unsent batches stay in the spool")
        else:
            self._close_sink(deadline)
            self.spool.close()
            if self._system is not None:
                self._system.release()

    def _close_sink(self, deadline: float) -> None:
        """Close the sink unless a flush still uses it (a caller's, past the deadline): never under a send."""
        if not self._flush_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("metrics close deadline reached while a flush was sending; its connection stays open")
            return
        try:
            with contextlib.suppress(Exception):
                self._sink.close()
        finally:
            self._flush_lock.release()

    def _final_flush(self, deadline: float) -> None:
        try:
            with self._flush_lock:
                for batch in self._collect():
                    self._to_spool(batch)  # durable first; replay below ships it in order
                self._retry_at = 0.0
                self._replay(deadline)
        except Exception:
            log.warning("final metrics flush failed", exc_info=True)

    def __enter__(self) -> MetricsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- fork -------------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """The child starts clean: own source and spool, no inherited unflushed data, new thread."""
        self._forked = True
        self._pid = os.getpid()
        self._flush_lock = threading.RLock()
        self.registry.after_fork()
        if self._system is not None:
            self._system.after_fork()
        self._sink.after_fork()
        self.spool.abandon_after_fork()
        self._monitors = []
        self._servers = []  # the listening socket belongs to the parent's server thread
        self._start_identity()
        if self._closed:
            return
        if self.settings.background:
            self._start_thread()

    @property
    def spool_dir(self) -> Path | None:
        return self.spool.dir


def _close_at_exit(ref: weakref.ref[MetricsClient]) -> None:
    client = ref()
    if client is not None:
        try:
            client.close()
        except Exception:
            log.warning("metrics close at exit failed", exc_info=True)


def _register_multiprocessing_exit(client: MetricsClient) -> None:
    multiprocessing.util.Finalize(client, _close_at_exit, args=(weakref.ref(client),), exitpriority=100)


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        try:
            client._after_fork_in_child()
        except Exception:
            log.warning("metrics client reset after fork failed", exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)
