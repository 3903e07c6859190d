"""Shared helpers for the client tests (no fixtures here)."""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.client import MemorySink, MetricsClient


def memory_client(tmp_path: Path | None = None, **options: Any) -> tuple[MetricsClient, MemorySink]:
    """A client without background thread or system metrics, shipping into a list."""
    sink = MemorySink()
    defaults: dict[str, Any] = {
        "background": False,
        "system_metrics": False,
        "spool_enabled": tmp_path is not None,
        "spool_dir": tmp_path or Path("/nonexistent"),
        "backoff_initial": 0.001,
        "backoff_max": 0.002,
    }
    project_id = options.pop("project_id", None) or str(uuid.uuid4())
    defaults.update(options)
    client = MetricsClient(project_id=project_id, sink=sink, **defaults)
    return client, sink


def user_points(batches: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points of the batches minus the client's own health metrics."""
    return [p for b in batches for p in b["points"] if not p["name"].startswith("meshhook_metrics_client_")]


def totals(batches: Iterable[dict[str, Any]], name: str) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """(labels) -> [count, sum] summed over all points of ``name``."""
    out: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(lambda: [0, 0])
    for b in batches:
        for p in b["points"]:
            if p["name"] == name:
                key = tuple(sorted(p["labels"].items()))
                out[key][0] += p["count"]
                out[key][1] += p["sum"]
    return dict(out)


def health_total(client: MetricsClient, name: str, **labels: str) -> float:
    """Cumulative value of one of the client's own counters/gauges (0 when never touched)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if wanted else name
    text = client.prometheus_text().decode()
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def with_concurrent_flushes(client: MetricsClient, work: Callable[[int], None], threads: int) -> None:
    """Run ``work(i)`` on threads ``i`` = 0 .. ``threads`` - 1 while another flushes without pause, then flush
    once more."""
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            client.flush()

    f = threading.Thread(target=flusher)
    f.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    f.join()
    client.flush()


def in_a_fork(work: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``work`` in a forked child: the child's pid and what ``work`` returned (as JSON, through a pipe).
    The child leaves with ``os._exit`` whatever happens; its failure fails the caller."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write_end, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:  # read before waiting: a full pipe would block the child
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    return pid, json.loads(data)
