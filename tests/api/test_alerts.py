"""Alert configuration endpoints (/api/metrics/alerts...) against the real database, as the caller.

Project A: admin, editor, viewer; project B: its admin. Row-level security (migration
20261127000500_metrics_alerting.sql) decides; these tests check what reaches the HTTP caller.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from meshhook_rt_metrics.db.session import as_caller
from tests.api.conftest import World
from tests.support import TestDatabase, add_member, user_claims

BASE = "/api/metrics/alerts"
SECRET = "whsec-7f3a9c1e-do-not-leak-0b6d"
SLACK = "https://hooks.slack.com/services/T0SECRET/B0SECRET/XyZsEcReTtOkEn"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rule_body(project: uuid.UUID, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": str(project),
        "name": unique("rule"),
        "metric": "meshhook_webhook_requests_total",
        "op": ">",
        "threshold": 0.5,
    }
    body.update(extra)
    return body


def receiver_body(project: uuid.UUID, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": str(project),
        "name": unique("hook"),
        "kind": "webhook",
        "target": "https://ops.example.com/alerts",
    }
    body.update(extra)
    return body


def in_(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def editor_a(world: World, conn: psycopg.Connection[Any]) -> uuid.UUID:
    user = uuid.uuid4()
    add_member(conn, world.project_a, user, "editor")
    return user


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def locs(response: httpx.Response) -> list[list[str | int]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    return [d["loc"] for d in body["details"]]


# -- rules ----------------------------------------------------------------------------------------------
def test_rule_crud_round_trip(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    receiver = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    body = rule_body(
        world.project_a,
        description="5xx rate of webhooks",
        matchers=[{"label": "outcome", "op": "=~", "value": "err.*"}],
        agg="p99.9",
        by=["route"],
        window="10m",
        op=">=",
        threshold=2.5,
        for_duration="90s",
        severity="critical",
        annotations={"summary": "errors", "runbook": "https://wiki.example/errors"},
        receiver_ids=[receiver["id"]],
        enabled=False,
    )
    rule = created(client.post(BASE, json=body, headers=admin_a))
    for key, value in body.items():
        assert rule[key] == value, key
    assert rule["created_by"] == str(world.admin_a)
    assert rule["created_at"] == rule["updated_at"]

    got = client.get(f"{BASE}/{rule['id']}", headers=admin_a)
    assert got.status_code == 200 and got.json() == rule
    listed = client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a)
    assert listed.status_code == 200
    assert rule in listed.json()["rules"]

    deleted = client.delete(f"{BASE}/{rule['id']}", headers=admin_a)
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).status_code == 404
    assert client.delete(f"{BASE}/{rule['id']}", headers=admin_a).status_code == 404
    listed = client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a).json()["rules"]
    assert rule["id"] not in [r["id"] for r in listed]


def test_rule_defaults(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    assert {k: rule[k] for k in ("description", "matchers", "agg", "by", "window", "for_duration")} == {
        "description": "",
        "matchers": [],
        "agg": "sum",
        "by": None,
        "window": "5m",
        "for_duration": "0s",
    }
    assert (rule["severity"], rule["annotations"], rule["receiver_ids"], rule["enabled"]) == (
        "warning",
        {},
        [],
        True,
    )


def test_patch_changes_only_the_given_fields(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    receiver = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    rule = created(
        client.post(
            BASE,
            json=rule_body(world.project_a, by=["route"], window="1h", receiver_ids=[receiver["id"]]),
            headers=admin_a,
        )
    )
    unchanged = {k: v for k, v in rule.items() if k not in ("threshold", "updated_at")}

    patched = client.patch(f"{BASE}/{rule['id']}", json={"threshold": 7}, headers=admin_a)
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["threshold"] == 7.0
    assert {k: v for k, v in after.items() if k not in ("threshold", "updated_at")} == unchanged
    assert ts(after["updated_at"]) > ts(rule["updated_at"])

    # null is a value for "by" only; receivers are replaced as a whole
    after = client.patch(
        f"{BASE}/{rule['id']}", json={"by": None, "receiver_ids": []}, headers=admin_a
    ).json()
    assert (after["by"], after["receiver_ids"], after["window"], after["threshold"]) == (None, [], "1h", 7.0)
    assert locs(client.patch(f"{BASE}/{rule['id']}", json={"name": None}, headers=admin_a)) == [
        ["body", "name"]
    ]
    # an empty patch is refused (a write that changes nothing would skip the write check)
    assert locs(client.patch(f"{BASE}/{rule['id']}", json={}, headers=admin_a)) == [["body"]]
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json() == after


def test_rule_names_are_unique_per_project(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    body = rule_body(world.project_a)
    created(client.post(BASE, json=body, headers=admin_a))
    again = client.post(BASE, json=body, headers=admin_a)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    # the same name in another project is fine
    created(
        client.post(
            BASE, json={**body, "project_id": str(world.project_b)}, headers=world.headers(world.admin_b)
        )
    )


RULE_CASES: list[tuple[dict[str, Any], list[str | int]]] = [
    ({"op": "=>"}, ["body", "op"]),
    ({"agg": "p999x"}, ["body", "agg"]),
    ({"agg": "median"}, ["body", "agg"]),
    ({"window": "0s"}, ["body", "window"]),
    ({"window": "2d"}, ["body", "window"]),
    ({"window": "5 minutes"}, ["body", "window"]),
    ({"for_duration": "25h"}, ["body", "for_duration"]),
    ({"threshold": "1"}, ["body", "threshold"]),
    ({"severity": "fatal"}, ["body", "severity"]),
    ({"metric": "__reserved"}, ["body", "metric"]),
    ({"metric": "1abc"}, ["body", "metric"]),
    ({"name": ""}, ["body", "name"]),
    ({"by": ["route", "route"]}, ["body", "by"]),
    ({"by": ["bad label"]}, ["body", "by", 0]),
    ({"matchers": [{"label": "a", "op": "~", "value": "x"}]}, ["body", "matchers", 0, "op"]),
    # rules of the data plane, answered by its SQL functions
    ({"matchers": [{"label": "a", "op": "=", "value": "x"}, {"label": "b", "op": "=~", "value": "("}]},
     ["body", "matchers", 1, "value"]),
    ({"annotations": {"bad key": "x"}}, ["body", "annotations", "bad key", "[key]"]),
    ({"annotations": {"a": 1}}, ["body", "annotations", "a"]),
    ({"receiver_ids": ["not-a-uuid"]}, ["body", "receiver_ids", 0]),
    ({"surprise": 1}, ["body", "surprise"]),
]  # fmt: skip


@pytest.mark.parametrize(("change", "loc"), RULE_CASES, ids=[str(c) for c, _ in RULE_CASES])
def test_invalid_rules_are_422_with_field_paths(
    client: httpx.Client, world: World, admin_a: dict[str, str], change: dict[str, Any], loc: list[str | int]
) -> None:
    body = rule_body(world.project_a, **change)
    assert loc in locs(client.post(BASE, json=body, headers=admin_a))
    # the same field in a patch (project_id and unknown fields aside)
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    patched = client.patch(f"{BASE}/{rule['id']}", json=change, headers=admin_a)
    assert loc in locs(patched)


def test_nan_and_infinite_thresholds_are_422(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    # JSON has no NaN, but Python's parser accepts the token: it must not reach the database
    for token in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = (
            f'{{"project_id": "{world.project_a}", "name": "{unique("nan")}", '
            f'"metric": "m", "op": ">", "threshold": {token}}}'
        )
        response = client.post(BASE, content=raw, headers={**admin_a, "content-type": "application/json"})
        assert ["body", "threshold"] in locs(response), token


def test_empty_patches_are_422_for_everyone(
    client: httpx.Client, world: World, admin_a: dict[str, str], editor_a: uuid.UUID
) -> None:
    """A patch that changes nothing is refused before any write: a viewer must not get a 200 for it."""
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    receiver = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    for user in (world.viewer_a, editor_a, world.admin_a):
        headers = world.headers(user)
        assert locs(client.patch(f"{BASE}/{rule['id']}", json={}, headers=headers)) == [["body"]]
        assert locs(client.patch(f"{BASE}/receivers/{receiver['id']}", json={}, headers=headers)) == [
            ["body"]
        ]
    # and a viewer's patch with a field is 403, as before
    viewer = world.headers(world.viewer_a)
    assert client.patch(f"{BASE}/{rule['id']}", json={"enabled": True}, headers=viewer).status_code == 403
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json() == rule


LONG_REGEX = "(" + "|".join(f"route{i:03d}" for i in range(20)) + ")"  # 179 characters


def test_a_lower_regex_limit_does_not_freeze_rules_and_silences(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    """Stored rules and silences stay renamable, disableable and endable after regex_max_length drops;
    new matchers meet the new limit."""
    matchers = [{"label": "route", "op": "=~", "value": LONG_REGEX}]
    rule = created(client.post(BASE, json=rule_body(world.project_a, matchers=matchers), headers=admin_a))
    silence = created(
        client.post(
            f"{BASE}/silences",
            json={"project_id": str(world.project_a), "matchers": matchers, "ends_at": in_(60)},
            headers=admin_a,
        )
    )
    conn.execute("update metrics.config set regex_max_length = 100")
    try:
        renamed = client.patch(f"{BASE}/{rule['id']}", json={"name": unique("renamed")}, headers=admin_a)
        assert renamed.status_code == 200, renamed.text
        disabled = client.patch(f"{BASE}/{rule['id']}", json={"enabled": False}, headers=admin_a)
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False, disabled.text
        # the same matchers sent again (an editor that sends the whole rule) are not new
        same = client.patch(
            f"{BASE}/{rule['id']}", json={"matchers": matchers, "threshold": 3}, headers=admin_a
        )
        assert same.status_code == 200 and same.json()["matchers"] == matchers, same.text
        assert client.delete(f"{BASE}/silences/{silence['id']}", headers=admin_a).status_code == 204
        ended = client.get(f"{BASE}/silences/{silence['id']}", headers=admin_a).json()
        assert ended["state"] == "expired"

        # new or changed matchers meet today's limit: through the API (422) and directly (the trigger)
        new_rule = client.post(BASE, json=rule_body(world.project_a, matchers=matchers), headers=admin_a)
        assert locs(new_rule) == [["body", "matchers", 0, "value"]]
        assert "regex longer than 100 characters" in new_rule.text
        changed = [{"label": "route", "op": "=~", "value": LONG_REGEX + "?"}]
        assert locs(client.patch(f"{BASE}/{rule['id']}", json={"matchers": changed}, headers=admin_a)) == [
            ["body", "matchers", 0, "value"]
        ]
        new_silence = client.post(
            f"{BASE}/silences",
            json={"project_id": str(world.project_a), "matchers": matchers, "ends_at": in_(60)},
            headers=admin_a,
        )
        assert locs(new_silence) == [["body", "matchers", 0, "value"]]
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            conn.execute(
                "insert into metrics.alert_rules (project_id, name, metric, op, threshold, matchers)"
                " values (%s, %s, 'm', '>', 1, %s)",
                (world.project_a, unique("direct"), Jsonb(matchers)),
            )
        assert refused.value.diag.constraint_name == "alert_rules_matchers_check"
        assert refused.value.diag.message_primary == "matchers: [0].value: regex longer than 100 characters"
    finally:
        conn.execute("update metrics.config set regex_max_length = 256")


NUL_AND_CONTROL_CASES: list[tuple[str, dict[str, Any], list[str | int]]] = [
    ("rule", {"name": "a\x00b"}, ["body", "name"]),
    ("rule", {"name": "deploy\r\nBcc: x@example.com"}, ["body", "name"]),
    ("rule", {"name": "tab\there"}, ["body", "name"]),
    ("rule", {"name": "next\u0085line"}, ["body", "name"]),
    ("rule", {"name": "line\u2028sep"}, ["body", "name"]),
    ("rule", {"description": "a\x00b"}, ["body", "description"]),
    ("rule", {"matchers": [{"label": "a", "op": "=", "value": "x\x00"}]}, ["body", "matchers", 0, "value"]),
    ("rule", {"annotations": {"a\x00": "x"}}, ["body", "annotations", "a\x00", "[key]"]),
    ("rule", {"annotations": {"summary\r\n": "x"}}, ["body", "annotations", "summary\r\n", "[key]"]),
    ("rule", {"annotations": {"summary": "x\x00"}}, ["body", "annotations", "summary"]),
    ("receiver", {"name": "hook\nX-Injected: 1"}, ["body", "name"]),
    ("receiver", {"name": "a\x00"}, ["body", "name"]),
    ("receiver", {"secret": "s\x00s"}, ["body", "secret"]),
    ("receiver", {"target": "https://ops.example.com/\x00"}, ["body", "target"]),
    ("silence", {"comment": "a\x00b"}, ["body", "comment"]),
    (
        "silence",
        {"matchers": [{"label": "a", "op": "=~", "value": "\x00"}]},
        ["body", "matchers", 0, "value"],
    ),
]


@pytest.mark.parametrize(
    ("what", "change", "loc"),
    NUL_AND_CONTROL_CASES,
    ids=[f"{w}-{c!r}"[:60] for w, c, _ in NUL_AND_CONTROL_CASES],
)
def test_nul_and_control_characters_are_422_with_field_paths(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    what: str,
    change: dict[str, Any],
    loc: list[str | int],
) -> None:
    """NUL anywhere (PostgreSQL text cannot hold it) and control characters in names and annotation keys
    (they reach e-mail subjects and chat messages) are 422 at their field, not a 400 from the driver."""
    path, body = {
        "rule": (BASE, rule_body(world.project_a)),
        "receiver": (f"{BASE}/receivers", receiver_body(world.project_a)),
        "silence": (f"{BASE}/silences", {"project_id": str(world.project_a), "ends_at": in_(60)}),
    }[what]
    assert loc in locs(client.post(path, json={**body, **change}, headers=admin_a))
    if what != "silence":  # the same in a patch
        target = created(client.post(path, json=body, headers=admin_a))
        assert loc in locs(client.patch(f"{path}/{target['id']}", json=change, headers=admin_a))


def test_control_characters_in_names_are_refused_by_the_database_too(
    world: World, conn: psycopg.Connection[Any]
) -> None:
    for statement, params in (
        (
            "insert into metrics.alert_rules (project_id, name, metric, op, threshold) values (%s, %s, 'm', '>', 1)",
            (world.project_a, "a\r\nb"),
        ),
        (
            "insert into metrics.alert_receivers (project_id, name, kind, target)"
            " values (%s, %s, 'webhook', 'https://a.example/')",
            (world.project_a, "x\u2028y"),
        ),
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(statement, params)


# -- receivers ------------------------------------------------------------------------------------------
def test_receiver_crud_and_the_secret_never_leaves(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    bodies: list[str] = []
    response = client.post(
        f"{BASE}/receivers", json=receiver_body(world.project_a, secret=SECRET), headers=admin_a
    )
    bodies.append(response.text)
    receiver = created(response)
    assert receiver["has_secret"] is True and "secret" not in receiver
    assert receiver["kind"] == "webhook" and receiver["target"] == "https://ops.example.com/alerts"
    rid = receiver["id"]
    # stored, so the assertions below are not vacuous
    row = conn.execute("select secret from metrics.alert_receivers where id = %s", (rid,)).fetchone()
    assert row == (SECRET,)

    for response in (
        client.get(f"{BASE}/receivers/{rid}", headers=admin_a),
        client.get(f"{BASE}/receivers", params={"project_id": str(world.project_a)}, headers=admin_a),
        client.patch(f"{BASE}/receivers/{rid}", json={"name": unique("renamed")}, headers=admin_a),
    ):
        assert response.status_code == 200, response.text
        bodies.append(response.text)
    patched = client.patch(
        f"{BASE}/receivers/{rid}", json={"target": "http://10.0.0.7:8080/hook"}, headers=admin_a
    )
    bodies.append(patched.text)
    assert patched.json()["target"] == "http://10.0.0.7:8080/hook" and patched.json()["has_secret"] is True
    rotated = client.patch(f"{BASE}/receivers/{rid}", json={"secret": SECRET[::-1]}, headers=admin_a)
    bodies.append(rotated.text)
    cleared = client.patch(f"{BASE}/receivers/{rid}", json={"secret": None}, headers=admin_a)
    bodies.append(cleared.text)
    assert cleared.json()["has_secret"] is False
    assert conn.execute("select secret from metrics.alert_receivers where id = %s", (rid,)).fetchone() == (
        None,
    )

    assert all(SECRET not in text and SECRET[::-1] not in text for text in bodies)

    assert client.delete(f"{BASE}/receivers/{rid}", headers=admin_a).status_code == 204
    assert client.get(f"{BASE}/receivers/{rid}", headers=admin_a).status_code == 404
    assert client.delete(f"{BASE}/receivers/{rid}", headers=admin_a).status_code == 404


def test_slack_urls_are_masked(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    response = client.post(
        f"{BASE}/receivers", json=receiver_body(world.project_a, kind="slack", target=SLACK), headers=admin_a
    )
    receiver = created(response)
    assert receiver["target"] == "https://hooks.slack.com/…"
    texts = [
        response.text,
        client.get(f"{BASE}/receivers/{receiver['id']}", headers=admin_a).text,
        client.get(f"{BASE}/receivers", params={"project_id": str(world.project_a)}, headers=admin_a).text,
        client.patch(f"{BASE}/receivers/{receiver['id']}", json={"name": unique("s")}, headers=admin_a).text,
    ]
    assert all("T0SECRET" not in text and "XyZsEcReTtOkEn" not in text for text in texts)
    assert all("hooks.slack.com/…" in text for text in texts)


def test_incoming_webhook_urls_are_masked_whatever_the_kind(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    """The mask follows the URL's host, not the kind: a Slack URL saved as a webhook is masked, and
    changing a Slack receiver's kind does not reveal its URL."""
    slack = created(
        client.post(
            f"{BASE}/receivers",
            json=receiver_body(world.project_a, kind="slack", target=SLACK),
            headers=admin_a,
        )
    )
    texts = [client.patch(f"{BASE}/receivers/{slack['id']}", json={"kind": "webhook"}, headers=admin_a).text]
    as_webhook = client.post(
        f"{BASE}/receivers",
        json=receiver_body(world.project_a, kind="webhook", target=SLACK),
        headers=admin_a,
    )
    texts.append(as_webhook.text)
    assert created(as_webhook)["target"] == "https://hooks.slack.com/…"
    upper = SLACK.replace("hooks.slack.com", "HOOKS.Slack.com.")
    texts.append(
        client.post(
            f"{BASE}/receivers", json=receiver_body(world.project_a, target=upper), headers=admin_a
        ).text
    )
    texts.append(client.get(f"{BASE}/receivers/{slack['id']}", headers=admin_a).text)
    texts.append(
        client.get(f"{BASE}/receivers", params={"project_id": str(world.project_a)}, headers=admin_a).text
    )
    assert all("T0SECRET" not in text and "XyZsEcReTtOkEn" not in text for text in texts), texts
    assert client.get(f"{BASE}/receivers/{slack['id']}", headers=admin_a).json()["kind"] == "webhook"
    # other incoming-webhook hosts whose path is the credential
    for url in (
        "https://discord.com/api/webhooks/123/T0SECRET",
        "https://contoso.webhook.office.com/webhookb2/T0SECRET",
        "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k&token=T0SECRET",
    ):
        receiver = created(
            client.post(f"{BASE}/receivers", json=receiver_body(world.project_a, target=url), headers=admin_a)
        )
        assert "T0SECRET" not in receiver["target"] and receiver["target"].endswith("/…"), receiver
    # an ordinary webhook is shown as it is
    plain = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    assert plain["target"] == "https://ops.example.com/alerts"


RECEIVER_CASES: list[tuple[dict[str, Any], list[str | int]]] = [
    ({"kind": "pager"}, ["body", "kind"]),
    ({"kind": "slack", "target": "http://hooks.slack.com/services/T/B/X"}, ["body", "target"]),
    ({"target": "ftp://ops.example.com/"}, ["body", "target"]),
    ({"target": "https://user:pw@ops.example.com/"}, ["body", "target"]),
    ({"kind": "email", "target": "not-an-address"}, ["body", "target"]),
    ({"kind": "email", "target": "https://ops.example.com/"}, ["body", "target"]),
    ({"secret": ""}, ["body", "secret"]),
    ({"name": "x" * 201}, ["body", "name"]),
    ({"target": "https://ops.example.com:65536/hook"}, ["body", "target"]),
    ({"target": "https://ops.example.com:99999"}, ["body", "target"]),
    ({"kind": "alertmanager", "target": "http://am:0"}, ["body", "target"]),
    ({"kind": "slack", "target": "https://hooks.slack.com:70000/services/T/B/X"}, ["body", "target"]),
]


@pytest.mark.parametrize(("change", "loc"), RECEIVER_CASES, ids=[str(c)[:60] for c, _ in RECEIVER_CASES])
def test_invalid_receivers_are_422_with_field_paths(
    client: httpx.Client, world: World, admin_a: dict[str, str], change: dict[str, Any], loc: list[str | int]
) -> None:
    assert loc in locs(
        client.post(f"{BASE}/receivers", json=receiver_body(world.project_a, **change), headers=admin_a)
    )


def test_ports_up_to_65535_are_accepted(client: httpx.Client, world: World, admin_a: dict[str, str]) -> None:
    for target in ("http://am:1", "https://ops.example.com:65535/hook", "http://am:9093"):
        receiver = created(
            client.post(
                f"{BASE}/receivers", json=receiver_body(world.project_a, target=target), headers=admin_a
            )
        )
        assert receiver["target"] == target
    receiver = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    patched = client.patch(
        f"{BASE}/receivers/{receiver['id']}",
        json={"target": "https://ops.example.com:65536/"},
        headers=admin_a,
    )
    assert locs(patched) == [["body", "target"]] and "port" in patched.text


def test_receiver_patch_checks_the_target_against_the_kind(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    receiver = created(
        client.post(
            f"{BASE}/receivers", json=receiver_body(world.project_a, target="http://am:9093"), headers=admin_a
        )
    )
    # http is fine for a webhook, not for Slack: changing only the kind is checked against the stored target
    assert locs(
        client.patch(f"{BASE}/receivers/{receiver['id']}", json={"kind": "slack"}, headers=admin_a)
    ) == [["body", "target"]]
    ok = client.patch(f"{BASE}/receivers/{receiver['id']}", json={"kind": "alertmanager"}, headers=admin_a)
    assert ok.status_code == 200 and ok.json()["kind"] == "alertmanager"


def test_non_admins_do_not_see_receivers(
    client: httpx.Client, world: World, admin_a: dict[str, str], editor_a: uuid.UUID
) -> None:
    receiver = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    for user in (world.viewer_a, editor_a):
        headers = world.headers(user)
        listed = client.get(f"{BASE}/receivers", params={"project_id": str(world.project_a)}, headers=headers)
        assert listed.status_code == 200 and listed.json() == {"receivers": []}
        assert client.get(f"{BASE}/receivers/{receiver['id']}", headers=headers).status_code == 404
        patch = client.patch(f"{BASE}/receivers/{receiver['id']}", json={"name": "x"}, headers=headers)
        assert patch.status_code == 404
        assert client.delete(f"{BASE}/receivers/{receiver['id']}", headers=headers).status_code == 404
        post = client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=headers)
        assert post.status_code == 403, post.text
    # still there; an editor may link it by id (rules are editors' business), without seeing its target
    assert client.get(f"{BASE}/receivers/{receiver['id']}", headers=admin_a).status_code == 200
    rule = created(
        client.post(
            BASE,
            json=rule_body(world.project_a, receiver_ids=[receiver["id"]]),
            headers=world.headers(editor_a),
        )
    )
    assert rule["receiver_ids"] == [receiver["id"]]


# -- silences -------------------------------------------------------------------------------------------
def test_silence_crud(
    client: httpx.Client, world: World, admin_a: dict[str, str], editor_a: uuid.UUID
) -> None:
    headers = world.headers(editor_a)
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=headers))
    body = {
        "project_id": str(world.project_a),
        "rule_id": rule["id"],
        "matchers": [{"label": "route", "op": "=", "value": "/api/hooks/[slug]"}],
        "ends_at": in_(60),
        "comment": "deploy",
    }
    silence = created(client.post(f"{BASE}/silences", json=body, headers=headers))
    assert silence["state"] == "active" and silence["rule_id"] == rule["id"]
    assert silence["matchers"] == body["matchers"] and silence["comment"] == "deploy"
    assert silence["created_by"] == str(editor_a)
    sid = silence["id"]
    assert client.get(f"{BASE}/silences/{sid}", headers=headers).json() == silence

    def listed(active: str | None) -> list[str]:
        params = {"project_id": str(world.project_a)} | ({"active": active} if active else {})
        response = client.get(f"{BASE}/silences", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["silences"]]

    assert sid in listed(None) and sid in listed("true") and sid not in listed("false")
    assert client.delete(f"{BASE}/silences/{sid}", headers=headers).status_code == 204
    ended = client.get(f"{BASE}/silences/{sid}", headers=headers).json()
    assert ended["state"] == "expired" and ts(ended["ends_at"]) < ts(body["ends_at"])
    assert sid in listed(None) and sid not in listed("true") and sid in listed("false")
    assert client.delete(f"{BASE}/silences/{sid}", headers=headers).status_code == 204  # already over

    # one that has not started yet is pending, and ending it deletes it
    later = created(
        client.post(
            f"{BASE}/silences",
            json={"project_id": str(world.project_a), "starts_at": in_(60), "ends_at": in_(120)},
            headers=admin_a,
        )
    )
    assert later["state"] == "pending" and later["rule_id"] is None
    assert client.delete(f"{BASE}/silences/{later['id']}", headers=admin_a).status_code == 204
    assert client.get(f"{BASE}/silences/{later['id']}", headers=admin_a).status_code == 404

    # deleting the rule takes its silences along
    other = created(client.post(f"{BASE}/silences", json={**body, "ends_at": in_(30)}, headers=headers))
    assert client.delete(f"{BASE}/{rule['id']}", headers=headers).status_code == 204
    assert client.get(f"{BASE}/silences/{other['id']}", headers=headers).status_code == 404


def test_silence_start_defaults_to_the_database_clock(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    """Without starts_at the column default (the database's now()) applies, not the API host's clock:
    starts_at is then exactly created_at (both now() of the inserting transaction)."""
    silence = created(
        client.post(
            f"{BASE}/silences", json={"project_id": str(world.project_a), "ends_at": in_(60)}, headers=admin_a
        )
    )
    assert silence["starts_at"] == silence["created_at"] and silence["state"] == "active"


def test_ending_silences_needs_the_editor_role_in_every_state(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    """A viewer's DELETE is 403 even when it would be a no-op (an expired silence)."""
    now = datetime.now(UTC)
    expired = conn.execute(
        "insert into metrics.alert_silences (project_id, starts_at, ends_at) values (%s, %s, %s) returning id",
        (world.project_a, now - timedelta(hours=2), now - timedelta(hours=1)),
    ).fetchone()
    assert expired is not None
    pending = created(
        client.post(
            f"{BASE}/silences",
            json={"project_id": str(world.project_a), "starts_at": in_(60), "ends_at": in_(120)},
            headers=admin_a,
        )
    )
    viewer = world.headers(world.viewer_a)
    for sid in (expired[0], pending["id"]):
        response = client.delete(f"{BASE}/silences/{sid}", headers=viewer)
        assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
    assert client.get(f"{BASE}/silences/{pending['id']}", headers=admin_a).json()["state"] == "pending"
    # an editor's end of an expired silence is still a no-op 204
    assert client.delete(f"{BASE}/silences/{expired[0]}", headers=admin_a).status_code == 204


@pytest.mark.parametrize("state", ["active", "pending"])
def test_concurrent_ends_of_a_silence_agree(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    editor_a: uuid.UUID,
    db: TestDatabase,
    conn: psycopg.Connection[Any],
    state: str,
) -> None:
    """Two editors end the same silence at once: the second waits for the first and both succeed."""
    body = {"project_id": str(world.project_a), "ends_at": in_(120)}
    if state == "pending":
        body["starts_at"] = in_(60)
    sid = created(client.post(f"{BASE}/silences", json=body, headers=admin_a))["id"]
    claims = user_claims(editor_a)
    outcome: dict[str, Any] = {}
    with (
        psycopg.connect(db.url, autocommit=True) as first,
        psycopg.connect(db.url, autocommit=True) as second,
    ):

        def end_second() -> None:
            try:
                with as_caller(second, claims):
                    outcome["second"] = second.execute(
                        "select metrics.end_alert_silence(%s)", (sid,)
                    ).fetchone()
            except psycopg.Error as exc:
                outcome["second"] = exc.sqlstate

        thread = threading.Thread(target=end_second)
        with as_caller(first, claims):
            assert first.execute("select metrics.end_alert_silence(%s)", (sid,)).fetchone() == (True,)
            thread.start()
            # the second call is blocked on the first one's row lock before the first commits
            deadline = time.monotonic() + 10
            while True:
                row = conn.execute(
                    "select wait_event_type from pg_stat_activity where pid = %s", (second.info.backend_pid,)
                ).fetchone()
                if row and row[0] == "Lock":
                    break
                assert time.monotonic() < deadline and thread.is_alive(), outcome
                time.sleep(0.02)
        thread.join(timeout=10)
    assert outcome["second"] == (True,)
    got = client.get(f"{BASE}/silences/{sid}", headers=admin_a)
    if state == "pending":
        assert got.status_code == 404
    else:
        assert got.json()["state"] == "expired"


SILENCE_CASES: list[tuple[dict[str, Any], list[str | int]]] = [
    ({"starts_at": in_(60), "ends_at": in_(30)}, ["body", "ends_at"]),
    ({"ends_at": in_(-5), "starts_at": in_(-10)}, ["body", "ends_at"]),
    ({"ends_at": in_(91 * 24 * 60)}, ["body", "ends_at"]),
    ({"ends_at": "tomorrow"}, ["body", "ends_at"]),
    ({"ends_at": 1893456000}, ["body", "ends_at"]),
    ({"matchers": [{"label": "a", "op": "=~", "value": "(("}]}, ["body", "matchers", 0, "value"]),
    ({"comment": "c" * 2001}, ["body", "comment"]),
    ({"rule_id": str(uuid.uuid4())}, ["body", "rule_id"]),
    # beyond what every client can read back (year 10000 would break listing for everyone)
    ({"starts_at": "9500-01-01T00:00:00Z", "ends_at": "9500-01-02T00:00:00Z"}, ["body", "starts_at"]),
]


@pytest.mark.parametrize(("change", "loc"), SILENCE_CASES, ids=[str(c)[:60] for c, _ in SILENCE_CASES])
def test_invalid_silences_are_422_with_field_paths(
    client: httpx.Client, world: World, admin_a: dict[str, str], change: dict[str, Any], loc: list[str | int]
) -> None:
    body = {"project_id": str(world.project_a), "ends_at": in_(60), **change}
    assert loc in locs(client.post(f"{BASE}/silences", json=body, headers=admin_a))


# -- roles ---------------------------------------------------------------------------------------------
def test_viewer_reads_but_gets_403_on_writes(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    silence = created(
        client.post(
            f"{BASE}/silences", json={"project_id": str(world.project_a), "ends_at": in_(60)}, headers=admin_a
        )
    )
    viewer = world.headers(world.viewer_a)
    assert client.get(f"{BASE}/{rule['id']}", headers=viewer).json() == rule
    assert client.get(f"{BASE}/silences/{silence['id']}", headers=viewer).status_code == 200
    writes = [
        client.post(BASE, json=rule_body(world.project_a), headers=viewer),
        client.patch(f"{BASE}/{rule['id']}", json={"threshold": 1}, headers=viewer),
        client.patch(f"{BASE}/{rule['id']}", json={"receiver_ids": []}, headers=viewer),
        client.delete(f"{BASE}/{rule['id']}", headers=viewer),
        client.post(
            f"{BASE}/silences", json={"project_id": str(world.project_a), "ends_at": in_(5)}, headers=viewer
        ),
        client.delete(f"{BASE}/silences/{silence['id']}", headers=viewer),
        client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=viewer),
    ]
    assert [w.status_code for w in writes] == [403] * len(writes), [w.text for w in writes]
    assert all(w.json()["code"] == "forbidden" for w in writes)
    # nothing changed
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json() == rule
    assert client.get(f"{BASE}/silences/{silence['id']}", headers=admin_a).json()["state"] == "active"


# -- tenancy -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def b_objects(client: httpx.Client, world: World, conn: psycopg.Connection[Any]) -> dict[str, str]:
    """A rule, receiver, silence and history event of project B."""
    headers = world.headers(world.admin_b)
    receiver = created(
        client.post(f"{BASE}/receivers", json=receiver_body(world.project_b, secret=SECRET), headers=headers)
    )
    rule = created(
        client.post(BASE, json=rule_body(world.project_b, receiver_ids=[receiver["id"]]), headers=headers)
    )
    silence = created(
        client.post(
            f"{BASE}/silences",
            json={"project_id": str(world.project_b), "rule_id": rule["id"], "ends_at": in_(60)},
            headers=headers,
        )
    )
    with as_caller(conn, {"role": "service_role"}):
        conn.execute(
            "insert into metrics.alert_events (project_id, rule_id, rule_name, state, value) values (%s, %s, %s, 'firing', 3)",
            (world.project_b, rule["id"], rule["name"]),
        )
    return {
        "rule": rule["id"],
        "receiver": receiver["id"],
        "silence": silence["id"],
        "rule_name": rule["name"],
    }


def test_other_tenants_objects_are_invisible_and_untouchable(
    client: httpx.Client, world: World, admin_a: dict[str, str], b_objects: dict[str, str]
) -> None:
    b = str(world.project_b)
    rule, receiver, silence = b_objects["rule"], b_objects["receiver"], b_objects["silence"]
    forbidden = [
        client.get(BASE, params={"project_id": b}, headers=admin_a),
        client.get(f"{BASE}/receivers", params={"project_id": b}, headers=admin_a),
        client.get(f"{BASE}/silences", params={"project_id": b}, headers=admin_a),
        client.get(f"{BASE}/history", params={"project_id": b}, headers=admin_a),
        client.post(BASE, json=rule_body(world.project_b), headers=admin_a),
        client.post(f"{BASE}/receivers", json=receiver_body(world.project_b), headers=admin_a),
        client.post(f"{BASE}/silences", json={"project_id": b, "ends_at": in_(60)}, headers=admin_a),
    ]
    assert [r.status_code for r in forbidden] == [403] * len(forbidden), [r.text for r in forbidden]
    missing = [
        client.get(f"{BASE}/{rule}", headers=admin_a),
        client.patch(f"{BASE}/{rule}", json={"threshold": 1000}, headers=admin_a),
        client.patch(f"{BASE}/{rule}", json={"receiver_ids": []}, headers=admin_a),
        client.delete(f"{BASE}/{rule}", headers=admin_a),
        client.get(f"{BASE}/receivers/{receiver}", headers=admin_a),
        client.patch(
            f"{BASE}/receivers/{receiver}", json={"target": "https://evil.example/"}, headers=admin_a
        ),
        client.delete(f"{BASE}/receivers/{receiver}", headers=admin_a),
        client.get(f"{BASE}/silences/{silence}", headers=admin_a),
        client.delete(f"{BASE}/silences/{silence}", headers=admin_a),
    ]
    assert [r.status_code for r in missing] == [404] * len(missing), [r.text for r in missing]
    # A user of no project at all
    outsider = world.headers(world.outsider)
    assert client.get(BASE, params={"project_id": b}, headers=outsider).status_code == 403
    assert client.get(f"{BASE}/{rule}", headers=outsider).status_code == 404

    # B's objects are unchanged
    b_headers = world.headers(world.admin_b)
    got = client.get(f"{BASE}/{rule}", headers=b_headers).json()
    assert got["threshold"] == 0.5 and got["receiver_ids"] == [receiver]
    assert (
        client.get(f"{BASE}/receivers/{receiver}", headers=b_headers).json()["target"]
        == "https://ops.example.com/alerts"
    )
    assert client.get(f"{BASE}/silences/{silence}", headers=b_headers).json()["state"] == "active"
    events = client.get(f"{BASE}/history", params={"project_id": b}, headers=b_headers).json()["events"]
    assert [e["rule_id"] for e in events] == [rule]


def test_history_is_per_tenant(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    b_objects: dict[str, str],
    history_rows: dict[str, Any],
    conn: psycopg.Connection[Any],
) -> None:
    """Events of B (written as the service role) reach B's members only; A has events of its own, so the
    empty answers below are not vacuous."""
    marker = unique("b-only")
    with as_caller(conn, {"role": "service_role"}):
        for state in ("pending", "firing", "resolved"):
            conn.execute(
                "insert into metrics.alert_events (project_id, rule_id, rule_name, labels, state, value)"
                " values (%s, %s, %s, %s, %s, 7)",
                (
                    world.project_b,
                    b_objects["rule"],
                    b_objects["rule_name"],
                    Jsonb({"tenant": marker}),
                    state,
                ),
            )
    b_headers = world.headers(world.admin_b)
    b_events = client.get(f"{BASE}/history", params={"project_id": str(world.project_b)}, headers=b_headers)
    assert b_events.status_code == 200
    assert [e["labels"].get("tenant") for e in b_events.json()["events"]].count(marker) == 3
    b_ids = {e["id"] for e in b_events.json()["events"]}

    for user in (world.admin_a, world.viewer_a):
        headers = world.headers(user)
        assert (
            client.get(
                f"{BASE}/history", params={"project_id": str(world.project_b)}, headers=headers
            ).status_code
            == 403
        )
        for params in ({}, {"rule_id": b_objects["rule"]}, {"limit": 1000}):
            response = client.get(
                f"{BASE}/history", params={"project_id": str(world.project_a), **params}, headers=headers
            )
            assert response.status_code == 200, response.text
            events = response.json()["events"]
            assert not b_ids & {e["id"] for e in events} and marker not in response.text
        assert client.get(
            f"{BASE}/history", params={"project_id": str(world.project_a)}, headers=headers
        ).json()["events"], "A's own history is there"
        # the database's rule, not the endpoint's filter: as A's user, B's rows do not exist
        with as_caller(conn, user_claims(user)):
            row = conn.execute(
                "select count(*) filter (where project_id = %s), count(*) filter (where project_id <> %s)"
                " from metrics.alert_events",
                (world.project_b, world.project_a),
            ).fetchone()
        assert row == (0, 0)
    with as_caller(conn, user_claims(world.admin_b)):
        row = conn.execute(
            "select count(*) from metrics.alert_events where labels->>'tenant' = %s", (marker,)
        ).fetchone()
    assert row == (3,)


def test_a_rule_cannot_link_another_tenants_receiver(
    client: httpx.Client, world: World, admin_a: dict[str, str], b_objects: dict[str, str]
) -> None:
    body = rule_body(world.project_a, receiver_ids=[b_objects["receiver"]])
    assert locs(client.post(BASE, json=body, headers=admin_a)) == [["body", "receiver_ids", 0]]
    # the whole create was rolled back
    names = [
        r["name"]
        for r in client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a).json()[
            "rules"
        ]
    ]
    assert body["name"] not in names
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    mine = created(client.post(f"{BASE}/receivers", json=receiver_body(world.project_a), headers=admin_a))
    patch = client.patch(
        f"{BASE}/{rule['id']}", json={"receiver_ids": [mine["id"], b_objects["receiver"]]}, headers=admin_a
    )
    assert locs(patch) == [["body", "receiver_ids", 1]]
    assert client.get(f"{BASE}/{rule['id']}", headers=admin_a).json()["receiver_ids"] == []
    # nor silence another tenant's rule
    silence = {"project_id": str(world.project_a), "rule_id": b_objects["rule"], "ends_at": in_(60)}
    assert locs(client.post(f"{BASE}/silences", json=silence, headers=admin_a)) == [["body", "rule_id"]]


def test_the_service_role_sees_every_project(
    client: httpx.Client, world: World, b_objects: dict[str, str]
) -> None:
    headers = world.service_headers
    listed = client.get(BASE, params={"project_id": str(world.project_b)}, headers=headers)
    assert b_objects["rule"] in [r["id"] for r in listed.json()["rules"]]
    receivers = client.get(f"{BASE}/receivers", params={"project_id": str(world.project_b)}, headers=headers)
    assert SECRET not in receivers.text and receivers.json()["receivers"][0]["has_secret"] is True
    unknown = client.get(BASE, params={"project_id": str(uuid.uuid4())}, headers=headers)
    assert unknown.status_code == 404


ENDPOINTS = [
    ("GET", BASE + "?project_id={p}"),
    ("POST", BASE),
    ("GET", BASE + "/{i}"),
    ("PATCH", BASE + "/{i}"),
    ("DELETE", BASE + "/{i}"),
    ("GET", BASE + "/receivers?project_id={p}"),
    ("POST", BASE + "/receivers"),
    ("GET", BASE + "/receivers/{i}"),
    ("PATCH", BASE + "/receivers/{i}"),
    ("DELETE", BASE + "/receivers/{i}"),
    ("GET", BASE + "/silences?project_id={p}"),
    ("POST", BASE + "/silences"),
    ("GET", BASE + "/silences/{i}"),
    ("DELETE", BASE + "/silences/{i}"),
    ("GET", BASE + "/history?project_id={p}"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_or_invalid_token_is_401(client: httpx.Client, world: World, method: str, path: str) -> None:
    url = path.format(p=world.project_a, i=uuid.uuid4())
    # valid bodies: the anon key is a valid JWT, refused by the database (anon may not read alerting tables)
    body: dict[str, Any] | None = {
        BASE: rule_body(world.project_a),
        f"{BASE}/receivers": receiver_body(world.project_a),
        f"{BASE}/silences": {"project_id": str(world.project_a), "ends_at": in_(60)},
    }.get(url, {"name": unique("n")} if method == "PATCH" else None)
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {world.keys.anon_key}"},
        {"Authorization": f"Bearer {world.token(world.admin_a)}x"},
    ):
        response = client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthorized"


def test_fixed_paths_are_not_taken_for_rule_ids(client: httpx.Client, admin_a: dict[str, str]) -> None:
    for path in ("receivers", "silences", "history"):
        response = client.patch(f"{BASE}/{path}", json={}, headers=admin_a)
        assert response.status_code == 405, response.text
        assert "PATCH" not in response.headers["allow"]
    assert client.get(f"{BASE}/not-a-uuid", headers=admin_a).status_code == 404
    upper = client.get(f"{BASE}/{str(uuid.uuid4()).upper()}", headers=admin_a)
    assert upper.status_code == 404 and "no alert rule" in upper.json()["message"]


# -- history -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history_rows(world: World, client: httpx.Client, conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Five events of project A, a minute apart (written as the alert worker would, as the service role)."""
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=world.headers(world.admin_a)))
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    states = ["pending", "firing", "resolved", "pending", "firing"]
    with as_caller(conn, {"role": "service_role"}):
        for i, state in enumerate(states):
            conn.execute(
                "insert into metrics.alert_events (project_id, rule_id, rule_name, labels, state, value, at)"
                " values (%s, %s, %s, %s, %s, %s, %s)",
                (
                    world.project_a,
                    rule["id"] if i % 2 == 0 else None,
                    rule["name"],
                    Jsonb({"route": f"/r{i}"}),
                    state,
                    float(i),
                    t0 + timedelta(minutes=i),
                ),
            )
    return {"rule": rule["id"], "t0": t0}


def test_history_newest_first_with_limit_and_range(
    client: httpx.Client, world: World, history_rows: dict[str, Any]
) -> None:
    headers = world.headers(world.viewer_a)
    t0: datetime = history_rows["t0"]

    def get(**params: Any) -> list[dict[str, Any]]:
        response = client.get(
            f"{BASE}/history", params={"project_id": str(world.project_a), **params}, headers=headers
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    window = {"from": t0.isoformat(), "to": (t0 + timedelta(hours=1)).isoformat()}
    events = get(**window)
    assert [e["value"] for e in events] == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert [e["state"] for e in events] == ["firing", "pending", "resolved", "firing", "pending"]
    assert events[0]["labels"] == {"route": "/r4"} and ts(events[0]["at"]) == t0 + timedelta(minutes=4)
    assert [e["value"] for e in get(limit=2, **window)] == [4.0, 3.0]
    ranged = get(
        **{"from": (t0 + timedelta(minutes=1)).isoformat(), "to": (t0 + timedelta(minutes=3)).isoformat()}
    )
    assert [e["value"] for e in ranged] == [2.0, 1.0]  # from inclusive, to exclusive
    assert [e["value"] for e in get(rule_id=history_rows["rule"], **window)] == [4.0, 2.0, 0.0]
    assert [e["value"] for e in get(to=(t0 + timedelta(minutes=1)).isoformat())] == [0.0]
    epoch = {
        "from": (t0 + timedelta(minutes=1)).timestamp(),
        "to": int((t0 + timedelta(minutes=3)).timestamp()),
    }
    assert [e["value"] for e in get(**epoch)] == [2.0, 1.0], "epoch seconds, as the schema allows"


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 1001}, ["query", "limit"]),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, ["query", "from"]),
        ({"rule_id": "nope"}, ["query", "rule_id"]),
        ({"frm": "2026-11-01T00:00:00Z"}, ["query", "frm"]),
        ({"from": "yesterday"}, ["query", "from"]),
        ({"to": "1e999"}, ["query", "to"]),
    ],
)
def test_invalid_history_queries_are_422(
    client: httpx.Client, world: World, admin_a: dict[str, str], params: dict[str, Any], loc: list[str | int]
) -> None:
    response = client.get(
        f"{BASE}/history", params={"project_id": str(world.project_a), **params}, headers=admin_a
    )
    assert loc in locs(response)


def test_history_limit_defaults_to_100(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any], history_rows: dict[str, Any]
) -> None:
    project = uuid.uuid4()
    admin = uuid.uuid4()
    add_member(conn, project, admin, "admin")
    with as_caller(conn, {"role": "service_role"}):
        conn.execute(
            "insert into metrics.alert_events (project_id, state, at)"
            " select %s, 'firing', now() - make_interval(secs => g) from generate_series(1, 150) g",
            (project,),
        )
    response = client.get(
        f"{BASE}/history", params={"project_id": str(project)}, headers=world.headers(admin)
    )
    events = response.json()["events"]
    assert len(events) == 100
    assert events == sorted(events, key=lambda e: ts(e["at"]), reverse=True)
    assert len(client.get(f"{BASE}/history", params={"project_id": str(project), "limit": 1000},
                          headers=world.headers(admin)).json()["events"]) == 150  # fmt: skip
