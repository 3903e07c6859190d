"""GET /metrics: scrape tokens, content, negotiation, promtool, totals that never go backwards."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from meshhook_rt_metrics.client import sketch
from meshhook_rt_metrics.db import migrator
from tests.api.conftest import ApiServer, Seed, World
from tests.support import batch, counter, ingest, merge_points

REQS = "meshhook_webhook_requests_total"
HIST = "meshhook_workflow_step_duration_seconds"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def new_token(
    client: httpx.Client, world: World, user: uuid.UUID, project: uuid.UUID, **extra: Any
) -> httpx.Response:
    return client.post(
        "/api/metrics/scrape-tokens", json={"project_id": str(project), **extra}, headers=world.headers(user)
    )


def scrape(client: httpx.Client, token: str, accept: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if accept:
        headers["Accept"] = accept
    return client.get("/metrics", headers=headers)


def test_scrape_token_lifecycle(
    client: httpx.Client, world: World, seeded: Seed, conn: psycopg.Connection[Any]
) -> None:
    created = new_token(client, world, world.admin_a, world.project_a, name="prometheus")
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("mhm_") and len(token) == 68 and created.json()["token_prefix"] == token[:12]
    stored = conn.execute(
        "select token_hash from metrics.scrape_tokens where id = %s", (created.json()["id"],)
    )
    assert token.encode() not in bytes(stored.fetchone()[0])  # type: ignore[index]

    listed = client.get(
        "/api/metrics/scrape-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.admin_a),
    ).json()["tokens"]
    assert [t["name"] for t in listed] == ["prometheus"] and "token" not in listed[0]
    as_viewer = client.get(
        "/api/metrics/scrape-tokens",
        params={"project_id": str(world.project_a)},
        headers=world.headers(world.viewer_a),
    )
    assert as_viewer.status_code == 200 and as_viewer.json()["tokens"] == []
    assert new_token(client, world, world.viewer_a, world.project_a).status_code == 403
    assert new_token(client, world, world.admin_a, world.project_b).status_code == 403

    body = scrape(client, token)
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    assert 'outcome="ok"' in body.text and "secret_b" not in body.text and "project_id" not in body.text

    token_id = created.json()["id"]
    for user in (world.viewer_a, world.admin_b):
        assert (
            client.delete(f"/api/metrics/scrape-tokens/{token_id}", headers=world.headers(user)).status_code
            == 404
        )
    assert scrape(client, token).status_code == 200
    assert (
        client.delete(
            f"/api/metrics/scrape-tokens/{token_id}", headers=world.headers(world.admin_a)
        ).status_code
        == 204
    )
    assert scrape(client, token).status_code == 401


def test_expired_scrape_tokens_are_refused(
    client: httpx.Client, world: World, seeded: Seed, conn: psycopg.Connection[Any]
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = new_token(client, world, world.admin_a, world.project_a, expires_at=soon).json()
    assert scrape(client, created["token"]).status_code == 200
    conn.execute(
        "update metrics.scrape_tokens set expires_at = now() - interval '1 second' where id = %s",
        (created["id"],),
    )
    assert scrape(client, created["token"]).status_code == 401
    past = new_token(client, world, world.admin_a, world.project_a, expires_at="2020-01-01T00:00:00Z")
    assert past.status_code == 400


def test_tokens_of_a_never_show_b(client: httpx.Client, world: World, seeded: Seed) -> None:
    token_a = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    token_b = new_token(client, world, world.admin_b, world.project_b).json()["token"]
    text_a, text_b = scrape(client, token_a).text, scrape(client, token_b).text
    assert "secret_b" not in text_a and "meshhook_b_only" not in text_a
    assert "secret_b" in text_b and 'signature="valid"' not in text_b and HIST not in text_b


def test_exposed_values(client: httpx.Client, world: World, seeded: Seed) -> None:
    token = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    got = samples(scrape(client, token).text)
    assert got[(REQS, frozenset({("outcome", "ok"), ("signature", "valid")}))] == 60
    assert got[(REQS, frozenset({("outcome", "error"), ("signature", "valid")}))] == 6
    assert got[("meshhook_queue_messages", frozenset({("queue", "default"), ("state", "ready")}))] == 7
    node = ("node_type", "http")
    assert got[(HIST + "_count", frozenset({node}))] == len(seeded.latencies)
    assert got[(HIST + "_sum", frozenset({node}))] == pytest.approx(sum(seeded.latencies))
    # bucket counts: values whose bucket's representative value is <= le (Prometheus default boundaries)
    for le in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0):
        expected = sum(1 for v in seeded.latencies if sketch.value(sketch.key(v)) <= le)
        assert got[(HIST + "_bucket", frozenset({node, ("le", str(le))}))] == expected, le
    assert got[(HIST + "_bucket", frozenset({node, ("le", "+Inf")}))] == len(seeded.latencies)


def test_service_key_adds_project_label(client: httpx.Client, world: World, seeded: Seed) -> None:
    text = client.get("/metrics", headers=world.service_headers).text
    got = samples(text)
    a = ("project_id", str(world.project_a))
    b = ("project_id", str(world.project_b))
    assert got[(REQS, frozenset({("outcome", "ok"), ("signature", "valid"), a}))] == 60
    assert got[(REQS, frozenset({("outcome", "ok"), ("signature", "secret_b"), b}))] == 999
    only_b = client.get(
        "/metrics", params={"project_id": str(world.project_b)}, headers=world.service_headers
    ).text
    assert str(world.project_a) not in only_b and str(world.project_b) in only_b


def test_openmetrics_negotiation_and_promtool(client: httpx.Client, world: World, seeded: Seed) -> None:
    token = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    om = scrape(client, token, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(om.text)}  # type: ignore[no-untyped-call]
    assert families["meshhook_webhook_requests"].type == "counter"
    assert families[HIST].type == "histogram"
    text = scrape(client, token).text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_counters_never_go_backwards(
    client: httpx.Client, world: World, seeded: Seed, conn: psycopg.Connection[Any], api: ApiServer
) -> None:
    token = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    key = (REQS, frozenset({("outcome", "ok"), ("signature", "valid")}))
    before = samples(scrape(client, token).text)[key]
    ingest(conn, batch(world.project_a, [counter(REQS, 5, {"outcome": "ok", "signature": "valid"})]))
    grown = samples(scrape(client, token).text)[key]
    assert grown == before + 5
    # retention deletes the minutes and hours the totals came from: the exported total stays. (Retention
    # reaches only minutes days old, long folded into the totals: the open minutes, which the exposition
    # adds, stay. Here every folded minute goes.)
    conn.execute("select metrics.maintain()")
    conn.execute(
        "delete from metrics.rollup_1m where project_id = %s"
        " and bucket < (select totals_folded_before from metrics.rollup_pass_state)",
        (world.project_a,),
    )
    conn.execute("delete from metrics.rollup_1h where project_id = %s", (world.project_a,))
    assert samples(scrape(client, token).text)[key] == grown
    api.restart()
    assert samples(scrape(client, token).text)[key] == grown
    # a resent batch changes nothing
    payload = batch(
        world.project_a, [counter(REQS, 1, {"outcome": "ok", "signature": "valid"})], batch_id="once"
    )
    ingest(conn, payload)
    ingest(conn, payload)
    assert samples(scrape(client, token).text)[key] == grown + 1


def test_histogram_boundaries(client: httpx.Client, world: World, seeded: Seed) -> None:
    admin, viewer = world.headers(world.admin_a), world.headers(world.viewer_a)
    body = {"project_id": str(world.project_a), "metric": HIST, "boundaries": [0.1, 0.5, 2]}
    assert client.put("/api/metrics/histogram-boundaries", json=body, headers=viewer).status_code == 403
    put = client.put("/api/metrics/histogram-boundaries", json=body, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json()["boundaries"] == [0.1, 0.5, 2.0]
    bad = client.put("/api/metrics/histogram-boundaries", json={**body, "boundaries": [1, 1]}, headers=admin)
    assert bad.status_code == 400 and "increasing" in bad.json()["message"]
    listed = client.get(
        "/api/metrics/histogram-boundaries", params={"project_id": str(world.project_a)}, headers=viewer
    ).json()
    assert listed["metrics"][0]["boundaries"] == [0.1, 0.5, 2.0] and listed["default"][0] == 0.005

    token = new_token(client, world, world.admin_a, world.project_a).json()["token"]
    les = {
        dict(labels).get("le")
        for (name, labels) in samples(scrape(client, token).text)
        if name == HIST + "_bucket"
    }
    assert les == {"0.1", "0.5", "2.0", "+Inf"}
    params = {"project_id": str(world.project_a), "metric": HIST}
    assert (
        client.delete("/api/metrics/histogram-boundaries", params=params, headers=viewer).status_code == 404
    )
    assert client.delete("/api/metrics/histogram-boundaries", params=params, headers=admin).status_code == 204
    les = {
        dict(labels).get("le")
        for (name, labels) in samples(scrape(client, token).text)
        if name == HIST + "_bucket"
    }
    assert len(les) == 12


def test_healthz(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["migrations"] == "current"
    row = conn.execute(
        "delete from supabase_migrations.schema_migrations where version = "
        "(select max(version) from supabase_migrations.schema_migrations) returning version, statements, name"
    ).fetchone()
    assert row is not None
    try:
        degraded = client.get("/healthz")
        assert degraded.status_code == 503 and degraded.json()["pending"] == [row[0]]
    finally:
        conn.execute("insert into supabase_migrations.schema_migrations values (%s, %s, %s)", row)
    assert client.get("/healthz").status_code == 200


def test_healthz_reports_a_stalled_rollup_pass(client: httpx.Client, conn: psycopg.Connection[Any]) -> None:
    """Points waiting and no merge for a minute (no pass runs): degraded, until a pass merges them."""
    merge_points(conn)
    ok = client.get("/healthz").json()
    assert ok["rollups"] == "current" and ok["rollup_pending_points"] == 0
    ingest(conn, batch(uuid.uuid4(), [counter("meshhook_stalled_total", 1)]), merge=False)
    assert client.get("/healthz").json()["rollups"] == "current", "waiting points alone are not a stall"
    conn.execute("update metrics.rollup_lanes set last_pass_at = now() - interval '2 minutes'")
    stalled = client.get("/healthz")
    assert stalled.status_code == 503
    assert stalled.json()["rollups"] == "stalled" and stalled.json()["rollup_pending_points"] >= 1
    merge_points(conn)
    assert client.get("/healthz").json() == ok | {"rollups": "current", "rollup_pending_points": 0}


def test_healthz_reports_a_stalled_fold_of_the_totals(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    """A minute that ended more than five minutes ago and is not folded into the totals: degraded. The setup
    moves the fold watermark back to an old minute and puts it back before any fold runs (no pass runs here)."""
    merge_points(conn)
    assert client.get("/healthz").json()["totals"] == "current"
    ingest(conn, batch(uuid.uuid4(), [counter("meshhook_unfolded_total", 1, ts=time.time() - 8 * 60)]))
    row = conn.execute("select totals_folded_before from metrics.rollup_pass_state").fetchone()
    assert row is not None
    try:
        conn.execute(
            "update metrics.rollup_pass_state set totals_folded_before = date_trunc('minute', now() - interval '9 minutes')"
        )
        stalled = client.get("/healthz")
        assert stalled.status_code == 503
        assert stalled.json()["totals"] == "stalled" and stalled.json()["rollups"] == "current"
    finally:
        conn.execute("update metrics.rollup_pass_state set totals_folded_before = %s", row)
    assert client.get("/healthz").status_code == 200


def test_healthz_of_a_database_before_the_fold_status_migration(
    client: httpx.Client, conn: psycopg.Connection[Any]
) -> None:
    """A service newer than its database (rolled out before the migrations): degraded, with the migration
    pending, not down because rollup_status() lacks the fold's columns."""
    version = "20261207000700"
    migration = next(migrator.migrations_dir().glob(f"{version}_*.sql"))
    row = conn.execute(
        "delete from supabase_migrations.schema_migrations where version = %s returning version, statements, name",
        (version,),
    ).fetchone()
    assert row is not None
    conn.execute(
        "drop function metrics.rollup_status();"
        " create function metrics.rollup_status(out pending_points bigint, out last_merge_at timestamptz,"
        " out stalled boolean) language sql as $$ select 0::bigint, null::timestamptz, false $$"
    )
    try:
        got = client.get("/healthz")
        assert got.status_code == 503, got.text
        assert got.json()["status"] == "degraded" and got.json()["pending"] == [version]
        assert got.json()["rollups"] == got.json()["totals"] == "unknown"
    finally:
        conn.execute(migration.read_text())
        conn.execute("insert into supabase_migrations.schema_migrations values (%s, %s, %s)", row)
    assert client.get("/healthz").status_code == 200


def test_limits_cors_and_openapi(client: httpx.Client, world: World) -> None:
    big = {"project_id": str(world.project_a), "name": "x" * 70000}
    response = client.post("/api/metrics/scrape-tokens", json=big, headers=world.headers(world.admin_a))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    long_query = client.get(
        "/api/metrics", params={"metric": "a" * 9000}, headers=world.headers(world.admin_a)
    )
    assert long_query.status_code == 414
    preflight = {
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options("/api/metrics", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    denied = client.options("/api/metrics", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
    spec = client.get("/openapi.json").json()
    assert {"/api/metrics", "/api/metrics/series", "/metrics", "/healthz"} <= set(spec["paths"])
    assert client.get("/nowhere").json()["code"] == "not_found"


def test_bodies_are_validated_with_paths(client: httpx.Client, world: World) -> None:
    response = client.put(
        "/api/metrics/histogram-boundaries",
        json={"project_id": str(world.project_a), "metric": "x", "boundaries": [1, "a"], "extra": 1},
        headers=world.headers(world.admin_a),
    )
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json()["details"]]
    assert ["body", "boundaries", 1] in locs and ["body", "extra"] in locs


@pytest.mark.parametrize("seed", range(5))
def test_bucket_counts_follow_the_representative_value_rule(conn: psycopg.Connection[Any], seed: int) -> None:
    """SQL bucket counts == counting values whose sketch bucket's representative value is <= le."""
    import random

    rng = random.Random(seed)
    values = [rng.choice([-1, 1]) * rng.lognormvariate(-2, 2) for _ in range(300)] + [0.0] * rng.randint(0, 5)
    bounds = sorted({round(rng.uniform(-3, 3), 3) for _ in range(10)} | {0.0, 0.005, 1.0})

    def representative(v: float) -> float:
        if v >= sketch.ZERO_THRESHOLD:
            return sketch.value(sketch.key(v))
        if v <= -sketch.ZERO_THRESHOLD:
            return -sketch.value(sketch.key(-v))
        return 0.0

    row = conn.execute(
        "select metrics.sketch_cumulative_counts(metrics.sketch_from_values(%s::float8[]), %s::float8[])",
        (values, bounds),
    ).fetchone()
    assert row is not None
    assert row[0] == [sum(1 for v in values if representative(v) <= b) for b in bounds]


# exposition rows shared by the rendering tests: (name, kind, unit, help, labels, value, count, sum, le, buckets)
LATENCY_ROW = (
    "app_latency_seconds",
    "histogram",
    "seconds",
    "",
    '{"route": "/x"}',
    None,
    3,
    1.5,
    [0.1, 1.0],
    [1, 2],
)
REQUESTS_ROW = ("app_requests_total", "counter", "", "", '{"route": "/x"}', 5.0, None, None, None, None)


def test_render_matches_prometheus_client_escaping() -> None:
    """Rendering (one family per name, OpenMetrics written with "allow-utf-8") equals prometheus_client's own
    encoders for legacy names; label values are escaped; a ':' in a name stays in every line."""
    from prometheus_client.exposition import choose_encoder

    from meshhook_rt_metrics.api import exposition

    rows = [
        ("app_depth", "gauge", "", "Depth", '{"queue": "a\\"b\\\\c\\nd"}', 3.0, None, None, None, None),
        LATENCY_ROW,
        REQUESTS_ROW,
        ("app_requests_total", "gauge", "", "", '{"route": "/y"}', 1.0, None, None, None, None),
        ("app_requests_total", "counter", "", "", '{"route": "/z"}', 7.0, None, None, None, None),
    ]
    for accept in (None, "application/openmetrics-text;version=1.0.0", "application/openmetrics-text"):
        body, content_type = exposition.render(rows, accept)
        encoder, expected_type = choose_encoder(accept or "")
        assert body == encoder(exposition.RowsCollector(rows)) and content_type == expected_type
    om = exposition.render(rows, "application/openmetrics-text;version=1.0.0")[0].decode()
    families = {f.name: f for f in parse_openmetrics(om)}  # type: ignore[no-untyped-call]
    assert [s.labels["route"] for s in families["app_requests"].samples] == ["/x", "/z"]  # the gauge: skipped
    assert families["app_depth"].samples[0].labels == {"queue": 'a"b\\c\nd'}
    assert [s.value for s in families["app_latency_seconds"].samples][:3] == [1, 2, 3]

    colon: list[exposition.Row] = [("app:ratio", "gauge", "", "", "{}", 0.5, None, None, None, None)]
    om = exposition.render(colon, "application/openmetrics-text;version=1.0.0")[0].decode()
    assert "# TYPE app:ratio gauge\napp:ratio 0.5\n" in om


def test_overlapped_render_equals_one_pass_and_keeps_one_terminator() -> None:
    """Histograms fetched apart (another thread) give the same families as rendering all rows at once; a
    histogram named like another project's counter is left out; OpenMetrics ends with one "# EOF"."""
    import threading
    from collections.abc import Sequence

    from meshhook_rt_metrics.api import exposition

    rows = [
        ("app_depth", "gauge", "", "", '{"queue": "a"}', 3.0, None, None, None, None),
        LATENCY_ROW,
        REQUESTS_ROW,
        ("app_requests_total", "histogram", "", "", '{"route": "/h"}', None, 1, 1.0, [1.0], [1]),
    ]
    threads: dict[tuple[str, ...], str] = {}

    def fetch(kinds: Sequence[str]) -> list[exposition.Row]:
        threads[tuple(kinds)] = threading.current_thread().name
        return [r for r in rows if r[1] in kinds]

    for accept in (None, "application/openmetrics-text;version=1.0.0"):
        body, content_type = exposition.render_overlapped(fetch, accept)
        whole, whole_type = exposition.render(rows[:3], accept)
        assert content_type == whole_type
        parse = text_string_to_metric_families if accept is None else parse_openmetrics
        assert sorted((f.name, f.type, f.samples) for f in parse(body.decode())) == sorted(
            (f.name, f.type, f.samples) for f in parse(whole.decode())
        )
        assert body.count(b"# EOF") == (0 if accept is None else 1)
    assert threads[exposition.HISTOGRAMS] != threads[exposition.COUNTERS_AND_GAUGES]
