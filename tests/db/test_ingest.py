"""metrics.ingest: exactly-once batches, whole-batch validation with named errors, kinds, series quota."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from meshhook_rt_metrics.db.session import as_caller, claims_for_user
from meshhook_rt_metrics.localstack.postgres import LocalPostgres
from tests.support import TestDatabase, add_member, batch, counter, gauge, histogram, ingest, new_project


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def stored(conn: psycopg.Connection[Any], project: uuid.UUID) -> tuple[int, int, int]:
    """(points, series, batches) stored for a project."""
    row = conn.execute(
        "select (select count(*) from metrics.points where project_id = %(p)s),"
        " (select count(*) from metrics.series where project_id = %(p)s),"
        " (select count(*) from metrics.batches where project_id = %(p)s)",
        {"p": project},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_accepted_batch_reports_what_it_stored(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    result = ingest(
        conn,
        batch(
            project,
            [
                counter("meshhook_webhook_requests_total", 3, {"outcome": "accepted"}),
                gauge("meshhook_queue_messages", 12, {"queue": "jobs"}),
                histogram(
                    "meshhook_workflow_step_duration_seconds", [0.1, 0.2, 0.3], {"node_type": "http_call"}
                ),
            ],
        ),
    )
    assert result == {"status": "accepted", "points": 3, "series_created": 3, "overflowed": 0}
    assert stored(conn, project) == (3, 3, 1)


def test_resending_a_batch_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    payload = batch(
        project, [counter("jobs_total", 5), counter("jobs_total", 2, {"queue": "a"})], batch_id="once"
    )
    assert ingest(conn, payload)["status"] == "accepted"
    before = conn.execute(
        "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
    ).fetchone()
    for _ in range(3):
        assert ingest(conn, payload) == {
            "status": "duplicate",
            "points": 0,
            "series_created": 0,
            "overflowed": 0,
        }
    after = conn.execute(
        "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
    ).fetchone()
    assert before == after == (7.0,)
    assert stored(conn, project) == (2, 2, 1)


def test_same_batch_id_from_another_source_is_a_different_batch(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    ingest(conn, batch(project, [counter("jobs_total", 1)], source="worker-a", batch_id="1"))
    assert (
        ingest(conn, batch(project, [counter("jobs_total", 1)], source="worker-b", batch_id="1"))["status"]
        == "accepted"
    )
    assert stored(conn, project)[0] == 2


def _bad(
    point_changes: dict[str, Any] | None = None, drop: str | None = None, kind: str = "counter"
) -> dict[str, Any]:
    base = {
        "counter": counter("jobs_total", 1),
        "gauge": gauge("depth", 1.0),
        "histogram": histogram("latency_seconds", [0.5]),
    }[kind]
    if drop:
        base.pop(drop)
    base.update(point_changes or {})
    return base


BAD_POINTS = [
    pytest.param(
        _bad({"name": "1starts_with_digit"}), "points[1].name: invalid metric name", id="metric-name"
    ),
    pytest.param(
        _bad({"name": "__reserved"}),
        'points[1].name: names starting with "__" are reserved',
        id="reserved-name",
    ),
    pytest.param(_bad({"kind": "summary"}), "points[1].kind: must be", id="kind"),
    pytest.param(
        _bad({"labels": {"foo-bar": "x"}}), "points[1].labels.foo-bar: invalid label name", id="label-name"
    ),
    pytest.param(
        _bad({"labels": {"__name__": "x"}}),
        "points[1].labels.__name__: label names starting with",
        id="reserved-label",
    ),
    pytest.param(
        _bad({"labels": {f"l{i}": "v" for i in range(33)}}),
        "points[1].labels: more than 32 labels",
        id="label-count",
    ),
    pytest.param(
        _bad({"labels": {"path": "x" * 1025}}),
        "points[1].labels.path: label value longer than 1024",
        id="label-length",
    ),
    pytest.param(
        _bad({"labels": {"code": 200}}),
        "points[1].labels.code: label values must be strings",
        id="label-type",
    ),
    pytest.param(
        _bad({"sum": -1}), "points[1].sum: counter increments must not be negative", id="negative-counter"
    ),
    pytest.param(_bad({"sum": "1"}), "points[1].sum: required finite number", id="string-number"),
    pytest.param(_bad({"count": 0}), "points[1].count: required integer >= 1", id="count-zero"),
    pytest.param(_bad({"count": 1.5}), "points[1].count: required integer >= 1", id="count-fraction"),
    pytest.param(
        _bad({"ts": time.time() - 3 * 86400}), "points[1].ts: older than the accepted window", id="too-old"
    ),
    pytest.param(_bad({"ts": time.time() + 3600}), "points[1].ts: more than", id="future"),
    pytest.param(_bad({"ts": "2026-01-01"}), "points[1].ts: required number", id="ts-type"),
    pytest.param(_bad({"extra": 1}), "points[1].extra: unknown field", id="unknown-field"),
    pytest.param(_bad(drop="last", kind="gauge"), "points[1].last: required for gauge", id="gauge-last"),
    pytest.param(
        _bad(drop="sketch", kind="histogram"), "points[1].sketch: required for histogram", id="hist-sketch"
    ),
    pytest.param(
        _bad({"sketch": {"z": 1}}), "points[1].sketch: only histograms carry a sketch", id="counter-sketch"
    ),
    pytest.param(
        _bad({"count": 2}, kind="histogram"), "points[1].sketch: bucket counts must add up", id="sketch-count"
    ),
    pytest.param(
        _bad({"sketch": {"p": {"x": 1}}}, kind="histogram"), "points[1].sketch: bucket keys", id="sketch-key"
    ),
    pytest.param(
        _bad({"min": 5.0, "max": 1.0}, kind="gauge"), "points[1].min: greater than max", id="min-max"
    ),
]


@pytest.mark.parametrize(("bad_point", "message"), BAD_POINTS)
def test_bad_point_rejects_the_whole_batch_naming_point_and_field(
    conn: psycopg.Connection[Any], bad_point: dict[str, Any], message: str
) -> None:
    project = new_project()
    payload = batch(project, [counter("good_total", 1), bad_point, counter("good_total", 1, {"x": "y"})])
    with pytest.raises(errors.InvalidParameterValue) as raised:
        ingest(conn, payload)
    assert str(raised.value.diag.message_primary).startswith(message), raised.value.diag.message_primary
    assert raised.value.diag.sqlstate == "22023"
    assert stored(conn, project) == (0, 0, 0)
    # the same batch id is still free: the rejected batch was not recorded
    payload["points"] = [counter("good_total", 1)]
    assert ingest(conn, payload)["status"] == "accepted"


def test_numbers_beyond_double_range_are_rejected(conn: psycopg.Connection[Any]) -> None:
    """JSON has no NaN/Infinity, but 1e400 is valid JSON that no double can hold."""
    payload = json.dumps(batch(new_project(), [counter("x_total", 1)])).replace('"sum": 1', '"sum": 1e400')
    with pytest.raises(errors.InvalidParameterValue, match=r"points\[0\].sum: required finite number"):
        conn.execute("select metrics.ingest(%s::jsonb)", (payload,))


BAD_ENVELOPES = [
    pytest.param([], "batch: must be a JSON object", id="not-object"),
    pytest.param(
        {"project_id": "nope", "source": "s", "batch_id": "b", "points": []},
        "batch.project_id: required uuid",
        id="uuid",
    ),
    pytest.param({"source": "s", "batch_id": "b", "points": []}, "batch.project_id", id="missing-project"),
    pytest.param(
        {"project_id": str(uuid.uuid4()), "source": "", "batch_id": "b", "points": []},
        "batch.source",
        id="source",
    ),
    pytest.param(
        {"project_id": str(uuid.uuid4()), "source": "s", "batch_id": "x" * 101, "points": []},
        "batch.batch_id",
        id="batch-id",
    ),
    pytest.param(
        {"project_id": str(uuid.uuid4()), "source": "s", "batch_id": "b", "points": []},
        "batch.points: must not be empty",
        id="empty",
    ),
    pytest.param(
        {"project_id": str(uuid.uuid4()), "source": "s", "batch_id": "b", "points": {}},
        "batch.points: required array",
        id="points-type",
    ),
    pytest.param(
        {"project_id": str(uuid.uuid4()), "source": "s", "batch_id": "b", "points": [], "x": 1},
        "batch.x: unknown field",
        id="unknown",
    ),
]


@pytest.mark.parametrize(("payload", "message"), BAD_ENVELOPES)
def test_bad_envelope_is_rejected_with_a_clear_error(
    conn: psycopg.Connection[Any], payload: Any, message: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as raised:
        ingest(conn, payload)
    assert str(raised.value.diag.message_primary).startswith(message)


def test_too_many_points_are_rejected(conn: psycopg.Connection[Any]) -> None:
    conn.execute("update metrics.config set max_points_per_batch = 3")
    try:
        with pytest.raises(errors.InvalidParameterValue, match="4 points, more than the limit of 3"):
            ingest(conn, batch(new_project(), [counter(f"m{i}_total", 1) for i in range(4)]))
    finally:
        conn.execute("update metrics.config set max_points_per_batch = default")


def test_a_metric_keeps_its_kind(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    ingest(conn, batch(project, [counter("jobs", 1)]))
    with pytest.raises(
        errors.InvalidParameterValue, match=r"points\[0\].kind: metric jobs is a counter, not a gauge"
    ):
        ingest(conn, batch(project, [gauge("jobs", 1.0, {"other": "labels"})]))
    with pytest.raises(
        errors.InvalidParameterValue, match=r"points\[1\].kind: metric fresh is a gauge, not a counter"
    ):
        ingest(conn, batch(project, [gauge("fresh", 1.0), counter("fresh", 1, {"a": "b"})]))
    # another project may use the name with another kind
    assert ingest(conn, batch(new_project(), [gauge("jobs", 1.0)]))["status"] == "accepted"


def test_series_over_the_quota_go_to_one_overflow_series_per_metric_and_are_counted(
    conn: psycopg.Connection[Any],
) -> None:
    project = new_project()
    conn.execute("insert into metrics.projects (id, series_quota) values (%s, 3)", (project,))
    first = ingest(conn, batch(project, [counter("hits_total", 1, {"path": f"/p{i}"}) for i in range(2)]))
    assert first["series_created"] == 2
    second = ingest(
        conn,
        batch(
            project,
            [
                counter("hits_total", 1, {"path": "/p0"}),  # existing: not affected by the quota
                counter("hits_total", 2, {"path": "/p2"}),  # the third series: admitted
                counter("hits_total", 4, {"path": "/p3"}),  # over the quota
                counter("hits_total", 8, {"path": "/p4"}),  # over the quota
                counter("other_total", 16, {"k": "v"}),  # over the quota, another metric
            ],
        ),
    )
    assert second == {"status": "accepted", "points": 5, "series_created": 1, "overflowed": 3}
    rows = conn.execute(
        "select s.name, s.labels, sum(r.sum) from metrics.series s join metrics.rollup_1m r on r.series_id = s.id"
        " where s.project_id = %s and s.labels ? '__overflow__' group by 1, 2 order by 1",
        (project,),
    ).fetchall()
    assert rows == [
        ("hits_total", {"__overflow__": "true"}, 12.0),
        ("other_total", {"__overflow__": "true"}, 16.0),
    ]
    counted = conn.execute(
        "select name, overflow_points from metrics.families where project_id = %s order by name", (project,)
    ).fetchall()
    assert counted == [("hits_total", 2), ("other_total", 1)]
    total = conn.execute(
        "select sum(sum) from metrics.rollup_1m where project_id = %s", (project,)
    ).fetchone()
    assert total == (1 + 1 + 1 + 2 + 4 + 8 + 16.0,), "nothing is dropped"


def test_labels_are_a_set_regardless_of_key_order(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    ingest(conn, batch(project, [counter("x_total", 1, {"a": "1", "b": "2"})]))
    again = ingest(conn, batch(project, [counter("x_total", 1, {"b": "2", "a": "1"})]))
    assert again["series_created"] == 0


def test_points_spanning_midnight_land_in_daily_partitions(conn: psycopg.Connection[Any]) -> None:
    project = new_project()
    now = time.time()
    yesterday = now - 86400 + 60
    ingest(
        conn, batch(project, [counter("x_total", 1, ts=now), counter("x_total", 1, {"d": "y"}, ts=yesterday)])
    )
    partitions = {
        row[0]
        for row in conn.execute(
            "select tableoid::regclass::text from metrics.points where project_id = %s", (project,)
        )
    }
    assert len(partitions) == 2 and all(p.startswith("metrics.points_") for p in partitions)


class TestWhoMayIngest:
    def test_anonymous_callers_are_refused(self, conn: psycopg.Connection[Any]) -> None:
        with pytest.raises(errors.InsufficientPrivilege), as_caller(conn, {"role": "anon"}):
            ingest(conn, batch(new_project(), [counter("x_total", 1)]))

    def test_viewers_are_refused_and_editors_admitted(self, conn: psycopg.Connection[Any]) -> None:
        project, user = new_project(), uuid.uuid4()
        add_member(conn, project, user, "viewer")
        with (
            pytest.raises(errors.InsufficientPrivilege, match="not allowed to write metrics"),
            as_caller(conn, claims_for_user(str(user))),
        ):
            ingest(conn, batch(project, [counter("x_total", 1)]))
        add_member(conn, project, user, "editor")
        with as_caller(conn, claims_for_user(str(user))):
            assert ingest(conn, batch(project, [counter("x_total", 1)]))["status"] == "accepted"

    def test_service_role_may_ingest_for_any_project(self, conn: psycopg.Connection[Any]) -> None:
        with as_caller(conn, {"role": "service_role"}):
            assert ingest(conn, batch(new_project(), [counter("x_total", 1)]))["status"] == "accepted"

    def test_a_direct_login_without_bypassrls_is_not_trusted(
        self, conn: psycopg.Connection[Any], db: TestDatabase, cluster: LocalPostgres
    ) -> None:
        conn.execute("select 1")  # conn is the trusted owner; authenticator is not
        url = cluster.url("authenticator", database=db.name)
        with psycopg.connect(url, autocommit=True) as untrusted, pytest.raises(errors.InsufficientPrivilege):
            ingest(untrusted, batch(new_project(), [counter("x_total", 1)]))


def test_integral_counts_written_with_a_fraction_are_stored_as_integers(
    conn: psycopg.Connection[Any],
) -> None:
    """JSON does not tell 2 from 2.0: both are accepted, and later merges and quantiles keep working."""
    project = new_project()
    point = histogram("lat_seconds", [0.5, 0.5])
    point["count"] = 2.0
    point["sketch"] = {"z": 0.0, "p": {k: float(v) for k, v in point["sketch"]["p"].items()}, "n": {}}
    for _ in range(2):
        assert ingest(conn, batch(project, [dict(point)]))["status"] == "accepted"
    row = conn.execute(
        "select r.sketch, metrics.sketch_quantile(r.sketch, 0.5) from metrics.rollup_1m r"
        " join metrics.series s on s.id = r.series_id where s.project_id = %s",
        (project,),
    ).fetchone()
    assert row is not None
    assert all(isinstance(c, int) for c in row[0]["p"].values()) and row[0]["z"] == 0
    assert row[1] == pytest.approx(0.5, rel=0.01)
    with pytest.raises(errors.InvalidParameterValue, match=r"points\[0\].sketch: bucket keys"):
        bad = dict(point, sketch={"p": {k: 2.5 for k in point["sketch"]["p"]}}, count=2.5)
        bad["count"] = 2
        ingest(conn, batch(project, [bad]))
