"""Mute windows (/api/metrics/alerts/mute-windows) against the real database as the caller: CRUD, what
the alert worker's metrics.alert_muted makes of a stored window, bad input as 422 at its field, roles and
tenancy (row-level security of metrics.alert_mute_windows decides).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import World
from tests.api.test_alerts import BASE, created, locs, rule_body, unique
from tests.support import add_member

WINDOWS = f"{BASE}/mute-windows"


@pytest.fixture(scope="module")
def rule_a(client: httpx.Client, world: World, admin_a: dict[str, str]) -> dict[str, Any]:
    return created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))


def window_body(project: uuid.UUID, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": str(project),
        "name": unique("night"),
        "weekdays": [1, 2, 3, 4, 5],
        "start_time": "22:00",
        "end_time": "06:00",
        "time_zone": "Europe/Berlin",
    }
    body.update(extra)
    return body


def test_mute_window_crud(
    client: httpx.Client, world: World, editor_a: dict[str, str], rule_a: dict[str, Any]
) -> None:
    body = window_body(world.project_a, rule_id=rule_a["id"])
    window = created(client.post(WINDOWS, json=body, headers=editor_a))
    for key, value in body.items():
        assert window[key] == value, key
    wid = window["id"]
    assert client.get(f"{WINDOWS}/{wid}", headers=editor_a).json() == window
    listed = client.get(WINDOWS, params={"project_id": str(world.project_a)}, headers=editor_a)
    assert listed.status_code == 200 and window in listed.json()["mute_windows"]

    change = {"weekdays": [6, 7], "start_time": "00:00", "end_time": "24:00", "time_zone": "America/New_York"}
    patched = client.patch(f"{WINDOWS}/{wid}", json=change, headers=editor_a)
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**window, **change}
    renamed = client.patch(f"{WINDOWS}/{wid}", json={"name": "weekends"}, headers=editor_a).json()
    assert renamed == {**window, **change, "name": "weekends"}
    assert client.get(f"{WINDOWS}/{wid}", headers=editor_a).json() == renamed

    assert client.delete(f"{WINDOWS}/{wid}", headers=editor_a).status_code == 204
    assert client.get(f"{WINDOWS}/{wid}", headers=editor_a).status_code == 404
    assert client.delete(f"{WINDOWS}/{wid}", headers=editor_a).status_code == 404
    assert client.patch(f"{WINDOWS}/{wid}", json={"name": "x"}, headers=editor_a).status_code == 404


def test_defaults_seconds_and_a_deleted_rule(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    window = created(
        client.post(
            WINDOWS,
            json={
                "project_id": str(world.project_a),
                "name": unique("all-week"),
                "start_time": "09:15:30",
                "end_time": "09:45",
                "time_zone": "UTC",
            },
            headers=admin_a,
        )
    )
    assert (window["weekdays"], window["rule_id"], window["start_time"], window["end_time"]) == (
        [1, 2, 3, 4, 5, 6, 7],
        None,
        "09:15:30",
        "09:45",
    )
    assert window["created_by"] == str(world.admin_a)
    # a rule's windows go with it
    rule = created(client.post(BASE, json=rule_body(world.project_a), headers=admin_a))
    own = created(
        client.post(WINDOWS, json=window_body(world.project_a, rule_id=rule["id"]), headers=admin_a)
    )
    assert client.delete(f"{BASE}/{rule['id']}", headers=admin_a).status_code == 204
    assert client.get(f"{WINDOWS}/{own['id']}", headers=admin_a).status_code == 404
    assert client.get(f"{WINDOWS}/{window['id']}", headers=admin_a).status_code == 200


def test_the_alert_worker_reads_a_stored_window_as_meant(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    """Weeknights 22:00-06:00 in Berlin: Monday 23:30 and Tuesday 05:00 (the Monday night) are muted,
    Tuesday 07:00 and Saturday 23:30 are not (metrics.alert_muted, the worker's rule)."""
    project, admin = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, admin, "admin")
    created(client.post(WINDOWS, json=window_body(project), headers=world.headers(admin)))

    def muted(local: str) -> bool:
        at = datetime.fromisoformat(local)  # Berlin in winter: UTC+1
        row = conn.execute(
            "select metrics.alert_muted(%s, %s, %s)", (project, uuid.uuid4(), at.astimezone(UTC))
        ).fetchone()
        assert row is not None
        return bool(row[0])

    assert muted("2026-12-07T23:30:00+01:00") and muted("2026-12-08T05:00:00+01:00")
    assert not muted("2026-12-08T07:00:00+01:00") and not muted("2026-12-12T23:30:00+01:00")


MUTE_CASES: list[tuple[dict[str, Any], list[str | int], str | None]] = [
    ({"time_zone": "Mars/Olympus_Mons"}, ["body", "time_zone"], "unknown time zone"),
    ({"time_zone": "CEST+2"}, ["body", "time_zone"], "unknown time zone"),
    ({"time_zone": ""}, ["body", "time_zone"], None),
    ({"weekdays": [1, 8]}, ["body", "weekdays", 1], None),
    ({"weekdays": [0]}, ["body", "weekdays", 0], None),
    ({"weekdays": []}, ["body", "weekdays"], None),
    ({"weekdays": [2, 2]}, ["body", "weekdays"], None),
    ({"weekdays": ["1"]}, ["body", "weekdays", 0], None),
    ({"start_time": "06:00", "end_time": "06:00"}, ["body", "end_time"], "must differ from start_time"),
    ({"start_time": "06:00", "end_time": "06:00:00"}, ["body", "end_time"], None),
    ({"start_time": "24:00"}, ["body", "start_time"], None),
    ({"end_time": "24:01"}, ["body", "end_time"], None),
    ({"end_time": "25:00"}, ["body", "end_time"], None),
    ({"start_time": "9:00"}, ["body", "start_time"], None),
    ({"start_time": "09:00:60"}, ["body", "start_time"], None),
    ({"name": ""}, ["body", "name"], None),
    ({"name": "night\nshift"}, ["body", "name"], None),
]


@pytest.mark.parametrize(("change", "loc", "words"), MUTE_CASES, ids=[str(c)[:60] for c, _, _ in MUTE_CASES])
def test_bad_mute_windows_are_422_at_their_path(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    change: dict[str, Any],
    loc: list[str | int],
    words: str | None,
) -> None:
    response = client.post(WINDOWS, json=window_body(world.project_a, **change), headers=admin_a)
    assert locs(response) == [loc]
    assert words is None or words in response.text, response.text
    window = created(client.post(WINDOWS, json=window_body(world.project_a), headers=admin_a))
    patched = client.patch(f"{WINDOWS}/{window['id']}", json=change, headers=admin_a)
    assert locs(patched) == [loc]
    assert client.get(f"{WINDOWS}/{window['id']}", headers=admin_a).json() == window


def test_a_patch_that_makes_start_equal_end_is_422(
    client: httpx.Client, world: World, admin_a: dict[str, str]
) -> None:
    window = created(client.post(WINDOWS, json=window_body(world.project_a), headers=admin_a))
    assert locs(client.patch(f"{WINDOWS}/{window['id']}", json={"start_time": "06:00"}, headers=admin_a)) == [
        ["body", "end_time"]
    ]


def test_other_bad_writes(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    body = window_body(world.project_a)
    created(client.post(WINDOWS, json=body, headers=admin_a))
    again = client.post(WINDOWS, json=body, headers=admin_a)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    # a rule of another project, or none
    b_rule = conn.execute(
        "insert into metrics.alert_rules (project_id, name, metric, op, threshold)"
        " values (%s, %s, 'm', '>', 1) returning id",
        (world.project_b, unique("b")),
    ).fetchone()
    assert b_rule is not None
    for rule_id in (str(b_rule[0]), str(uuid.uuid4())):
        response = client.post(WINDOWS, json=window_body(world.project_a, rule_id=rule_id), headers=admin_a)
        assert locs(response) == [["body", "rule_id"]]
    window = created(client.post(WINDOWS, json=window_body(world.project_a), headers=admin_a))
    for change, loc in (
        ({"rule_id": str(uuid.uuid4())}, ["body", "rule_id"]),  # a window's rule is fixed
        ({"project_id": str(world.project_b)}, ["body", "project_id"]),
        ({}, ["body"]),
        ({"name": None}, ["body", "name"]),
        ({"time_zone": None}, ["body", "time_zone"]),
    ):
        assert locs(client.patch(f"{WINDOWS}/{window['id']}", json=change, headers=admin_a)) == [loc]
    assert client.get(f"{WINDOWS}/not-a-uuid", headers=admin_a).status_code == 422
    assert locs(client.get(WINDOWS, headers=admin_a)) == [["query", "project_id"]]


def test_viewers_read_but_cannot_write(
    client: httpx.Client, world: World, admin_a: dict[str, str], rule_a: dict[str, Any]
) -> None:
    window = created(client.post(WINDOWS, json=window_body(world.project_a), headers=admin_a))
    viewer = world.headers(world.viewer_a)
    assert client.get(f"{WINDOWS}/{window['id']}", headers=viewer).json() == window
    listed = client.get(WINDOWS, params={"project_id": str(world.project_a)}, headers=viewer).json()
    assert window in listed["mute_windows"]
    writes = [
        client.post(WINDOWS, json=window_body(world.project_a), headers=viewer),
        client.post(WINDOWS, json=window_body(world.project_a, rule_id=rule_a["id"]), headers=viewer),
        client.patch(f"{WINDOWS}/{window['id']}", json={"end_time": "07:00"}, headers=viewer),
        client.delete(f"{WINDOWS}/{window['id']}", headers=viewer),
    ]
    assert [w.status_code for w in writes] == [403] * len(writes), [w.text for w in writes]
    assert all(w.json()["code"] == "forbidden" for w in writes)
    assert client.get(f"{WINDOWS}/{window['id']}", headers=admin_a).json() == window


def test_other_tenants_windows_are_invisible_and_untouchable(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    window = created(client.post(WINDOWS, json=window_body(world.project_a), headers=admin_a))
    b = world.headers(world.admin_b)
    forbidden = [
        client.get(WINDOWS, params={"project_id": str(world.project_a)}, headers=b),
        client.post(WINDOWS, json=window_body(world.project_a), headers=b),
    ]
    assert [r.status_code for r in forbidden] == [403, 403], [r.text for r in forbidden]
    missing = [
        client.get(f"{WINDOWS}/{window['id']}", headers=b),
        client.patch(f"{WINDOWS}/{window['id']}", json={"time_zone": "UTC"}, headers=b),
        client.delete(f"{WINDOWS}/{window['id']}", headers=b),
    ]
    assert [r.status_code for r in missing] == [404, 404, 404], [r.text for r in missing]
    own = client.get(WINDOWS, params={"project_id": str(world.project_b)}, headers=b)
    assert own.status_code == 200 and window["id"] not in own.text
    outsider = world.headers(world.outsider)
    assert client.get(f"{WINDOWS}/{window['id']}", headers=outsider).status_code == 404
    assert client.get(f"{WINDOWS}/{window['id']}", headers=admin_a).json() == window
    stored = conn.execute("select time_zone from metrics.alert_mute_windows where id = %s", (window["id"],))
    assert stored.fetchone() == ("Europe/Berlin",)
