"""What the client retries, what it drops (and counts), 413 splitting, duplicates and batch ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshhook_rt_metrics.client import SinkError
from meshhook_rt_metrics.client.client import MAX_INVALID_STRIKES
from meshhook_rt_metrics.client.sinks import BatchTooLargeError, InvalidBatchError, ServerError
from tests.client._helpers import health_total, memory_client, totals


def _has(batch: dict[str, Any], name: str) -> bool:
    return any(p["name"] == name for p in batch["points"])


def test_server_and_configuration_errors_are_retried_forever(tmp_path: Path) -> None:
    """404 / 406 / 409 / 5xx, deadlocks, a function not migrated yet: never a reason to drop a batch."""
    client, sink = memory_client(tmp_path)
    c = client.counter("x_total")
    c.inc()
    sink.fail = ServerError("HTTP 404 PGRST202: function metrics.ingest not found")
    client.flush()  # spooled: b1
    c.inc(2)
    client.flush()  # spooled behind it: b2
    first = client.spool.names()[0]
    for i in range(3 * MAX_INVALID_STRIKES + 10):  # far beyond any strike count (was dropped at 10)
        sink.fail = (ServerError("XX000: internal error"), SinkError("40P01: deadlock detected"))[i % 2]
        client._retry_at = 0
        client.flush()
        assert client.spool.names()[0] == first  # retried, still at the head
    sink.fail = None
    client._retry_at = 0
    client.flush()
    assert client.spool.pending == 0
    assert totals(sink.batches, "x_total") == {(): [2, 3]}
    assert health_total(client, "meshhook_metrics_client_dropped_batches_total", reason="rejected") == 0


def test_an_invalid_batch_gets_strikes_then_is_dropped_and_counted(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path, backoff_initial=60, backoff_max=60)  # one attempt a flush
    c = client.counter("x_total")
    c.inc()
    real_send = sink.send

    def refuse_first(batch: dict[str, Any]) -> dict[str, Any]:
        if any(p["name"] == "x_total" and p["sum"] == 1 for p in batch["points"]):
            raise InvalidBatchError("points[0].ts: newer than the accepted window of 00:05:00")
        return real_send(batch)

    sink.send = refuse_first  # type: ignore[method-assign]
    client.flush()  # strike 1: not dropped at once, spooled
    assert client.spool.pending == 1
    first = client.spool.names()[0]
    c.inc(2)
    for _ in range(MAX_INVALID_STRIKES - 2):
        client._retry_at = 0
        client.flush()
        assert client.spool.names()[0] == first
    client._retry_at = 0
    client.flush()  # last strike: dropped, the batch behind it flows
    assert first not in client.spool.names() and client.spool.pending == 0
    assert totals(sink.batches, "x_total") == {(): [1, 2]}
    assert health_total(client, "meshhook_metrics_client_dropped_batches_total", reason="rejected") == 1
    assert health_total(client, "meshhook_metrics_client_dropped_points_total", reason="rejected") >= 1


def test_a_batch_too_large_for_the_backend_is_split_not_dropped(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path)
    c = client.counter("requests_total", labels=("route",))
    for r in range(10):
        c.inc(r + 1, route=f"/r/{r}")
    real_send = sink.send

    def limit(batch: dict[str, Any]) -> dict[str, Any]:  # a proxy with a small body limit
        if len(batch["points"]) > 3:
            raise BatchTooLargeError("HTTP 413: request entity too large")
        return real_send(batch)

    sink.send = limit  # type: ignore[method-assign]
    assert client.flush() is True
    got = totals(sink.batches, "requests_total")
    assert {k[0][1]: v for k, v in got.items()} == {f"/r/{r}": [1, r + 1] for r in range(10)}
    ids = [b["batch_id"] for b in sink.batches]
    root = ids[0].split(".")[0]
    assert all(i.startswith(root + ".") for i in ids) and len(set(ids)) == len(ids)
    assert all(len(i) <= 100 for i in ids)
    assert health_total(client, "meshhook_metrics_client_batches_split_total") >= 3
    assert health_total(client, "meshhook_metrics_client_dropped_batches_total", reason="rejected") == 0
    # a spooled batch is split in place: its halves go before what was spooled after it
    sink.fail = SinkError("down")
    for r in range(8):
        c.inc(route=f"/r/{r}")
    client.flush()
    client.counter("later_total").inc()
    client._retry_at = 0
    client.flush()
    sink.fail = None
    before = len(sink.batches)
    client._retry_at = 0
    assert client.flush() is True
    sent = sink.batches[before:]
    later = [i for i, b in enumerate(sent) if _has(b, "later_total")]
    routes = [i for i, b in enumerate(sent) if _has(b, "requests_total")]
    assert later and routes and max(routes) < min(later)


def test_a_single_point_too_large_counts_as_invalid(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path, backoff_initial=60, backoff_max=60)
    client.counter("x_total").inc()
    real_send = sink.send

    def limit(batch: dict[str, Any]) -> dict[str, Any]:
        if _has(batch, "x_total"):
            raise BatchTooLargeError("HTTP 413")
        return real_send(batch)

    sink.send = limit  # type: ignore[method-assign]
    for _ in range(MAX_INVALID_STRIKES):
        client._retry_at = 0
        client.flush()
    assert not any(_has(b, "x_total") for b in sink.batches)
    assert client.spool.pending == 0
    client.flush()
    assert health_total(client, "meshhook_metrics_client_dropped_batches_total", reason="rejected") == 1


def test_duplicate_acknowledgements_are_counted(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path)
    real_send = sink.send

    def lose_the_answer(batch: dict[str, Any]) -> dict[str, Any]:
        real_send(batch)  # stored ...
        raise SinkError("connection reset")  # ... but the acknowledgement never arrives

    client.counter("x_total").inc(5)
    sink.send = lose_the_answer  # type: ignore[method-assign]
    client.flush()
    assert client.spool.pending == 1
    sink.send = real_send  # type: ignore[method-assign]
    client._retry_at = 0
    client.flush()  # the replay is answered "duplicate"
    assert client.spool.pending == 0
    assert health_total(client, "meshhook_metrics_client_batches_duplicate_total") == 1
    assert totals(sink.batches, "x_total") == {(): [1, 5]}


def test_batch_ids_carry_random_bits(monkeypatch: Any) -> None:
    """Two processes with the same configured source, started in the same millisecond, never collide."""
    monkeypatch.setattr("meshhook_rt_metrics.client.client.time.time", lambda: 1_795_737_661.0)
    a, sink_a = memory_client(source="worker-1")
    b, sink_b = memory_client(source="worker-1")
    a.counter("x_total").inc()
    b.counter("x_total").inc()
    a.flush()
    b.flush()
    id_a, id_b = sink_a.batches[0]["batch_id"], sink_b.batches[0]["batch_id"]
    assert sink_a.batches[0]["source"] == sink_b.batches[0]["source"] == "worker-1"
    assert id_a != id_b and len(id_a) <= 100
