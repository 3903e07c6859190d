"""The cost limits of the query endpoints (issue #15): steps per request, points per answer, a rate limit
per caller, and label matchers checked by ``metrics.matchers_problem`` on every endpoint that takes them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from meshhook_rt_metrics.api.auth import Caller
from meshhook_rt_metrics.api.rate_limit import RateLimiter, caller_key
from tests.api.conftest import ApiServer, Seed, World
from tests.support import TestDatabase, add_member, roll_up

REQS = "meshhook_webhook_requests_total"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def query(client: httpx.Client, world: World, seed: Seed, **params: Any) -> httpx.Response:
    base: dict[str, Any] = {
        "project_id": str(world.project_a),
        "metric": REQS,
        "from": iso(seed.minute),
        "to": iso(seed.minute + 60),
        "step": "60s",
    }
    headers = params.pop("headers", None) or world.headers(world.admin_a)
    base.update(params)
    return client.get("/api/metrics", params=base, headers=headers)


@pytest.fixture(scope="module")
def limited(db: TestDatabase) -> Iterator[httpx.Client]:
    """A service with tiny limits: 1 point per answer, 2 queries per caller at once and (practically) none
    after."""
    server = ApiServer(db, max_query_points=1, query_rate_per_second=0.001, query_rate_burst=2)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    server.stop()


# -- steps and points --------------------------------------------------------------------------------------
def test_too_many_steps_is_422_naming_step_before_any_query(
    client: httpx.Client, world: World, seeded: Seed
) -> None:
    """400 days at one minute would be 576,000 steps: refused up front (the default cap is 11,000)."""
    response = query(client, world, seeded, **{"from": iso(seeded.minute - 400 * 86400), "step": "1m"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    (detail,) = body["details"]
    assert detail["loc"] == ["query", "step"] and detail["type"] == "too_many_steps"
    assert detail["message"].startswith("576001 steps over the range, at most 11000")
    # at the cap itself: answered
    ok = query(client, world, seeded, **{"from": iso(seeded.minute - 10999 * 60), "step": "1m"})
    assert ok.status_code == 200, ok.text


def test_too_many_points_is_422(limited: httpx.Client, world: World, seeded: Seed) -> None:
    # each query as another caller: the rate limit of the fixture is not this test's subject
    one = query(limited, world, seeded, match="outcome=ok", headers=world.headers(world.admin_a))
    assert one.status_code == 200, one.text  # 1 series x 1 step: at the cap
    assert [len(s["points"]) for s in one.json()["series"]] == [1]
    body = query(limited, world, seeded, by="outcome", headers=world.headers(world.viewer_a)).json()
    assert body["code"] == "too_many_points", body
    assert body["message"].startswith("the answer would have 2 points, at most 1 per request;")
    assert "narrow the matchers or raise the step" in body["message"]
    outsider = query(limited, world, seeded, headers=world.headers(world.outsider))
    assert outsider.status_code == 403  # not a member: refused before anything is counted


def test_too_many_points_also_from_the_cache(
    db: TestDatabase, world: World, seeded: Seed, conn: psycopg.Connection[Any]
) -> None:
    """The count is of the answer, whether PostgreSQL gave it whole (cache off), or it was read and kept (a
    miss), or joined from kept and new steps (a hit)."""
    conn.execute("update metrics.maintenance_state set five_minute_watermark = '-infinity'")
    roll_up(conn)
    for cache_mb, statuses in ((0, ["off", "off"]), (64, ["miss", "hit"])):
        server = ApiServer(db, max_query_points=1, query_cache_mb=cache_mb)
        server.start()
        seen = []
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in statuses:
                    params = {"from": iso(seeded.minute - 1800), "to": iso(time.time())}
                    response = query(http, world, seeded, by="outcome", step="5m", **params)
                    assert response.status_code == 422, response.text
                    assert response.json()["code"] == "too_many_points"
                    seen.append(response.headers.get("x-metrics-cache"))
        finally:
            server.stop()
        assert seen == statuses


# -- the rate limit ---------------------------------------------------------------------------------------
def test_rate_limiter_buckets() -> None:
    now = [100.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0], max_keys=2)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # empty: one token in half a second
    assert limiter.acquire("b") == 0.0  # another caller has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0
    now[0] += 100
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refills to the burst, not beyond
    limiter.acquire("c")
    assert len(limiter) == 2  # at most max_keys buckets
    assert RateLimiter(0, 1).acquire("a") == 0.0  # 0: no limit


def test_rate_limit_keys() -> None:
    user = uuid.uuid4()
    assert caller_key(Caller({"role": "authenticated", "sub": str(user)})) == f"user:{user}"
    assert caller_key(Caller({"role": "service_role"})) == "role:service_role"
    assert caller_key(Caller({"role": "service_role", "sub": "x"})) == "role:service_role"


def test_rate_limit_per_caller_is_429_with_retry_after(
    limited: httpx.Client, world: World, conn: psycopg.Connection[Any], seeded: Seed
) -> None:
    user = uuid.uuid4()
    add_member(conn, world.project_a, user, "viewer")
    headers = world.headers(user)
    params = {"project_id": str(world.project_a)}
    assert limited.get("/api/metrics/series", params=params, headers=headers).status_code == 200
    assert query(limited, world, seeded, match="outcome=ok", headers=headers).status_code == 200
    refused = limited.get("/metrics", params=params, headers=headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    for again in (
        query(limited, world, seeded, match="outcome=ok", headers=world.headers(user)),  # a new token
        limited.get("/api/metrics/series", params=params, headers=headers),
    ):
        assert again.status_code == 429 and again.json()["code"] == "rate_limited"
    # another user is not affected; configuration endpoints are not limited
    other = uuid.uuid4()
    add_member(conn, world.project_a, other, "viewer")
    assert limited.get("/api/metrics/series", params=params, headers=world.headers(other)).status_code == 200
    assert limited.get("/api/metrics/scrape-tokens", params=params, headers=headers).status_code == 200


def test_scrape_tokens_are_not_rate_limited(limited: httpx.Client, world: World, seeded: Seed) -> None:
    created = limited.post(
        "/api/metrics/scrape-tokens",
        json={"project_id": str(world.project_b), "name": "limits"},
        headers=world.headers(world.admin_b),
    )
    assert created.status_code == 201, created.text
    auth = {"Authorization": f"Bearer {created.json()['token']}"}
    assert [limited.get("/metrics", headers=auth).status_code for _ in range(5)] == [200] * 5


# -- matchers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("match", "message"),
    [
        ('outcome=~"("', "invalid regex"),
        ("outcome=~" + "a" * 300, "regex longer than 256 characters"),
    ],
)
@pytest.mark.parametrize("path", ["/api/metrics", "/api/metrics/series"])
def test_invalid_matchers_are_422_on_every_endpoint(
    client: httpx.Client, world: World, seeded: Seed, path: str, match: str, message: str
) -> None:
    """``metrics.matchers_problem`` decides on both endpoints: a regex that does not compile or is over the
    configured length is a 422 at its index (list_series used to run it: a 400, or nothing at all when no
    series reached the regex)."""
    params: dict[str, Any] = {"project_id": str(world.project_a), "match": ["outcome=ok", match]}
    if path == "/api/metrics":
        params.update(metric=REQS, step="60s", **{"from": iso(seeded.minute), "to": iso(seeded.minute + 60)})
    response = client.get(path, params=params, headers=world.headers(world.admin_a))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    (detail,) = body["details"]
    assert detail["loc"] == ["query", "match", 1]
    assert message in detail["message"]
