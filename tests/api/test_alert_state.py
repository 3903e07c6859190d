"""What the alert worker made of the rules, read through the API as real callers: active alerts,
notification deliveries (dead letters too), the history's new states, and receiver tests that go through the
worker's delivery path (claim_alert_deliveries / finish_alert_delivery, simulated here from a thread).

Rows the worker writes are inserted as the service role, as the worker does. No response may carry a
receiver's target or secret: a known secret and target are planted and looked for in every body.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from meshhook_rt_metrics.db.session import as_caller
from tests.api.conftest import World
from tests.api.test_alerts import BASE, created, locs, receiver_body, rule_body
from tests.support import TestDatabase, user_claims

SECRET = "whsec-STATE-9d1f-never-in-a-response"
TARGET = "https://alerts.internal.example/hook/T0P-S3CRET-PATH"
SERVICE = {"role": "service_role"}
NOW = datetime.now(UTC).replace(microsecond=0)


def clean(response: httpx.Response) -> httpx.Response:
    """A response of the alert state endpoints, which must not carry the planted secret or target (the
    receivers' own endpoints show admins the target: they are not passed through here)."""
    for planted in (SECRET, TARGET, "T0P-S3CRET-PATH", "alerts.internal.example"):
        assert planted not in response.text, (planted, response.text)
    return response


def new_receiver(client: httpx.Client, headers: dict[str, str], project: uuid.UUID) -> dict[str, Any]:
    body = receiver_body(project, target=TARGET, secret=SECRET)
    return created(client.post(f"{BASE}/receivers", json=body, headers=headers))


@pytest.fixture(scope="module")
def state(
    client: httpx.Client, world: World, admin_a: dict[str, str], conn: psycopg.Connection[Any]
) -> dict[str, Any]:
    """A rule and receiver of A with instances and messages as the worker writes them; the same of B."""
    rule = created(
        client.post(
            BASE,
            json=rule_body(world.project_a, by=["route"], labels={"team": "ops"}, severity="critical"),
            headers=admin_a,
        )
    )
    receiver = new_receiver(client, admin_a, world.project_a)
    b_headers = world.headers(world.admin_b)
    b_rule = created(client.post(BASE, json=rule_body(world.project_b, by=["route"]), headers=b_headers))
    b_receiver = new_receiver(client, b_headers, world.project_b)
    t = NOW - timedelta(seconds=30)
    instances = [
        # fingerprint, labels, state, value, active_at, fired_at, recovering_at
        ("fp-firing", {"route": "/a"}, "firing", 7.5, t - timedelta(minutes=10), t - timedelta(minutes=8), None),
        ("fp-pending", {"route": "/b"}, "pending", 6.0, t - timedelta(minutes=1), None, None),
        ("fp-recovering", {"route": "/c"}, "recovering", 0.2, t - timedelta(minutes=30), t - timedelta(minutes=20),
         t - timedelta(minutes=2)),
        ("fp-nodata", {"route": "/d"}, "nodata", None, t - timedelta(minutes=5), t - timedelta(minutes=5), None),
        ("fp-inactive", {"route": "/e"}, "inactive", 0.1, None, None, None),
        ("fp-nan", {"route": "/f"}, "firing", float("nan"), t - timedelta(minutes=3), t - timedelta(minutes=3), None),
    ]  # fmt: skip
    messages = [
        # key, kind, status, attempts, last_status, last_error, fingerprints
        ("k-sent", "notification", "sent", 1, 200, None, ["fp-firing", "fp-nodata"]),
        ("k-repeat", "repeat", "pending", 2, 503, "HTTP 503 from the receiver", ["fp-firing"]),
        ("k-dead", "notification", "dead", 8, 400, "HTTP 400 from the receiver", ["fp-recovering"]),
    ]
    with as_caller(conn, SERVICE):
        for fp, labels, st, value, active, fired, recovering in instances:
            conn.execute(
                "insert into metrics.alert_instances (project_id, rule_id, fingerprint, labels, state, value,"
                " active_at, fired_at, recovering_at, last_data_at, evaluated_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (world.project_a, rule["id"], fp, Jsonb(labels), st, value, active, fired, recovering, t, t),
            )
        conn.execute(
            "insert into metrics.alert_instances (project_id, rule_id, fingerprint, labels, state, evaluated_at)"
            " values (%s, %s, 'fp-b-secret', '{\"route\": \"/b-only\"}', 'firing', now())",
            (world.project_b, b_rule["id"]),
        )
        for i, (key, kind, status, attempts, last_status, last_error, fps) in enumerate(messages):
            alerts = [{"fingerprint": fp, "state": "firing", "status": "firing", "labels": {}} for fp in fps]
            conn.execute(
                "insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body,"
                " status, attempts, last_status, last_error, created_at, sent_at, next_attempt_at)"
                " values (%s, %s, %s, %s, 'thread', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    key,
                    world.project_a,
                    rule["id"],
                    receiver["id"],
                    kind,
                    Jsonb({"version": "4", "receiver": receiver["name"], "alerts": alerts}),
                    status,
                    attempts,
                    last_status,
                    last_error,
                    t + timedelta(seconds=i),
                    t + timedelta(seconds=i) if status == "sent" else None,
                    t + timedelta(hours=1),
                ),
            )
        conn.execute(
            "insert into metrics.alert_messages (key, project_id, rule_id, receiver_id, thread_key, kind, body,"
            " status) values ('k-b-only', %s, %s, %s, 'thread', 'notification', '{\"alerts\": []}', 'dead')",
            (world.project_b, b_rule["id"], b_receiver["id"]),
        )
    return {"rule": rule, "receiver": receiver, "b_rule": b_rule, "b_receiver": b_receiver, "t": t}


def get(client: httpx.Client, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = clean(client.get(f"{BASE}/{path}", params=params, headers=headers))
    assert response.status_code == 200, response.text
    return response.json()


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


# -- active alerts --------------------------------------------------------------------------------------
def test_active_alerts_as_a_member(client: httpx.Client, world: World, state: dict[str, Any]) -> None:
    viewer = world.headers(world.viewer_a)
    alerts = get(client, "active", viewer, project_id=world.project_a)["alerts"]
    by_fp = {a["fingerprint"]: a for a in alerts}
    assert set(by_fp) == {"fp-firing", "fp-pending", "fp-recovering", "fp-nodata", "fp-nan"}  # not inactive
    rule, t = state["rule"], state["t"]
    firing = by_fp["fp-firing"]
    assert firing == {
        "rule_id": rule["id"],
        "rule_name": rule["name"],
        "fingerprint": "fp-firing",
        "labels": {"route": "/a", "team": "ops", "alertname": rule["name"], "severity": "critical"},
        "state": "firing",
        "value": 7.5,
        "since": iso(t - timedelta(minutes=8)),
        "active_at": iso(t - timedelta(minutes=10)),
        "fired_at": iso(t - timedelta(minutes=8)),
        "recovering_at": None,
        "last_data_at": iso(t),
        "evaluated_at": iso(t),
    }
    # since: when the alert entered its state
    assert by_fp["fp-pending"]["since"] == iso(t - timedelta(minutes=1))
    assert by_fp["fp-recovering"]["since"] == iso(t - timedelta(minutes=2))
    assert by_fp["fp-nodata"]["since"] == iso(t - timedelta(minutes=5))
    assert by_fp["fp-nodata"]["value"] is None and by_fp["fp-nan"]["value"] is None  # NaN is not JSON
    # latest first
    assert [a["fingerprint"] for a in alerts][:2] == ["fp-pending", "fp-recovering"]

    only = get(client, "active", viewer, project_id=world.project_a, state="recovering")["alerts"]
    assert [a["fingerprint"] for a in only] == ["fp-recovering"]
    assert get(client, "active", viewer, project_id=world.project_a, rule_id=uuid.uuid4())["alerts"] == []
    assert len(get(client, "active", viewer, project_id=world.project_a, rule_id=rule["id"])["alerts"]) == 5


# -- deliveries -----------------------------------------------------------------------------------------
def test_deliveries_with_their_alerts_and_dead_letters(
    client: httpx.Client, world: World, state: dict[str, Any]
) -> None:
    viewer = world.headers(world.viewer_a)
    rule, receiver, t = state["rule"], state["receiver"], state["t"]
    listed = get(client, "deliveries", viewer, project_id=world.project_a, kind="notification")["deliveries"]
    listed += get(client, "deliveries", viewer, project_id=world.project_a, kind="repeat")["deliveries"]
    by_key = {d["key"]: d for d in listed}
    assert {"k-sent", "k-repeat", "k-dead"} <= set(by_key)
    sent = by_key["k-sent"]
    assert {k: v for k, v in sent.items() if k != "id"} == {
        "key": "k-sent",
        "rule_id": rule["id"],
        "receiver_id": receiver["id"],
        "kind": "notification",
        "status": "sent",
        "attempts": 1,
        "last_status": 200,
        "last_error": None,
        "created_at": iso(t),
        "sent_at": iso(t),
        "next_attempt_at": None,
        "alerts": [
            {"fingerprint": "fp-firing", "state": "firing", "status": "firing"},
            {"fingerprint": "fp-nodata", "state": "firing", "status": "firing"},
        ],
    }
    assert by_key["k-repeat"]["next_attempt_at"] == iso(t + timedelta(hours=1))
    assert by_key["k-repeat"]["last_error"] == "HTTP 503 from the receiver"

    dead = get(client, "deliveries", viewer, project_id=world.project_a, status="dead")["deliveries"]
    assert "k-dead" in [d["key"] for d in dead] and {d["status"] for d in dead} == {"dead"}
    letter = next(d for d in dead if d["key"] == "k-dead")
    assert (letter["attempts"], letter["last_status"], letter["last_error"]) == (
        8,
        400,
        "HTTP 400 from the receiver",
    )
    assert [a["fingerprint"] for a in letter["alerts"]] == ["fp-recovering"]

    newest = get(client, "deliveries", viewer, project_id=world.project_a, kind="notification", limit=1)
    assert [d["key"] for d in newest["deliveries"]] == ["k-dead"]
    mine = get(client, "deliveries", viewer, project_id=world.project_a, receiver_id=receiver["id"])
    assert {"k-sent", "k-repeat", "k-dead"} <= {d["key"] for d in mine["deliveries"]}
    assert (
        get(client, "deliveries", viewer, project_id=world.project_a, rule_id=uuid.uuid4())["deliveries"]
        == []
    )


def test_history_shows_the_workers_states(
    client: httpx.Client, world: World, state: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    rule = state["rule"]
    with as_caller(conn, SERVICE):
        for i, (st, previous) in enumerate(
            (("recovering", "firing"), ("nodata", "inactive"), ("inactive", "pending"))
        ):
            conn.execute(
                "insert into metrics.alert_events (project_id, rule_id, rule_name, state, previous, fingerprint, at)"
                " values (%s, %s, %s, %s, %s, 'fp-history', %s)",
                (
                    world.project_a,
                    rule["id"],
                    rule["name"],
                    st,
                    previous,
                    NOW + timedelta(hours=1, seconds=i),
                ),
            )
    events = get(client, "history", world.headers(world.viewer_a), project_id=world.project_a, limit=3)[
        "events"
    ]
    assert [(e["state"], e["previous"], e["fingerprint"]) for e in events] == [
        ("inactive", "pending", "fp-history"),
        ("nodata", "inactive", "fp-history"),
        ("recovering", "firing", "fp-history"),
    ]


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("active", {"state": "inactive"}, ["query", "state"]),
        ("active", {"state": "resolved"}, ["query", "state"]),
        ("deliveries", {"status": "failed"}, ["query", "status"]),
        ("deliveries", {"kind": "email"}, ["query", "kind"]),
        ("deliveries", {"limit": 0}, ["query", "limit"]),
        ("deliveries", {"limit": 1001}, ["query", "limit"]),
        ("deliveries", {"receiver_id": "nope"}, ["query", "receiver_id"]),
        ("active", {"project_id": "nope"}, ["query", "project_id"]),
    ],
)
def test_bad_queries_are_422(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    path: str,
    params: dict[str, Any],
    loc: list[str | int],
) -> None:
    response = client.get(
        f"{BASE}/{path}", params={"project_id": str(world.project_a), **params}, headers=admin_a
    )
    assert locs(response) == [loc]


# -- receiver tests -------------------------------------------------------------------------------------
@contextmanager
def simulated_worker(
    db: TestDatabase,
    receiver_id: str,
    *,
    ok: bool,
    status: int,
    error: str | None = None,
    permanent: bool = False,
) -> Iterator[dict[str, Any]]:
    """The alert worker's delivery loop for one receiver, in a thread: claim due messages as the service
    role (metrics.claim_alert_deliveries) and record the attempt (metrics.finish_alert_delivery)."""
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def run() -> None:
        try:
            with psycopg.connect(db.url, autocommit=True) as worker:
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    with as_caller(worker, SERVICE):
                        rows = worker.execute(
                            "select id, receiver_id, kind, target, secret"
                            " from metrics.claim_alert_deliveries('simulated-worker', 50)"
                        ).fetchall()
                        for row in rows:
                            if str(row[1]) != receiver_id:
                                continue  # another test's message: left to its lapsing claim
                            seen.update(
                                id=row[0], kind=row[2], target=row[3], secret=row[4]
                            )  # the receiver's kind
                            seen["outcome"] = worker.execute(
                                "select metrics.finish_alert_delivery(%s, 'simulated-worker', %s, %s, %s, null, %s)",
                                (row[0], ok, status, error, permanent),
                            ).fetchone()
                    if "outcome" in seen:
                        return
                    time.sleep(0.05)
        except Exception as exc:  # surfaced by the test
            seen["error"] = repr(exc)

    thread = threading.Thread(target=run, name="simulated-alert-worker", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=30)


def queued_tests(conn: psycopg.Connection[Any], receiver_id: str) -> int:
    row = conn.execute(
        "select count(*) from metrics.alert_messages where receiver_id = %s and kind = 'test'", (receiver_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_receiver_test_without_a_worker_is_202(
    client: httpx.Client, world: World, admin_a: dict[str, str], state: dict[str, Any]
) -> None:
    receiver = new_receiver(client, admin_a, world.project_a)
    started = time.monotonic()
    response = clean(
        client.post(f"{BASE}/receivers/{receiver['id']}/test", params={"wait": 1}, headers=admin_a)
    )
    assert response.status_code == 202, response.text
    assert 1 <= time.monotonic() - started < 10
    body = response.json()
    assert (body["status"], body["attempts"], body["last_status"], body["last_error"]) == (
        "pending",
        0,
        None,
        None,
    )
    assert "worker" in body["detail"] and body["key"].startswith("t")
    # queued for real: a worker started later delivers it (the deliveries show it)
    listed = get(client, "deliveries", admin_a, project_id=world.project_a, receiver_id=receiver["id"])
    assert [(d["id"], d["kind"], d["status"], d["rule_id"]) for d in listed["deliveries"]] == [
        (body["message_id"], "test", "pending", None)
    ]
    immediate = clean(
        client.post(f"{BASE}/receivers/{receiver['id']}/test", params={"wait": 0}, headers=admin_a)
    )
    assert immediate.status_code == 202 and immediate.json()["message_id"] != body["message_id"]


def test_a_receiver_test_delivered_by_the_worker_is_200(
    client: httpx.Client, world: World, admin_a: dict[str, str], db: TestDatabase, state: dict[str, Any]
) -> None:
    receiver = new_receiver(client, admin_a, world.project_a)
    with simulated_worker(db, receiver["id"], ok=True, status=202) as worker:
        response = clean(
            client.post(f"{BASE}/receivers/{receiver['id']}/test", params={"wait": 20}, headers=admin_a)
        )
    assert "error" not in worker, worker.get("error")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["attempts"], body["last_status"], body["last_error"]) == (
        "sent",
        1,
        202,
        None,
    )
    assert body["detail"] == "delivered"
    assert (worker["id"], worker["kind"], worker["outcome"]) == (body["message_id"], "webhook", ("sent",))
    # the worker (service role) got what sending needs: their absence from the responses is not vacuous
    assert (worker["target"], worker["secret"]) == (TARGET, SECRET)
    listed = get(client, "deliveries", admin_a, project_id=world.project_a, receiver_id=receiver["id"])
    (delivery,) = listed["deliveries"]
    assert (delivery["id"], delivery["kind"], delivery["status"], delivery["rule_id"]) == (
        body["message_id"],
        "test",
        "sent",
        None,
    )
    assert [a["state"] for a in delivery["alerts"]] == ["firing"]


def test_a_receiver_test_that_fails_for_good_is_502(
    client: httpx.Client, world: World, admin_a: dict[str, str], db: TestDatabase, state: dict[str, Any]
) -> None:
    receiver = new_receiver(client, admin_a, world.project_a)
    with simulated_worker(
        db, receiver["id"], ok=False, status=400, error="HTTP 400 from the receiver", permanent=True
    ) as worker:
        response = clean(
            client.post(f"{BASE}/receivers/{receiver['id']}/test", params={"wait": 20}, headers=admin_a)
        )
    assert "error" not in worker, worker.get("error")
    assert response.status_code == 502, response.text
    body = response.json()
    assert (body["status"], body["attempts"], body["last_status"], body["last_error"]) == (
        "dead",
        1,
        400,
        "HTTP 400 from the receiver",
    )
    dead = get(client, "deliveries", admin_a, project_id=world.project_a, status="dead", kind="test")
    assert body["message_id"] in [d["id"] for d in dead["deliveries"]]


def test_only_admins_test_receivers(
    client: httpx.Client,
    world: World,
    admin_a: dict[str, str],
    editor_a: dict[str, str],
    state: dict[str, Any],
    conn: psycopg.Connection[Any],
) -> None:
    """Other members are refused (403) where they know the receiver (deliveries went to it, a rule links
    it); a receiver they cannot know of is 404, as for anyone outside the project. Nothing is queued."""
    viewer = world.headers(world.viewer_a)
    receiver = state["receiver"]["id"]  # deliveries went to it
    fresh = new_receiver(client, admin_a, world.project_a)["id"]  # nobody but admins knows it yet
    before = queued_tests(conn, receiver), queued_tests(conn, fresh)
    for headers in (viewer, editor_a):
        response = clean(
            client.post(f"{BASE}/receivers/{receiver}/test", params={"wait": 0}, headers=headers)
        )
        assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
        response = clean(client.post(f"{BASE}/receivers/{fresh}/test", params={"wait": 0}, headers=headers))
        assert response.status_code == 404 and response.json()["code"] == "not_found", response.text
    rule = created(client.post(BASE, json=rule_body(world.project_a, receiver_ids=[fresh]), headers=editor_a))
    linked = clean(client.post(f"{BASE}/receivers/{fresh}/test", params={"wait": 0}, headers=viewer))
    assert linked.status_code == 403, linked.text
    assert (queued_tests(conn, receiver), queued_tests(conn, fresh)) == before
    assert client.delete(f"{BASE}/{rule['id']}", headers=editor_a).status_code == 204

    for wait in (31, -1, "x"):
        response = client.post(f"{BASE}/receivers/{receiver}/test", params={"wait": wait}, headers=admin_a)
        assert locs(response) == [["query", "wait"]]
    unknown = client.post(f"{BASE}/receivers/{uuid.uuid4()}/test", params={"wait": 0}, headers=admin_a)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found", unknown.text
    assert client.post(f"{BASE}/receivers/not-a-uuid/test", headers=admin_a).status_code == 422
    assert (queued_tests(conn, receiver), queued_tests(conn, fresh)) == before


def test_the_service_role_tests_any_receiver(
    client: httpx.Client, world: World, state: dict[str, Any]
) -> None:
    receiver = new_receiver(client, world.headers(world.admin_b), world.project_b)["id"]
    response = clean(
        client.post(f"{BASE}/receivers/{receiver}/test", params={"wait": 0}, headers=world.service_headers)
    )
    assert response.status_code == 202, response.text


# -- tenancy --------------------------------------------------------------------------------------------
def test_another_tenant_sees_and_triggers_nothing_of_a(
    client: httpx.Client, world: World, state: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    a = str(world.project_a)
    receiver = state["receiver"]["id"]
    before = queued_tests(conn, receiver)
    for user in (world.admin_b, world.outsider):
        headers = world.headers(user)
        forbidden = [
            clean(client.get(f"{BASE}/active", params={"project_id": a}, headers=headers)),
            clean(client.get(f"{BASE}/deliveries", params={"project_id": a}, headers=headers)),
            clean(
                client.get(f"{BASE}/deliveries", params={"project_id": a, "status": "dead"}, headers=headers)
            ),
            clean(client.get(f"{BASE}/history", params={"project_id": a}, headers=headers)),
        ]
        assert [r.status_code for r in forbidden] == [403] * 4, [r.text for r in forbidden]
        missing = [
            clean(client.post(f"{BASE}/{state['rule']['id']}/preview", headers=headers)),
            clean(client.post(f"{BASE}/receivers/{receiver}/test", params={"wait": 0}, headers=headers)),
        ]
        assert [r.status_code for r in missing] == [404, 404], [r.text for r in missing]
    assert queued_tests(conn, receiver) == before

    # B reads its own, and none of A's; A reads none of B's
    b = world.headers(world.admin_b)
    b_active = get(client, "active", b, project_id=world.project_b)["alerts"]
    assert [x["fingerprint"] for x in b_active] == ["fp-b-secret"]
    b_receiver = state["b_receiver"]["id"]
    b_deliveries = get(client, "deliveries", b, project_id=world.project_b, receiver_id=b_receiver)[
        "deliveries"
    ]
    assert [d["key"] for d in b_deliveries] == ["k-b-only"]
    a_viewer = world.headers(world.viewer_a)
    a_texts = [
        clean(client.get(f"{BASE}/active", params={"project_id": a}, headers=a_viewer)).text,
        clean(
            client.get(f"{BASE}/deliveries", params={"project_id": a, "limit": 1000}, headers=a_viewer)
        ).text,
    ]
    assert all("fp-b-secret" not in t and "k-b-only" not in t for t in a_texts)
    # the database's rule, not the endpoint's filter
    with as_caller(conn, user_claims(world.admin_a)):
        row = conn.execute(
            "select (select count(*) from metrics.alert_instances where project_id = %s),"
            " (select count(*) from metrics.alert_messages where project_id = %s)",
            (world.project_b, world.project_b),
        ).fetchone()
    assert row == (0, 0)


NEW_ENDPOINTS = [
    ("GET", BASE + "/active?project_id={p}"),
    ("GET", BASE + "/deliveries?project_id={p}"),
    ("POST", BASE + "/receivers/{i}/test?wait=0"),
    ("POST", BASE + "/{i}/preview"),
    ("GET", BASE + "/mute-windows?project_id={p}"),
    ("POST", BASE + "/mute-windows"),
    ("GET", BASE + "/mute-windows/{i}"),
    ("PATCH", BASE + "/mute-windows/{i}"),
    ("DELETE", BASE + "/mute-windows/{i}"),
]


@pytest.mark.parametrize(("method", "path"), NEW_ENDPOINTS)
def test_missing_or_invalid_token_is_401(client: httpx.Client, world: World, method: str, path: str) -> None:
    url = path.format(p=world.project_a, i=uuid.uuid4())
    body: dict[str, Any] | None = None
    if method == "POST" and url.endswith("mute-windows"):
        body = {"project_id": str(world.project_a), "name": "n", "start_time": "22:00", "end_time": "06:00",
                "time_zone": "UTC"}  # fmt: skip
    elif method == "PATCH":
        body = {"name": "n"}
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {world.keys.anon_key}"},
        {"Authorization": f"Bearer {world.token(world.admin_a)}x"},
    ):
        response = clean(client.request(method, url, json=body, headers=headers))
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthorized"
