"""/api/metrics/ingest-tokens: admins create (shown once), list and revoke ingest tokens; a token writes its own
project through metrics.ingest_http and nothing else."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import World
from tests.support import batch, counter

NAME = "meshhook_http_ingest_total"


def new_token(
    client: httpx.Client, world: World, user: uuid.UUID, project: uuid.UUID, **extra: Any
) -> httpx.Response:
    return client.post(
        "/api/metrics/ingest-tokens", json={"project_id": str(project), **extra}, headers=world.headers(user)
    )


def ingest_with(conn: psycopg.Connection[Any], token: str, payload: dict[str, Any]) -> dict[str, Any]:
    """As the edge function does for an mhi_ bearer: anon calls metrics.ingest_http with the token."""
    with conn.transaction():
        conn.execute("set local role anon")
        conn.execute("select set_config('request.jwt.claims', '{\"role\": \"anon\"}', true)")
        row = conn.execute(
            "select metrics.ingest_http(%s::jsonb, %s)", (json.dumps(payload), token)
        ).fetchone()
    assert row is not None
    return dict(row[0])


def total(conn: psycopg.Connection[Any], project: uuid.UUID) -> float:
    row = conn.execute(
        "select coalesce(sum(p.sum), 0) from metrics.points p join metrics.series s on s.id = p.series_id"
        " where s.project_id = %s and s.name = %s",
        (project, NAME),
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_ingest_token_lifecycle(client: httpx.Client, world: World, conn: psycopg.Connection[Any]) -> None:
    created = new_token(client, world, world.admin_a, world.project_a, name="node workers")
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith("mhi_") and len(token) == 68 and body["token_prefix"] == token[:12]
    assert body["project_id"] == str(world.project_a) and body["name"] == "node workers"
    stored = conn.execute(
        "select token_hash from metrics.ingest_tokens where id = %s", (body["id"],)
    ).fetchone()
    assert stored is not None and token.encode() not in bytes(stored[0])

    listed = client.get(
        "/api/metrics/ingest-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.admin_a),
    )
    assert listed.status_code == 200
    tokens = listed.json()["tokens"]
    assert [t["name"] for t in tokens] == ["node workers"] and "token" not in tokens[0]
    assert tokens[0]["revoked_at"] is None and tokens[0]["created_by"] == str(world.admin_a)
    as_viewer = client.get(
        "/api/metrics/ingest-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.viewer_a),
    )
    assert as_viewer.status_code == 200 and as_viewer.json()["tokens"] == []
    assert new_token(client, world, world.viewer_a, world.project_a).status_code == 403
    assert new_token(client, world, world.admin_a, world.project_b).status_code == 403

    # the token writes A ...
    assert ingest_with(conn, token, batch(world.project_a, [counter(NAME, 5)]))["status"] == "accepted"
    assert total(conn, world.project_a) == 5
    # ... and never B
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ingest_with(conn, token, batch(world.project_b, [counter(NAME, 7)]))
    assert total(conn, world.project_b) == 0

    token_id = body["id"]
    for user in (world.viewer_a, world.admin_b):
        gone = client.delete(f"/api/metrics/ingest-tokens/{token_id}", headers=world.headers(user))
        assert gone.status_code == 404
    assert ingest_with(conn, token, batch(world.project_a, [counter(NAME, 1)]))["status"] == "accepted"
    revoked = client.delete(f"/api/metrics/ingest-tokens/{token_id}", headers=world.headers(world.admin_a))
    assert revoked.status_code == 204
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        ingest_with(conn, token, batch(world.project_a, [counter(NAME, 100)]))
    assert total(conn, world.project_a) == 6
    after = client.get(
        "/api/metrics/ingest-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.admin_a),
    ).json()["tokens"]
    assert after[0]["revoked_at"] is not None and after[0]["last_used_at"] is not None


def test_service_role_and_validation(client: httpx.Client, world: World) -> None:
    created = client.post(
        "/api/metrics/ingest-tokens", json={"project_id": str(world.project_b)}, headers=world.service_headers
    )
    assert created.status_code == 201 and created.json()["token"].startswith("mhi_")
    past = new_token(client, world, world.admin_a, world.project_a, expires_at="2020-01-01T00:00:00Z")
    assert past.status_code == 400
    extra = new_token(client, world, world.admin_a, world.project_a, scope="all")
    assert extra.status_code == 422
    long_name = new_token(client, world, world.admin_a, world.project_a, name="x" * 201)
    assert long_name.status_code == 422
    outsider = client.get(
        "/api/metrics/ingest-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.outsider),
    )
    assert outsider.status_code == 403
    assert (
        client.get("/api/metrics/ingest-tokens", params={"project_id": str(world.project_a)}).status_code
        == 401
    )


def test_ingest_tokens_read_nothing(client: httpx.Client, world: World) -> None:
    """An ingest token is for ingest only: the HTTP service's reads, the scrape and token routes refuse it."""
    token = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    pid = {"project_id": str(world.project_a)}
    for path, params in [
        ("/api/metrics", {**pid, "metric": NAME}),
        ("/api/metrics/series", pid),
        ("/api/metrics/ingest-tokens", pid),
        ("/metrics", {}),
    ]:
        assert client.get(path, params=params, headers=bearer).status_code == 401, path
