"""The gateway's sign-in with the official clients: supabase-py (auth + postgrest) and supabase-js (Node)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import jwt
import pytest
from supabase_auth.errors import AuthApiError

from supabase import ClientOptions, create_client
from tests.localstack.conftest import GatewayProcess
from tests.localstack.test_auth import PASSWORD, new_user
from tests.localstack.test_supabase_js import run_node_suite
from tests.support import batch, counter


def client(gateway: GatewayProcess) -> Any:
    options = ClientOptions(auto_refresh_token=False, persist_session=True)
    return create_client(gateway.url, gateway.anon_key, options)


def test_supabase_py_sign_in_refresh_and_sign_out(gateway: GatewayProcess) -> None:
    project = uuid.uuid4()
    email = new_user(gateway, project)
    supa = client(gateway)
    signed_in = supa.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    session = signed_in.session
    assert session is not None and signed_in.user is not None
    assert signed_in.user.email == email and signed_in.user.aud == "authenticated"
    assert session.token_type == "bearer" and session.expires_in == 3600
    # the signed-in client calls the Data API as that user
    accepted = (
        supa.schema("metrics")
        .rpc("ingest", {"batch": batch(project, [counter("signin_py_total", 2)])})
        .execute()
    )
    assert accepted.data["status"] == "accepted"
    me = supa.auth.get_user()
    assert me is not None and me.user.id == signed_in.user.id

    refreshed = supa.auth.refresh_session()
    assert refreshed.session is not None
    assert refreshed.session.refresh_token != session.refresh_token
    with pytest.raises(AuthApiError) as used:
        client(gateway).auth.refresh_session(session.refresh_token)
    assert str(used.value.code) == "refresh_token_already_used" and used.value.status == 400


def test_supabase_py_sign_out_revokes_refresh(gateway: GatewayProcess) -> None:
    email = new_user(gateway)
    supa = client(gateway)
    session = supa.auth.sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert session is not None
    supa.auth.sign_out()
    assert supa.auth.get_session() is None
    with pytest.raises(AuthApiError) as refused:
        client(gateway).auth.refresh_session(session.refresh_token)
    assert str(refused.value.code) == "refresh_token_not_found"  # not in its ErrorCode Literal
    # the old access token no longer names a live session (auth-js maps this code to AuthSessionMissingError)
    with pytest.raises(AuthApiError) as missing:
        client(gateway).auth.get_user(session.access_token)
    assert missing.value.code == "session_not_found" and missing.value.status == 403


def test_supabase_py_errors(gateway: GatewayProcess) -> None:
    email = new_user(gateway)
    for address, password in ((email, "wrong password"), (f"ghost-{uuid.uuid4().hex}@example.com", PASSWORD)):
        with pytest.raises(AuthApiError) as refused:
            client(gateway).auth.sign_in_with_password({"email": address, "password": password})
        assert refused.value.code == "invalid_credentials" and refused.value.status == 400
        assert refused.value.message == "Invalid login credentials"
    session = client(gateway).auth.sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert session is not None
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    expired = gateway.keys.sign({**claims, "exp": int(time.time()) - 60})
    with pytest.raises(AuthApiError) as bad:
        client(gateway).auth.get_user(expired)
    assert bad.value.code == "bad_jwt" and bad.value.status == 403


def test_supabase_js_sign_in_refresh_and_sign_out(gateway: GatewayProcess) -> None:
    project = uuid.uuid4()
    email = new_user(gateway, project)
    env = {
        **os.environ,
        "GATEWAY_URL": gateway.url,
        "ANON_KEY": gateway.anon_key,
        "EMAIL": email,
        "PASSWORD": PASSWORD,
        "PROJECT_ID": str(project),
    }
    run_node_suite("auth.test.mjs", env, timeout=120)
