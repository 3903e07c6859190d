"""The spool: order, size cap, orphan adoption, and the client's behaviour while the backend fails."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.client import SinkError
from meshhook_rt_metrics.client.client import MAX_SERVER_ERRORS
from meshhook_rt_metrics.client.sinks import InvalidBatchError, ServerError
from meshhook_rt_metrics.client.spool import Spool
from tests.client._helpers import memory_client, totals


def _batch(i: int, points: int = 1) -> dict[str, Any]:
    return {
        "project_id": "p",
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


def test_a_batch_the_server_keeps_refusing_does_not_block_the_spool(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path)
    c = client.counter("x_total")
    c.inc()
    sink.fail = SinkError("connection refused")
    client.flush()  # spooled: b1
    c.inc(2)
    client.flush()  # spooled behind it: b2
    first = client.spool.names()[0]
    sink.fail = ServerError("XX000: internal error")
    for _ in range(MAX_SERVER_ERRORS - 1):
        client._retry_at = 0
        client.flush()
        assert client.spool.names()[0] == first  # retried, still at the head
    sink.fail = None
    real_send = sink.send

    def refuse_first(batch: dict[str, Any]) -> dict[str, Any]:
        if any(p["name"] == "x_total" and p["sum"] == 1 for p in batch["points"]):
            raise ServerError("XX000: internal error")
        return real_send(batch)

    sink.send = refuse_first  # type: ignore[method-assign]
    client._retry_at = 0
    client.flush()  # tenth strike: dropped, the rest flows
    assert first not in client.spool.names()
    assert client.spool.pending == 0
    assert totals(sink.batches, "x_total") == {(): [1, 2]}


def test_rejected_batches_are_dropped_and_counted(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path)
    client.counter("x_total").inc()
    sink.fail = InvalidBatchError("points[0].name: invalid")
    client.flush()
    assert client.spool.pending == 0
    sink.fail = None
    client.flush()
    dropped = totals(sink.batches, "meshhook_metrics_client_dropped_points_total")
    assert dropped[(("reason", "rejected"),)][1] >= 1


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
    recorded = sum(c.s for c in client.health.dropped_points.labels("spool_cap")._cells)
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
