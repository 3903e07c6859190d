"""Issue #15 (findings 3 and 14) at unit level: the feed restarts on any error and /health says so; the
Realtime send buffer is bounded in bytes; client broadcasts are rate limited. No database, no sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from meshhook_rt_metrics.localstack.gateway import config as gateway_config
from meshhook_rt_metrics.localstack.gateway.app import Gateway
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig
from meshhook_rt_metrics.localstack.gateway.keys import Claims, JwtKeys
from meshhook_rt_metrics.localstack.gateway.realtime import socket as rt_socket
from meshhook_rt_metrics.localstack.gateway.realtime.authz import Permissions
from meshhook_rt_metrics.localstack.gateway.realtime.feed import DatabaseFeed
from meshhook_rt_metrics.localstack.gateway.realtime.hub import Channel, Hub
from meshhook_rt_metrics.localstack.gateway.realtime.protocol import V1, V2, Frame
from meshhook_rt_metrics.localstack.gateway.realtime.socket import Connection, Runtime, TokenBucket

KEYS = JwtKeys("k" * 40)
NOWHERE = "postgresql://postgres@127.0.0.1:1/postgres"


# -- finding 3: the feed restarts, health reports it ------------------------------------------------------
def test_feed_restarts_after_any_error_with_backoff() -> None:
    async def scenario() -> tuple[int, str | None, str, str]:
        feed = DatabaseFeed(NOWHERE, "slot", lambda _m: None, 1.0, min_backoff=0.01, max_backoff=0.02)
        calls = 0

        async def session() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            if calls == 2:
                raise KeyError("another bug")
            feed.ready.set()
            feed.status.state = "running"
            await asyncio.Event().wait()

        feed._session = session  # type: ignore[method-assign]
        task = asyncio.create_task(feed.run())
        await asyncio.wait_for(feed.ready.wait(), 30)  # before: the RuntimeError ended the task for good
        running = feed.status.state
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return feed.status.restarts, feed.status.last_error, running, feed.status.state

    restarts, last_error, running, stopped = asyncio.run(scenario())
    assert restarts == 2 and last_error == "KeyError"
    assert (running, stopped) == ("running", "stopped")


def test_feed_session_that_returns_counts_as_a_failure() -> None:
    async def scenario() -> int:
        feed = DatabaseFeed(NOWHERE, "slot", lambda _m: None, 1.0, min_backoff=0.01, max_backoff=0.01)
        calls = 0

        async def session() -> None:
            nonlocal calls
            calls += 1
            if calls < 3:
                return
            feed.ready.set()
            await asyncio.Event().wait()

        feed._session = session  # type: ignore[method-assign]
        task = asyncio.create_task(feed.run())
        await asyncio.wait_for(feed.ready.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return feed.status.restarts

    assert asyncio.run(scenario()) == 2


def test_health_is_not_ok_unless_the_feed_runs() -> None:
    gateway = Gateway(GatewayConfig(db_url=NOWHERE, keys=KEYS))  # not started: nothing connects
    starting = asyncio.run(gateway.health(None))  # type: ignore[arg-type]
    assert starting.status_code == 503
    body = json.loads(bytes(starting.body))
    assert body["status"] == "starting" and body["feed"]["state"] == "starting"

    async def with_feed_task(state: str, ready: bool) -> tuple[int, dict[str, Any]]:
        feed = gateway.realtime.feed
        gateway.realtime._feed_task = asyncio.create_task(asyncio.Event().wait())
        feed.status.state = state
        if ready:
            feed.ready.set()
        else:
            feed.ready.clear()
        response = await gateway.health(None)  # type: ignore[arg-type]
        gateway.realtime._feed_task.cancel()
        return response.status_code, json.loads(bytes(response.body))

    status, body = asyncio.run(with_feed_task("running", True))
    assert status == 200 and body["status"] == "ok"
    assert body["feed"] == {"state": "running", "skipped_rows": 0, "restarts": 0, "last_error": None}
    gateway.realtime.feed.status.restarts, gateway.realtime.feed.status.last_error = 3, "OperationalError"
    status, body = asyncio.run(with_feed_task("restarting", False))
    assert status == 503 and body["status"] == "unavailable"
    assert body["feed"]["restarts"] == 3 and body["feed"]["last_error"] == "OperationalError"


def test_health_is_not_ok_when_the_feed_task_has_ended() -> None:
    gateway = Gateway(GatewayConfig(db_url=NOWHERE, keys=KEYS))

    async def scenario() -> tuple[int, dict[str, Any]]:
        gateway.realtime._feed_task = asyncio.create_task(asyncio.sleep(0))
        await gateway.realtime._feed_task
        gateway.realtime.feed.status.state = "running"  # stale: the task is gone
        gateway.realtime.feed.ready.set()
        response = await gateway.health(None)  # type: ignore[arg-type]
        return response.status_code, json.loads(bytes(response.body))

    status, body = asyncio.run(scenario())
    assert status == 503 and body["feed"]["state"] == "stopped"


# -- finding 14: byte budget and broadcast rate -----------------------------------------------------------
class FakeWebSocket:
    """Never sends anything: a client that does not read."""


def connection(max_queued_bytes: int, rate: float = 100.0, codec: Any = None) -> Connection:
    runtime = Runtime(
        keys=KEYS,
        hub=Hub(0.0),
        pool=None,  # type: ignore[arg-type]
        idle_timeout=60.0,
        max_channels=100,
        max_queued_bytes=max_queued_bytes,
        client_broadcasts_per_second=rate,
    )
    return Connection(FakeWebSocket(), codec or V1(), Claims({"role": "anon"}), runtime)  # type: ignore[arg-type]


def test_a_socket_is_closed_when_its_pending_frames_exceed_the_byte_budget() -> None:
    async def scenario() -> tuple[Connection, list[int]]:
        conn = connection(max_queued_bytes=10_000)
        sizes = []
        for _ in range(5):  # 4 x 3,000 bytes fit in 10,000 only three times
            conn.push("x" * 3_000)
            sizes.append(conn.queued_bytes)
        return conn, sizes

    conn, sizes = asyncio.run(scenario())
    assert sizes[:3] == [3_000, 6_000, 9_000]  # before: no byte accounting, only 10,000 frames
    assert conn._close is not None
    code, reason = conn._close
    assert code == 1013 and "10000-byte send buffer" in reason and len(reason.encode()) <= 123
    assert conn.queued_bytes == 0 and conn.out.qsize() == 1 and conn.out.get_nowait() is None  # dropped


def test_one_frame_larger_than_the_budget_is_still_sent() -> None:
    async def scenario() -> Connection:
        conn = connection(max_queued_bytes=100)
        conn.push(b"y" * 1_000)  # the queue was empty: a single large frame is allowed
        return conn

    conn = asyncio.run(scenario())
    assert conn._close is None and conn.queued_bytes == 1_000


def test_text_frame_sizes_count_non_ascii_memory() -> None:
    assert rt_socket.frame_size("abc") == 3
    assert rt_socket.frame_size(b"\x00" * 7) == 7
    assert rt_socket.frame_size("é" * 100) >= 100
    assert rt_socket.frame_size("😀" * 100) >= 400


def test_token_bucket_bursts_then_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(rt_socket.time, "monotonic", lambda: now[0])
    bucket = TokenBucket(2.0)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5  # one more token
    assert [bucket.take() for _ in range(2)] == [True, False]
    assert all(TokenBucket(0).take() for _ in range(1000))  # 0: no limit


class Recorder:
    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.frames: list[str | bytes] = []

    def push(self, frame: str | bytes) -> None:
        self.frames.append(frame)


def test_client_broadcasts_over_the_rate_are_dropped_and_acks_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rt_socket.time, "monotonic", lambda: 5000.0)  # no refill during the test

    async def scenario() -> tuple[list[dict[str, Any]], int, int]:
        conn = connection(max_queued_bytes=1 << 20, rate=3.0)
        hub = conn.rt.hub
        perms = Permissions(read=True, write=True)
        sender = Channel(conn, "realtime:room", "1", False, conn.claims, perms, ack=True)
        listener = Recorder(V1())
        hub.add(sender)
        hub.add(Channel(listener, "realtime:room", "1", False, conn.claims, perms))  # type: ignore[arg-type]
        conn.channels["realtime:room"] = sender
        for ref in range(5):
            envelope = {"type": "broadcast", "event": "e", "payload": {"n": ref}}
            await conn._broadcast(sender, Frame("realtime:room", "broadcast", envelope, str(ref), "1"))
        replies = []
        while not conn.out.empty():
            frame = conn.out.get_nowait()
            assert isinstance(frame, str)
            replies.append(json.loads(frame)["payload"])
        return replies, len(listener.frames), hub.stats.rate_limited

    replies, delivered, limited = asyncio.run(scenario())
    assert delivered == 3 and limited == 2  # before: all five went out
    assert [r["status"] for r in replies] == ["ok", "ok", "ok", "error", "error"]
    assert replies[-1]["response"] == {"reason": "Too many messages per second"}


def test_a_broadcast_that_cannot_be_encoded_is_dropped_not_raised() -> None:
    hub = Hub(0.0)
    perms = Permissions(read=True, write=True)
    receivers = [Recorder(V1()), Recorder(V2())]
    for receiver in receivers:
        hub.add(Channel(receiver, "realtime:r", None, False, Claims({"role": "anon"}), perms))  # type: ignore[arg-type]
    deep: Any = {}
    for _ in range(5_000):
        deep = {"a": deep}
    assert hub.publish("r", False, "e", deep, None) == 0  # before: RecursionError out of publish
    assert hub.stats.unencodable == 2
    assert hub.publish("r", False, "e", {"ok": 1}, None) == 2


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gateway_config.MAX_QUEUED_BYTES_ENV, "2048")
    monkeypatch.setenv(gateway_config.CLIENT_BROADCASTS_PER_SECOND_ENV, "2.5")
    config = GatewayConfig(db_url=NOWHERE, keys=KEYS)
    assert (config.max_queued_bytes_per_socket, config.client_broadcasts_per_second) == (2048, 2.5)
    monkeypatch.delenv(gateway_config.MAX_QUEUED_BYTES_ENV)
    monkeypatch.delenv(gateway_config.CLIENT_BROADCASTS_PER_SECOND_ENV)
    config = GatewayConfig(db_url=NOWHERE, keys=KEYS)
    assert (config.max_queued_bytes_per_socket, config.client_broadcasts_per_second) == (
        16 * 1024 * 1024,
        100.0,
    )
    monkeypatch.setenv(gateway_config.MAX_QUEUED_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="must be a number"):
        GatewayConfig(db_url=NOWHERE, keys=KEYS)
