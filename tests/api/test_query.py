"""GET /api/metrics and /api/metrics/series against the real database, as the caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from ddsketch import DDSketch

from tests.api.conftest import Seed, World

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


def test_sum_of_one_series_in_one_minute(client: httpx.Client, world: World, seeded: Seed) -> None:
    response = query(client, world, seeded, agg="sum", match='outcome="ok"')
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["project_id"] == str(world.project_a) and body["metric"] == REQS
    assert body["series"] == [
        {"labels": {"outcome": "ok", "signature": "valid"}, "points": [[seeded.minute, 60.0]]}
    ]


def test_rate_group_by_and_merge(client: httpx.Client, world: World, seeded: Seed) -> None:
    rate = query(client, world, seeded, agg="rate", match="outcome=ok").json()
    assert rate["series"][0]["points"] == [[seeded.minute, 1.0]]
    by_outcome = query(client, world, seeded, agg="sum", by="outcome").json()
    assert {s["labels"]["outcome"]: s["points"][0][1] for s in by_outcome["series"]} == {
        "ok": 60.0,
        "error": 6.0,
    }
    assert all(set(s["labels"]) == {"outcome"} for s in by_outcome["series"])
    merged = query(client, world, seeded, agg="sum", by="").json()
    assert merged["series"] == [{"labels": {}, "points": [[seeded.minute, 66.0]]}]


def test_regex_matchers(client: httpx.Client, world: World, seeded: Seed) -> None:
    errors = query(client, world, seeded, match='outcome=~"e.*"').json()["series"]
    assert [s["labels"]["outcome"] for s in errors] == ["error"]
    not_ok = query(client, world, seeded, match=["outcome!=ok", "signature=valid"]).json()["series"]
    assert [s["labels"]["outcome"] for s in not_ok] == ["error"]


def test_quantiles_within_sketch_accuracy(client: httpx.Client, world: World, seeded: Seed) -> None:
    oracle = DDSketch(relative_accuracy=0.01)
    for value in seeded.latencies:
        oracle.add(value)
    for agg, q in (("p50", 0.5), ("p99", 0.99), ("quantile(0.9)", 0.9)):
        body = query(client, world, seeded, metric="meshhook_workflow_step_duration_seconds", agg=agg).json()
        got = body["series"][0]["points"][0][1]
        assert got == pytest.approx(oracle.get_quantile_value(q), rel=0.021), agg
    counted = query(
        client, world, seeded, metric="meshhook_workflow_step_duration_seconds", agg="count"
    ).json()
    assert counted["series"][0]["points"][0][1] == len(seeded.latencies)


def test_default_range_and_step(client: httpx.Client, world: World, seeded: Seed) -> None:
    response = client.get(
        "/api/metrics",
        params={"project_id": str(world.project_a), "metric": REQS, "by": ""},
        headers=world.headers(world.viewer_a),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert sum(p[1] for p in body["series"][0]["points"]) == 66.0
    assert body["step"] is None


def test_unknown_metric_is_empty(client: httpx.Client, world: World, seeded: Seed) -> None:
    body = query(client, world, seeded, metric="meshhook_nothing_total").json()
    assert body["series"] == []


def test_series_discovery(client: httpx.Client, world: World, seeded: Seed) -> None:
    response = client.get(
        "/api/metrics/series",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.viewer_a),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    names = {m["name"]: m for m in body["metrics"]}
    assert set(names) == {REQS, "meshhook_workflow_step_duration_seconds", "meshhook_queue_messages"}
    assert names[REQS]["kind"] == "counter" and names[REQS]["series"] == 2
    assert body["labels"]["outcome"] == ["error", "ok"]
    assert "secret_b" not in str(body)
    one = client.get(
        "/api/metrics/series",
        params={"project_id": str(world.project_a), "metric": REQS, "match": "outcome=ok", "limit": 1},
        headers=world.headers(world.viewer_a),
    ).json()
    assert [s["labels"] for s in one["series"]] == [{"outcome": "ok", "signature": "valid"}]
    assert [m["name"] for m in one["metrics"]] == [REQS]
    assert one["truncated"] is False


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"project_id": "not-a-uuid"}, ["query", "project_id"]),
        ({"from": "yesterday-ish"}, ["query", "from"]),
        ({"step": "5 minutes"}, ["query", "step"]),
        ({"step": "999999999w"}, ["query", "step"]),  # past what a timedelta holds: was a 500
        ({"metric": "bad name"}, ["query", "metric"]),
        ({"match": "no operator"}, ["query", "match", 0]),
        ({"match": 'outcome=~"("'}, ["query", "match", 0]),  # metrics.matchers_problem: was a 400
        ({"by": "bad-label"}, ["query", "by", 0]),
        ({"agg": "median"}, ["query", "agg"]),
    ],
)
def test_invalid_parameters_are_422_with_field_paths(
    client: httpx.Client, world: World, seeded: Seed, params: dict[str, Any], loc: list[Any]
) -> None:
    response = query(client, world, seeded, **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    assert loc in [d["loc"] for d in body["details"]]


@pytest.mark.parametrize(
    "params",
    [
        {"step": "10s"},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    ],
)
def test_rules_of_the_data_plane_are_400(
    client: httpx.Client, world: World, seeded: Seed, params: dict[str, Any]
) -> None:
    response = query(client, world, seeded, **params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert response.json()["message"]


def test_nul_characters_are_400_not_500(client: httpx.Client, world: World, seeded: Seed) -> None:
    assert query(client, world, seeded, match="outcome=a\x00b").status_code == 400
    response = client.post(
        "/api/metrics/scrape-tokens",
        json={"project_id": str(world.project_a), "name": "a\u0000b"},
        headers=world.headers(world.admin_a),
    )
    assert response.status_code == 400, response.text


def test_unknown_query_parameters_are_rejected_not_ignored(
    client: httpx.Client, world: World, seeded: Seed
) -> None:
    """A typo such as ``stp=`` must not silently give a different answer."""
    response = query(client, world, seeded, agg="sum", stp="1m")
    assert response.status_code == 422
    body = response.json()
    assert "stp" in body["message"] and body["details"][0]["loc"] == ["query", "stp"]
