"""Fault tests against the real database: fork, pre-fork workers, a 30 s outage, kill -9.

Marked ``slow`` as a label only: they run in every ``make test``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.client import MetricsClient
from meshhook_rt_metrics.localstack.postgres import LocalPostgres
from tests.client.test_sinks import rollup_totals
from tests.support import TestDatabase

pytestmark = pytest.mark.slow


def _client(url: str, project: str, spool: Path, **options: Any) -> MetricsClient:
    defaults: dict[str, Any] = {
        "flush_interval": 0.25,
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
        "host_metrics": False,
        "spool_dir": spool,
    }
    defaults.update(options)
    return MetricsClient(project_id=project, database_url=url, **defaults)


def _batches(url: str, project: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select count(*), count(distinct (source, batch_id)) from metrics.batches where project_id = %s",
            (project,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_fork_child_does_not_duplicate_parent_data(fresh_db: TestDatabase, tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    client = _client(fresh_db.url, project, tmp_path)
    c = client.counter("meshhook_forked_total", labels=("who",))
    h = client.histogram("meshhook_forked_seconds")
    for _ in range(500):
        c.inc(who="parent")
        h.observe(0.5)
    pid = os.fork()  # the 500 above may still be unflushed: only the parent ships them
    if pid == 0:
        code = 1
        try:
            for _ in range(300):
                c.inc(who="child")
                h.observe(0.25)
            client.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    c.inc(7, who="parent")
    client.close()
    got = rollup_totals(fresh_db.url, project, "meshhook_forked_total")
    assert got["sum"] == 500 + 300 + 7 and got["count"] == 500 + 300 + 1
    hist = rollup_totals(fresh_db.url, project, "meshhook_forked_seconds")
    assert hist["count"] == 800 and hist["sum"] == 500 * 0.5 + 300 * 0.25
    with psycopg.connect(fresh_db.url) as conn:
        sources = conn.execute(
            "select count(distinct source) from metrics.batches where project_id = %s", (project,)
        ).fetchone()
    assert sources is not None and sources[0] == 2


def _prefork_worker(client: MetricsClient, n: int) -> None:
    c = client.counter("meshhook_webhook_requests_total", labels=("outcome",))
    h = client.histogram("meshhook_workflow_step_duration_seconds", labels=("node_type",))
    for i in range(n):
        c.inc(outcome="accepted")
        h.observe((i % 100 + 1) / 1000, node_type="http_call")
    # no explicit close: multiprocessing's exit finalisers flush (as a pre-fork server's worker exits)


def test_four_prefork_processes_totals_exact(fresh_db: TestDatabase, tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    client = _client(fresh_db.url, project, tmp_path)
    c = client.counter("meshhook_webhook_requests_total", labels=("outcome",))
    c.inc(11, outcome="accepted")  # recorded by the master before forking: shipped once, by the master
    ctx = multiprocessing.get_context("fork")
    n = 20_000
    procs = [ctx.Process(target=_prefork_worker, args=(client, n)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    client.close()
    got = rollup_totals(fresh_db.url, project, "meshhook_webhook_requests_total")
    assert got["sum"] == 4 * n + 11 and got["count"] == 4 * n + 1
    hist = rollup_totals(fresh_db.url, project, "meshhook_workflow_step_duration_seconds")
    assert hist["count"] == 4 * n and hist["sketch"].count == 4 * n
    total, distinct = _batches(fresh_db.url, project)
    assert total == distinct


def test_postgres_down_for_30s_totals_exact(
    cluster: LocalPostgres, fresh_db: TestDatabase, tmp_path: Path
) -> None:
    project = str(uuid.uuid4())
    client = _client(fresh_db.url, project, tmp_path, send_timeout=2.0, close_timeout=30.0)
    requests = client.counter("meshhook_webhook_requests_total", labels=("outcome",))
    latency = client.histogram("meshhook_workflow_step_duration_seconds")
    recorded = {"n": 0, "sum": 0.0}
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            requests.inc(outcome="accepted" if i % 4 else "rejected")
            latency.observe((i % 50) / 100)
            recorded["n"] += 1
            recorded["sum"] += (i % 50) / 100
            time.sleep(0.0005)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(3)
        cluster.stop()
        time.sleep(30)
        assert client.spool.pending > 0, "batches were spooled during the outage"
        assert client.spool.bytes <= client.settings.spool_max_bytes
    finally:
        cluster.start()
    time.sleep(4)
    stop.set()
    worker.join()
    client.close()
    assert client.spool.pending == 0
    got = rollup_totals(fresh_db.url, project, "meshhook_webhook_requests_total")
    assert got["count"] == recorded["n"] and got["sum"] == recorded["n"]
    hist = rollup_totals(fresh_db.url, project, "meshhook_workflow_step_duration_seconds")
    assert hist["count"] == recorded["n"]
    assert abs(hist["sum"] - recorded["sum"]) < 1e-6 * recorded["sum"]
    total, distinct = _batches(fresh_db.url, project)
    assert total == distinct  # no batch stored twice


WORKER = textwrap.dedent(
    """
    import os, sys, time
    from meshhook_rt_metrics import MetricsClient
    url, project, spool, progress = sys.argv[1:5]
    client = MetricsClient(project_id=project, database_url=url, spool_dir=spool, flush_interval=0.5,
                           system_metrics=False, backoff_initial=0.2, backoff_max=0.5, send_timeout=1)
    c = client.counter("meshhook_worker_jobs_total")
    n = 0
    t0 = time.monotonic()
    while True:
        c.inc()
        n += 1
        if n % 20 == 0:
            tmp = progress + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{n} {time.monotonic() - t0}")
            os.replace(tmp, progress)
        time.sleep(0.001)
    """
)


def _spooled_total(spool_root: Path, project: str) -> int:
    total = 0
    for path in (spool_root / project).glob("*/*.json"):
        for p in json.loads(path.read_text())["points"]:
            if p["name"] == "meshhook_worker_jobs_total":
                total += p["sum"]
    return total


@pytest.mark.parametrize("backend_up", [True, False], ids=["backend-up", "backend-down"])
def test_kill_9_loses_at_most_one_interval_and_nothing_spooled(
    fresh_db: TestDatabase, tmp_path: Path, backend_up: bool
) -> None:
    project = str(uuid.uuid4())
    spool_root = tmp_path / "spool"
    progress = tmp_path / "progress"
    url = fresh_db.url if backend_up else "postgresql://postgres:postgres@127.0.0.1:1/postgres"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, project, str(spool_root), str(progress)], cwd=Path.cwd()
    )
    time.sleep(4.3)  # eight flushes and a bit: the kill lands between two flushes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    count, running = progress.read_text().split()
    recorded = int(count)  # at most 20 behind the true count
    rate = recorded / float(running)  # the worker's own pace, start-up excluded
    spooled = _spooled_total(spool_root, project)
    if backend_up:
        assert spooled == 0
    else:
        assert spooled > 0
    # a later process of the same project adopts the orphaned spool and replays it
    with _client(fresh_db.url, project, spool_root, system_metrics=False) as later:
        later.flush()
    shipped = rollup_totals(fresh_db.url, project, "meshhook_worker_jobs_total")["sum"]
    if not backend_up:
        assert shipped == spooled, "everything that reached the spool arrives"
    assert shipped <= recorded + 20
    one_interval = rate * (0.5 + 0.25) + 20  # one flush interval, scheduling slack, progress granularity
    assert recorded - shipped <= one_interval, (recorded, shipped, rate)
