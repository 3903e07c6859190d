"""POST /api/metrics/alerts/{rule_id}/preview against real ingested data, as the caller: a counter with a
three-minute burst in the middle of twenty quiet minutes, replayed with the worker's state machine
(metrics.preview_alert_rule). Nothing is written; bad ranges are 422 at their query parameter.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import World
from tests.api.test_alerts import BASE, created, locs, rule_body
from tests.support import batch, counter, ingest

METRIC = "preview_requests_total"
BURST = (9, 10, 11)  # minutes after T0 with 100 requests each; the others have 1


@pytest.fixture(scope="module")
def t0(world: World, conn: psycopg.Connection[Any]) -> datetime:
    """The first of 20 minutes of data, 25 minutes ago: one point per minute (ts in the past, its own
    batch), a burst in minutes 9 to 11."""
    start = int(time.time() // 60 * 60) - 25 * 60
    for minute in range(20):
        value = 100 if minute in BURST else 1
        ts = start + minute * 60 + 30
        ingest(
            conn,
            batch(
                world.project_a, [counter(METRIC, value, {"route": "/hook"}, ts=ts)], batch_id=f"preview-{ts}"
            ),
        )
    return datetime.fromtimestamp(start, UTC)


def at(t0: datetime, minutes: int) -> str:
    return (t0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def preview(
    client: httpx.Client, headers: dict[str, str], rule: dict[str, Any], t0: datetime, **params: Any
) -> httpx.Response:
    query = {"from": t0.isoformat(), "to": (t0 + timedelta(minutes=22)).isoformat(), "step": "1m", **params}
    return client.post(f"{BASE}/{rule['id']}/preview", params=query, headers=headers)


def new_rule(client: httpx.Client, headers: dict[str, str], world: World, **extra: Any) -> dict[str, Any]:
    body = rule_body(world.project_a, metric=METRIC, agg="sum", window="1m", op=">", threshold=50.0, **extra)
    return created(client.post(BASE, json=body, headers=headers))


def test_fires_at_the_burst_and_resolves_after(
    client: httpx.Client, world: World, admin_a: dict[str, str], t0: datetime, conn: psycopg.Connection[Any]
) -> None:
    rule = new_rule(client, admin_a, world)
    response = preview(client, world.headers(world.viewer_a), rule, t0)  # members preview
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["rule_id"], body["step"]) == (rule["id"], "1m")
    assert (body["from"], body["to"]) == (at(t0, 0), at(t0, 22))
    labels = {"route": "/hook", "alertname": rule["name"], "severity": "warning"}
    # the evaluation at minute m reads the window [m - 1m, m): the burst's first minute is read at T0 + 10
    assert [(t["at"], t["state"], t["previous"], t["value"], t["labels"]) for t in body["transitions"]] == [
        (at(t0, 10), "firing", "inactive", 100.0, labels),
        (at(t0, 13), "resolved", "firing", 1.0, labels),
    ]
    assert len({t["fingerprint"] for t in body["transitions"]}) == 1
    # nothing written
    row = conn.execute(
        "select (select count(*) from metrics.alert_instances where rule_id = %s),"
        " (select count(*) from metrics.alert_events where rule_id = %s)",
        (rule["id"], rule["id"]),
    ).fetchone()
    assert row == (0, 0)


def test_a_for_duration_longer_than_the_burst_never_fires(
    client: httpx.Client, world: World, admin_a: dict[str, str], t0: datetime
) -> None:
    rule = new_rule(client, admin_a, world, for_duration="5m")
    response = preview(client, admin_a, rule, t0)
    assert response.status_code == 200, response.text
    transitions = [(t["at"], t["state"]) for t in response.json()["transitions"]]
    assert transitions == [(at(t0, 10), "pending"), (at(t0, 13), "inactive")]
    # held for 2 minutes: a for_duration of 2m fires at the burst's last minute
    short = new_rule(client, admin_a, world, for_duration="2m")
    states = [(t["at"], t["state"]) for t in preview(client, admin_a, short, t0).json()["transitions"]]
    assert states == [(at(t0, 10), "pending"), (at(t0, 12), "firing"), (at(t0, 13), "resolved")]


def test_keep_firing_for_and_hysteresis(
    client: httpx.Client, world: World, admin_a: dict[str, str], t0: datetime
) -> None:
    kept = new_rule(client, admin_a, world, keep_firing_for="2m")
    states = [(t["at"], t["state"]) for t in preview(client, admin_a, kept, t0).json()["transitions"]]
    assert states == [(at(t0, 10), "firing"), (at(t0, 13), "recovering"), (at(t0, 15), "resolved")]
    # resolves only below 0.5: the minutes of 1 keep it firing, until the counter is quiet after T0 + 20 (a
    # quiet counter's sum is 0, not "no data")
    sticky = new_rule(client, admin_a, world, resolve_threshold=0.5)
    states = [
        (t["at"], t["state"], t["value"]) for t in preview(client, admin_a, sticky, t0).json()["transitions"]
    ]
    assert states == [(at(t0, 10), "firing", 100.0), (at(t0, 21), "resolved", 0.0)]


def test_the_default_range_and_step(
    client: httpx.Client, world: World, admin_a: dict[str, str], t0: datetime
) -> None:
    rule = new_rule(client, admin_a, world)
    response = client.post(f"{BASE}/{rule['id']}/preview", headers=admin_a)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["step"] is None
    span = datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"])
    assert span == timedelta(hours=1)
    assert [t["state"] for t in body["transitions"]] == ["firing", "resolved"]


@pytest.mark.parametrize(
    ("params", "loc", "words"),
    [
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, ["query", "from"], "before to"),
        ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, ["query", "from"], None),
        (
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-09T00:00:00Z", "step": "1h"},
            ["query", "to"],
            "7 days",
        ),
        (
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "step": "30s"},
            ["query", "step"],
            "1 minute",
        ),
        (
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-07T00:00:00Z", "step": "1m"},
            ["query", "step"],
            "1,440",
        ),
        ({"step": "0"}, ["query", "step"], None),
        ({"step": "5 minutes"}, ["query", "step"], None),
        ({"step": "999999999w"}, ["query", "step"], None),
        ({"from": "yesterday"}, ["query", "from"], None),
        ({"to": "0001-01-01T00:30:00Z"}, ["query", "to"], "give from"),
        ({"stp": "1m"}, ["query", "stp"], None),
    ],
)
def test_bad_ranges_are_422(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    params: dict[str, Any],
    loc: list[str | int],
    words: str | None,
) -> None:
    rule = new_rule(client, admin_a, world)
    response = client.post(f"{BASE}/{rule['id']}/preview", params=params, headers=admin_a)
    assert locs(response) == [loc]
    assert words is None or words in response.text, response.text


def test_unknown_and_other_tenants_rules_are_404(
    client: httpx.Client, world: World, admin_a: dict[str, str], t0: datetime
) -> None:
    rule = new_rule(client, admin_a, world)
    for headers in (world.headers(world.admin_b), world.headers(world.outsider)):
        response = preview(client, headers, rule, t0)
        assert response.status_code == 404 and rule["name"] not in response.text, response.text
    assert preview(client, admin_a, {"id": uuid.uuid4()}, t0).status_code == 404
    assert client.post(f"{BASE}/not-a-uuid/preview", headers=admin_a).status_code == 404
    assert client.get(f"{BASE}/{rule['id']}/preview", headers=admin_a).status_code == 405
