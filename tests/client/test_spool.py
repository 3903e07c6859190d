"""The spool: order, size cap, orphan adoption, and the client's behaviour while the backend fails."""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.client import SinkError
from meshhook_rt_metrics.client.spool import Spool
from tests.client._helpers import health_total, memory_client, totals


def _batch(i: int, points: int = 1, project: str = "proj") -> dict[str, Any]:
    return {
        "project_id": project,
        "source": "s",
        "batch_id": f"b{i:04d}",
        "points": [{"name": f"m{j}", "pad": "x" * 50} for j in range(points)],
    }


def _ids(spool: Spool) -> list[str]:
    out = []
    while (entry := spool.peek()) is not None:
        out.append(entry[1]["batch_id"])
        spool.remove(entry[0])
    return out


def test_fifo_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "proj", "host:1:abc", max_bytes=1 << 20)
    for i in range(20):
        spool.append(_batch(i))
    assert spool.pending == 20 and spool.bytes == sum(p.stat().st_size for p in spool.dir.glob("*.json"))  # type: ignore[union-attr]
    assert _ids(spool) == [f"b{i:04d}" for i in range(20)]
    assert spool.pending == 0 and spool.bytes == 0
    spool.close()
    assert not any((tmp_path / "proj").iterdir())  # an empty spool leaves nothing behind


def test_cap_drops_oldest_only_at_the_cap_and_counts(tmp_path: Path) -> None:
    one = len(__import__("json").dumps(_batch(0, 3), separators=(",", ":")))
    spool = Spool(tmp_path, "proj", "host:1:abc", max_bytes=one * 5 + 10)
    for i in range(5):
        spool.append(_batch(i, 3))
    assert spool.dropped_batches == 0 and spool.pending == 5
    for i in range(5, 12):
        spool.append(_batch(i, 3))
        assert spool.bytes <= spool.max_bytes
    assert spool.dropped_batches == 7 and spool.dropped_points == 21
    assert _ids(spool) == [f"b{i:04d}" for i in range(7, 12)]
    huge = _batch(99, 200)
    spool.append(huge)  # bigger than the whole cap: dropped alone, the queue survives
    assert spool.dropped_batches == 8 and spool.pending == 0


def test_memory_mode_has_the_same_cap() -> None:
    spool = Spool(None, "proj", "s", max_bytes=4096)
    for i in range(200):
        spool.append(_batch(i, 2))
    assert spool.bytes <= 4096 and spool.pending < 200 and spool.dropped_batches == 200 - spool.pending
    assert _ids(spool)[-1] == "b0199"


def test_orphans_of_dead_processes_are_adopted_in_order(tmp_path: Path) -> None:
    dead = Spool(tmp_path, "proj", "host:1:dead", max_bytes=1 << 20)
    for i in range(3):
        dead.append(_batch(i))
    alive = Spool(tmp_path, "proj", "host:2:alive", max_bytes=1 << 20)
    assert alive.adopt_orphans() == 0  # the owner still holds its lock
    alive.append(_batch(100))
    assert dead._lock_fd is not None
    os.close(dead._lock_fd)  # what the kernel does when the owner dies
    dead._lock_fd = None
    assert alive.adopt_orphans() == 3
    assert _ids(alive) == ["b0000", "b0001", "b0002", "b0100"]
    assert [p.name for p in (tmp_path / "proj").iterdir()] == [alive.dir.name]  # type: ignore[union-attr]
    other_project = Spool(tmp_path, "other", "host:3:x", max_bytes=1 << 20)
    assert other_project.adopt_orphans() == 0


def test_client_spools_while_failing_and_replays_in_order(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path)
    c = client.counter("jobs_total")
    sink.fail = SinkError("down")
    for _ in range(10):
        c.inc(2)
        assert client.flush() is False
    assert client.spool.pending == 10
    sink.fail = None
    client._retry_at = 0
    assert client.flush() is True
    assert client.spool.pending == 0
    assert totals(sink.batches, "jobs_total") == {(): [10, 20]}
    seqs = [b["batch_id"] for b in sink.batches]
    assert seqs == sorted(seqs), "replayed in order"
    client.flush()
    health = {p["name"]: p for b in sink.batches for p in b["points"]}
    assert health["meshhook_metrics_client_batches_failed_total"]["sum"] >= 1
    assert totals(sink.batches, "meshhook_metrics_client_batches_spooled_total")[()][1] >= 9
    client.close()


def test_backoff_grows_with_jitter_and_is_capped(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path, backoff_initial=1.0, backoff_max=8.0)
    client.counter("x_total").inc()
    sink.fail = SinkError("down")
    delays = []
    for _ in range(8):
        client._retry_at = 0
        client.counter("x_total").inc()
        start = __import__("time").monotonic()
        client.flush()
        delays.append(client._retry_at - start)
    assert 0.5 <= delays[0] <= 1.1  # slack: time from start to the failed send
    assert 1.0 <= delays[1] <= 2.1
    assert all(4.0 <= d <= 8.1 for d in delays[4:])


def test_memory_stays_bounded_during_a_long_outage(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path, spool_max_bytes=20_000)
    c = client.counter("requests_total", labels=("route",))
    sink.fail = SinkError("down")
    for _ in range(300):
        for r in range(20):
            c.inc(route=f"/api/hooks/{r}")
        client._retry_at = 0
        client.flush()
        assert client.spool.bytes <= 20_000
    assert client.spool.dropped_batches > 0
    # what is kept are the newest batches, in order
    names = client.spool.names()
    assert names == sorted(names)
    sink.fail = None
    client._retry_at = 0
    client.flush()
    client.flush()
    # the health counter holds every dropped point (its own earlier deltas may sit in dropped batches)
    recorded = client.health.dropped_points.labels("spool_cap").cumulative()[1]
    assert recorded == client.spool.dropped_points > 0
    assert (
        totals(sink.batches, "meshhook_metrics_client_dropped_points_total")[(("reason", "spool_cap"),)][1]
        > 0
    )
    got = totals(sink.batches, "requests_total")
    assert 0 < sum(v[1] for v in got.values()) < 300 * 20


def test_close_spools_what_it_cannot_send_and_a_later_client_replays_it(tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    client, sink = memory_client(tmp_path)
    client.project_id = project
    client.spool = Spool(tmp_path, project, client.source, 1 << 20)
    sink.fail = SinkError("down")
    client.counter("late_total").inc(7)
    client.close(timeout=1.0)
    assert client.spool.pending >= 1 and sink.batches == []
    later, later_sink = memory_client(tmp_path)
    later.project_id = project
    later.spool = Spool(tmp_path, project, later.source, 1 << 20)
    later.flush()
    assert totals(later_sink.batches, "late_total") == {(): [1, 7]}
    assert {
        b["source"] for b in later_sink.batches if any(p["name"] == "late_total" for p in b["points"])
    } == {client.source}


# -- security: a private spool directory (issue #15) ------------------------------------------------
def test_default_spool_dir_is_private_per_user_state(monkeypatch: Any, tmp_path: Path) -> None:
    from meshhook_rt_metrics.client.settings import ClientSettings

    monkeypatch.delenv("MESHHOOK_METRICS_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert ClientSettings().spool_dir == tmp_path / "state" / "meshhook-metrics" / "spool"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ClientSettings().spool_dir == tmp_path / "home" / ".local" / "state" / "meshhook-metrics" / "spool"


def test_spool_directories_are_created_private(tmp_path: Path) -> None:
    root = tmp_path / "state" / "spool"
    spool = Spool(root, "proj", "host:1:abc", max_bytes=1 << 20)
    assert spool.dir is not None and spool.disabled_reason is None
    for d in (tmp_path / "state", root, root / "proj", spool.dir):
        assert d.stat().st_mode & 0o777 == 0o700, d
    spool.append(_batch(0))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in spool.dir.glob("*.json"))
    spool.close()


def test_a_spool_directory_others_can_write_is_refused_and_said_so(tmp_path: Path, caplog: Any) -> None:
    """Another local user created the directory first (or made it writable): the client runs on
    without a disk spool, says so, and never adopts what was planted there."""
    root = tmp_path / "shared"
    planted = root / "proj" / "attacker-owner"
    planted.mkdir(parents=True)
    (planted / ".lock").touch()
    (planted / f"{1:020d}-1-00000001-1.json").write_text(json.dumps(_batch(666)))
    os.chmod(root, 0o777)
    spool = Spool(root, "proj", "host:1:abc", max_bytes=1 << 20)
    assert (
        spool.dir is None and spool.disabled_reason and "writable by group or others" in spool.disabled_reason
    )
    assert "metrics spool disabled" in caplog.text
    assert spool.adopt_orphans() == 0 and spool.peek() is None
    spool.append(_batch(1))  # still works, in memory
    assert _ids(spool) == ["b0001"]
    if os.geteuid() == 0:  # owned by another user (only root can chown in a test)
        os.chmod(root, 0o700)
        os.chown(root, 65534, 65534)
        other = Spool(root, "proj", "host:1:abc", max_bytes=1 << 20)
        assert other.dir is None and "owned by uid 65534" in (other.disabled_reason or "")
        os.chown(root, 0, 0)
    os.chmod(root, 0o700)
    os.chmod(root / "proj", 0o775)  # group-writable project directory: refused as well
    assert Spool(root, "proj", "host:1:abc", max_bytes=1 << 20).dir is None
    # a private spool below a directory anyone may rename in (world-writable, not sticky): refused
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    os.chmod(open_parent, 0o777)
    below = Spool(open_parent / "spool", "proj", "host:1:abc", max_bytes=1 << 20)
    assert below.dir is None and "not sticky" in (below.disabled_reason or "")
    os.chmod(open_parent, 0o1777)  # sticky, like /tmp: nobody can rename what is ours
    assert Spool(open_parent / "spool", "proj", "host:1:abc", max_bytes=1 << 20).dir is not None


def test_client_without_a_usable_spool_runs_on_and_reports_it(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    client, sink = memory_client(root)  # no exception into user code
    assert client.spool_dir is None
    client.counter("x_total").inc()
    client.flush()
    client.flush()
    assert totals(sink.batches, "x_total") == {(): [1, 1]}
    assert totals(sink.batches, "meshhook_metrics_client_spool_disabled")[()][1] >= 1
    client.close()


def test_spooled_batches_of_another_project_are_dropped_and_counted(tmp_path: Path) -> None:
    project = str(uuid.uuid4())
    dead = Spool(tmp_path, project, "host:1:dead", max_bytes=1 << 20)
    dead.append(_batch(1, points=3, project=str(uuid.uuid4())))  # another tenant's data
    dead.append(_batch(2, project=project))
    assert dead._lock_fd is not None
    os.close(dead._lock_fd)
    dead._lock_fd = None
    client, sink = memory_client(tmp_path, project_id=project)
    client.flush()
    assert [b["batch_id"] for b in sink.batches if b["source"] == "s"] == ["b0002"]
    assert client.spool.foreign_batches == 1 and client.spool.pending == 0
    client.flush()
    assert (
        health_total(client, "meshhook_metrics_client_dropped_batches_total", reason="foreign_project") == 1
    )
    assert health_total(client, "meshhook_metrics_client_dropped_points_total", reason="foreign_project") == 3


# -- durability ---------------------------------------------------------------------------------------
def test_spool_files_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch: Any) -> None:
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename")
        real_rename(src, dst)

    spool = Spool(tmp_path, "proj", "host:1:abc", max_bytes=1 << 20)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    spool.append(_batch(0))
    monkeypatch.undo()
    assert events == ["fsync-file", "rename", "fsync-dir"]
    spool.close()


def test_disk_full_leaves_no_partial_file_and_loses_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    client, sink = memory_client(tmp_path)
    real_write = os.write

    def full(fd: int, data: Any) -> int:  # half a batch fits, then the disk is full
        if len(data) > 8:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    sink.fail = SinkError("down")
    client.counter("x_total").inc(3)
    monkeypatch.setattr(os, "write", full)
    client.flush()
    monkeypatch.undo()
    spool_dir = client.spool_dir
    assert spool_dir is not None
    assert list(spool_dir.glob("*.tmp")) == list(spool_dir.glob(".*.tmp")) == []
    assert list(spool_dir.glob("*.json")) == []
    assert client.spool.pending == 1 and client.spool.write_errors == 1  # kept in memory
    sink.fail = None
    client._retry_at = 0
    client.flush()
    assert totals(sink.batches, "x_total") == {(): [1, 3]}
    client.flush()
    assert health_total(client, "meshhook_metrics_client_spool_write_errors_total") == 1
    client.close()


def test_batches_kept_in_memory_reach_the_disk_at_close(tmp_path: Path, monkeypatch: Any) -> None:
    spool = Spool(tmp_path, "proj", "host:1:abc", max_bytes=1 << 20)
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    spool.append(_batch(7))
    monkeypatch.undo()
    assert spool.write_errors == 1 and spool.dir is not None and not list(spool.dir.glob("*.json"))
    directory = spool.dir
    spool.close()  # the disk has room again: saved for a later process
    assert [json.loads(p.read_text())["batch_id"] for p in directory.glob("*.json")] == ["b0007"]
