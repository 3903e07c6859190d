"""The alert worker's rule fields and PagerDuty receivers through /api/metrics/alerts, against the real
database as the caller (migration 20261205000100_metrics_alert_worker.sql): round trips, defaults, and every
bad input as a 422 at its field, whether the service or the data plane's rule (``metrics.*_problem``, the
check constraints) finds it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import World
from tests.api.test_alerts import BASE, created, locs, receiver_body, rule_body, unique

ROUTING_KEY = "R0UT1NGKEY-pd-do-not-leak-5c2e"
PAGERDUTY = "https://events.pagerduty.com/v2/enqueue"

NEW_FIELDS: dict[str, Any] = {
    "keep_firing_for": "10m",
    "resolve_threshold": 3.0,
    "labels": {"team": "ops", "tier": "1"},
    "no_data_after": "15m",
    "no_data_policy": "nodata",
    "group_wait": "30s",
    "group_interval": "10m",
    "repeat_interval": "1d",
}
DEFAULTS: dict[str, Any] = {
    "keep_firing_for": "0s",
    "resolve_threshold": None,
    "labels": {},
    "no_data_after": None,
    "no_data_policy": "ok",
    "group_wait": "0s",
    "group_interval": "5m",
    "repeat_interval": "4h",
}
TEMPLATES = {
    "summary": "{{ labels.route }} of {{ labels.team }} at {{ value }} over {{ threshold }}",
    "detail": "{{rule}} ({{ severity }}, {{ state }}): {{ labels.alertname }} {{ labels.severity }}",
}


def new_rule(
    client: httpx.Client, headers: dict[str, str], project: uuid.UUID, **extra: Any
) -> dict[str, Any]:
    return created(client.post(BASE, json=rule_body(project, **extra), headers=headers))


# -- rules ----------------------------------------------------------------------------------------------
def test_every_new_rule_field_round_trips(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    body = rule_body(
        world.project_a, by=["route"], op=">", threshold=5.0, annotations=TEMPLATES, **NEW_FIELDS
    )
    rule = created(client.post(BASE, json=body, headers=admin_a))
    for key, value in body.items():
        assert rule[key] == value, key
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json() == rule
    listed = client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a).json()["rules"]
    assert rule in listed
    # stored as the columns the alert worker reads (not just echoed)
    row = conn.execute(
        "select keep_firing_for, resolve_threshold, labels, no_data_after, no_data_policy, group_wait,"
        " group_interval, repeat_interval from metrics.alert_rules where id = %s",
        (rule["id"],),
    ).fetchone()
    assert row == (
        timedelta(minutes=10),
        3.0,
        {"team": "ops", "tier": "1"},
        timedelta(minutes=15),
        "nodata",
        timedelta(seconds=30),
        timedelta(minutes=10),
        timedelta(days=1),
    )


def test_new_rule_fields_default(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    rule = new_rule(client, admin_a, world.project_a)
    assert {k: rule[k] for k in DEFAULTS} == DEFAULTS


def test_patch_sets_and_clears_the_new_fields(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    rule = new_rule(client, admin_a, world.project_a, threshold=5.0)
    unchanged = {k: v for k, v in rule.items() if k not in (*NEW_FIELDS, "updated_at")}
    patched = client.patch(f"{BASE}/{rule['id']}", json=NEW_FIELDS, headers=admin_a)
    assert patched.status_code == 200, patched.text
    assert {k: patched.json()[k] for k in NEW_FIELDS} == NEW_FIELDS
    assert {k: v for k, v in patched.json().items() if k not in (*NEW_FIELDS, "updated_at")} == unchanged
    # null is a value for resolve_threshold (the threshold) and no_data_after (the default) only
    cleared = client.patch(
        f"{BASE}/{rule['id']}", json={"resolve_threshold": None, "no_data_after": None}, headers=admin_a
    )
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["resolve_threshold"], cleared.json()["no_data_after"]) == (None, None)
    assert cleared.json()["keep_firing_for"] == "10m"
    for field in (
        "keep_firing_for",
        "labels",
        "no_data_policy",
        "group_wait",
        "group_interval",
        "repeat_interval",
    ):
        assert locs(client.patch(f"{BASE}/{rule['id']}", json={field: None}, headers=admin_a)) == [
            ["body", field]
        ], field


RULE_CASES: list[tuple[dict[str, Any], list[str | int], str | None]] = [
    # resolve_threshold: the check constraint alert_rules_resolve_side_check is the rule
    ({"op": ">", "threshold": 5.0, "resolve_threshold": 6.0}, ["body", "resolve_threshold"], "resolving side"),
    ({"op": "<=", "threshold": 5.0, "resolve_threshold": 4.0}, ["body", "resolve_threshold"], "resolving side"),
    ({"op": "==", "threshold": 5.0, "resolve_threshold": 5.0}, ["body", "resolve_threshold"], "not with =="),
    ({"op": "!=", "threshold": 5.0, "resolve_threshold": 1.0}, ["body", "resolve_threshold"], None),
    ({"resolve_threshold": "3"}, ["body", "resolve_threshold"], None),
    # templates: metrics.template_names_problem, at the annotation's key
    ({"annotations": {"summary": "{{ foo }} happened"}}, ["body", "annotations", "summary"], "unknown template name 'foo'"),
    ({"by": ["route"], "annotations": {"summary": "on {{ labels.x }}"}}, ["body", "annotations", "summary"],
     "{{ labels.x }} is not a label of the alert"),
    ({"by": [], "annotations": {"ok": "{{ value }}", "summary": "{{ labels.route }}"}},
     ["body", "annotations", "summary"], "not a label of the alert"),
    ({"annotations": {"summary": "{{ value }"}}, ["body", "annotations", "summary"], "unbalanced"),
    # durations
    ({"keep_firing_for": "-5m"}, ["body", "keep_firing_for"], None),
    ({"keep_firing_for": "2d"}, ["body", "keep_firing_for"], "between 0s and 1d"),
    ({"for_duration": "-1m"}, ["body", "for_duration"], None),
    ({"no_data_after": "30s"}, ["body", "no_data_after"], "between 1m and 7d"),
    ({"no_data_after": "8d"}, ["body", "no_data_after"], None),
    ({"group_wait": "-1s"}, ["body", "group_wait"], None),
    ({"group_wait": "2h"}, ["body", "group_wait"], "between 0s and 1h"),
    ({"group_interval": "0s"}, ["body", "group_interval"], None),
    ({"repeat_interval": "30s"}, ["body", "repeat_interval"], None),
    ({"repeat_interval": "1.5h"}, ["body", "repeat_interval"], None),
    ({"repeat_interval": 3600}, ["body", "repeat_interval"], None),
    # policy and labels (metrics.annotations_problem is the rule of labels)
    ({"no_data_policy": "ignore"}, ["body", "no_data_policy"], None),
    ({"labels": {"bad key": "x"}}, ["body", "labels", "bad key", "[key]"], None),
    ({"labels": {"team": 1}}, ["body", "labels", "team"], None),
    ({"labels": {"team": "a\x00b"}}, ["body", "labels", "team"], None),
]  # fmt: skip


@pytest.mark.parametrize(("change", "loc", "words"), RULE_CASES, ids=[str(c)[:70] for c, _, _ in RULE_CASES])
def test_bad_rule_fields_are_422_at_their_path(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    change: dict[str, Any],
    loc: list[str | int],
    words: str | None,
) -> None:
    response = client.post(BASE, json=rule_body(world.project_a, **change), headers=admin_a)
    assert locs(response) == [loc]
    assert words is None or words in response.text, response.text
    # the same in a patch of a valid rule
    rule = new_rule(client, admin_a, world.project_a)
    patched = client.patch(f"{BASE}/{rule['id']}", json=change, headers=admin_a)
    assert locs(patched) == [loc]
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json() == rule


def test_templates_may_name_the_rules_own_labels_and_any_label_without_group_by(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    with_labels = new_rule(
        client, admin_a, world.project_a, by=["route"], labels={"team": "ops"}, annotations=TEMPLATES
    )
    assert with_labels["annotations"] == TEMPLATES
    # without group_by every label of a series may be there
    free = new_rule(client, admin_a, world.project_a, annotations={"summary": "{{ labels.anything }}"})
    assert free["by"] is None


def test_a_patch_is_checked_against_the_stored_rule(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    """A patch of one field can break what the others say: judged with the stored values."""
    rule = new_rule(
        client,
        admin_a,
        world.project_a,
        by=["route"],
        labels={"team": "ops"},
        annotations=TEMPLATES,
        threshold=5.0,
        resolve_threshold=3.0,
    )
    # templates name labels.route and labels.team: group_by and labels must keep them
    assert locs(client.patch(f"{BASE}/{rule['id']}", json={"by": ["host"]}, headers=admin_a)) == [
        ["body", "annotations", "summary"]
    ]
    assert locs(client.patch(f"{BASE}/{rule['id']}", json={"labels": {}}, headers=admin_a)) == [
        ["body", "annotations", "summary"]
    ]
    # resolve_threshold 3 is on the resolving side of > 5, not of > 2 or of <
    for change in ({"threshold": 2.0}, {"op": "<"}, {"op": "=="}):
        assert locs(client.patch(f"{BASE}/{rule['id']}", json=change, headers=admin_a)) == [
            ["body", "resolve_threshold"]
        ], change
    ok = client.patch(f"{BASE}/{rule['id']}", json={"op": "<", "resolve_threshold": 7.0}, headers=admin_a)
    assert ok.status_code == 200 and ok.json()["resolve_threshold"] == 7.0, ok.text
    assert client.patch(f"{BASE}/{rule['id']}", json={"by": None}, headers=admin_a).status_code == 200


# -- PagerDuty receivers --------------------------------------------------------------------------------
def test_pagerduty_receivers(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    texts: list[str] = []
    response = client.post(
        f"{BASE}/receivers",
        json={
            "project_id": str(world.project_a),
            "name": unique("pd"),
            "kind": "pagerduty",
            "secret": ROUTING_KEY,
        },
        headers=admin_a,
    )
    texts.append(response.text)
    receiver = created(response)
    assert (receiver["kind"], receiver["target"], receiver["has_secret"]) == ("pagerduty", PAGERDUTY, True)
    own = created(
        client.post(
            f"{BASE}/receivers",
            json=receiver_body(
                world.project_a,
                kind="pagerduty",
                target="https://pd.example.com/v2/enqueue",
                secret=ROUTING_KEY,
            ),
            headers=admin_a,
        )
    )
    assert own["target"] == "https://pd.example.com/v2/enqueue"
    for url in (f"{BASE}/receivers/{receiver['id']}", f"{BASE}/receivers?project_id={world.project_a}"):
        got = client.get(url, headers=admin_a)
        assert got.status_code == 200
        texts.append(got.text)
    renamed = client.patch(f"{BASE}/receivers/{receiver['id']}", json={"name": unique("pd")}, headers=admin_a)
    assert renamed.status_code == 200, renamed.text
    texts.append(renamed.text)
    assert all(ROUTING_KEY not in text for text in texts)

    # the routing key is required: not removable, needed when a receiver becomes a pagerduty one
    assert locs(
        client.patch(f"{BASE}/receivers/{receiver['id']}", json={"secret": None}, headers=admin_a)
    ) == [["body", "secret"]]
    hook = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    assert locs(
        client.patch(f"{BASE}/receivers/{hook['id']}", json={"kind": "pagerduty"}, headers=admin_a)
    ) == [["body", "secret"]]
    moved = client.patch(
        f"{BASE}/receivers/{hook['id']}", json={"kind": "pagerduty", "secret": ROUTING_KEY}, headers=admin_a
    )
    assert moved.status_code == 200 and moved.json()["kind"] == "pagerduty", moved.text
    assert ROUTING_KEY not in moved.text


DROP = object()  # the field left out
RECEIVER_CASES: list[tuple[dict[str, Any], list[str | int]]] = [
    ({"kind": "pagerduty", "target": DROP}, ["body", "secret"]),
    ({"kind": "pagerduty", "target": None}, ["body", "secret"]),
    ({"kind": "pagerduty"}, ["body", "secret"]),
    ({"kind": "pagerduty", "target": "ftp://pd.example.com/", "secret": ROUTING_KEY}, ["body", "target"]),
    ({"kind": "pagerduty", "secret": ""}, ["body", "secret"]),
    ({"target": DROP}, ["body", "target"]),
    ({"target": None}, ["body", "target"]),
    ({"kind": "email", "target": DROP}, ["body", "target"]),
]


@pytest.mark.parametrize(("change", "loc"), RECEIVER_CASES, ids=[str(c)[:60] for c, _ in RECEIVER_CASES])
def test_bad_pagerduty_receivers_are_422(
    client: httpx.Client, world: World, admin_a: dict[str, str], change: dict[str, Any], loc: list[str | int]
) -> None:
    body = {k: v for k, v in {**receiver_body(world.project_a), **change}.items() if v is not DROP}
    assert locs(client.post(f"{BASE}/receivers", json=body, headers=admin_a)) == [loc]
