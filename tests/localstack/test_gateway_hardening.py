"""Issue #15 security review, against the real gateway process: the database feed survives rows it cannot
read (finding 3), malformed input gets a protocol error or a 400, never a traceback (13), and the
credentials are as strict as Supabase's (15)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from meshhook_rt_metrics.localstack.gateway.keys import ISSUER
from meshhook_rt_metrics.localstack.gateway.realtime.feed import slot_name_for
from tests.localstack.conftest import GatewayProcess
from tests.localstack.realtime_helpers import WAIT, RawClient, db_send, new_topic
from tests.support import TestDatabase

DEEP = 5_000
HUGE_INT = "1" * 5_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def health(gateway: GatewayProcess) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def no_traceback(gateway: GatewayProcess) -> None:
    assert "Traceback" not in gateway.log_text()


def rpc_topic(gateway: GatewayProcess, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/rest/v1/rpc/topic",
        headers={"Content-Profile": "metrics", **headers},
        json={"p_project_id": str(uuid.uuid4())},
        **kwargs,
    )


def broadcast(gateway: GatewayProcess, headers: dict[str, str]) -> httpx.Response:
    """The REST broadcast API: the same authentication as the Data API, without needing its pool."""
    return httpx.post(
        f"{gateway.url}/realtime/v1/api/broadcast",
        headers=headers,
        json={"messages": [{"topic": new_topic("auth"), "event": "e", "payload": {}}]},
    )


# -- finding 3: the database feed ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload_sql",
    [
        pytest.param(
            """('{"a":' || repeat('[', %(n)s) || repeat(']', %(n)s) || '}')::jsonb""", id="deep-nesting"
        ),
        pytest.param("""('{"n":' || repeat('7', %(n)s) || '}')::jsonb""", id="huge-integer"),
    ],
)
def test_feed_skips_rows_it_cannot_parse_and_keeps_delivering(
    gateway: GatewayProcess, db: TestDatabase, payload_sql: str
) -> None:
    topic = new_topic("poison")
    skipped_before = health(gateway)["feed"]["skipped_rows"]

    async def scenario() -> dict[str, Any]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key)
        try:
            await client.join(topic)
            with psycopg.connect(db.url, autocommit=True) as conn:
                conn.execute(
                    f"select realtime.send({payload_sql}, 'poison', %(topic)s, false)",
                    {"n": DEEP, "topic": topic},
                )
            db_send(db.url, topic, "after", {"ok": True}, private=False)
            return await client.recv_until(lambda f: f["event"] == "broadcast")
        finally:
            await client.close()

    frame = run(scenario())  # before: the feed task died on the poison row, nothing came after it
    assert frame["payload"]["event"] == "after" and frame["payload"]["payload"]["ok"] is True
    status = health(gateway)
    assert status["status"] == "ok"
    assert status["feed"]["state"] == "running"
    assert status["feed"]["skipped_rows"] == skipped_before + 1
    assert "skipped an unreadable row" in (status["feed"]["last_error"] or "")
    no_traceback(gateway)


def test_feed_moves_the_slot_past_a_bad_row(gateway: GatewayProcess, db: TestDatabase) -> None:
    """The slot advances: the poison row is not read again, and WAL is not kept for it."""
    topic = new_topic("poison-slot")
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            """select realtime.send(('{"n":' || repeat('7', 5000) || '}')::jsonb, 'poison', %s, false)""",
            (topic,),
        )
        row = conn.execute("select pg_current_wal_flush_lsn()").fetchone()
        assert row is not None
        written = row[0]

        async def advanced() -> None:
            while True:
                current = conn.execute(
                    "select confirmed_flush_lsn >= %s::pg_lsn from pg_replication_slots where slot_name = %s",
                    (written, slot_name_for(db.name)),
                ).fetchone()
                if current and current[0]:
                    return
                await asyncio.sleep(0.1)

        run(asyncio.wait_for(advanced(), WAIT))
    assert health(gateway)["feed"]["state"] == "running"


def test_health_reports_the_feed(gateway: GatewayProcess) -> None:
    body = health(gateway)
    assert body["status"] == "ok"
    assert set(body["feed"]) == {"state", "skipped_rows", "restarts", "last_error"}
    assert body["feed"]["state"] == "running"


# -- finding 13: malformed input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "vsn"),
    [
        pytest.param(
            '{"topic":"phoenix","event":"heartbeat","payload":' + HUGE_INT + ',"ref":"1"}',
            "1.0.0",
            id="v1-huge-int",
        ),
        pytest.param('[null,"1","phoenix","heartbeat",' + HUGE_INT + "]", "2.0.0", id="v2-huge-int"),
        pytest.param('{"topic":"phoenix","event":"heartbeat","payload":NaN,"ref":"1"}', "1.0.0", id="v1-nan"),
    ],
)
def test_frames_the_json_parser_refuses_close_with_1007(
    gateway: GatewayProcess, frame: str, vsn: str
) -> None:
    async def scenario() -> tuple[int | None, str | None]:
        client = await RawClient.connect(gateway.ws_url, gateway.anon_key, vsn)
        await client.ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        rcvd = closed.value.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)

    code, reason = run(scenario())  # before: ValueError escaped the handler (a traceback, close 1011)
    assert code == 1007 and "malformed message" in (reason or "")
    assert health(gateway)["status"] == "ok"
    no_traceback(gateway)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"p_project_id":' + b"[" * DEEP + b"]" * DEEP + b"}", id="deep-nesting"),
        pytest.param(b'{"p_project_id":' + HUGE_INT.encode() + b"}", id="huge-int"),
    ],
)
def test_data_api_bodies_the_parser_refuses_get_400(gateway: GatewayProcess, content: bytes) -> None:
    response = httpx.post(
        f"{gateway.url}/rest/v1/rpc/topic",
        headers={
            "apikey": gateway.anon_key,
            "Content-Profile": "metrics",
            "Content-Type": "application/json",
        },
        content=content,
    )
    assert response.status_code == 400, response.text  # before: 500 and a traceback
    assert response.json()["code"] == "PGRST102"
    no_traceback(gateway)


def test_data_api_function_name_with_nul_gets_404(gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{gateway.url}/rest/v1/rpc/top%00ic",
        headers={"apikey": gateway.anon_key, "Content-Profile": "metrics"},
        json={"p_project_id": str(uuid.uuid4())},
    )
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "PGRST202"
    no_traceback(gateway)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"email":' + b"[" * DEEP + b"]" * DEEP + b"}", id="deep-nesting"),
        pytest.param(b'{"email":' + HUGE_INT.encode() + b"}", id="huge-int"),
    ],
)
def test_auth_bodies_the_parser_refuses_get_400(gateway: GatewayProcess, content: bytes) -> None:
    response = httpx.post(
        f"{gateway.url}/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": gateway.anon_key, "Content-Type": "application/json"},
        content=content,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "bad_json"
    no_traceback(gateway)


# -- finding 15: credentials ----------------------------------------------------------------------------
def _claims(**extra: Any) -> dict[str, Any]:
    return {"role": "anon", "iss": ISSUER, "iat": int(time.time()), "exp": int(time.time()) + 3600, **extra}


def test_only_the_anon_and_service_keys_are_api_keys(gateway: GatewayProcess) -> None:
    user = gateway.user_token(uuid.uuid4())
    look_alike = gateway.keys.sign(_claims())  # a valid anon JWT, but not the project's anon key
    for apikey in (user, look_alike, gateway.keys.sign(_claims(role="service_role"))):
        refused = rpc_topic(gateway, {"apikey": apikey})
        assert refused.status_code == 401, refused.text  # before: 200
        assert refused.json()["message"] == "Invalid API key"
        with_bearer = rpc_topic(gateway, {"apikey": apikey, "Authorization": f"Bearer {user}"})
        assert with_bearer.status_code == 401
        assert broadcast(gateway, {"apikey": apikey}).status_code == 401
    for apikey in (gateway.anon_key, gateway.service_key):
        assert broadcast(gateway, {"apikey": apikey}).status_code == 202
        assert broadcast(gateway, {"apikey": apikey, "Authorization": f"Bearer {user}"}).status_code == 202


def test_other_http_endpoints_take_only_project_keys(gateway: GatewayProcess) -> None:
    user = gateway.user_token(uuid.uuid4())
    auth = httpx.post(
        f"{gateway.url}/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": user},
        json={"email": "nobody@example.com", "password": "whatever-password"},
    )
    assert auth.status_code == 401 and auth.json()["error_code"] == "invalid_api_key"
    broadcast = httpx.post(
        f"{gateway.url}/realtime/v1/api/broadcast",
        headers={"apikey": user},
        json={"messages": [{"topic": "t", "event": "e", "payload": {}}]},
    )
    assert broadcast.status_code == 401


@pytest.mark.parametrize(
    ("drop", "message"),
    [pytest.param("exp", "exp", id="no-exp"), pytest.param("iss", "iss", id="no-iss")],
)
def test_tokens_need_exp_and_iss(gateway: GatewayProcess, drop: str, message: str) -> None:
    claims = _claims(role="authenticated", sub=str(uuid.uuid4()), aud="authenticated")
    del claims[drop]
    token = gateway.keys.sign(claims)
    response = rpc_topic(gateway, {"apikey": gateway.anon_key, "Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text  # before: 200
    assert response.json()["code"] == "PGRST301" and message in response.json()["message"]
    assert (
        broadcast(gateway, {"apikey": gateway.anon_key, "Authorization": f"Bearer {token}"}).status_code
        == 401
    )

    async def upgrade() -> Any:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{gateway.ws_url}?apikey={token}&vsn=1.0.0")
        return refused.value.response

    if drop == "exp":  # Realtime, as Supabase's, requires exp but not iss (supabase-js tests sign without)
        refused = run(upgrade())
        assert refused.status_code == 401 and message in json.loads(refused.body)["error"]


def test_clients_still_send_what_they_send(gateway: GatewayProcess) -> None:
    """supabase-js / supabase-py: apikey = the anon key, Authorization = the user's token (or the key);
    a session from /auth/v1 (iss ``<url>/auth/v1``) and the alert worker's minted token are accepted."""
    user = gateway.user_token(uuid.uuid4())
    session = gateway.keys.sign(
        _claims(role="authenticated", iss=f"{gateway.url}/auth/v1", sub=str(uuid.uuid4()))
    )
    worker = gateway.keys.sign(_claims(role="service_role", iss="meshhook-metrics-alert-worker"))
    for bearer in (None, gateway.anon_key, user, session, worker):
        headers = {"apikey": gateway.anon_key}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        assert broadcast(gateway, headers).status_code == 202
