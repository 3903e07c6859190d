"""Realtime conformance with the official Python client (realtime-py 2.34, protocol vsn 1.0.0)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from tests.localstack.conftest import GatewayProcess
from tests.localstack.realtime_helpers import WAIT, Inbox, db_send, new_topic
from tests.support import TestDatabase, add_member, batch, counter


async def subscribed(
    gateway: GatewayProcess, topic: str, token: str | None, *, private: bool, events: Inbox, **broadcast: bool
) -> tuple[AsyncRealtimeClient, Any, Inbox]:
    client = AsyncRealtimeClient(f"{gateway.url}/realtime/v1", gateway.anon_key, auto_reconnect=False)
    await client.connect()
    if token:
        await client.set_auth(token)
    states = Inbox()
    channel = client.channel(topic, {"config": {"private": private, "broadcast": dict(broadcast)}})
    channel.on_broadcast("*", events)
    await channel.subscribe(lambda state, error: states((state, error)))
    return client, channel, states


def members(db: TestDatabase, *memberships: tuple[uuid.UUID, uuid.UUID, str]) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        for project, user, role in memberships:
            add_member(conn, project, user, role)


def test_member_receives_the_broadcast_an_ingest_produces(gateway: GatewayProcess, db: TestDatabase) -> None:
    project, viewer = uuid.uuid4(), uuid.uuid4()
    members(db, (project, viewer, "viewer"))

    async def scenario() -> Any:
        events = Inbox()
        client, _, states = await subscribed(
            gateway, f"metrics:{project}", gateway.user_token(viewer), private=True, events=events
        )
        try:
            assert states.items[0][0] == RealtimeSubscribeStates.SUBSCRIBED
            import httpx

            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{gateway.url}/rest/v1/rpc/ingest",
                    headers={
                        "apikey": gateway.anon_key,
                        "Authorization": f"Bearer {gateway.service_key}",
                        "Content-Profile": "metrics",
                    },
                    json={
                        "batch": batch(
                            project, [counter("meshhook_workflow_runs_completed_total", 2, {"status": "ok"})]
                        )
                    },
                )
            assert response.status_code == 200, response.text
            return await events.wait_for()
        finally:
            await client.close()

    message = asyncio.run(scenario())
    assert message["event"] == "rollup"
    assert message["payload"]["project_id"] == str(project)
    assert message["payload"]["series"][0]["name"] == "meshhook_workflow_runs_completed_total"
    assert "id" in message["meta"]


def test_user_of_another_project_is_refused(gateway: GatewayProcess, db: TestDatabase) -> None:
    project_p, project_q, user_q = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    members(db, (project_q, user_q, "admin"))
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id) values (%s)", (project_p,))

    async def scenario() -> Any:
        events = Inbox()
        client, _, states = await subscribed(
            gateway, f"metrics:{project_p}", gateway.user_token(user_q), private=True, events=events
        )
        try:
            state, error = await states.wait_for()
            # and a broadcast to P never reaches Q's socket
            db_send(db.url, f"metrics:{project_p}", "rollup", {"project_id": str(project_p)})
            await asyncio.sleep(0.5)
            return state, error, list(events.items)
        finally:
            await client.close()

    state, error, received = asyncio.run(scenario())
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Unauthorized" in str(error)
    assert received == []


def test_anon_is_refused_on_private_metrics_topic(gateway: GatewayProcess) -> None:
    async def scenario() -> Any:
        client, _, states = await subscribed(
            gateway, f"metrics:{uuid.uuid4()}", None, private=True, events=Inbox()
        )
        try:
            return (await states.wait_for())[0]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == RealtimeSubscribeStates.CHANNEL_ERROR


def test_public_broadcast_self_and_ack(gateway: GatewayProcess) -> None:
    topic = new_topic()

    async def scenario() -> tuple[list[Any], list[Any]]:
        mine, theirs = Inbox(), Inbox()
        sender, channel, _ = await subscribed(
            gateway, topic, None, private=False, events=mine, self=True, ack=True
        )
        receiver, _, _ = await subscribed(gateway, topic, None, private=False, events=theirs)
        try:
            await channel.send_broadcast("cursor", {"x": 1})
            await theirs.wait_for()
            await mine.wait_for()
            return mine.items, theirs.items
        finally:
            await sender.close()
            await receiver.close()

    mine, theirs = asyncio.run(scenario())
    assert theirs == [{"event": "cursor", "payload": {"x": 1}}]
    assert mine == theirs


def test_sender_without_self_does_not_get_its_own_broadcast(gateway: GatewayProcess) -> None:
    topic = new_topic()

    async def scenario() -> tuple[list[Any], list[Any]]:
        mine, theirs = Inbox(), Inbox()
        sender, channel, _ = await subscribed(gateway, topic, None, private=False, events=mine)
        receiver, _, _ = await subscribed(gateway, topic, None, private=False, events=theirs)
        try:
            await channel.send_broadcast("a", {"n": 1})
            await channel.send_broadcast("b", {"n": 2})
            await theirs.wait_for(lambda m: m["event"] == "b")
            return mine.items, theirs.items
        finally:
            await sender.close()
            await receiver.close()

    mine, theirs = asyncio.run(scenario())
    assert mine == []
    assert [m["event"] for m in theirs] == ["a", "b"]


def test_database_broadcasts_arrive_in_insert_order_and_respect_the_private_flag(
    gateway: GatewayProcess, db: TestDatabase
) -> None:
    topic = new_topic("order")

    async def scenario() -> tuple[list[Any], list[Any]]:
        private_events, public_events = Inbox(), Inbox()
        service = gateway.service_key
        a, _, _ = await subscribed(gateway, topic, service, private=True, events=private_events)
        b, _, _ = await subscribed(gateway, topic, None, private=False, events=public_events)
        try:
            with psycopg.connect(db.url, autocommit=True) as conn:
                for i in range(50):
                    conn.execute(
                        "select realtime.send(%s::jsonb, 'seq', %s, %s)", (f'{{"i": {i}}}', topic, i % 5 != 0)
                    )
                # several in one transaction keep their order too
                with conn.transaction():
                    for i in range(50, 60):
                        conn.execute(
                            "select realtime.send(%s::jsonb, 'seq', %s, true)", (f'{{"i": {i}}}', topic)
                        )
            await private_events.wait_for(lambda m: m["payload"]["i"] == 59)
            await public_events.wait_for(lambda m: m["payload"]["i"] == 45)
            return private_events.items, public_events.items
        finally:
            await a.close()
            await b.close()

    private_items, public_items = asyncio.run(scenario())
    assert [m["payload"]["i"] for m in private_items] == [i for i in range(60) if i >= 50 or i % 5 != 0]
    assert [m["payload"]["i"] for m in public_items] == list(range(0, 50, 5))


def test_losing_membership_on_token_refresh_closes_the_channel(
    gateway: GatewayProcess, db: TestDatabase
) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    members(db, (project, user, "viewer"))

    async def scenario() -> Any:
        client, _, states = await subscribed(
            gateway, f"metrics:{project}", gateway.user_token(user), private=True, events=Inbox()
        )
        try:
            assert states.items[-1][0] == RealtimeSubscribeStates.SUBSCRIBED
            with psycopg.connect(db.url, autocommit=True) as conn:
                conn.execute("delete from metrics.project_members where user_id = %s", (user,))
            await client.set_auth(gateway.user_token(user))
            return await states.wait_for(lambda s: s[0] != RealtimeSubscribeStates.SUBSCRIBED)
        finally:
            await client.close()

    state, error = asyncio.run(scenario())
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "permissions" in str(error)


def test_expired_token_gets_a_system_error(gateway: GatewayProcess, db: TestDatabase) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    members(db, (project, user, "viewer"))

    async def scenario() -> Any:
        client, _, states = await subscribed(
            gateway,
            f"metrics:{project}",
            gateway.keys.user_token(user, expires_in=2),
            private=True,
            events=Inbox(),
        )
        try:
            return await states.wait_for(lambda s: s[0] != RealtimeSubscribeStates.SUBSCRIBED, timeout=WAIT)
        finally:
            await client.close()

    state, error = asyncio.run(scenario())
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Token has expired" in str(error)


def test_token_refresh_keeps_an_authorised_channel(gateway: GatewayProcess, db: TestDatabase) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    members(db, (project, user, "viewer"))

    async def scenario() -> tuple[list[Any], list[Any]]:
        events = Inbox()
        client, _, states = await subscribed(
            gateway,
            f"metrics:{project}",
            gateway.keys.user_token(user, expires_in=3),
            private=True,
            events=events,
        )
        try:
            await client.set_auth(gateway.user_token(user))  # refreshed before the first one expires
            await asyncio.sleep(4)  # past the first token's expiry: the channel must not be closed
            db_send(db.url, f"metrics:{project}", "rollup", {"n": 1})
            await events.wait_for()
            return states.items, events.items
        finally:
            await client.close()

    states, received = asyncio.run(scenario())
    assert [s[0] for s in states] == [RealtimeSubscribeStates.SUBSCRIBED]
    assert received[0]["payload"]["n"] == 1
