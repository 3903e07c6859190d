"""Tokens: missing, expired, tampered, alg none, wrong audience → 401; other tenants → 403 or nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from tests.api.conftest import SECRET, Seed, World

REQS = "meshhook_webhook_requests_total"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def user_claims(user: uuid.UUID, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(user),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def bad_tokens(world: World) -> dict[str, str]:
    good = world.token(world.admin_a)
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(world.admin_b)
    return {
        "expired": jwt.encode(
            user_claims(world.admin_a, exp=int(time.time()) - 60), SECRET, algorithm="HS256"
        ),
        "tampered": f"{head}.{_b64(claims)}.{sig}",
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(user_claims(world.admin_a))}.",
        "wrong_secret": jwt.encode(
            user_claims(world.admin_a), "another-secret-" + "x" * 40, algorithm="HS256"
        ),
        "wrong_audience": jwt.encode(
            user_claims(world.admin_a, aud="someone-else"), SECRET, algorithm="HS256"
        ),
        "no_exp": jwt.encode(
            {k: v for k, v in user_claims(world.admin_a).items() if k != "exp"}, SECRET, "HS256"
        ),
        "superuser_role": jwt.encode(user_claims(world.admin_a, role="postgres"), SECRET, algorithm="HS256"),
        "hs512": jwt.encode(user_claims(world.admin_a), SECRET, algorithm="HS512"),
        "garbage": "not.a.jwt",
        "unknown_scrape_token": "mhm_" + "0" * 64,
    }


def endpoints(world: World, project: uuid.UUID) -> list[tuple[str, str, dict[str, Any]]]:
    pid = str(project)
    return [
        ("GET", "/api/metrics", {"params": {"project_id": pid, "metric": REQS}}),
        ("GET", "/api/metrics/series", {"params": {"project_id": pid}}),
        ("GET", "/api/metrics/scrape-tokens", {"params": {"project_id": pid}}),
        ("POST", "/api/metrics/scrape-tokens", {"json": {"project_id": pid, "name": "x"}}),
        ("DELETE", f"/api/metrics/scrape-tokens/{uuid.uuid4()}", {}),
        ("GET", "/api/metrics/ingest-tokens", {"params": {"project_id": pid}}),
        ("POST", "/api/metrics/ingest-tokens", {"json": {"project_id": pid, "name": "x"}}),
        ("DELETE", f"/api/metrics/ingest-tokens/{uuid.uuid4()}", {}),
        ("GET", "/api/metrics/histogram-boundaries", {"params": {"project_id": pid}}),
        (
            "PUT",
            "/api/metrics/histogram-boundaries",
            {"json": {"project_id": pid, "metric": "m", "boundaries": [1]}},
        ),
        ("DELETE", "/api/metrics/histogram-boundaries", {"params": {"project_id": pid, "metric": "m"}}),
        ("GET", "/metrics", {"params": {"project_id": pid}}),
    ]


def test_missing_and_invalid_tokens_get_401_everywhere(
    client: httpx.Client, world: World, seeded: Seed
) -> None:
    failures: list[tuple[object, ...]] = []
    for method, path, kwargs in endpoints(world, world.project_a):
        for name, token in [("missing", None), *bad_tokens(world).items()]:
            if name == "unknown_scrape_token" and path != "/metrics":
                continue
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.request(method, path, headers=headers, **kwargs)
            if response.status_code != 401 or response.json()["code"] != "unauthorized":
                failures.append((method, path, name, response.status_code, response.text[:200]))
            elif "bearer" not in response.headers.get("www-authenticate", "").lower():
                failures.append((method, path, name, "no WWW-Authenticate"))
    assert failures == []


def test_scrape_tokens_are_refused_outside_metrics(client: httpx.Client, world: World, seeded: Seed) -> None:
    created = client.post(
        "/api/metrics/scrape-tokens",
        json={"project_id": str(world.project_a)},
        headers=world.headers(world.admin_a),
    ).json()
    response = client.get(
        "/api/metrics/series",
        params={"project_id": str(world.project_a)},
        headers={"Authorization": f"Bearer {created['token']}"},
    )
    assert response.status_code == 401


def test_anon_key_gets_401(client: httpx.Client, world: World, seeded: Seed) -> None:
    anon = {"Authorization": f"Bearer {world.keys.anon_key}"}
    for method, path, kwargs in endpoints(world, world.project_a):
        response = client.request(method, path, headers=anon, **kwargs)
        assert response.status_code in (401, 403), (method, path, response.status_code, response.text)


@pytest.mark.parametrize("who", ["admin_a", "viewer_a", "outsider"])
def test_other_tenants_get_403_or_nothing(client: httpx.Client, world: World, seeded: Seed, who: str) -> None:
    """Every endpoint, asked about project B by someone who is not in B: 403, 404 or an empty answer."""
    headers = world.headers(getattr(world, who))
    for method, path, kwargs in endpoints(world, world.project_b):
        response = client.request(method, path, headers=headers, **kwargs)
        text = response.text
        assert "secret_b" not in text and "meshhook_b_only" not in text, (method, path, text[:300])
        if path == "/metrics":
            assert response.status_code == 200
            assert str(world.project_b) not in text
            continue
        assert response.status_code in (403, 404), (method, path, response.status_code, text[:300])


def test_b_admin_sees_b_and_not_a(client: httpx.Client, world: World, seeded: Seed) -> None:
    headers = world.headers(world.admin_b)
    mine = client.get(
        "/api/metrics/series", params={"project_id": str(world.project_b)}, headers=headers
    ).json()
    assert {m["name"] for m in mine["metrics"]} == {REQS, "meshhook_b_only_total"}
    theirs = client.get("/api/metrics/series", params={"project_id": str(world.project_a)}, headers=headers)
    assert theirs.status_code == 403
    exposed = client.get("/metrics", headers=headers).text
    assert "secret_b" in exposed and 'signature="valid"' not in exposed


def test_service_role_sees_every_project(client: httpx.Client, world: World, seeded: Seed) -> None:
    for project in (world.project_a, world.project_b):
        response = client.get(
            "/api/metrics/series", params={"project_id": str(project)}, headers=world.service_headers
        )
        assert response.status_code == 200 and response.json()["metrics"]
    missing = client.get(
        "/api/metrics/series", params={"project_id": str(uuid.uuid4())}, headers=world.service_headers
    )
    assert missing.status_code == 404
