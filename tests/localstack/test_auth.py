"""The gateway's sign-in (/auth/v1, like Supabase Auth) over HTTP, and the ``user add`` command."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from typer.testing import CliRunner

from meshhook_rt_metrics.cli import app
from tests.localstack.conftest import GatewayProcess
from tests.support import TestDatabase, batch, counter

PASSWORD = "correct horse battery"


def add_user(
    gateway: GatewayProcess,
    email: str,
    password: str = PASSWORD,
    project: uuid.UUID | None = None,
    role: str = "editor",
) -> Any:
    argv = [
        "user",
        "add",
        "--email",
        email,
        "--password",
        password,
        "--project",
        str(project or uuid.uuid4()),
    ]
    argv += ["--role", role, "--db-url", gateway.db.url, "--state-dir", str(gateway.state_dir)]
    return CliRunner().invoke(app, argv)


def new_user(gateway: GatewayProcess, project: uuid.UUID | None = None) -> str:
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    result = add_user(gateway, email, project=project)
    assert result.exit_code == 0, result.output
    return email


def headers(gateway: GatewayProcess, token: str | None = None, **extra: str) -> dict[str, str]:
    sent = {"apikey": gateway.anon_key, **extra}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return sent


def sign_in(gateway: GatewayProcess, email: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/auth/v1/token",
        params={"grant_type": "password"},
        headers=headers(gateway, **extra),
        json={"email": email, "password": password},
    )


def refresh(gateway: GatewayProcess, token: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/auth/v1/token",
        params={"grant_type": "refresh_token"},
        headers=headers(gateway),
        json={"refresh_token": token},
    )


def get_user(gateway: GatewayProcess, token: str | None) -> httpx.Response:
    return httpx.get(f"{gateway.url}/auth/v1/user", headers=headers(gateway, token))


def logout(gateway: GatewayProcess, token: str, scope: str = "global") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/auth/v1/logout", params={"scope": scope}, headers=headers(gateway, token)
    )


def ingest(gateway: GatewayProcess, project: uuid.UUID, token: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/rest/v1/rpc/ingest",
        headers=headers(gateway, token, **{"Content-Profile": "metrics"}),
        content=json.dumps({"batch": batch(project, [counter("signin_total", 1)])}),
    )


def test_sign_in_returns_a_supabase_session_whose_token_works_for_rpc(gateway: GatewayProcess) -> None:
    project = uuid.uuid4()
    email = new_user(gateway, project)
    before = int(time.time())
    response = sign_in(gateway, email.upper())  # emails are case-insensitive
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert before + 3600 <= body["expires_at"] <= int(time.time()) + 3600
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 20
    user = body["user"]
    assert user["email"] == email and user["aud"] == "authenticated" and user["role"] == "authenticated"
    assert user["app_metadata"] == {"provider": "email", "providers": ["email"]}
    assert user["user_metadata"] == {}
    assert user["created_at"].endswith("Z") and user["updated_at"].endswith("Z")
    claims = jwt.decode(
        body["access_token"], gateway.keys.secret, algorithms=["HS256"], audience="authenticated"
    )
    assert claims["sub"] == user["id"] and claims["role"] == "authenticated" and claims["email"] == email
    assert claims["aal"] == "aal1" and uuid.UUID(claims["session_id"])
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["app_metadata"] == user["app_metadata"] and claims["user_metadata"] == {}
    # the access token is the member's identity for the Data API (RLS through auth.uid())
    accepted = ingest(gateway, project, body["access_token"])
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text
    assert ingest(gateway, uuid.uuid4(), body["access_token"]).status_code == 403
    me = get_user(gateway, body["access_token"])
    assert me.status_code == 200 and me.json()["id"] == user["id"] and me.json()["email"] == email


def test_wrong_password_and_unknown_email_get_the_same_answer(gateway: GatewayProcess) -> None:
    email = new_user(gateway)
    wrong = sign_in(gateway, email, "not the password")
    unknown = sign_in(gateway, f"nobody-{uuid.uuid4().hex}@example.com")
    expected = {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"}
    assert (wrong.status_code, wrong.json()) == (400, expected)
    assert (unknown.status_code, unknown.json()) == (400, expected)
    # clients that name API version 2024-01-01 get GoTrue's newer shape
    versioned = sign_in(gateway, email, "not the password", **{"X-Supabase-Api-Version": "2024-01-01"})
    assert versioned.status_code == 400
    assert versioned.json() == {
        "code": "invalid_credentials",
        "error_code": "invalid_credentials",
        "message": "Invalid login credentials",
    }
    assert versioned.headers["x-supabase-api-version"] == "2024-01-01"


def test_refresh_tokens_rotate_and_a_used_one_is_refused(gateway: GatewayProcess, db: TestDatabase) -> None:
    email = new_user(gateway)
    first = sign_in(gateway, email).json()
    second = refresh(gateway, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["user"]["id"] == first["user"]["id"]
    old_claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    new_claims = jwt.decode(rotated["access_token"], options={"verify_signature": False})
    assert new_claims["session_id"] == old_claims["session_id"]
    third = refresh(gateway, rotated["refresh_token"])
    assert third.status_code == 200
    # the used token again: refused, and (reuse detection) its session ends
    replay = refresh(gateway, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error_code"] == "refresh_token_already_used"
    after = refresh(gateway, third.json()["refresh_token"])
    assert after.status_code == 400 and after.json()["error_code"] == "refresh_token_not_found"
    unknown = refresh(gateway, "not-a-refresh-token")
    assert unknown.status_code == 400 and unknown.json() == {
        "code": 400,
        "error_code": "refresh_token_not_found",
        "msg": "Invalid Refresh Token: Refresh Token Not Found",
    }
    # refresh tokens are stored hashed, never in clear
    with psycopg.connect(db.url) as conn:
        stored = [r[0] for r in conn.execute("select token from auth.refresh_tokens").fetchall()]
    assert first["refresh_token"] not in stored and all(len(t) == 64 for t in stored)


def test_sign_out_revokes_the_sessions(gateway: GatewayProcess) -> None:
    email = new_user(gateway)
    one, two, three = (sign_in(gateway, email).json() for _ in range(3))
    # others: every session but the caller's
    assert logout(gateway, one["access_token"], "others").status_code == 204
    assert refresh(gateway, two["refresh_token"]).json()["error_code"] == "refresh_token_not_found"
    assert get_user(gateway, three["access_token"]).json()["error_code"] == "session_not_found"
    kept = refresh(gateway, one["refresh_token"])
    assert kept.status_code == 200
    # local: the caller's session only
    four = sign_in(gateway, email).json()
    assert logout(gateway, kept.json()["access_token"], "local").status_code == 204
    assert refresh(gateway, kept.json()["refresh_token"]).status_code == 400
    # global: all of them
    five = refresh(gateway, four["refresh_token"]).json()
    assert logout(gateway, five["access_token"]).status_code == 204
    gone = refresh(gateway, five["refresh_token"])
    assert gone.status_code == 400 and gone.json()["error_code"] == "refresh_token_not_found"
    denied = get_user(gateway, five["access_token"])
    assert denied.status_code == 403 and denied.json()["error_code"] == "session_not_found"
    bad_scope = logout(gateway, sign_in(gateway, email).json()["access_token"], "everyone")
    assert bad_scope.status_code == 422 and bad_scope.json()["error_code"] == "validation_failed"


def test_user_endpoint_refuses_missing_expired_and_foreign_tokens(gateway: GatewayProcess) -> None:
    email = new_user(gateway)
    session = sign_in(gateway, email).json()
    missing = get_user(gateway, None)
    assert missing.status_code == 401 and missing.json()["error_code"] == "no_authorization"
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    expired = gateway.keys.sign({**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600})
    for token in (
        expired,
        jwt.encode(claims, "another-secret-of-at-least-32-characters!", algorithm="HS256"),
        "not-a-jwt",
        gateway.anon_key,
    ):
        refused = get_user(gateway, token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error_code"] == "bad_jwt"
    assert "expired" in get_user(gateway, expired).json()["msg"]
    # and an unknown user in a well-signed token
    stranger = get_user(gateway, gateway.user_token(uuid.uuid4()))
    assert stranger.status_code == 403 and stranger.json()["error_code"] == "user_not_found"


def test_requests_need_an_apikey_and_valid_input(gateway: GatewayProcess) -> None:
    url = f"{gateway.url}/auth/v1/token?grant_type=password"
    no_key = httpx.post(url, json={"email": "a@example.com", "password": PASSWORD})
    assert no_key.status_code == 401 and no_key.json()["error_code"] == "no_api_key"
    bad_key = httpx.post(url, headers={"apikey": "nope"}, json={"email": "a@example.com", "password": "x"})
    assert bad_key.status_code == 401 and bad_key.json()["error_code"] == "invalid_api_key"
    for body in ({"email": "a@example.com"}, {"password": PASSWORD}, {"email": 3, "password": PASSWORD}):
        invalid = httpx.post(url, headers=headers(gateway), json=body)
        assert invalid.status_code == 422 and invalid.json()["error_code"] == "validation_failed"
    not_json = httpx.post(url, headers=headers(gateway), content=b"{")
    assert not_json.status_code == 400 and not_json.json()["error_code"] == "bad_json"
    grant = httpx.post(f"{gateway.url}/auth/v1/token?grant_type=magic", headers=headers(gateway), json={})
    assert grant.status_code == 400 and grant.json()["error_code"] == "unsupported_grant_type"
    other = httpx.get(f"{gateway.url}/auth/v1/settings", headers=headers(gateway))
    assert other.status_code == 404 and other.json()["error_code"] == "not_found"


# -- the command --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("email", "password", "message"),
    [("not-an-email", PASSWORD, "invalid email"), ("ok@example.com", "short", "at least 8")],
)
def test_user_add_refuses_bad_input_and_changes_nothing(
    gateway: GatewayProcess, db: TestDatabase, email: str, password: str, message: str
) -> None:
    project = uuid.uuid4()
    result = add_user(gateway, email, password, project)
    assert result.exit_code == 1
    assert message in result.output
    with psycopg.connect(db.url) as conn:
        assert conn.execute("select count(*) from auth.users where email = %s", (email,)).fetchone() == (0,)
        assert conn.execute(
            "select count(*) from metrics.project_members where project_id = %s", (project,)
        ).fetchone() == (0,)


def test_user_add_updates_the_password_and_the_membership(gateway: GatewayProcess, db: TestDatabase) -> None:
    project = uuid.uuid4()
    email = f"again-{uuid.uuid4().hex[:8]}@example.com"
    first = add_user(gateway, email, project=project, role="viewer")
    assert first.exit_code == 0, first.output
    user_id = first.stdout.strip().splitlines()[-1]
    again = add_user(gateway, email, "a brand new password", project, role="admin")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == user_id
    assert sign_in(gateway, email).status_code == 400
    assert sign_in(gateway, email, "a brand new password").status_code == 200
    with psycopg.connect(db.url) as conn:
        row = conn.execute("select encrypted_password from auth.users where id = %s", (user_id,)).fetchone()
        roles = conn.execute(
            "select role from metrics.project_members where project_id = %s and user_id = %s",
            (project, user_id),
        ).fetchall()
    assert row is not None and row[0].startswith("$2b$10$") and "brand new" not in row[0]
    assert roles == [("admin",)]


def test_api_roles_cannot_read_the_auth_tables(gateway: GatewayProcess, db: TestDatabase) -> None:
    new_user(gateway)
    with psycopg.connect(db.url) as conn:
        for role in ("anon", "authenticated"):
            for table in ("auth.users", "auth.sessions", "auth.refresh_tokens"):
                with conn.transaction(force_rollback=True):
                    conn.execute(f"set local role {role}")
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(f"select * from {table}")


def test_the_demo_sign_ins_work_and_keep_the_two_projects_apart(
    gateway: GatewayProcess, db: TestDatabase
) -> None:
    from meshhook_rt_metrics.demo import DEMO_PROJECT
    from meshhook_rt_metrics.localstack.users import OTHER_PROJECT, ensure_demo_users

    users = ensure_demo_users(db.url)
    assert ensure_demo_users(db.url) == users  # again at every `up`: the same sign-ins
    admin, viewer = (sign_in(gateway, u.email, u.password) for u in users)
    assert admin.status_code == viewer.status_code == 200
    admin_token, viewer_token = admin.json()["access_token"], viewer.json()["access_token"]
    assert ingest(gateway, DEMO_PROJECT, admin_token).status_code == 200
    assert ingest(gateway, DEMO_PROJECT, viewer_token).status_code == 403  # not a member of the demo project
    assert ingest(gateway, OTHER_PROJECT, viewer_token).status_code == 403  # a viewer may not write


def test_the_access_token_lifetime_is_configurable_by_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MESHHOOK_METRICS_GATEWAY_ACCESS_TOKEN_LIFETIME`` (or ``--access-token-lifetime``) reaches the
    gateway's config, and sign-in/refresh answers carry it as ``expires_in`` and in the token's ``exp``."""
    import meshhook_rt_metrics.localstack.gateway.app as gateway_app
    from meshhook_rt_metrics.localstack.gateway.auth_api import AuthApi
    from meshhook_rt_metrics.localstack.gateway.config import ACCESS_TOKEN_LIFETIME_ENV, GatewayConfig

    seen: list[GatewayConfig] = []

    class NoServer:  # the command builds a uvicorn server and runs it: record the config instead
        def __init__(self, config: GatewayConfig, _level: str) -> None:
            seen.append(config)

        async def serve(self) -> None:
            return None

    monkeypatch.setattr(gateway_app, "build_server", NoServer)
    argv = ["gateway", "--state-dir", str(tmp_path), "--db-url", "postgresql://x@127.0.0.1:1/x"]
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert seen[-1].access_token_lifetime == 3600  # GoTrue's default
    monkeypatch.setenv(ACCESS_TOKEN_LIFETIME_ENV, "20")
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert seen[-1].access_token_lifetime == 20
    assert CliRunner().invoke(app, [*argv, "--access-token-lifetime", "45"]).exit_code == 0
    assert seen[-1].access_token_lifetime == 45  # the option wins over the environment
    monkeypatch.setenv(ACCESS_TOKEN_LIFETIME_ENV, "0")
    assert CliRunner().invoke(app, argv).exit_code != 0  # at least one second
    assert len(seen) == 3

    config = seen[1]
    user = {
        "id": uuid.uuid4(), "aud": "authenticated", "role": "authenticated", "email": "a@example.com",
        "encrypted_password": "", "email_confirmed_at": None, "last_sign_in_at": None,
        "raw_app_meta_data": {}, "raw_user_meta_data": {}, "created_at": None, "updated_at": None,
    }  # fmt: skip
    before = int(time.time())
    session = AuthApi(config)._session(user, uuid.uuid4(), "refresh")
    assert session["expires_in"] == 20
    assert before + 20 <= session["expires_at"] <= int(time.time()) + 20
    claims = jwt.decode(session["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 20 and claims["exp"] == session["expires_at"]
