"""Query strings against each route's declared parameters: unknown ones and repeated scalars are 422.

A repeated scalar (``to=0&to=53``) used to be answered with its last value (schemathesis found it as a
negative case that was accepted); now every route refuses it, from its own declaration: list parameters
(``match``, ``by``) may repeat, scalars may not.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Query
from fastapi.routing import APIRoute

from meshhook_rt_metrics.api import ApiSettings, create_app
from meshhook_rt_metrics.api.query_parameters import declared_query_parameters, is_list_annotation
from tests.api.conftest import SECRET, Seed, World

REQS = "meshhook_webhook_requests_total"


def _flat(routes: list[Any]) -> list[APIRoute]:
    """The API routes, included routers' too (FastAPI keeps one of those as one entry)."""
    found: list[APIRoute] = []
    for route in routes:
        included = getattr(getattr(route, "original_router", None), "routes", None)
        if included is not None:
            found += _flat(included)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def _app_routes() -> list[APIRoute]:
    return _flat(create_app(ApiSettings(jwt_secret=SECRET)).routes)  # type: ignore[arg-type]


def _scalar_gets() -> list[tuple[str, str]]:
    """(path, a scalar query parameter) of every GET route that has one."""
    found = []
    for route in _app_routes():
        if "GET" not in route.methods:
            continue
        scalars = sorted(
            name for name, many in declared_query_parameters(route.dependant).items() if not many
        )
        if scalars:
            found.append((route.path, scalars[0]))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_lists_and_scalars_are_told_apart() -> None:
    assert is_list_annotation(list[str] | None)
    assert is_list_annotation(Annotated[list[Annotated[str, Query()]] | None, Query()])
    assert is_list_annotation(tuple[int, ...])
    assert not is_list_annotation(str | None)
    assert not is_list_annotation(uuid.UUID)
    assert not is_list_annotation(Annotated[int, Query(ge=1)])
    assert not is_list_annotation(bytes)
    query = next(r for r in _app_routes() if r.path == "/api/metrics")
    declared = declared_query_parameters(query.dependant)
    assert declared["match"] and declared["by"]
    assert not any(declared[name] for name in ("project_id", "metric", "from", "to", "step", "agg"))


def test_a_repeated_scalar_is_422_not_its_last_value(
    client: httpx.Client, world: World, seeded: Seed
) -> None:
    """The failing schemathesis case: GET /api/metrics?...&to=0&to=53 was answered (200)."""
    params = [
        ("project_id", str(world.project_a)),
        ("metric", REQS),
        ("from", str(seeded.minute)),
        ("to", "0"),
        ("to", "53"),
    ]
    response = client.get("/api/metrics", params=params, headers=world.headers(world.admin_a))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["details"] == [
        {"loc": ["query", "to"], "message": "given more than once", "type": "repeated_parameter"}
    ]
    assert "to" in body["message"]


def test_list_parameters_may_repeat(client: httpx.Client, world: World, seeded: Seed) -> None:
    params = [
        ("project_id", str(world.project_a)),
        ("metric", REQS),
        ("from", str(seeded.minute)),
        ("to", str(seeded.minute + 60)),
        ("step", "60s"),
        ("match", "outcome!=error"),
        ("match", "signature=valid"),
        ("by", "outcome"),
        ("by", "signature"),
    ]
    response = client.get("/api/metrics", params=params, headers=world.headers(world.admin_a))
    assert response.status_code == 200, response.text
    assert [s["labels"] for s in response.json()["series"]] == [{"outcome": "ok", "signature": "valid"}]


def test_unknown_and_repeated_are_reported_together(client: httpx.Client, world: World) -> None:
    params = [("project_id", str(world.project_a)), ("project_id", str(world.project_b)), ("stp", "1m")]
    response = client.get("/api/metrics/series", params=params, headers=world.headers(world.admin_a))
    assert response.status_code == 422, response.text
    locs = {tuple(d["loc"]): d["message"] for d in response.json()["details"]}
    assert locs == {
        ("query", "stp"): "unknown query parameter",
        ("query", "project_id"): "given more than once",
    }


@pytest.mark.parametrize(("path", "name"), _scalar_gets())
def test_every_route_refuses_a_repeated_scalar(
    client: httpx.Client, world: World, path: str, name: str
) -> None:
    """Generic: whatever the route, its first scalar query parameter given twice is a 422 at its name,
    before authentication or the database are asked."""
    value: Any = str(world.project_a) if "id" in name else "1"
    response = client.get(
        _concrete(path), params=[(name, value), (name, value)], headers=world.headers(world.admin_a)
    )
    assert response.status_code == 422, (path, response.text)
    assert ["query", name] in [d["loc"] for d in response.json()["details"]]
    assert "given more than once" in [d["message"] for d in response.json()["details"]]
