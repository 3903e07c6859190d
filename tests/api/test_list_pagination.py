"""Keyset pagination of the list endpoints (issue #15, finding 17; ``api/pagination.py``).

Each list keeps its body (``{"rules": [...]}``), takes ``limit`` and ``cursor``, and answers
``Link: <...>; rel="next"`` while rows remain; following the links yields every row once, in the listing's
order, even with ties in the leading sort column and rows added between pages. Silences filter by
``state``. A cursor that was altered, or that belongs to another listing or other filters, is a 422.
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import ApiServer, World
from tests.api.test_dashboards import SPEC
from tests.support import TestDatabase, add_member

ALERTS = "/api/metrics/alerts"
PAGE_SIZES = (1, 2, 3)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Owner:
    """A project of its own with its admin (so that counts are exact)."""

    project: uuid.UUID
    headers: dict[str, str]


@pytest.fixture(scope="module")
def owner(world: World, conn: psycopg.Connection[Any]) -> Owner:
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "admin")
    return Owner(project, world.headers(user))


def next_link(response: httpx.Response) -> str | None:
    link = response.links.get("next")
    return None if link is None else str(link["url"])


def walk(
    client: httpx.Client, path: str, params: dict[str, Any], key: str, headers: dict[str, str]
) -> list[Any]:
    """Every row of a listing, following ``Link`` rel="next" (each page a 200 with at most ``limit`` rows)."""
    rows: list[Any] = []
    response = client.get(path, params=params, headers=headers)
    for _ in range(100):
        assert response.status_code == 200, response.text
        page = response.json()[key]
        assert len(page) <= int(params.get("limit", 100))
        rows.extend(page)
        url = next_link(response)
        if url is None:
            return rows
        assert url.startswith("http") and "cursor=" in url, url
        response = client.get(url, headers=headers)
    raise AssertionError("more than 100 pages")


# -- one listing per endpoint: how to make a row, its key, its order ------------------------------------
@dataclass(frozen=True)
class Listing:
    path: str
    key: str
    make: Callable[[httpx.Client, Owner, int], Any]
    order: Callable[[dict[str, Any]], Any]


def make_rule(client: httpx.Client, owner: Owner, i: int) -> Any:
    body = {
        "project_id": str(owner.project),
        "name": f"rule-{i:02d}-{uuid.uuid4().hex[:4]}",
        "metric": "meshhook_webhook_requests_total",
        "op": ">",
        "threshold": 1,
    }
    return client.post(ALERTS, json=body, headers=owner.headers)


def make_receiver(client: httpx.Client, owner: Owner, i: int) -> Any:
    body = {
        "project_id": str(owner.project),
        "name": f"hook-{i:02d}",
        "kind": "webhook",
        "target": "https://ops.example.com/alerts",
    }
    return client.post(f"{ALERTS}/receivers", json=body, headers=owner.headers)


def make_silence(client: httpx.Client, owner: Owner, i: int) -> Any:
    ends = (datetime.now(UTC) + timedelta(hours=1 + i % 2)).isoformat()
    body = {
        "project_id": str(owner.project),
        "matchers": [{"label": "outcome", "op": "=", "value": f"v{i}"}],
        "ends_at": ends,
    }
    return client.post(f"{ALERTS}/silences", json=body, headers=owner.headers)


def make_window(client: httpx.Client, owner: Owner, i: int) -> Any:
    body = {
        "project_id": str(owner.project),
        "name": f"night-{i:02d}",
        "weekdays": [1, 2],
        "start_time": "22:00",
        "end_time": "06:00",
        "time_zone": "UTC",
    }
    return client.post(f"{ALERTS}/mute-windows", json=body, headers=owner.headers)


def make_token(client: httpx.Client, owner: Owner, i: int) -> Any:
    body = {"project_id": str(owner.project), "name": f"scraper-{i}"}
    return client.post("/api/metrics/scrape-tokens", json=body, headers=owner.headers)


def make_dashboard(client: httpx.Client, owner: Owner, i: int) -> Any:
    body = {
        "project_id": str(owner.project),
        "name": f"dash-{i:02d}",
        "spec": copy.deepcopy(SPEC),
        "position": i % 2,
    }
    return client.post("/api/metrics/dashboards", json=body, headers=owner.headers)


LISTINGS = {
    "rules": Listing(ALERTS, "rules", make_rule, lambda r: (r["name"], r["id"])),
    "receivers": Listing(f"{ALERTS}/receivers", "receivers", make_receiver, lambda r: (r["name"], r["id"])),
    "silences": Listing(
        f"{ALERTS}/silences",
        "silences",
        make_silence,
        lambda r: (-datetime.fromisoformat(r["ends_at"]).timestamp(), r["id"]),
    ),
    "mute_windows": Listing(
        f"{ALERTS}/mute-windows", "mute_windows", make_window, lambda r: (r["name"], r["id"])
    ),
    "tokens": Listing(
        "/api/metrics/scrape-tokens",
        "tokens",
        make_token,
        lambda r: (datetime.fromisoformat(r["created_at"]), r["id"]),
    ),
    "dashboards": Listing(
        "/api/metrics/dashboards", "dashboards", make_dashboard, lambda r: (r["position"], r["name"], r["id"])
    ),
}
ROWS = 5


@pytest.fixture(scope="module")
def filled(client: httpx.Client, owner: Owner) -> Owner:
    for listing in LISTINGS.values():
        for i in range(ROWS):
            response = listing.make(client, owner, i)
            assert response.status_code == 201, response.text
    return owner


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_one_page_by_default_without_link(client: httpx.Client, filled: Owner, name: str) -> None:
    """Today's callers: no limit, no cursor, the same body with every row (fewer than 100) and no Link."""
    listing = LISTINGS[name]
    response = client.get(listing.path, params={"project_id": str(filled.project)}, headers=filled.headers)
    assert response.status_code == 200, response.text
    rows = response.json()[listing.key]
    assert len(rows) == ROWS
    assert rows == sorted(rows, key=listing.order)
    assert "link" not in response.headers


@pytest.mark.parametrize("size", PAGE_SIZES)
@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_following_link_yields_every_row_once_in_order(
    client: httpx.Client, filled: Owner, name: str, size: int
) -> None:
    listing = LISTINGS[name]
    params = {"project_id": str(filled.project), "limit": size}
    first = client.get(listing.path, params=params, headers=filled.headers)
    assert len(first.json()[listing.key]) == size
    assert next_link(first) is not None
    rows = walk(client, listing.path, params, listing.key, filled.headers)
    everything = client.get(listing.path, params={"project_id": str(filled.project)}, headers=filled.headers)
    assert rows == everything.json()[listing.key]
    assert len({r["id"] for r in rows}) == ROWS


def test_the_last_full_page_has_no_link(client: httpx.Client, filled: Owner) -> None:
    """``limit`` equal to the rows left: no Link (one row more is read to know, none is shown)."""
    response = client.get(
        ALERTS, params={"project_id": str(filled.project), "limit": ROWS}, headers=filled.headers
    )
    assert len(response.json()["rules"]) == ROWS
    assert next_link(response) is None


def test_link_keeps_the_other_parameters(client: httpx.Client, filled: Owner) -> None:
    params = {"project_id": str(filled.project), "limit": 2, "state": "active"}
    response = client.get(f"{ALERTS}/silences", params=params, headers=filled.headers)
    url = httpx.URL(next_link(response) or "")
    assert url.path == f"{ALERTS}/silences"
    assert url.params["project_id"] == str(filled.project)
    assert url.params["limit"] == "2" and url.params["state"] == "active"
    assert len(url.params.get_list("cursor")) == 1


def test_rows_added_between_pages_neither_repeat_nor_shift_the_rest(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> None:
    """Keyset, not offset: a rule added before the position does not push a seen row onto the next page."""
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "admin")
    mine = Owner(project, world.headers(user))
    for i in (2, 4, 6, 8):
        assert make_rule(client, mine, i).status_code == 201
    first = client.get(ALERTS, params={"project_id": str(project), "limit": 2}, headers=mine.headers)
    seen = [r["name"] for r in first.json()["rules"]]
    assert make_rule(client, mine, 1).status_code == 201  # sorts before everything seen
    second = client.get(next_link(first) or "", headers=mine.headers)
    later = [r["name"] for r in second.json()["rules"]]
    assert not set(seen) & set(later)
    assert [n[:7] for n in later] == ["rule-06", "rule-08"]


# -- silences by state ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def silences(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> tuple[Owner, dict[str, set[str]]]:
    """A project with 2 active, 1 pending and 3 expired silences (expired ones written as the owner: the API
    refuses an end in the past)."""
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "editor")
    mine = Owner(project, world.headers(user))
    ids: dict[str, set[str]] = {"active": set(), "pending": set(), "expired": set()}
    now = datetime.now(UTC)
    for state, start, end in (
        ("active", None, now + timedelta(hours=1)),
        ("active", None, now + timedelta(hours=2)),
        ("pending", now + timedelta(hours=1), now + timedelta(hours=3)),
    ):
        body: dict[str, Any] = {"project_id": str(project), "matchers": [], "ends_at": end.isoformat()}
        if start is not None:
            body["starts_at"] = start.isoformat()
        response = client.post(f"{ALERTS}/silences", json=body, headers=mine.headers)
        assert response.status_code == 201, response.text
        ids[state].add(response.json()["id"])
    for days in (1, 2, 2):  # two end at the same moment
        end = now.replace(microsecond=0) - timedelta(days=days)
        row = conn.execute(
            "insert into metrics.alert_silences (project_id, starts_at, ends_at) values (%s, %s, %s) returning id",
            (project, end - timedelta(hours=1), end),
        ).fetchone()
        assert row is not None
        ids["expired"].add(str(row[0]))
    return mine, ids


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("active", {"active"}),
        ("pending", {"pending"}),
        ("expired", {"expired"}),
        ("all", {"active", "pending", "expired"}),
        (None, {"active", "pending", "expired"}),
    ],
)
def test_silences_filter_by_state(
    client: httpx.Client, silences: tuple[Owner, dict[str, set[str]]], state: str | None, expected: set[str]
) -> None:
    mine, ids = silences
    params: dict[str, Any] = {"project_id": str(mine.project), "limit": 1}
    if state is not None:
        params["state"] = state
    rows = walk(client, f"{ALERTS}/silences", params, "silences", mine.headers)
    assert {r["id"] for r in rows} == set().union(*(ids[s] for s in expected))
    assert len(rows) == len({r["id"] for r in rows})
    assert {r["state"] for r in rows} == expected
    assert [r["ends_at"] for r in rows] == sorted((r["ends_at"] for r in rows), reverse=True)


def test_silences_active_flag_still_works(
    client: httpx.Client, silences: tuple[Owner, dict[str, set[str]]]
) -> None:
    mine, ids = silences
    for flag, expected in (("true", ids["active"] | ids["pending"]), ("false", ids["expired"])):
        response = client.get(
            f"{ALERTS}/silences",
            params={"project_id": str(mine.project), "active": flag},
            headers=mine.headers,
        )
        assert {r["id"] for r in response.json()["silences"]} == expected


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"state": "ended"}, ["query", "state"]),
        ({"state": "active", "active": "true"}, ["query", "active"]),
    ],
)
def test_invalid_silence_filters_are_422(
    client: httpx.Client, silences: tuple[Owner, dict[str, set[str]]], params: dict[str, str], loc: list[str]
) -> None:
    mine, _ = silences
    response = client.get(
        f"{ALERTS}/silences", params={"project_id": str(mine.project), **params}, headers=mine.headers
    )
    assert response.status_code == 422, response.text
    assert [d["loc"] for d in response.json()["details"]] == [loc]


# -- history: ties on `at` --------------------------------------------------------------------------------
def test_history_pages_through_events_of_the_same_moment(
    client: httpx.Client, world: World, conn: psycopg.Connection[Any]
) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "viewer")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    made = [
        conn.execute(
            "insert into metrics.alert_events (project_id, rule_name, state, at) values (%s, 'r', 'firing', %s)"
            " returning at, id",
            (project, at if i < 4 else at - timedelta(seconds=1)),
        ).fetchone()
        for i in range(5)
    ]
    params = {"project_id": str(project), "limit": 2}
    rows = walk(client, f"{ALERTS}/history", params, "events", world.headers(user))
    expected = [r[1] for r in sorted((r for r in made if r is not None), reverse=True)]  # at desc, id desc
    assert len(set(expected[:4])) == 4 and expected[-1] == made[-1][1]  # type: ignore[index]
    assert [r["id"] for r in rows] == expected


# -- limits and cursors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "1.5"])
@pytest.mark.parametrize("path", [ALERTS, f"{ALERTS}/silences", "/api/metrics/dashboards"])
def test_bad_limits_are_422(client: httpx.Client, filled: Owner, path: str, limit: str) -> None:
    response = client.get(
        path, params={"project_id": str(filled.project), "limit": limit}, headers=filled.headers
    )
    assert response.status_code == 422, response.text
    assert [d["loc"] for d in response.json()["details"]] == [["query", "limit"]]


def test_history_keeps_its_limit_of_1000(client: httpx.Client, filled: Owner) -> None:
    path = f"{ALERTS}/history"
    ok = client.get(path, params={"project_id": str(filled.project), "limit": 1000}, headers=filled.headers)
    assert ok.status_code == 200, ok.text
    over = client.get(path, params={"project_id": str(filled.project), "limit": 1001}, headers=filled.headers)
    assert over.status_code == 422


def test_repeated_limit_or_cursor_is_422(client: httpx.Client, filled: Owner) -> None:
    for name, values in (("limit", ["1", "2"]), ("cursor", ["a", "b"])):
        response = client.get(
            ALERTS,
            params=[("project_id", str(filled.project)), *((name, v) for v in values)],
            headers=filled.headers,
        )
        assert response.status_code == 422, response.text
        assert response.json()["details"][0]["type"] == "repeated_parameter"


def cursor_of(client: httpx.Client, path: str, owner: Owner, **params: Any) -> str:
    response = client.get(
        path, params={"project_id": str(owner.project), "limit": 1, **params}, headers=owner.headers
    )
    url = next_link(response)
    assert url is not None
    return str(httpx.URL(url).params["cursor"])


def altered(cursor: str) -> str:
    """The cursor with one byte of its JSON changed (still valid base64url)."""
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    at = raw.index(b'"k":[') + 6
    raw[at] = ord("z") if raw[at] != ord("z") else ord("y")
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def cursor_error(client: httpx.Client, path: str, owner: Owner, cursor: str, **params: Any) -> str:
    response = client.get(
        path, params={"project_id": str(owner.project), "cursor": cursor, **params}, headers=owner.headers
    )
    assert response.status_code == 422, response.text
    (detail,) = response.json()["details"]
    assert detail["loc"] == ["query", "cursor"]
    return str(detail["message"])


def test_invalid_cursors_are_422_with_their_reason(
    client: httpx.Client, filled: Owner, world: World, conn: psycopg.Connection[Any]
) -> None:
    rules = cursor_of(client, ALERTS, filled)
    assert "damaged or altered" in cursor_error(client, ALERTS, filled, altered(rules))
    assert "damaged or altered" in cursor_error(client, ALERTS, filled, rules[:-2])
    assert "not base64url" in cursor_error(client, ALERTS, filled, "not a cursor!")
    assert "another listing" in cursor_error(client, f"{ALERTS}/receivers", filled, rules)
    # the same listing with other filters: another project, another state
    other = Owner(uuid.uuid4(), world.headers(world.admin_a))
    add_member(conn, other.project, world.admin_a, "admin")
    assert "other filters" in cursor_error(client, ALERTS, other, rules)
    active = cursor_of(client, f"{ALERTS}/silences", filled, state="all")
    assert "other filters" in cursor_error(client, f"{ALERTS}/silences", filled, active, state="expired")


def test_a_cursor_is_not_a_way_around_row_level_security(
    client: httpx.Client, filled: Owner, world: World
) -> None:
    """A cursor of project X presented with project X by someone else: still 403 (RLS decides first)."""
    rules = cursor_of(client, ALERTS, filled)
    response = client.get(
        ALERTS,
        params={"project_id": str(filled.project), "cursor": rules},
        headers=world.headers(world.admin_b),
    )
    assert response.status_code == 403, response.text


def test_browsers_on_another_origin_may_read_link(db: TestDatabase, world: World, filled: Owner) -> None:
    """CORS exposes ``Link`` (a dashboard on the application's origin follows the pages)."""
    server = ApiServer(db, cors_origins=["https://app.example"])
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as other:
            response = other.get(
                ALERTS,
                params={"project_id": str(filled.project), "limit": 1},
                headers={**filled.headers, "Origin": "https://app.example"},
            )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert next_link(response) is not None
    exposed = response.headers.get("access-control-expose-headers", "")
    assert "link" in [h.strip().lower() for h in exposed.split(",")]
