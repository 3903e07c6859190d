"""Restart of the gateway while clients are subscribed: realtime-py and supabase-js both reconnect,
rejoin their private channel, get the message committed while the gateway was down, and receive new ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

import psycopg
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from tests.localstack.conftest import JS_DIR, GatewayProcess
from tests.localstack.realtime_helpers import WAIT, Inbox, db_send
from tests.localstack.test_supabase_js import node_command
from tests.support import TestDatabase, add_member


async def read_lines(stream: asyncio.StreamReader, inbox: Inbox) -> None:
    while line := await stream.readline():
        with_json: Any = json.loads(line)
        inbox(with_json)


def test_clients_reconnect_after_a_gateway_restart(gateway: GatewayProcess, db: TestDatabase) -> None:  # noqa: PLR0915
    project, user = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, project, user, "viewer")
    topic = f"metrics:{project}"
    token = gateway.user_token(user)

    async def scenario() -> tuple[list[Any], list[Any]]:
        # supabase-js (vsn 2.0.0) in Node
        node_events = Inbox()
        env = {**os.environ, "GATEWAY_URL": gateway.url, "ANON_KEY": gateway.anon_key, "TOKEN": token,
               "TOPIC": topic, "PRIVATE": "1"}  # fmt: skip
        node = await asyncio.create_subprocess_exec(
            *node_command("subscriber.mjs"), cwd=JS_DIR, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert node.stdout is not None and node.stdin is not None
        reader = asyncio.create_task(read_lines(node.stdout, node_events))
        # realtime-py (vsn 1.0.0)
        py_events, py_states = Inbox(), Inbox()
        client = AsyncRealtimeClient(
            f"{gateway.url}/realtime/v1", gateway.anon_key, initial_backoff=0.5, max_retries=20
        )
        await client.connect()
        await client.set_auth(token)
        channel = client.channel(topic, {"config": {"private": True, "broadcast": {}}})
        channel.on_broadcast("*", py_events)
        await channel.subscribe(lambda state, _error: py_states(state))
        try:
            await node_events.wait_for(lambda e: e.get("status") == "SUBSCRIBED")
            assert py_states.items == [RealtimeSubscribeStates.SUBSCRIBED]

            db_send(db.url, topic, "seq", {"n": 1})
            await py_events.wait_for(lambda m: m["payload"]["n"] == 1)
            await node_events.wait_for(lambda e: e.get("payload", {}).get("n") == 1)

            await asyncio.to_thread(gateway.stop)
            db_send(db.url, topic, "seq", {"n": 2})  # committed while the gateway is down
            await asyncio.to_thread(gateway.start)

            # both notice, reconnect and rejoin on their own
            await py_states.wait_for(lambda s: s == RealtimeSubscribeStates.CHANNEL_ERROR, timeout=WAIT)
            await py_events.wait_for(lambda m: m["payload"]["n"] == 2, timeout=30)
            try:
                await node_events.wait_for(lambda e: e.get("payload", {}).get("n") == 2, timeout=30)
            except TimeoutError:
                raise AssertionError(f"node: {node_events.items}") from None

            db_send(db.url, topic, "seq", {"n": 3})
            await py_events.wait_for(lambda m: m["payload"]["n"] == 3)
            await node_events.wait_for(lambda e: e.get("payload", {}).get("n") == 3)
            return py_events.items, [e for e in node_events.items if e["kind"] == "broadcast"]
        finally:
            await client.close()
            node.stdin.close()
            try:
                await asyncio.wait_for(node.wait(), 5)
            except TimeoutError:
                node.kill()
            reader.cancel()

    try:
        py_items, node_items = asyncio.run(scenario())
    except TimeoutError:
        raise AssertionError(f"gateway log:\n{gateway.log_text()[-4000:]}") from None
    assert [m["payload"]["n"] for m in py_items] == [1, 2, 3]
    assert [m["payload"]["n"] for m in node_items] == [1, 2, 3]


def test_gateway_recovers_when_its_database_connections_are_killed(
    gateway: GatewayProcess, db: TestDatabase
) -> None:
    """A database restart or failover as the gateway sees it: every one of its connections is gone."""
    from tests.localstack.realtime_helpers import RawClient, new_topic

    topic = new_topic("outage")

    async def scenario() -> tuple[dict[str, Any], int]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        await client.join(topic)
        with psycopg.connect(db.admin_url, autocommit=True) as admin:
            killed = admin.execute(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                " where application_name like 'meshhook-gateway%%' and datname = current_database()"
            ).fetchone()
        assert killed is not None and killed[0] >= 3
        db_send(db.url, topic, "after-outage", {"n": 1}, private=False)
        frame = await client.recv(timeout=30)
        await client.close()
        import httpx

        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{gateway.url}/rest/v1/rpc/topic",
                headers={"apikey": gateway.anon_key, "Content-Profile": "metrics"},
                json={"p_project_id": str(uuid.uuid4())},
            )
        return frame, response.status_code

    frame, status = asyncio.run(scenario())
    assert frame["payload"]["event"] == "after-outage"
    assert status == 200
    assert gateway.alive()
