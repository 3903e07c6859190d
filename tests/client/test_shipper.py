"""The shipper process (``shipper="process"``): real PostgreSQL, real processes, real signals.

The contract under test is the sink's: a batch is acknowledged only once stored, the errors are the ones the
in-process sink raises, and a shipper that dies or hangs costs a resend (exactly-once by the ledger), never a
batch. Also: the service never imports the driver, credentials stay off command lines, the shipper leaves with
its service, and a forked child never shares its parent's shipper.
"""

from __future__ import annotations

import json
import os
import select
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

import meshhook_rt_metrics.client.shipper as shipper_module
from meshhook_rt_metrics.client import (
    BatchTooLargeError,
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


def _sink(url: str, answer_timeout: float = 30.0, hello_timeout: float | None = None) -> ShipperSink:
    spec = {"kind": "postgres", "url": url, "timeout": 5.0}
    return ShipperSink(spec, answer_timeout=answer_timeout, hello_timeout=hello_timeout)


def _line(pipe: Any, within: float = 60.0) -> bytes:
    """A line from a child's pipe, failing (not hanging) when none comes in time."""
    poller = select.poll()
    poller.register(pipe.fileno(), select.POLLIN)
    assert poller.poll(int(within * 1000)), "the child printed nothing in time"
    return bytes(pipe.readline())


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
        oracle = PostgresSink(db.url)  # the same sink in this process
        with pytest.raises(InvalidBatchError) as direct:
            oracle.send(bad)
        oracle.close()
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
        driver = [m for m in ("psycopg", "httpx") if m in sys.modules]
        print(json.dumps({{"driver": driver, "shipper": pid}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["driver"] == [] and isinstance(seen["shipper"], int)
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


def _blocked_by(admin_url: str, locker: int, within: float = 30.0) -> int:
    """The backend of this database waiting for the lock the ``locker`` backend holds (0: none in time)."""
    end = time.monotonic() + within
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < end:
            row = conn.execute(
                """select pid from pg_stat_activity
                   where datname = current_database() and pg_blocking_pids(pid) @> array[%s::int]""",
                (locker,),
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.05)
    return 0


def _backend_gone(admin_url: str, pid: int, within: float = 30.0) -> bool:
    end = time.monotonic() + within
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < end:
            if conn.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone() is None:
                return True
            time.sleep(0.05)
    return False


def test_a_shipper_killed_mid_send_costs_a_resend_never_a_batch(db: TestDatabase, tmp_path: Path) -> None:
    """The shipper dies while its statement waits on a lock; the statement then commits anyway (its Sync was
    already sent, and the server does not notice a gone client while it waits), so the acknowledgement is lost:
    the client spools the batch, resends it, and the ledger answers duplicate. Counted once."""
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
            # this flush only sends: had it replayed the spooled batch at once (the backoff is short), the
            # replay would queue behind the lock too and this block would wait out the statement timeout
            flusher = threading.Thread(target=client.flush, kwargs={"replay_deadline": time.monotonic()})
            flusher.start()
            waiting = _blocked_by(db.admin_url, locker.info.backend_pid)
            assert waiting  # the shipper's statement is queued behind the lock
            os.kill(first, signal.SIGKILL)
            flusher.join(60)
            assert not flusher.is_alive()
            assert client.spool.pending == 1  # the send failed: spooled, not lost
        # the orphaned statement finishes, commits, fails to answer and its backend leaves: then the replay
        assert _backend_gone(db.admin_url, waiting)
        time.sleep(0.05)  # past the backoff
        assert client.flush() is True
        duplicates = health_total(client, "meshhook_metrics_client_batches_duplicate_total")
        assert (
            duplicates == 1
        )  # the killed shipper's statement had committed; the resend was not stored again
    finally:
        client.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 16


def test_a_hung_shipper_is_killed_and_replaced(db: TestDatabase) -> None:
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        sink.send(_batch(project, "b1"))  # started, connected, series learnt: under the long timeout
        sink._answer_timeout = 1.0
        hung = sink.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(SinkError, match="no answer in time"):
            sink.send(_batch(project, "b2"))
        assert _gone(hung) and sink.pid is None
        sink._answer_timeout = 30.0
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
        shipper = int(_line(service.stdout))
        cmdline = " ".join(psutil.Process(shipper).cmdline())
        password = psycopg.conninfo.conninfo_to_dict(db.url)["password"]
        assert "meshhook_rt_metrics.client.shipper" in cmdline and str(password) not in cmdline
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
    """The child (alive until the parent has closed) ships through its own shipper, and has closed its copies
    of the parent's pipes: the parent's shipper sees EOF at the parent's close and leaves on its own."""
    project = str(uuid.uuid4())
    client = MetricsClient(
        project, db.url, shipper="process", background=False, system_metrics=False, spool_dir=tmp_path
    )
    counter = client.counter(NAME, labels=("who",))
    counter.inc(2, who="parent")
    client.flush()
    parent_shipper = client._sink._proc  # type: ignore[attr-defined]
    assert parent_shipper is not None
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own shipper, its own batches; reports its shipper's pid, waits for release
        code = 1
        try:
            os.close(report_r)
            os.close(release_w)
            counter.inc(3, who="child")
            client.flush()
            os.write(report_w, f"{client._sink.pid}\n".encode())  # type: ignore[attr-defined]
            client.close()
            os.read(release_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    os.close(release_r)
    status = -1
    try:
        with os.fdopen(report_r, "rb", buffering=0) as report:
            child_shipper = int(_line(report) or b"0")
        assert child_shipper not in (0, parent_shipper.pid) and _gone(child_shipper)
        counter.inc(4, who="parent")
        client.flush()
        assert client._sink._proc is parent_shipper  # type: ignore[attr-defined]
        client.close()
        assert parent_shipper.returncode == 0  # left at EOF though the child still lives: not killed
    finally:
        os.close(release_w)  # the child's read returns: it exits
        _, status = os.waitpid(pid, 0)
        client.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert rollup_totals(db.url, project, NAME)["sum"] == 9


def test_a_shipper_sink_used_on_its_own_is_not_shared_across_fork(db: TestDatabase) -> None:
    """No client: the sink's own at-fork hook gives the child a shipper of its own."""
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        sink.send(_batch(project, "b1"))
        parent = sink.pid
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(report_r)
                answer = sink.send(_batch(project, "child"))
                os.write(report_w, f"{sink.pid} {answer['status']}\n".encode())
                sink.close()
                code = 0
            finally:
                os._exit(code)
        os.close(report_w)
        try:
            with os.fdopen(report_r, "rb", buffering=0) as report:
                child_pid, status = _line(report).split()
        finally:
            _, exited = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(exited) == 0
        assert int(child_pid) != parent and status == b"accepted"
        assert sink.send(_batch(project, "b2"))["status"] == "accepted" and sink.pid == parent
    finally:
        sink.close()
    assert rollup_totals(db.url, project, NAME)["sum"] == 3


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


def test_a_big_batch_to_a_stopped_shipper_still_meets_the_deadline(db: TestDatabase) -> None:
    """More than a pipe holds (64 KiB): the write must not block past the answer's deadline."""
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        sink.send(_batch(project, "b1"))
        sink._answer_timeout = 1.0
        stopped = sink.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        big = _batch(project, "b2")
        big["points"] = [{**big["points"][0], "labels": {"route": f"/hook/{i}"}} for i in range(5_000)]
        outcome: list[BaseException | None] = []

        def send() -> None:
            try:
                sink.send(big)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(60)  # generous: the deadline is 1 s; a blocked write never returns at all
        assert not sender.is_alive()
        assert outcome and isinstance(outcome[0], SinkError) and "no answer in time" in str(outcome[0])
        assert _gone(stopped)
    finally:
        sink.close()


def test_a_service_with_many_open_files_ships(db: TestDatabase) -> None:
    """Descriptors above 1,024, where ``select`` refuses to look."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened: list[int] = []
    sink = _sink(db.url)
    try:
        if soft < 1_200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4_096), hard))
        for _ in range(1_100):
            opened.append(os.open(os.devnull, os.O_RDONLY))
        assert sink.send(_batch(str(uuid.uuid4()), "b1"))["status"] == "accepted"
        assert sink._replies is not None and sink._replies > 1_024
    finally:
        sink.close()
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_interrupted_send_never_pairs_an_answer_with_the_next_batch(db: TestDatabase) -> None:
    """A KeyboardInterrupt while the shipper works on b1: its late answer must not be taken for b2's."""
    project = str(uuid.uuid4())
    sink = _sink(db.url)
    try:
        sink.send(_batch(project, "b0"))
        with psycopg.connect(db.admin_url) as locker:
            locker.execute("lock table metrics.batches in exclusive mode")

            def interrupt(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGALRM, interrupt)
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            try:
                with pytest.raises(KeyboardInterrupt):
                    sink.send(_batch(project, "b1", 1))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            assert sink.pid is None  # the shipper that owed an answer is gone
        two = _batch(project, "b2")
        two["points"] = [{**two["points"][0], "labels": {"route": r}} for r in ("/a", "/b")]
        answer = sink.send(two)
        assert answer["status"] == "accepted" and answer["points"] == 2  # b2's own answer
    finally:
        sink.close()


def test_an_interpreter_that_is_not_python_is_refused_clearly(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One that echoes its stdin (the spec, credentials included; answers come on a pipe of their own, so the echo
    never reads as one) and one that exits: both fail the send with a clear message that shows none of the spec."""
    echo = tmp_path / "echo-python"
    echo.write_text("#!/bin/sh\nexec cat\n")
    echo.chmod(0o755)
    password = str(psycopg.conninfo.conninfo_to_dict(db.url)["password"])
    for executable, why in ((str(echo), "no answer in time"), ("/bin/false", "it exited")):
        monkeypatch.setattr(sys, "executable", executable)
        sink = _sink(db.url, hello_timeout=2.0)
        with pytest.raises(SinkError, match=f"{executable} did not start a metrics shipper") as refused:
            sink.send(_batch(str(uuid.uuid4()), "b1"))
        message = str(refused.value)
        assert why in message and sink.pid is None
        assert not any(password[k : k + 6] in message for k in range(len(password) - 5)), message
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(ValueError, match="frozen application"):
        _sink(db.url)


def test_a_process_that_answers_but_is_not_a_shipper_is_refused(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Python that writes a well-formed first answer on the answers' pipe, but not the hello."""
    impostor = tmp_path / "impostor"
    impostor.write_text(
        f"#!{sys.executable}\n"
        "import marshal, os, re, struct, sys\n"
        "fd = int(re.search(r'main\\((\\d+)\\)', sys.argv[-1]).group(1))\n"
        "frame = marshal.dumps(('meshhook-metrics-shipper', 99))\n"
        "os.write(fd, struct.pack('>I', len(frame)) + frame)\n"
        "sys.stdin.buffer.read()\n"
    )
    impostor.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(impostor))
    sink = _sink(db.url, hello_timeout=10.0)
    with pytest.raises(SinkError, match="its first answer was not a shipper's hello"):
        sink.send(_batch(str(uuid.uuid4()), "b1"))
    assert sink.pid is None


def test_a_batch_over_the_pipes_limit_is_too_large_not_retried_forever(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipper_module, "MAX_REQUEST", 2_000)
    sink = _sink(db.url)
    try:
        big = _batch(str(uuid.uuid4()), "b1")
        big["points"] = [{**big["points"][0], "labels": {"route": f"/hook/{i}"}} for i in range(50)]
        with pytest.raises(BatchTooLargeError, match="over the shipper's 2000"):
            sink.send(big)
        assert sink.pid is None  # refused before anything was started
        assert sink.send(_batch(str(uuid.uuid4()), "b2"))["status"] == "accepted"
    finally:
        sink.close()


def test_the_services_working_directory_cannot_shadow_the_shippers_modules(
    db: TestDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "struct.py").write_text("raise ImportError('the working directory was imported')\n")
    monkeypatch.chdir(tmp_path)
    sink = _sink(db.url)
    try:
        assert sink.send(_batch(str(uuid.uuid4()), "b1"))["status"] == "accepted"
    finally:
        sink.close()


def test_a_service_started_with_stdio_closed_ships(db: TestDatabase, tmp_path: Path) -> None:
    """A daemon with stdin, stdout and stderr closed: the answers' pipe must not land on 0-2, where the shipper's
    own stdio would overwrite it or write into it."""
    report = tmp_path / "report.json"
    script = textwrap.dedent(
        f"""
        import json, time, uuid
        from meshhook_rt_metrics.client import ShipperSink
        sink = ShipperSink({{"kind": "postgres", "url": {db.url!r}, "timeout": 5.0}}, answer_timeout=30.0)
        point = {{"name": {NAME!r}, "kind": "counter", "labels": {{}}, "ts": time.time(), "count": 1, "sum": 1}}
        batch = {{"project_id": str(uuid.uuid4()), "source": "s:1:abcdef", "batch_id": "b1", "points": [point]}}
        try:
            answer = sink.send(batch)["status"]
        except Exception as exc:
            answer = repr(exc)
        sink.close()
        open({str(report)!r}, "w").write(json.dumps({{"answer": answer}}))
        """
    )
    closed = 'exec 0<&- 1>&- 2>&-; exec "$0" -c "$1"'
    subprocess.run(["/bin/sh", "-c", closed, sys.executable, script], timeout=120, check=True)
    assert json.loads(report.read_text()) == {"answer": "accepted"}


def test_the_shippers_cpu_is_reported_in_the_clients_own_metrics(db: TestDatabase, tmp_path: Path) -> None:
    """What the sends cost in the shipper (start-up included) is counted; a client without one has no such series."""
    options: dict[str, Any] = {"background": False, "system_metrics": False, "spool_dir": tmp_path}
    shipped = MetricsClient(str(uuid.uuid4()), db.url, shipper="process", **options)
    threaded = MetricsClient(str(uuid.uuid4()), db.url, **options)
    try:
        for client in (shipped, threaded):
            client.counter(NAME).inc()
            client.flush()
            client.flush()  # the second flush reports what the first one's answer said
        name = "meshhook_metrics_client_shipper_cpu_seconds_total"
        used = health_total(shipped, name)
        assert used > 0 and used == pytest.approx(shipped._sink.cpu_seconds)  # type: ignore[attr-defined]
        assert name not in threaded.prometheus_text().decode()
    finally:
        shipped.close()
        threaded.close()
