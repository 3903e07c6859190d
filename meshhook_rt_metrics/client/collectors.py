"""System, process, GC and event-loop metrics, read once per flush (never on the caller's thread).

Readings become ordinary instruments of the client's registry: gauges for levels, counters fed with
the increase since the previous reading (host counters start from a baseline taken at start-up, so
the first flush does not ship "everything since boot").

Worker identity: process metrics (this process's CPU, memory, fds, threads, GC, event-loop lag) carry
``service`` and ``instance``, host metrics carry ``host`` (OpenTelemetry's ``service.name``,
``service.instance.id`` and ``host.name``), so N workers are N series instead of one last-writer series.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from meshhook_rt_metrics.client.spool import ensure_private_dir

if TYPE_CHECKING:
    from meshhook_rt_metrics.client.instruments import Counter, CounterChild, GaugeChild
    from meshhook_rt_metrics.client.registry import Registry

log = logging.getLogger("meshhook_rt_metrics.client")

PROCESS_LABELS = ("service", "instance")
"""Labels of every per-process metric (``asyncio_event_loop_lag_seconds`` included)."""
HOST_LABELS = ("host",)
"""Label of every host-wide metric."""

_PROCFS = sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if _PROCFS else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if _PROCFS else 4096


class _Observer(Protocol):
    def observe(self, v: float, /) -> None: ...


def process_identity(service: str, instance: str | None, host_name: str, origin_pid: int) -> dict[str, str]:
    """``service`` and ``instance`` labels of the current process.

    ``instance`` defaults to ``host:pid``. A configured instance is kept as is in the process that
    created the client (so a restart continues the same series); a process forked from it gets
    ``<instance>:<pid>``, since parent and child must never share one series.
    """
    pid = os.getpid()
    if instance is None:
        value = f"{host_name[:100]}:{pid}"
    elif pid != origin_pid:
        value = f"{instance[:100]}:{pid}"
    else:
        value = instance
    return {"service": service, "instance": value}


class SystemCollector:
    """psutil-based readings; every part is optional because containers hide some of them."""

    def __init__(
        self,
        registry: Registry,
        *,
        host: bool = True,
        host_lock: Path | None = None,
        service: str = "python",
        instance: str | None = None,
        host_name: str = "localhost",
        host_interval: float = 10.0,
    ) -> None:
        r = registry
        self._service = service
        self._instance = instance
        self.host_name = host_name
        self._origin_pid = os.getpid()
        self._identity: dict[str, str] = {}
        self._identity_pid = -1
        self._bound_pid = -1
        self._host = host
        self._host_interval = host_interval
        self._host_due = 0.0  # monotonic time of the next host reading (0: at the next flush)
        self._host_lock = host_lock
        self._host_fd: int | None = None
        self._pid = -1
        self._proc: psutil.Process | None = None
        self._prev: dict[str, float] = {}
        self._failed: set[str] = set()
        self._proc_stat_ok = _PROCFS
        pl, gl = PROCESS_LABELS, (*PROCESS_LABELS, "generation")
        self.cpu = r.counter(
            "process_cpu_seconds_total", "CPU time of this process", labels=pl, unit="seconds"
        )
        self.rss = r.gauge("process_resident_memory_bytes", "Resident memory", labels=pl, unit="bytes")
        self.vms = r.gauge("process_virtual_memory_bytes", "Virtual memory", labels=pl, unit="bytes")
        self.fds = r.gauge("process_open_fds", "Open file descriptors", labels=pl)
        self.threads = r.gauge("process_threads", "OS threads of this process", labels=pl)
        self.gc = r.counter("python_gc_collections_total", "Garbage collector runs", labels=gl)
        self.gc_collected = r.counter(
            "python_gc_objects_collected_total", "Objects collected by the GC", labels=gl
        )
        if host:
            hl, dl = HOST_LABELS, (*HOST_LABELS, "direction")
            self.host_cpu = r.gauge(
                "system_cpu_utilization_ratio", "Host CPU busy fraction (0..1)", labels=hl, unit="ratio"
            )
            self.mem_available = r.gauge(
                "system_memory_available_bytes", "Host memory available", labels=hl, unit="bytes"
            )
            self.disk_bytes = r.counter(
                "system_disk_io_bytes_total", "Host disk bytes", labels=dl, unit="bytes"
            )
            self.disk_ops = r.counter("system_disk_operations_total", "Host disk operations", labels=dl)
            self.net_bytes = r.counter(
                "system_network_io_bytes_total", "Host network bytes", labels=dl, unit="bytes"
            )
            self.net_packets = r.counter("system_network_packets_total", "Host network packets", labels=dl)
            self.net_errors = r.counter("system_network_errors_total", "Host network errors", labels=dl)
            with contextlib.suppress(Exception):
                psutil.cpu_percent(None)  # first call only starts the measurement window
            self._baseline_host()
            if host_lock is not None:
                self._elected()

    def process_labels(self) -> dict[str, str]:
        """``{"service": ..., "instance": ...}`` of the current process (recomputed after a fork)."""
        pid = os.getpid()
        if not self._identity or pid != self._identity_pid:
            self._identity = process_identity(self._service, self._instance, self.host_name, self._origin_pid)
            self._identity_pid = pid
        return dict(self._identity)

    def _bind(self) -> None:
        """Children of this process's series, so each reading is a plain ``set``/``inc``."""
        ident = self.process_labels()
        service, instance = ident["service"], ident["instance"]
        self._cpu: CounterChild = self.cpu.labels(service, instance)
        self._rss: GaugeChild = self.rss.labels(service, instance)
        self._vms: GaugeChild = self.vms.labels(service, instance)
        self._fds: GaugeChild = self.fds.labels(service, instance)
        self._threads: GaugeChild = self.threads.labels(service, instance)
        self._gc_ident = (service, instance)
        self._bound_pid = os.getpid()

    def _ensure_bound(self) -> None:
        if os.getpid() != self._bound_pid:
            self._bind()

    def _process(self) -> psutil.Process:
        pid = os.getpid()
        if self._proc is None or pid != self._pid:
            self._proc = psutil.Process(pid)
            self._pid = pid
            self._prev = {k: v for k, v in self._prev.items() if k.startswith("host.")}
            self._prev["proc.cpu"] = 0.0
        self._ensure_bound()
        return self._proc

    def _host_readings(self) -> dict[str, tuple[Counter, str, float]]:
        out: dict[str, tuple[Counter, str, float]] = {}
        disk = psutil.disk_io_counters()
        if disk is not None:
            out["host.disk.read_bytes"] = (self.disk_bytes, "read", float(disk.read_bytes))
            out["host.disk.write_bytes"] = (self.disk_bytes, "write", float(disk.write_bytes))
            out["host.disk.read_ops"] = (self.disk_ops, "read", float(disk.read_count))
            out["host.disk.write_ops"] = (self.disk_ops, "write", float(disk.write_count))
        net = psutil.net_io_counters()
        if net is not None:
            out["host.net.sent_bytes"] = (self.net_bytes, "transmit", float(net.bytes_sent))
            out["host.net.recv_bytes"] = (self.net_bytes, "receive", float(net.bytes_recv))
            out["host.net.sent_packets"] = (self.net_packets, "transmit", float(net.packets_sent))
            out["host.net.recv_packets"] = (self.net_packets, "receive", float(net.packets_recv))
            out["host.net.errout"] = (self.net_errors, "transmit", float(net.errout))
            out["host.net.errin"] = (self.net_errors, "receive", float(net.errin))
        return out

    def _baseline_host(self) -> None:
        try:
            for key, (_, _, v) in self._host_readings().items():
                self._prev[key] = v
        except Exception:
            pass

    def _delta(self, key: str, current: float) -> float | None:
        before = self._prev.get(key)
        self._prev[key] = current
        if before is None or current < before:  # first reading or counter reset: no delta
            return None
        return current - before

    def _part(self, name: str, fn: Any) -> None:
        try:
            fn()
        except Exception:
            if name not in self._failed:  # e.g. permissions in a container: say it once
                self._failed.add(name)
                log.info("system metrics: %s unavailable", name, exc_info=True)

    def collect(self) -> None:
        self._part("process", self._collect_process)
        self._part("gc", self._collect_gc)
        if self._host and self._elected():
            now = time.monotonic()
            if now >= self._host_due:  # host readings are the costly part: every host_interval only
                self._host_due = now + self._host_interval
                self._part("host", self._collect_host)

    def _elected(self) -> bool:
        """One process per host and project reports host metrics (else N workers would count N times).

        The reporter holds an ``flock`` on a shared file; when it dies the kernel frees the lock and the
        next process to try takes over, starting from a fresh baseline.
        """
        if self._host_lock is None or self._host_fd is not None:
            return True
        try:
            ensure_private_dir(self._host_lock.parent, follow=False)  # same checks as the spool's
            fd = os.open(self._host_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return True  # no usable private directory: report (the best we can do)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._host_fd = fd
        self._host_due = 0.0
        self._baseline_host()
        with contextlib.suppress(Exception):
            psutil.cpu_percent(None)
        return False  # baseline taken now; deltas from the next flush on

    def release(self) -> None:
        if self._host_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._host_fd)
            self._host_fd = None

    def _collect_process(self) -> None:
        if self._proc_stat_ok:
            try:
                self._collect_process_procfs()
                return
            except (OSError, ValueError, IndexError):  # not Linux, or an unexpected format: psutil
                self._proc_stat_ok = False
        proc = self._process()
        with proc.oneshot():
            times = proc.cpu_times()
            d = self._delta("proc.cpu", times.user + times.system)
            if d is not None:
                self._cpu.inc(d)
            mem = proc.memory_info()
            self._rss.set(mem.rss)
            self._vms.set(mem.vms)
            with contextlib.suppress(psutil.Error, AttributeError):
                self._fds.set(proc.num_fds())
            self._threads.set(proc.num_threads())

    def _collect_process_procfs(self) -> None:
        """Linux: CPU, memory and threads from one read of ``/proc/self/stat`` (what psutil reads from
        three files), open fds from ``/proc/self/fd``."""
        self._process()
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        # fields after "(comm)" (which may hold spaces) start at field 3, "state"; see proc(5)
        f = data[data.rindex(b")") + 2 :].split()
        cpu = (int(f[11]) + int(f[12])) / _CLK_TCK  # utime + stime (14, 15)
        threads, vms, rss = int(f[17]), int(f[20]), int(f[21]) * _PAGE_SIZE  # fields 20, 23, 24
        fds = len(os.listdir("/proc/self/fd"))
        d = self._delta("proc.cpu", cpu)
        if d is not None:
            self._cpu.inc(d)
        self._rss.set(rss)
        self._vms.set(vms)
        self._fds.set(fds)
        self._threads.set(threads)

    def _collect_gc(self) -> None:
        self._ensure_bound()  # a forked child reports under its own instance
        service, instance = self._gc_ident
        for generation, stats in enumerate(gc.get_stats()):
            g = str(generation)
            d = self._delta(f"gc.{g}.collections", float(stats["collections"]))
            if d is not None:
                self.gc.labels(service, instance, g).inc(int(d))
            d = self._delta(f"gc.{g}.collected", float(stats["collected"]))
            if d is not None:
                self.gc_collected.labels(service, instance, g).inc(int(d))

    def _collect_host(self) -> None:
        host = self.host_name
        self.host_cpu.labels(host).set(psutil.cpu_percent(None) / 100.0)
        self.mem_available.labels(host).set(psutil.virtual_memory().available)
        for key, (counter, direction, v) in self._host_readings().items():
            d = self._delta(key, v)
            if d is not None:
                counter.labels(host, direction).inc(int(d))

    def after_fork(self) -> None:
        self._proc = None
        if self._host_fd is not None:  # the parent keeps reporting; closing our copy keeps its lock
            with contextlib.suppress(OSError):
                os.close(self._host_fd)
            self._host_fd = None


class LoopLagMonitor:
    """Measures event-loop lag: how late a timer scheduled every ``interval`` seconds actually fires."""

    def __init__(self, histogram: _Observer, loop: asyncio.AbstractEventLoop, interval: float = 0.25) -> None:
        self._histogram = histogram
        self._loop = loop
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._stopped = False
        self._pid = os.getpid()
        loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if self._stopped or self._loop.is_closed():
            return
        self._expected = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        if os.getpid() != self._pid:
            return
        lag = max(0.0, self._loop.time() - self._expected)
        self._histogram.observe(lag)
        self._schedule()

    def stop(self) -> None:
        self._stopped = True
        handle = self._handle
        if handle is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(handle.cancel)
