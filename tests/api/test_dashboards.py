"""Saved dashboards (/api/metrics/dashboards) and the caller's projects (/api/metrics/projects) against the
real database, as the caller: CRUD, roles, tenancy (row-level security of metrics.dashboards decides), the
spec rule of metrics.dashboard_spec_problem as 422s at JSON paths, and optimistic concurrency (revision).
"""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import World
from tests.support import add_member

BASE = "/api/metrics/dashboards"
PROJECTS = "/api/metrics/projects"

SPEC: dict[str, Any] = {
    "version": 1,
    "title": "MeshHook",
    "panels": [
        {
            "id": "webhooks",
            "title": "Webhook throughput",
            "type": "timeseries",
            "metric": "meshhook_webhook_requests_total",
            "agg": "rate",
            "by": ["outcome"],
            "match": ['outcome!="error"'],
            "quantiles": None,
            "unit": "reqps",
            "thresholds": [{"value": 0.05, "color": "warning"}, {"value": 0.2, "color": "critical"}],
            "width": 6,
            "height": 1,
        },
        {
            "id": "errors",
            "title": "Error ratio",
            "type": "stat",
            "metric": "meshhook_webhook_requests_total",
            "agg": "rate",
            "ratio": {"numerator": ["outcome!=ok"], "denominator": []},
            "unit": "percentunit",
        },
        {"id": "alerts", "title": "Alerts", "type": "alerts"},
    ],
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def body_for(project: uuid.UUID, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"project_id": str(project), "name": unique("dash"), "spec": copy.deepcopy(SPEC)}
    body.update(extra)
    return body


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def dash_a(client: httpx.Client, world: World, admin_a: dict[str, str]) -> dict[str, Any]:
    """A dashboard of project A (for the read-only, role and tenancy tests)."""
    return ok(client.post(BASE, json=body_for(world.project_a), headers=admin_a), 201)


# -- projects ------------------------------------------------------------------------------------------------
def test_projects_lists_only_the_callers_projects_with_roles(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any], editor_a: dict[str, str]
) -> None:
    conn.execute("update metrics.projects set name = 'Alpha' where id = %s", (world.project_a,))
    a = str(world.project_a)
    assert ok(client.get(PROJECTS, headers=world.headers(world.admin_a))) == {
        "projects": [{"project_id": a, "name": "Alpha", "role": "admin"}]
    }
    assert ok(client.get(PROJECTS, headers=editor_a))["projects"] == [
        {"project_id": a, "name": "Alpha", "role": "editor"}
    ]
    assert ok(client.get(PROJECTS, headers=world.headers(world.viewer_a)))["projects"] == [
        {"project_id": a, "name": "Alpha", "role": "viewer"}
    ]
    assert ok(client.get(PROJECTS, headers=world.headers(world.admin_b)))["projects"] == [
        {"project_id": str(world.project_b), "name": None, "role": "admin"}
    ]
    assert ok(client.get(PROJECTS, headers=world.headers(world.outsider))) == {"projects": []}


def test_projects_of_a_member_of_two_projects_named_first(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> None:
    user = uuid.uuid4()
    add_member(conn, world.project_a, user, "viewer")
    add_member(conn, world.project_b, user, "editor")
    conn.execute("update metrics.projects set name = 'Alpha' where id = %s", (world.project_a,))
    projects = ok(client.get(PROJECTS, headers=world.headers(user)))["projects"]
    assert [(p["project_id"], p["role"]) for p in projects] == [
        (str(world.project_a), "viewer"),
        (str(world.project_b), "editor"),
    ]


def test_projects_for_the_service_role_are_every_project_as_admin(client: httpx.Client, world: World) -> None:
    projects = ok(client.get(PROJECTS, headers=world.service_headers))["projects"]
    roles = {p["project_id"]: p["role"] for p in projects}
    assert roles[str(world.project_a)] == roles[str(world.project_b)] == "admin"


def test_projects_needs_a_token(client: httpx.Client) -> None:
    error(client.get(PROJECTS), 401, "unauthorized")


# -- CRUD ----------------------------------------------------------------------------------------------------
def test_dashboard_crud_round_trip(client: httpx.Client, world: World, editor_a: dict[str, str]) -> None:
    body = body_for(world.project_a)
    made = ok(client.post(BASE, json=body, headers=editor_a), 201)
    assert made["spec"] == SPEC and made["name"] == body["name"] and made["project_id"] == body["project_id"]
    assert made["revision"] == 1 and made["created_at"] == made["updated_at"] and made["created_by"]
    did = made["id"]
    assert ok(client.get(f"{BASE}/{did}", headers=editor_a)) == made
    listed = ok(client.get(BASE, params={"project_id": str(world.project_a)}, headers=editor_a))["dashboards"]
    assert made in listed

    spec = copy.deepcopy(SPEC)
    spec["panels"][0]["width"] = 12
    put = ok(client.put(f"{BASE}/{did}", json={"spec": spec, "name": "Renamed " + did[:8]}, headers=editor_a))
    assert put["spec"] == spec and put["name"] == "Renamed " + did[:8]
    assert put["revision"] == 2 and put["updated_at"] > made["updated_at"]
    assert (put["created_at"], put["created_by"], put["position"]) == (
        made["created_at"],
        made["created_by"],
        made["position"],
    )
    assert ok(client.get(f"{BASE}/{did}", headers=editor_a)) == put

    deleted = client.delete(f"{BASE}/{did}", headers=editor_a)
    assert deleted.status_code == 204 and deleted.content == b""
    error(client.get(f"{BASE}/{did}", headers=editor_a), 404, "not_found")
    error(client.delete(f"{BASE}/{did}", headers=editor_a), 404, "not_found")


def test_dashboards_are_listed_by_position_then_name(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "editor")
    headers = world.headers(user)
    first = ok(client.post(BASE, json=body_for(project, name="b"), headers=headers), 201)
    second = ok(client.post(BASE, json=body_for(project, name="a"), headers=headers), 201)
    assert (first["position"], second["position"]) == (0, 1), "a new dashboard goes last"
    ok(client.post(BASE, json=body_for(project, name="c", position=0), headers=headers), 201)
    listed = ok(client.get(BASE, params={"project_id": str(project)}, headers=headers))["dashboards"]
    assert [d["name"] for d in listed] == ["b", "c", "a"]
    moved = ok(client.put(f"{BASE}/{second['id']}", json={"spec": SPEC, "position": 0}, headers=headers))
    assert moved["position"] == 0 and moved["name"] == "a"
    listed = ok(client.get(BASE, params={"project_id": str(project)}, headers=headers))["dashboards"]
    assert [d["name"] for d in listed] == ["a", "b", "c"]


def test_names_are_unique_per_project(
    client: httpx.Client, world: World, admin_a: dict[str, str], dash_a: dict[str, Any]
) -> None:
    error(
        client.post(BASE, json=body_for(world.project_a, name=dash_a["name"]), headers=admin_a),
        409,
        "conflict",
    )
    other = ok(client.post(BASE, json=body_for(world.project_a), headers=admin_a), 201)
    renamed = client.put(
        f"{BASE}/{other['id']}", json={"spec": SPEC, "name": dash_a["name"]}, headers=admin_a
    )
    error(renamed, 409, "conflict")
    assert ok(client.get(f"{BASE}/{other['id']}", headers=admin_a)) == other
    # another project may use the name
    ok(
        client.post(
            BASE, json=body_for(world.project_b, name=dash_a["name"]), headers=world.headers(world.admin_b)
        ),
        201,
    )


# -- roles and tenancy ---------------------------------------------------------------------------------------
def test_viewer_reads_but_cannot_write(client: httpx.Client, world: World, dash_a: dict[str, Any]) -> None:
    viewer = world.headers(world.viewer_a)
    did = dash_a["id"]
    assert ok(client.get(f"{BASE}/{did}", headers=viewer)) == dash_a
    assert (
        dash_a
        in ok(client.get(BASE, params={"project_id": str(world.project_a)}, headers=viewer))["dashboards"]
    )
    error(client.post(BASE, json=body_for(world.project_a), headers=viewer), 403, "forbidden")
    error(client.put(f"{BASE}/{did}", json={"spec": SPEC, "name": "mine"}, headers=viewer), 403, "forbidden")
    error(client.delete(f"{BASE}/{did}", headers=viewer), 403, "forbidden")
    assert ok(client.get(f"{BASE}/{did}", headers=viewer)) == dash_a


@pytest.mark.parametrize("user", ["admin_b", "outsider"])
def test_other_projects_members_see_nothing(
    client: httpx.Client, world: World, dash_a: dict[str, Any], user: str
) -> None:
    headers = world.headers(getattr(world, user))
    did = dash_a["id"]
    error(client.get(f"{BASE}/{did}", headers=headers), 404, "not_found")
    error(
        client.put(f"{BASE}/{did}", json={"spec": SPEC, "name": "taken"}, headers=headers), 404, "not_found"
    )
    error(client.delete(f"{BASE}/{did}", headers=headers), 404, "not_found")
    error(client.get(BASE, params={"project_id": str(world.project_a)}, headers=headers), 403, "forbidden")
    error(client.post(BASE, json=body_for(world.project_a), headers=headers), 403, "forbidden")
    assert ok(client.get(f"{BASE}/{did}", headers=world.headers(world.admin_a))) == dash_a


def test_unknown_ids_are_404_and_malformed_ones_422(client: httpx.Client, admin_a: dict[str, str]) -> None:
    error(client.get(f"{BASE}/{uuid.uuid4()}", headers=admin_a), 404, "not_found")
    bad = error(client.get(f"{BASE}/not-a-uuid", headers=admin_a), 422, "validation_failed")
    assert bad["details"][0]["loc"] == ["path", "dashboard_id"]


def test_service_role_reads_and_writes_any_project(client: httpx.Client, world: World) -> None:
    made = ok(client.post(BASE, json=body_for(world.project_b), headers=world.service_headers), 201)
    assert made["created_by"] is None
    error(
        client.get(BASE, params={"project_id": str(uuid.uuid4())}, headers=world.service_headers),
        404,
        "not_found",
    )
    assert client.delete(f"{BASE}/{made['id']}", headers=world.service_headers).status_code == 204


# -- the spec rule -------------------------------------------------------------------------------------------
def broken(path: list[str | int], value: Any) -> dict[str, Any]:
    """SPEC with the value at ``path`` replaced (a missing key added)."""
    spec = copy.deepcopy(SPEC)
    node: Any = spec
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return spec


BAD_SPECS: list[tuple[Any, list[str | int], str]] = [
    (broken(["panels", 1, "agg"], "foo"), ["panels", 1, "agg"], "unknown aggregation 'foo'"),
    (broken(["version"], 2), ["version"], "must be 1"),
    (broken(["panels", 0, "match", 0], "outcome"), ["panels", 0, "match", 0], "expected label<op>value"),
    (
        broken(["panels", 0, "thresholds", 1, "color"], "red"),
        ["panels", 0, "thresholds", 1, "color"],
        "ok, warning",
    ),
    (
        broken(["panels", 1, "ratio", "numerator", 0], 7),
        ["panels", 1, "ratio", "numerator", 0],
        "must be a string",
    ),
    (broken(["panels", 2, "id"], "webhooks"), ["panels", 2, "id"], "is the id of panels[0] too"),
    (broken(["panels", 0, "width"], 13), ["panels", 0, "width"], "integer from 1 to 12"),
    (broken(["panels", 0, "by"], ["a", "a"]), ["panels", 0, "by"], "must not repeat"),
    (broken(["panels", 0, "colour"], "red"), ["panels", 0], 'unknown field "colour"'),
    (broken(["theme"], "dark"), [], 'unknown field "theme"'),
    ([SPEC], [], "must be an object"),
    (None, [], "must be an object"),
]


@pytest.mark.parametrize(("spec", "path", "message"), BAD_SPECS)
def test_bad_specs_are_422_at_their_path_and_change_nothing(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    dash_a: dict[str, Any],
    spec: Any,
    path: list[str | int],
    message: str,
) -> None:
    before = ok(client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a))
    for response in (
        client.post(BASE, json=body_for(world.project_a, spec=spec), headers=admin_a),
        client.put(f"{BASE}/{dash_a['id']}", json={"spec": spec}, headers=admin_a),
    ):
        body = error(response, 422, "validation_failed")
        assert [d["loc"] for d in body["details"]] == [["body", "spec", *path]], body
        assert message in body["details"][0]["message"], body
    assert ok(client.get(BASE, params={"project_id": str(world.project_a)}, headers=admin_a)) == before


def test_request_shape_errors_are_422_at_their_field(
    client: httpx.Client, world: World, admin_a: dict[str, str], dash_a: dict[str, Any]
) -> None:
    for body, loc in (
        (body_for(world.project_a, name=""), ["body", "name"]),
        (body_for(world.project_a, name="two\nlines"), ["body", "name"]),
        (body_for(world.project_a, position=-1), ["body", "position"]),
        (body_for(world.project_a, extra=1), ["body", "extra"]),
    ):
        bad = error(client.post(BASE, json=body, headers=admin_a), 422, "validation_failed")
        assert [d["loc"] for d in bad["details"]] == [loc], bad
    missing = error(
        client.put(f"{BASE}/{dash_a['id']}", json={"name": "x"}, headers=admin_a), 422, "validation_failed"
    )
    assert [d["loc"] for d in missing["details"]] == [["body", "spec"]]
    stale = client.put(f"{BASE}/{dash_a['id']}", json={"spec": SPEC, "revision": 0}, headers=admin_a)
    assert [d["loc"] for d in error(stale, 422, "validation_failed")["details"]] == [["body", "revision"]]


# -- optimistic concurrency ----------------------------------------------------------------------------------
def test_a_stale_revision_is_409_and_changes_nothing(
    client: httpx.Client, world: World, editor_a: dict[str, str]
) -> None:
    made = ok(client.post(BASE, json=body_for(world.project_a), headers=editor_a), 201)
    url = f"{BASE}/{made['id']}"
    first = ok(client.put(url, json={"spec": broken(["title"], "first"), "revision": 1}, headers=editor_a))
    assert first["revision"] == 2
    lost = client.put(url, json={"spec": broken(["title"], "second"), "revision": 1}, headers=editor_a)
    assert "revision 1 is not the current revision 2" in error(lost, 409, "conflict")["message"]
    assert ok(client.get(url, headers=editor_a)) == first
    # without a revision, the last writer wins
    assert ok(client.put(url, json={"spec": SPEC}, headers=editor_a))["revision"] == 3


def test_concurrent_saves_of_the_same_revision_one_wins(
    client: httpx.Client, world: World, editor_a: dict[str, str], admin_a: dict[str, str]
) -> None:
    made = ok(client.post(BASE, json=body_for(world.project_a), headers=editor_a), 201)
    url = f"{BASE}/{made['id']}"
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def save(headers: dict[str, str], title: str) -> None:
        barrier.wait()
        response = client.put(url, json={"spec": broken(["title"], title), "revision": 1}, headers=headers)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=save, args=(h, t)) for h, t in ((editor_a, "e"), (admin_a, "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 409]
    assert ok(client.get(url, headers=editor_a))["revision"] == 2
