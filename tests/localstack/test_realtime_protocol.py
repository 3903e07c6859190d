"""The Realtime wire protocol at frame level: vsn 1.0.0 and 2.0.0, and every kind of bad input.

Bad input must get Supabase's kind of answer (HTTP 401 on upgrade, an error reply, a system message,
closing the socket for undecodable frames) and must never take the gateway down.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from meshhook_rt_metrics.localstack.gateway.keys import JwtKeys
from tests.localstack.conftest import GatewayProcess
from tests.localstack.realtime_helpers import RawClient, db_send, kind3, new_topic
from tests.support import TestDatabase


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_healthy(gateway: GatewayProcess) -> None:
    assert gateway.alive()
    assert httpx.get(f"{gateway.url}/health").status_code == 200


# -- upgrade ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        pytest.param("vsn=1.0.0", 401, "No API key", id="no-apikey"),
        pytest.param("vsn=1.0.0&apikey=garbage", 401, "Invalid token", id="garbage"),
        pytest.param("vsn=1.0.0&apikey=<expired>", 401, "expired", id="expired"),
        pytest.param("vsn=1.0.0&apikey=<foreign>", 401, "Invalid token", id="foreign"),
        pytest.param("vsn=1.0.0&apikey=<noexp>", 401, "exp", id="no-exp"),
        pytest.param("vsn=9.9.9&apikey=<anon>", 400, "vsn", id="bad-vsn"),
    ],
)
def test_upgrade_is_refused_with_http_error_and_json_body(
    gateway: GatewayProcess, query: str, status: int, text: str
) -> None:
    tokens = {
        "<expired>": gateway.user_token(uuid.uuid4(), expires_in=-1),
        "<foreign>": JwtKeys("z" * 40).anon_key,
        "<noexp>": gateway.keys.sign({"role": "anon"}),
        "<anon>": gateway.anon_key,
    }
    for placeholder, token in tokens.items():
        query = query.replace(placeholder, token)

    async def scenario() -> Any:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{gateway.ws_url}?{query}")
        return refused.value.response

    response = run(scenario())
    assert response.status_code == status
    assert text in json.loads(response.body)["error"]


# -- vsn 1.0.0 -----------------------------------------------------------------------------------------
def test_heartbeat_is_answered_with_the_same_ref(gateway: GatewayProcess) -> None:
    async def scenario() -> dict[str, Any]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await client.send("phoenix", "heartbeat", {}, ref="hb-7")
        reply = await client.recv()
        await client.close()
        return reply

    assert run(scenario()) == {
        "topic": "phoenix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": "hb-7",
        "join_ref": None,
    }


def test_join_leave_and_close(gateway: GatewayProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        joined = await client.join(
            "room-a",
            {
                "broadcast": {"self": False},
                "presence": {"key": "", "enabled": False},
                "postgres_changes": [],
                "private": False,
                "unknown": 1,
            },
        )
        await client.send("realtime:room-a", "phx_leave", {}, ref="9", join_ref="1")
        left = await client.recv()
        closed = await client.recv()
        await client.send(
            "realtime:room-a", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}, ref="10"
        )
        after = await client.recv()
        await client.close()
        return joined, left, closed, after

    joined, left, closed, after = run(scenario())
    assert joined["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
    assert left["event"] == "phx_reply" and left["payload"]["status"] == "ok" and left["ref"] == "9"
    assert closed["event"] == "phx_close" and closed["ref"] is None
    assert after["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}


@pytest.mark.parametrize(
    ("topic", "event", "payload", "reason"),
    [
        pytest.param("realtime:joined", "nonsense", {}, "unknown event", id="unknown-event"),
        pytest.param("realtime:not-joined", "broadcast", {}, "unmatched topic", id="not-joined"),
        pytest.param("elsewhere", "phx_join", {}, "unmatched topic", id="not-a-realtime-topic"),
        pytest.param(
            "realtime:joined",
            "presence",
            {"type": "presence", "event": "track", "payload": {}},
            "Presence is not supported",
            id="presence",
        ),
        pytest.param(
            "realtime:joined",
            "broadcast",
            {"type": "broadcast"},
            "Invalid broadcast",
            id="broadcast-without-event",
        ),
        pytest.param(
            "realtime:x",
            "phx_join",
            {"config": {"postgres_changes": [{"event": "*", "schema": "public"}]}},
            "postgres_changes is not supported",
            id="postgres-changes",
        ),
        pytest.param("realtime:y", "phx_join", {"config": "nope"}, "Invalid join payload", id="bad-config"),
        pytest.param(
            "realtime:z",
            "phx_join",
            {"config": {}, "access_token": "garbage"},
            "Invalid token",
            id="bad-access-token",
        ),
        pytest.param(
            "realtime:z",
            "phx_join",
            {"config": {}, "access_token": "<expired>"},
            "expired",
            id="expired-access-token",
        ),
        pytest.param("phoenix", "nonsense", {}, "unknown event", id="phoenix-unknown"),
    ],
)
def test_client_mistakes_get_error_replies(
    gateway: GatewayProcess, topic: str, event: str, payload: Any, reason: str
) -> None:
    if payload.get("access_token") == "<expired>":
        payload = {**payload, "access_token": gateway.user_token(uuid.uuid4(), expires_in=-30)}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await client.join("joined")
        ref = await client.send(topic, event, payload)
        reply = await client.recv_until(lambda f: f["ref"] == ref)
        # the socket still works
        await client.send("phoenix", "heartbeat", {}, ref="hb")
        alive = await client.recv_until(lambda f: f["ref"] == "hb")
        await client.close()
        return reply, alive

    reply, alive = run(scenario())
    assert reply["event"] == "phx_reply" and reply["payload"]["status"] == "error"
    assert reason in reply["payload"]["response"]["reason"]
    assert alive["payload"]["status"] == "ok"


@pytest.mark.parametrize(
    ("frame", "vsn"),
    [
        pytest.param("{not json", "1.0.0", id="not-json"),
        pytest.param('["an", "array"]', "1.0.0", id="array-on-v1"),
        pytest.param('{"topic": 1, "event": "x"}', "1.0.0", id="bad-types"),
        pytest.param(b"\x03\x00", "1.0.0", id="binary-on-v1"),
        pytest.param('{"topic": "phoenix"}', "2.0.0", id="object-on-v2"),
        pytest.param(b"\x09abc", "2.0.0", id="unknown-binary-kind"),
        pytest.param(b"\x03\x05\x05\x05\x05\x05\x01ab", "2.0.0", id="truncated-kind-3"),
        pytest.param("[" * 100_000 + "]" * 100_000, "1.0.0", id="deep-nesting"),
    ],
)
def test_malformed_frames_close_the_socket_but_not_the_server(
    gateway: GatewayProcess, frame: Any, vsn: str
) -> None:
    async def scenario() -> int | None:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key, vsn)
        await client.ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(scenario()) == 1007
    assert_healthy(gateway)


def test_oversized_frame_closes_with_1009_and_server_stays_up(gateway: GatewayProcess) -> None:
    async def scenario() -> int | None:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key, max_size=None)
        await client.join("big")
        big = {"type": "broadcast", "event": "e", "payload": {"blob": "x" * (2 * 1024 * 1024)}}
        with pytest.raises(ConnectionClosed) as closed:
            await client.send("realtime:big", "broadcast", big)
            await client.recv()
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(scenario()) == 1009
    assert_healthy(gateway)


def test_ack_reply_only_when_asked(gateway: GatewayProcess) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        acked = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        silent = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await acked.join("ack-room", {"broadcast": {"ack": True}})
        await silent.join("ack-room")
        ref = await acked.send(
            "realtime:ack-room", "broadcast", {"type": "broadcast", "event": "e", "payload": {"n": 1}}
        )
        ack = await acked.recv()
        assert ack["ref"] == ref
        ref2 = await silent.send(
            "realtime:ack-room", "broadcast", {"type": "broadcast", "event": "e", "payload": {"n": 2}}
        )
        await silent.send("phoenix", "heartbeat", {}, ref="hb")
        # the first thing the silent sender sees is the other client's broadcast, then the heartbeat reply: no ack
        first = await silent.recv()
        second = await silent.recv()
        assert ref2 not in (first["ref"], second["ref"])
        await acked.close()
        await silent.close()
        return ack, second

    ack, second = run(scenario())
    assert ack["payload"] == {"status": "ok", "response": {}}
    assert second["ref"] == "hb"


def test_private_channel_write_needs_an_insert_policy(gateway: GatewayProcess, db: TestDatabase) -> None:
    """A reader without insert permission cannot broadcast; with ack it is told so."""
    import psycopg

    topic = new_topic("ro")
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute(
            "create policy test_ro_read on realtime.messages for select to authenticated"
            " using (realtime.topic() like 'ro-%%')"
        )
    user = uuid.uuid4()

    async def scenario() -> dict[str, Any]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        joined = await client.join(
            topic, {"private": True, "broadcast": {"ack": True}}, access_token=gateway.user_token(user)
        )
        assert joined["payload"]["status"] == "ok", joined
        ref = await client.send(
            f"realtime:{topic}", "broadcast", {"type": "broadcast", "event": "e", "payload": {}}
        )
        reply = await client.recv_until(lambda f: f["ref"] == ref)
        await client.close()
        return reply

    reply = run(scenario())
    assert reply["payload"]["status"] == "error"
    assert "permissions to write" in reply["payload"]["response"]["reason"]


# -- vsn 2.0.0 -----------------------------------------------------------------------------------------
def test_v2_arrays_and_binary_broadcasts(gateway: GatewayProcess) -> None:
    async def scenario() -> tuple[
        dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]
    ]:
        sender = await RawClient.connect(gateway.ws_url, gateway.anon_key, "2.0.0")
        receiver = await RawClient.connect(gateway.ws_url, gateway.anon_key, "2.0.0")
        v1 = await RawClient.connect(gateway.ws_url, gateway.anon_key, "1.0.0")
        joined = await sender.join("bin", {"broadcast": {"ack": True, "self": True}})
        await receiver.join("bin")
        await v1.join("bin")
        await sender.ws.send(
            kind3("1", "5", "realtime:bin", "json-event", json.dumps({"a": 1}).encode(), json_payload=True)
        )
        two = [await sender.recv(), await sender.recv()]
        ack = next(f for f in two if f["event"] == "phx_reply")
        own = next(f for f in two if f["event"] == "broadcast")
        got_json = await receiver.recv()
        await sender.ws.send(kind3("1", "6", "realtime:bin", "raw", b"\x00\x01\xff", json_payload=False))
        got_raw = await receiver.recv()
        # vsn 1 receivers get the JSON broadcast as text, and cannot receive the raw one
        v1_json = await v1.recv()
        db_send(gateway.db.url, "bin", "from-db", {"k": "v"}, private=False)
        v1_db = await v1.recv()
        for client in (sender, receiver, v1):
            await client.close()
        assert ack["payload"]["status"] == "ok" and ack["ref"] == "5" and ack["join_ref"] == "1"
        assert own["payload"]["payload"] == {"a": 1}
        assert v1_json["payload"] == {"type": "broadcast", "event": "json-event", "payload": {"a": 1}}
        assert v1_db["payload"]["event"] == "from-db"
        return joined, got_json, got_raw, ack, own

    joined, got_json, got_raw, _, _ = run(scenario())
    assert joined["event"] == "phx_reply" and joined["payload"]["status"] == "ok"
    assert got_json["topic"] == "realtime:bin"
    assert got_json["payload"] == {"type": "broadcast", "event": "json-event", "payload": {"a": 1}}
    assert got_raw["binary"] and got_raw["payload"]["payload"] == b"\x00\x01\xff"


def test_database_broadcast_reaches_v2_as_kind_4_with_meta(gateway: GatewayProcess, db: TestDatabase) -> None:
    topic = new_topic("v2db")

    async def scenario() -> dict[str, Any]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key, "2.0.0")
        await client.join(topic, {"private": True}, access_token=gateway.service_key)
        db_send(db.url, topic, "rollup", {"n": 1})
        frame = await client.recv()
        await client.close()
        return frame

    frame = run(scenario())
    assert frame["topic"] == f"realtime:{topic}"
    assert frame["payload"]["event"] == "rollup" and frame["payload"]["payload"]["n"] == 1
    assert set(frame["payload"]["meta"]) == {"id"}


# -- REST broadcast ------------------------------------------------------------------------------------
def test_rest_broadcast(gateway: GatewayProcess) -> None:
    topic = new_topic("rest")

    async def scenario() -> tuple[list[int], list[dict[str, Any]]]:
        public = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        private = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await public.join(topic)
        await private.join(topic, {"private": True}, access_token=gateway.service_key)
        url = f"{gateway.url}/realtime/v1/api/broadcast"
        statuses = []
        async with httpx.AsyncClient() as http:
            for headers, body in [
                ({"apikey": gateway.anon_key}, {"messages": [{"topic": topic, "event": "pub", "payload": {"n": 1}}]}),
                # anon may not write to a private topic without a policy: accepted, not delivered
                ({"apikey": gateway.anon_key}, {"messages": [{"topic": topic, "event": "denied", "payload": {}, "private": True}]}),
                ({"apikey": gateway.anon_key, "Authorization": f"Bearer {gateway.service_key}"},
                 {"messages": [{"topic": topic, "event": "priv", "payload": {"n": 2}, "private": True}]}),
                ({"apikey": gateway.anon_key}, {"messages": "nope"}),
                ({"apikey": gateway.anon_key}, {"messages": [{"topic": 1}]}),
                ({}, {"messages": [{"topic": topic, "event": "pub", "payload": {}}]}),
            ]:  # fmt: skip
                statuses.append((await http.post(url, headers=headers, json=body)).status_code)
        frames = [await public.recv(), await private.recv()]
        await public.close()
        await private.close()
        return statuses, frames

    statuses, frames = run(scenario())
    assert statuses == [202, 202, 202, 400, 422, 401]
    assert frames[0]["payload"] == {"type": "broadcast", "event": "pub", "payload": {"n": 1}}
    assert frames[1]["payload"] == {"type": "broadcast", "event": "priv", "payload": {"n": 2}}


def test_persisted_broadcast_is_stored_as_the_user_and_delivered_from_the_database(
    gateway: GatewayProcess, db: TestDatabase
) -> None:
    """supabase-js' ``persist`` (vsn 2, private): an INSERT as the user, allowed by policy, then delivery."""
    import psycopg

    topic = new_topic("rw")
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute(
            "create policy test_rw_read on realtime.messages for select to authenticated"
            " using (realtime.topic() like 'rw-%%')"
        )
        conn.execute(
            "create policy test_rw_write on realtime.messages for insert to authenticated"
            " with check (realtime.topic() like 'rw-%%')"
        )
    token = gateway.user_token(uuid.uuid4())

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        sender = await RawClient.connect(gateway.ws_url, gateway.anon_key, "2.0.0")
        receiver = await RawClient.connect(gateway.ws_url, gateway.anon_key, "2.0.0")
        await sender.join(topic, {"private": True, "broadcast": {"ack": True}}, access_token=token)
        await receiver.join(topic, {"private": True}, access_token=token)
        meta = json.dumps({"persist": True}).encode()
        payload = json.dumps({"note": "kept"}).encode()
        await sender.ws.send(
            kind3("1", "7", f"realtime:{topic}", "saved", payload, json_payload=True, meta=meta)
        )
        ack = await sender.recv_until(lambda f: f["event"] == "phx_reply")
        got = await receiver.recv()
        await sender.close()
        await receiver.close()
        return ack, got, {}

    ack, got, _ = run(scenario())
    assert ack["payload"]["status"] == "ok"
    assert got["payload"]["event"] == "saved" and got["payload"]["payload"] == {"note": "kept"}
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "select event, payload, private from realtime.messages where topic = %s", (topic,)
        ).fetchone()
    assert row == ("saved", {"note": "kept"}, True)
    assert got["payload"]["meta"]["id"]


def test_rest_broadcast_rejects_bad_and_oversized_bodies(gateway: GatewayProcess) -> None:
    url, headers = f"{gateway.url}/realtime/v1/api/broadcast", {"apikey": gateway.anon_key}
    assert httpx.post(url, headers=headers, content=b"{nope").status_code == 400
    assert httpx.post(url, headers=headers, content=b"[" * 100_000).status_code == 400
    assert httpx.post(url, headers=headers, content=b"x" * (2 * 1024 * 1024)).status_code == 413
    assert_healthy(gateway)


def test_no_secrets_in_the_gateway_log(gateway: GatewayProcess) -> None:
    """Runs last in this module (everything above went through the log) and makes its own traffic too."""

    async def traffic() -> None:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await client.join("secret-check", {"private": True}, access_token=gateway.user_token(uuid.uuid4()))
        await client.close()

    run(traffic())
    text = gateway.log_text()
    assert (
        "WebSocket" in text and "secret-check" in text
    )  # the log is not empty: the check below means something
    for secret in (gateway.keys.secret, gateway.anon_key, gateway.service_key, "eyJ"):
        assert secret not in text
