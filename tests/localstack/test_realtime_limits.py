"""Issue #15, finding 14, against the real gateway: a client that does not read is disconnected at the
per-socket byte budget (not after gigabytes), and client broadcasts over the rate are dropped."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from meshhook_rt_metrics.localstack.gateway.config import (
    CLIENT_BROADCASTS_PER_SECOND_ENV,
    MAX_QUEUED_BYTES_ENV,
)
from tests.localstack.conftest import GatewayProcess, start_gateway
from tests.localstack.realtime_helpers import WAIT, RawClient, new_topic
from tests.support import TestDatabase

BUDGET = 1024 * 1024
RATE = 1  # per second, burst 1: a test would need seconds between sends to stay under it


@pytest.fixture(scope="module")
def limited(db: TestDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {MAX_QUEUED_BYTES_ENV: str(BUDGET), CLIENT_BROADCASTS_PER_SECOND_ENV: str(RATE)}
    yield from start_gateway(db, tmp_path_factory.mktemp("limited"), env=env)


def test_a_client_that_does_not_read_is_closed_at_the_byte_budget(limited: GatewayProcess) -> None:
    topic = new_topic("stuck")
    blob = "x" * (240 * 1024)
    calls = 30  # 4 x 240 KiB per call: ~28 MiB in all, far over the budget plus the kernel's buffers

    async def scenario() -> tuple[int, int | None, str | None]:
        # max_queue=1: the client library stops reading the socket at once, so TCP pushes back (with
        # a small receive buffer: loopback's autotuning would otherwise absorb tens of megabytes)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", limited.port))
        stuck = await RawClient.connect(  # no compression: x-es would deflate to nothing on the wire
            limited.ws_url, limited.anon_key, max_queue=1, max_size=None, sock=sock, compression=None
        )
        await stuck.join(topic)
        async with httpx.AsyncClient(timeout=WAIT) as http:
            for _ in range(calls):
                response = await http.post(
                    f"{limited.url}/realtime/v1/api/broadcast",
                    headers={"apikey": limited.anon_key, "Authorization": f"Bearer {limited.service_key}"},
                    json={"messages": [{"topic": topic, "event": "big", "payload": {"b": blob}}] * 4},
                )
                assert response.status_code == 202
        received = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # now read: what was already sent, then the close frame
                try:
                    await stuck.recv()
                except TimeoutError:
                    raise AssertionError(f"no close after {received} messages") from None
                received += 1
        rcvd = closed.value.rcvd
        return received, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None)

    received, code, reason = asyncio.run(scenario())
    assert code == 1013, (received, code, reason)  # before: every message queued, no close
    assert "send buffer" in (reason or "")
    assert received < calls * 4
    health = httpx.get(f"{limited.url}/health")
    assert health.status_code == 200


def test_client_broadcasts_over_the_rate_are_dropped(limited: GatewayProcess) -> None:
    topic = new_topic("rate")
    sends = 20

    async def scenario() -> tuple[list[dict[str, Any]], int]:
        sender = await RawClient.connect(limited.ws_url, limited.anon_key)
        listener = await RawClient.connect(limited.ws_url, limited.anon_key)
        try:
            await listener.join(topic)
            await sender.join(topic, {"broadcast": {"ack": True}})
            refs = []
            for n in range(sends):
                refs.append(
                    await sender.send(
                        f"realtime:{topic}",
                        "broadcast",
                        {"type": "broadcast", "event": "e", "payload": {"n": n}},
                    )
                )
            replies = []
            for ref in refs:
                replies.append(
                    await sender.recv_until(lambda f, ref=ref: f["event"] == "phx_reply" and f["ref"] == ref)
                )
            # everything the sender's broadcasts queued for the listener comes before this reply
            heartbeat = await listener.send("phoenix", "heartbeat", {})
            delivered = 0
            while True:
                frame = await listener.recv()
                if frame["event"] == "broadcast":
                    delivered += 1
                elif frame["ref"] == heartbeat:
                    break
            return replies, delivered
        finally:
            await sender.close()
            await listener.close()

    replies, delivered = asyncio.run(scenario())
    statuses = [r["payload"]["status"] for r in replies]
    refused = [r for r in replies if r["payload"]["status"] == "error"]
    assert refused, statuses  # before: all twenty went through
    assert all(r["payload"]["response"] == {"reason": "Too many messages per second"} for r in refused)
    assert delivered == statuses.count("ok")
    assert httpx.get(f"{limited.url}/health").json()["realtime"]["rate_limited"] >= len(refused)
