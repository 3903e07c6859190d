"""Keys, the ``token`` command and the Data API RPC endpoint, checked with supabase-py (postgrest-py)."""

from __future__ import annotations

import json
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from postgrest.exceptions import APIError
from typer.testing import CliRunner

from meshhook_rt_metrics.cli import app
from meshhook_rt_metrics.db.session import as_caller
from meshhook_rt_metrics.localstack.gateway.keys import SECRET_FILE, JwtKeys, TokenError, keys_for_state_dir
from meshhook_rt_metrics.localstack.stack import LocalStack
from supabase import ClientOptions, create_client
from tests.localstack.conftest import GatewayProcess
from tests.support import TestDatabase, add_member, batch, counter, merge_points, user_claims


def client(gateway: GatewayProcess, token: str | None = None) -> Any:
    options = ClientOptions(headers={"Authorization": f"Bearer {token}"}) if token else ClientOptions()
    return create_client(gateway.url, gateway.anon_key, options)


def rpc(
    gateway: GatewayProcess, name: str, body: Any, *, token: str | None = None, **headers: str
) -> httpx.Response:
    sent = {"apikey": gateway.anon_key, "Content-Profile": "metrics", **headers}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{gateway.url}/rest/v1/rpc/{name}", headers=sent, content=json.dumps(body))


# -- keys ----------------------------------------------------------------------------------------------
def test_state_dir_secret_is_private_and_stable(tmp_path: Any) -> None:
    first = keys_for_state_dir(tmp_path)
    mode = stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode)
    assert mode == 0o600
    assert keys_for_state_dir(tmp_path).anon_key == first.anon_key
    assert keys_for_state_dir(tmp_path / "other").anon_key != first.anon_key
    assert "secret" not in repr(first).lower().replace("secret=<hidden>", "")


def test_keys_are_hs256_jwts_with_supabase_roles(tmp_path: Any) -> None:
    keys = keys_for_state_dir(tmp_path)
    for token, role in ((keys.anon_key, "anon"), (keys.service_role_key, "service_role")):
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        claims = jwt.decode(token, keys.secret, algorithms=["HS256"])
        assert claims["role"] == role
        assert claims["exp"] > time.time() + 365 * 24 * 3600


def test_verify_refuses_foreign_expired_and_roleless_tokens(tmp_path: Any) -> None:
    keys = keys_for_state_dir(tmp_path)
    other = JwtKeys("x" * 40)
    with pytest.raises(TokenError) as bad:
        keys.verify(other.anon_key)
    assert bad.value.code == "PGRST301"
    with pytest.raises(TokenError) as expired:
        keys.verify(keys.user_token(uuid.uuid4(), expires_in=-10))
    assert expired.value.expired and expired.value.code == "PGRST303"
    with pytest.raises(TokenError):
        keys.verify(keys.sign({"sub": "x", "exp": time.time() + 60}))
    with pytest.raises(TokenError):
        keys.verify("not-a-jwt")
    with pytest.raises(TokenError):
        keys.verify(keys.sign({"role": "anon"}), require_exp=True)


def test_stack_env_has_supabase_settings(tmp_path: Any) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "port").write_text("54399\n")  # as after 'up'; no server needed for env()
    stack = LocalStack(tmp_path)
    env = stack.env()
    keys = keys_for_state_dir(tmp_path)
    assert env["SUPABASE_URL"] == f"http://127.0.0.1:{stack.gateway_port}"
    assert env["SUPABASE_ANON_KEY"] == keys.anon_key
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == keys.service_role_key
    assert env["SUPABASE_JWT_SECRET"] == keys.secret
    assert any(s.name == "gateway" for s in stack.services())


def test_token_command_prints_a_user_token_and_grants(tmp_path: Any, db: TestDatabase) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("insert into metrics.projects (id) values (%s)", (project,))
    args = ["token", "--state-dir", str(tmp_path), "--project-id", str(project), "--user-id", str(user)]
    runner = CliRunner()
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    claims = keys_for_state_dir(tmp_path).verify(plain.stdout.strip()).raw
    assert (
        claims["sub"] == str(user) and claims["role"] == "authenticated" and claims["aud"] == "authenticated"
    )
    granted = runner.invoke(app, [*args, "--role", "editor", "--grant", "--db-url", db.url])
    assert granted.exit_code == 0, granted.output
    again = runner.invoke(app, [*args, "--role", "admin", "--grant", "--db-url", db.url])
    assert again.exit_code == 0, again.output
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "select role from metrics.project_members where project_id = %s and user_id = %s", (project, user)
        ).fetchall()
    assert rows == [("admin",)]


# -- RPC ------------------------------------------------------------------------------------------------
def test_rpc_answers_the_same_as_the_sql_function(gateway: GatewayProcess, db: TestDatabase) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    token = gateway.user_token(user)
    with psycopg.connect(db.url, autocommit=True) as conn:
        add_member(conn, project, user, "editor")
    supa = client(gateway, token)
    accepted = (
        supa.schema("metrics")
        .rpc(
            "ingest",
            {"batch": batch(project, [counter("meshhook_webhook_requests_total", 3, {"outcome": "ok"})])},
        )
        .execute()
    )
    assert accepted.data["status"] == "accepted"
    with psycopg.connect(db.url, autocommit=True) as conn:
        merge_points(conn)  # the rollup pass, whatever the loop beside the gateway has done by now
    now = datetime.now(UTC)
    window = {"p_project_id": str(project), "p_metric": "meshhook_webhook_requests_total",
              "p_from": (now - timedelta(hours=1)).isoformat(), "p_to": (now + timedelta(hours=1)).isoformat(),
              "p_agg": "sum"}  # fmt: skip
    via_api = supa.schema("metrics").rpc("query", window).execute().data
    with psycopg.connect(db.url) as conn, as_caller(conn, user_claims(user)):
        row = conn.execute(
            "select coalesce(json_agg(q), '[]') from metrics.query(%(p_project_id)s, %(p_metric)s, %(p_from)s,"
            " %(p_to)s, p_agg => %(p_agg)s) q",
            window,
        ).fetchone()
    assert row is not None
    assert via_api == row[0]
    assert via_api and via_api[0]["value"] == 3
    # GET with Accept-Profile for the same stable function
    got = httpx.get(
        f"{gateway.url}/rest/v1/rpc/query",
        params=window,
        headers={"apikey": gateway.anon_key, "Authorization": f"Bearer {token}", "Accept-Profile": "metrics"},
    )
    assert got.status_code == 200 and got.json() == via_api


def test_rpc_as_anon_is_refused_with_the_data_api_error_shape(gateway: GatewayProcess) -> None:
    supa = client(gateway)
    with pytest.raises(APIError) as refused:
        supa.schema("metrics").rpc(
            "ingest", {"batch": batch(uuid.uuid4(), [counter("x_total", 1)])}
        ).execute()
    assert refused.value.code == "42501"
    response = rpc(gateway, "ingest", {"batch": batch(uuid.uuid4(), [counter("x_total", 1)])})
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message", "details", "hint"}
    assert response.json()["code"] == "42501"


def test_rpc_as_non_member_user_is_forbidden(gateway: GatewayProcess) -> None:
    response = rpc(
        gateway,
        "ingest",
        {"batch": batch(uuid.uuid4(), [counter("x_total", 1)])},
        token=gateway.user_token(uuid.uuid4()),
    )
    assert response.status_code == 403 and response.json()["code"] == "42501"


def test_rpc_bad_batch_is_400_with_the_function_message(gateway: GatewayProcess) -> None:
    response = rpc(gateway, "ingest", {"batch": {"nope": 1}}, token=gateway.service_key)
    assert response.status_code == 400
    assert response.json()["code"] == "22023" and "unknown field" in response.json()["message"]


def test_rpc_service_role_may_ingest(gateway: GatewayProcess) -> None:
    response = rpc(
        gateway, "ingest", {"batch": batch(uuid.uuid4(), [counter("x_total", 1)])}, token=gateway.service_key
    )
    assert response.status_code == 200 and response.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "code"),
    [
        pytest.param("nope", {"a": 1}, {}, 404, "PGRST202", id="unknown-function"),
        pytest.param("ingest", {"wrong": 1}, {}, 404, "PGRST202", id="unknown-argument"),
        pytest.param(
            "ingest", {"batch": {}}, {"Content-Profile": "secret"}, 406, "PGRST106", id="unexposed-schema"
        ),
        pytest.param("topic", {"p_project_id": "not-a-uuid"}, {}, 400, "22P02", id="bad-argument-type"),
    ],
)
def test_rpc_errors_follow_postgrest(
    gateway: GatewayProcess, name: str, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    response = rpc(gateway, name, body, token=gateway.service_key, **headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_rpc_rejects_malformed_bodies(gateway: GatewayProcess) -> None:
    for content in (b"{not json", b"[1, 2]"):
        response = httpx.post(
            f"{gateway.url}/rest/v1/rpc/topic",
            headers={"apikey": gateway.anon_key, "Content-Profile": "metrics"},
            content=content,
        )
        assert response.status_code == 400 and response.json()["code"] == "PGRST102"


def test_rpc_body_size_is_bounded(gateway: GatewayProcess) -> None:
    huge = b'{"batch": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    response = rpc_raw(gateway, "ingest", huge)
    assert response.status_code == 413 and response.json()["code"] == "PGRST413"
    assert gateway.alive()


def rpc_raw(gateway: GatewayProcess, name: str, content: bytes) -> httpx.Response:
    headers = {
        "apikey": gateway.anon_key,
        "Content-Profile": "metrics",
        "Authorization": f"Bearer {gateway.service_key}",
    }
    return httpx.post(f"{gateway.url}/rest/v1/rpc/{name}", headers=headers, content=content, timeout=60)


def test_rpc_arguments_are_data_not_sql(gateway: GatewayProcess) -> None:
    evil = "x'); drop table metrics.projects; --"
    response = rpc(gateway, "topic", {"p_project_id": evil}, token=gateway.service_key)
    assert response.status_code == 400
    assert rpc(gateway, "topic", {"p_project_id": str(uuid.uuid4())}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, None, id="no-apikey"),
        pytest.param({"apikey": "garbage"}, None, id="bad-apikey"),
        pytest.param({"apikey": "<anon>", "Authorization": "Bearer <expired>"}, "PGRST303", id="expired"),
        pytest.param(
            {"apikey": "<anon>", "Authorization": "Bearer <foreign>"}, "PGRST301", id="foreign-secret"
        ),
    ],
)
def test_bad_credentials_get_401(gateway: GatewayProcess, headers: dict[str, str], code: str | None) -> None:
    replace = {
        "<anon>": gateway.anon_key,
        "<expired>": gateway.user_token(uuid.uuid4(), expires_in=-5),
        "<foreign>": JwtKeys("y" * 40).user_token(uuid.uuid4()),
    }
    sent = {k: " ".join(replace.get(p, p) for p in v.split(" ")) for k, v in headers.items()}
    response = httpx.post(
        f"{gateway.url}/rest/v1/rpc/topic",
        headers={**sent, "Content-Profile": "metrics"},
        json={"p_project_id": str(uuid.uuid4())},
    )
    assert response.status_code == 401
    if code:
        assert response.json()["code"] == code


def test_table_endpoints_say_rpc_only(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/rest/v1/points", headers={"apikey": gateway.anon_key})
    assert response.status_code == 404 and response.json()["code"] == "PGRST205"
