"""The shipper process (``shipper="process"``): real PostgreSQL, real processes, real signals.

The contract under test is the sink's: a batch is acknowledged only once stored, the errors are the ones the
in-process sink raises, and a shipper that dies or hangs costs a resend (exactly-once by the ledger), never a
batch. Also: the service never imports the driver, credentials stay off command lines, the shipper leaves with
its service, and a forked child never shares its parent's shipper.
"""

from __future__ import annotations

import json
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

import psutil
import psycopg
import pytest
from pydantic import ValidationError

from meshhook_rt_metrics.client import (
    ClientSettings,
    InvalidBatchError,
    MetricsClient,
    PostgresSink,
    ShipperSink,
    SinkError,
)
from meshhook_rt_metrics.client.sinks import sink_for
from tests.client._helpers import health_total
from tests.client.test_sinks import rollup_totals
from tests.support import TestDatabase

NAME = "meshhook_shipped_total"


def _batch(
    project: str, batch_id: str, count: int = 1, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    point = {"name": NAME, "kind": "counter", "labels": labels or {"route": "/hook"}, "ts": time.time()}
    return {
        "project_id": project,
        "source": "shipper-test:1:abcdef",
        "batch_id": batch_id,
        "points": [{**point, "count": count, "sum": count}],
    }


def _sink(url: str, answer_timeout: float = 30.0) -> ShipperSink:
    return ShipperSink({"kind": "postgres", "url": url, "timeout": 5.0}, answer_timeout=answer_timeout)


def _gone(pid: int, within: float = 15.0) -> bool:
    """Whether the process has exited (zombies count as gone) before ``within`` seconds pass."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_answers_and_errors_cross_the_pipe_as_the_sink_gave_them(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        assert sink.send(_batch(project, "b1", 3))["status"] == "accepted"
        assert sink.send(_batch(project, "b1", 3))["status"] == "duplicate"
        bad = _batch(project, "b2", labels={"foo-bar": "x"})
        with pytest.raises(InvalidBatchError) as shipped:
            sink.send(bad)
        with pytest.raises(InvalidBatchError) as direct:  # the oracle: the same sink in this process
            PostgresSink(db.url).send(bad)
        assert str(shipped.value) == str(direct.value) and "foo-bar" in str(shipped.value)
    finally:
        sink.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 3


def test_a_service_with_a_shipper_never_imports_the_driver(db: TestDatabase, tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    script = textwrap.dedent(
        f"""
        import json, sys
        from meshhook_rt_metrics.client import MetricsClient
        client = MetricsClient({project!r}, {db.url!r}, shipper="process", background=False,
                               system_metrics=False, spool_dir={str(tmp_path)!r})
        client.counter({NAME!r}).inc(7)
        client.flush()
        pid = client._sink.pid
        client.close()
        print(json.dumps({{"driver": "psycopg" in sys.modules, "shipper": pid}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["driver"] is False and isinstance(seen["shipper"], int)
    assert _gone(seen["shipper"])
    assert rollup_totals(db.url, project, NAME)["sum"] == 7


def test_a_shipper_killed_between_sends_is_replaced(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        sink.send(_batch(project, "b1"))
        first = sink.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _gone(first)
        assert sink.send(_batch(project, "b2"))["status"] == "accepted"  # detected before writing: no error
        assert sink.pid not in (None, first)
    finally:
        sink.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 2


def _waiting_on_a_lock(admin_url: str, within: float = 30.0) -> bool:
    end = time.monotonic() + within
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < end:
            row = conn.execute(
                """select count(*) from pg_stat_activity
                   where application_name = 'meshhook-metrics-client' and wait_event_type = 'Lock'"""
            ).fetchone()
            if row and row[0]:
                return True
            time.sleep(0.05)
    return False


def test_a_shipper_killed_mid_send_costs_a_resend_never_a_batch(db: TestDatabase, tmp_path: Path) -> None:
    """The shipper dies while its statement waits on a lock; the statement then commits anyway (the server
    does not notice a gone client while it waits), so the acknowledgement is lost: the client spools the
    batch, resends it, and the ledger answers duplicate. Counted once."""
    project = str(uuid.uuid4())
    client = MetricsClient(
        project, db.url, shipper="process", background=False, system_metrics=False, spool_dir=tmp_path,
        backoff_initial=0.01, backoff_max=0.02,
    )  # fmt: skip
    counter = client.counter(NAME)
    try:
        counter.inc(5)
        client.flush()  # the shipper is running and the series is known
        first = client._sink.pid  # type: ignore[attr-defined]
        counter.inc(11)
        with psycopg.connect(db.admin_url) as locker:
            locker.execute("lock table metrics.batches in exclusive mode")
            flusher = threading.Thread(target=client.flush)
            flusher.start()
            assert _waiting_on_a_lock(db.admin_url)
            os.kill(first, signal.SIGKILL)
            flusher.join(60)
            assert not flusher.is_alive()
            assert client.spool.pending == 1  # the send failed: spooled, not lost
        time.sleep(0.05)  # past the backoff
        assert client.flush() is True
        assert (
            health_total(client, "meshhook_metrics_client_batches_duplicate_total") == 1
        )  # the killed shipper's statement had committed
    finally:
        client.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 16


def test_a_hung_shipper_is_killed_and_replaced(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = _sink(db.url, answer_timeout=1.0)
    try:
        sink.send(_batch(project, "b1"))
        hung = sink.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(SinkError, match="no answer in time"):
            sink.send(_batch(project, "b2"))
        assert _gone(hung) and sink.pid is None
        assert sink.send(_batch(project, "b2"))["status"] == "accepted"
    finally:
        sink.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 2


def test_the_shipper_leaves_with_its_service_and_outlives_a_terminals_signals(db: TestDatabase) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time, uuid
        from meshhook_rt_metrics.client import ShipperSink
        sink = ShipperSink({{"kind": "postgres", "url": {db.url!r}, "timeout": 5.0}}, answer_timeout=30.0)
        project = str(uuid.uuid4())
        point = {{"name": {NAME!r}, "kind": "counter", "labels": {{}}, "ts": time.time(), "count": 1, "sum": 1}}
        sink.send({{"project_id": project, "source": "s:1:abcdef", "batch_id": "b1", "points": [point]}})
        print(sink.pid, flush=True)
        sys.stdin.readline()
        """
    )
    service = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert service.stdout is not None
        shipper = int(service.stdout.readline())
        cmdline = " ".join(psutil.Process(shipper).cmdline())
        assert "meshhook_rt_metrics.client.shipper" in cmdline and "postgres" not in cmdline  # no credentials
        os.kill(shipper, signal.SIGINT)
        os.kill(shipper, signal.SIGTERM)
        assert not _gone(shipper, within=0.5)
        service.kill()
        service.wait(30)
        assert _gone(shipper)
    finally:
        service.kill()
        service.wait(30)


def test_a_forked_child_ships_through_a_shipper_of_its_own(db: TestDatabase, tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    client = MetricsClient(
        project, db.url, shipper="process", background=False, system_metrics=False, spool_dir=tmp_path
    )
    counter = client.counter(NAME, labels=("who",))
    counter.inc(2, who="parent")
    client.flush()
    parent_shipper = client._sink._proc  # type: ignore[attr-defined]
    assert parent_shipper is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own shipper, its own batches; reports its shipper's pid
        code = 1
        try:
            counter.inc(3, who="child")
            client.flush()
            os.write(write, str(client._sink.pid).encode())  # type: ignore[attr-defined]
            client.close()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_shipper = int(os.read(read, 64) or b"0")
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_shipper not in (0, parent_shipper.pid) and _gone(child_shipper)
    counter.inc(4, who="parent")
    client.flush()
    assert client._sink._proc is parent_shipper  # type: ignore[attr-defined]
    client.close()
    assert parent_shipper.returncode == 0  # it left at EOF: the child had closed its copies of the pipes
    assert rollup_totals(db.url, project, NAME)["sum"] == 9


def test_the_setting_picks_the_shipper_and_refuses_what_it_does_not_know(
    db: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHHOOK_METRICS_SHIPPER", "process")
    options: dict[str, Any] = {"background": False, "system_metrics": False, "spool_dir": tmp_path}
    client = MetricsClient(str(uuid.uuid4()), db.url, **options)
    try:
        assert isinstance(client._sink, ShipperSink)
        assert "***" in repr(client._sink) and (db.url.split("@")[0].split(":")[-1] not in repr(client._sink))
    finally:
        client.close()
    with pytest.raises(ValidationError, match="'thread' or 'process'"):
        ClientSettings(shipper="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sink kind 'kafka'"):
        sink_for({"kind": "kafka", "url": "x", "timeout": 1.0})
    with pytest.raises(ValueError, match="unknown sink kind"):
        ShipperSink({"kind": "kafka", "url": "x", "timeout": 1.0}, answer_timeout=1.0)
