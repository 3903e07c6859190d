"""The validated COPY path (migration 20261206000800, issue #14): ``metrics.begin_copy_batch`` + COPY into
``metrics.points`` + ``metrics.check_copied_points()`` in one transaction. The rows obey the same rules as
``metrics.ingest`` (one function, ``metrics.check_ingest_rows``, for both: every bad point below fails on both
paths with the same error), a resent batch changes nothing, and a failed check stores nothing."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from meshhook_rt_metrics.db.session import as_caller
from tests.support import (
    TestDatabase,
    add_member,
    batch,
    counter,
    gauge,
    histogram,
    ingest,
    merge_points,
    user_claims,
)

COLUMNS = "project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch"


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def series_ids(conn: psycopg.Connection[Any], project: uuid.UUID, points: list[dict[str, Any]]) -> None:
    """Create the points' series through the RPC (the COPY path takes resolved ids), then look them up."""
    assert ingest(conn, batch(project, points))["status"] == "accepted"
    for p in points:
        row = conn.execute(
            "select id from metrics.series where project_id = %s and name = %s and labels = %s",
            (project, p["name"], Jsonb(p["labels"])),
        ).fetchone()
        assert row is not None
        p["series_id"] = row[0]


def copy_batch(
    conn: psycopg.Connection[Any],
    project: uuid.UUID,
    points: list[dict[str, Any]],
    *,
    batch_id: str | None = None,
    source: str = "copy-source",
    declared: int | None = None,
    row_project: uuid.UUID | None = None,
) -> bool:
    """One batch through the COPY path, in its own transaction; False when the ledger says duplicate."""
    batch_id = batch_id or f"copy-{uuid.uuid4()}"
    with conn.transaction(), conn.cursor() as cur:
        row = cur.execute(
            "select metrics.begin_copy_batch(%s, %s, %s, %s, %s)",
            (project, source, batch_id, len(points) if declared is None else declared, days(points)),
        ).fetchone()
        assert row is not None
        if not row[0]:
            return False
        with cur.copy(f"copy metrics.points ({COLUMNS}) from stdin") as copy:
            for p in points:
                copy.write_row(
                    (
                        row_project or project,
                        p["series_id"],
                        datetime.fromtimestamp(p["ts"], UTC),
                        source,
                        batch_id,
                        p["count"],
                        p["sum"],
                        p.get("min"),
                        p.get("max"),
                        p.get("last"),
                        Jsonb(p["sketch"]) if p.get("sketch") is not None else None,
                    )
                )
        checked = cur.execute("select metrics.check_copied_points()").fetchone()
        assert checked == (len(points),)
    return True


def days(points: list[dict[str, Any]]) -> list[date]:
    return sorted({datetime.fromtimestamp(p["ts"], UTC).date() for p in points})


def wire(point: dict[str, Any]) -> dict[str, Any]:
    """The point as metrics.ingest takes it: without the series id the COPY path adds."""
    return {k: v for k, v in point.items() if k != "series_id"}


def stored(conn: psycopg.Connection[Any], project: uuid.UUID, source: str = "copy-source") -> int:
    row = conn.execute(
        "select count(*) from metrics.points where project_id = %s and source = %s", (project, source)
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_copied_batch_is_stored_once_and_rolled_up(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    points = [counter("jobs_total", 3), gauge("depth", 7), histogram("step_seconds", [0.1, 0.2, 0.4])]
    series_ids(conn, project, points)
    for p in points:
        p["ts"] = time.time()
    assert copy_batch(conn, project, points, batch_id="b-1")
    assert not copy_batch(conn, project, points, batch_id="b-1"), "the ledger refuses a resent batch"
    assert stored(conn, project) == 3
    merge_points(conn)
    row = conn.execute(
        "select sum(r.count) from metrics.rollup_1m r join metrics.series s on s.id = r.series_id"
        " where r.project_id = %s and s.name = 'step_seconds'",
        (project,),
    ).fetchone()
    assert row == (6,), "the RPC's 3 values and the copied 3"


BAD_POINTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (the point, fields to change in it) - each fails metrics.ingest with some error
    "gauge without last": (gauge("depth", 1), {"last": None}),
    "min above max": (gauge("depth", 1), {"min": 5.0, "max": 1.0}),
    "negative counter": (counter("jobs_total", 1), {"sum": -1.0}),
    "too old": (counter("jobs_total", 1), {"ts": time.time() - 25 * 3600}),
    "too far ahead": (counter("jobs_total", 1), {"ts": time.time() + 3600}),
    "sketch count differs": (histogram("step_seconds", [0.1, 0.2]), {"count": 3}),
    "sketch key out of range": (histogram("step_seconds", [0.1]), {"sketch": {"p": {"99999": 1}}}),
    "sketch count not an integer": (histogram("step_seconds", [0.1]), {"sketch": {"p": {"-115": "1"}}}),
    "histogram without sketch": (histogram("step_seconds", [0.1]), {"sketch": None}),
}
# past metrics.max_point_count() / max_point_sum(): the RPC and ingest_known name them; a COPY meets the table's
# own check first (migration 20261206001900)
CAPPED_POINTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "count over a billion": (counter("jobs_total", 1), {"count": 1_000_000_001}),
    "sum beyond 1e290": (gauge("depth", 1), {"sum": -1e291}),
}


@pytest.mark.parametrize("case", sorted(BAD_POINTS))
def test_a_bad_point_fails_both_paths_alike_and_nothing_is_stored(
    conn: psycopg.Connection[Any], case: str
) -> None:
    project = uuid.uuid4()
    good, changes = BAD_POINTS[case]
    valid = counter("jobs_total", 1)
    series_ids(conn, project, [valid, good])
    bad = {**good, "ts": time.time(), **changes}
    valid["ts"] = time.time()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_rpc:
        ingest(conn, batch(project, [wire(valid), wire(bad)]))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_copy:
        copy_batch(conn, project, [valid, bad], batch_id="the-batch")
    assert via_copy.value.diag.message_primary == via_rpc.value.diag.message_primary
    assert "points[1]" in str(via_copy.value.diag.message_primary)
    assert stored(conn, project) == 0
    assert copy_batch(conn, project, [valid], batch_id="the-batch"), "the failed batch left no ledger row"


@pytest.mark.parametrize("case", sorted(CAPPED_POINTS))
def test_a_point_past_the_caps_fails_the_copy_itself(conn: psycopg.Connection[Any], case: str) -> None:
    """The table's check (23514, an invalid batch for the client) before check_copied_points could name it;
    the RPC names it (tests/db/test_ingest_known.py compares the RPC's error with ingest_known's)."""
    project = uuid.uuid4()
    good, changes = CAPPED_POINTS[case]
    valid = counter("jobs_total", 1)
    series_ids(conn, project, [valid, good])
    bad = {**good, "ts": time.time(), **changes}
    valid["ts"] = time.time()
    with pytest.raises(psycopg.errors.CheckViolation, match="points_within_rollup_limits"):
        copy_batch(conn, project, [valid, bad], batch_id="the-batch")
    assert stored(conn, project) == 0
    assert copy_batch(conn, project, [valid], batch_id="the-batch"), "the failed batch left no ledger row"


def test_a_day_without_partition_fails_the_copy_itself(conn: psycopg.Connection[Any]) -> None:
    """Past max_past no partition is made (begin_copy_batch makes them for the days in the window only):
    COPY itself fails with 23514, an invalid batch for the client, as the RPC's 22023 is."""
    project = uuid.uuid4()
    point = counter("jobs_total", 1)
    series_ids(conn, project, [point])
    point["ts"] = time.time() - 40 * 86400
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        copy_batch(conn, project, [point])
    assert stored(conn, project) == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(conn: psycopg.Connection[Any], value: float) -> None:
    project = uuid.uuid4()
    point = gauge("depth", 1)
    series_ids(conn, project, [point])
    point.update(ts=time.time(), sum=value)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[0\]\.sum"):
        copy_batch(conn, project, [point])
    assert stored(conn, project) == 0


def test_rows_must_be_the_begun_batchs_and_of_its_series(conn: psycopg.Connection[Any]) -> None:
    project, other = uuid.uuid4(), uuid.uuid4()
    mine, theirs = counter("jobs_total", 1), counter("jobs_total", 1)
    series_ids(conn, project, [mine])
    series_ids(conn, other, [theirs])
    mine["ts"] = theirs["ts"] = time.time()
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=r"points\[1\]\.series_id: \d+ is not a series"
    ):
        copy_batch(conn, project, [mine, theirs])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be those of the batch begun"):
        copy_batch(conn, project, [mine], row_project=other)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="1 rows copied, the batch declared 2"):
        copy_batch(conn, project, [mine], declared=2)
    assert stored(conn, project) == stored(conn, other) == 0


def test_the_protocol_is_one_begun_batch_per_transaction(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no batch begun"):
        conn.execute("select metrics.check_copied_points()")
    with (
        pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="already begun"),
        conn.transaction(),
    ):
        conn.execute("select metrics.begin_copy_batch(%s, 's', 'a', 1)", (project,))
        conn.execute("select metrics.begin_copy_batch(%s, 's', 'b', 1)", (project,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.points: must not be empty"):
        conn.execute("select metrics.begin_copy_batch(%s, 's', 'c', 0)", (project,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.source"):
        conn.execute("select metrics.begin_copy_batch(%s, '', 'c', 1)", (project,))


def test_signed_in_users_cannot_take_the_copy_path(conn: psycopg.Connection[Any]) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "admin")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_caller(conn, user_claims(user)):
        conn.execute("select metrics.begin_copy_batch(%s, 's', 'x', 1)", (project,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_caller(conn, user_claims(user)):
        conn.execute("copy metrics.points (project_id) from stdin")
