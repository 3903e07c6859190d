"""Asymmetric tokens (Supabase's newer signing keys) verified against a JWKS URL."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from meshhook_rt_metrics.api.auth import TokenVerifier, UnauthorizedError
from tests.api.conftest import SECRET


@pytest.fixture(scope="module")
def keys() -> tuple[Any, Any]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), rsa.generate_private_key(
        public_exponent=65537, key_size=2048
    )


@pytest.fixture(scope="module")
def jwks_url(keys: tuple[Any, Any]) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys[0].public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    server.shutdown()


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "exp": now + 60,
        **extra,
    }


def test_jwks_tokens(keys: tuple[Any, Any], jwks_url: str) -> None:
    verifier = TokenVerifier(SECRET, jwks_url=jwks_url, audience="authenticated")
    good = jwt.encode(claims(), keys[0], algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(good).role == "authenticated"
    assert verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).role == "authenticated"
    refused = {
        "other key": jwt.encode(claims(), keys[1], algorithm="RS256", headers={"kid": "k1"}),
        "expired": jwt.encode(
            claims(exp=int(time.time()) - 5), keys[0], algorithm="RS256", headers={"kid": "k1"}
        ),
        "unknown kid": jwt.encode(claims(), keys[0], algorithm="RS256", headers={"kid": "nope"}),
        "audience": jwt.encode(claims(aud="x"), keys[0], algorithm="RS256", headers={"kid": "k1"}),
    }
    for name, token in refused.items():
        with pytest.raises(UnauthorizedError):
            verifier.verify(token)
            pytest.fail(name)


def test_without_jwks_asymmetric_tokens_are_refused(keys: tuple[Any, Any]) -> None:
    token = jwt.encode(claims(), keys[0], algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(UnauthorizedError):
        TokenVerifier(SECRET).verify(token)
