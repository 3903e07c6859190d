"""``metrics.ingest_known`` (migrations 20261206001000, 20261206002200: sketches as arrays; issue #14): a batch of the project's existing series as
typed arrays, in one call. The rows obey the same rules as ``metrics.ingest`` (``metrics.check_ingest_rows``:
every bad point fails both with the same error), a resent batch changes nothing, a refused batch stores nothing
and leaves no ledger row, and only trusted producers (the service role, the owner) may call it."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
from meshhook_rt_metrics.db.session import as_caller
from tests.db.test_copy_ingest import BAD_POINTS, CAPPED_POINTS, series_ids, stored, wire
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

SOURCE = "copy-source"  # what tests.db.test_copy_ingest.stored counts


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def ingest_known(
    conn: psycopg.Connection[Any],
    project: uuid.UUID,
    points: list[dict[str, Any]],
    batch_id: str | None = None,
) -> dict[str, Any]:
    """One batch through metrics.ingest_known, as the client sends it (array literals)."""
    ids = [int(p["series_id"]) for p in points]
    literals = array_literals(points, ids)
    assert literals is not None, "the client would send this batch through the RPC"
    args = (str(project), SOURCE, batch_id or f"known-{uuid.uuid4()}", *literals)
    row = conn.execute(INGEST_KNOWN, args).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def test_a_batch_is_stored_once_with_its_values_and_rolled_up(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    points = [counter("jobs_total", 3), gauge("depth", 7.25), histogram("step_seconds", [0.1, 0.2, 0.4])]
    series_ids(conn, project, points)
    now = time.time()
    for p in points:
        p["ts"] = now
    accepted = ingest_known(conn, project, points, batch_id="b-1")
    assert accepted == {"status": "accepted", "points": 3, "series_created": 0, "overflowed": 0}
    assert ingest_known(conn, project, points, batch_id="b-1")["status"] == "duplicate"
    rows = conn.execute(
        "select s.name, extract(epoch from p.ts), p.count, p.sum, p.min, p.max, p.last, metrics.point_sketch(p)"
        " from metrics.points p join metrics.series s on s.id = p.series_id"
        " where p.project_id = %s and p.source = %s order by s.name",
        (project, SOURCE),
    ).fetchall()
    by_name = {r[0]: r[1:] for r in rows}
    assert len(rows) == 3
    assert by_name["depth"][2:6] == (7.25, 7.25, 7.25, 7.25)
    assert abs(float(by_name["depth"][0]) - now) < 1e-5
    assert by_name["step_seconds"][1] == 3 and by_name["step_seconds"][6] == points[2]["sketch"]
    kept = conn.execute(
        "select count(*) filter (where p.sketch is null and p.sketch_zeros is not null) from metrics.points p"
        " where p.project_id = %s and p.source = %s",
        (project, SOURCE),
    ).fetchone()
    assert kept == (1,), "the histogram's sketch is stored as arrays (migration 20261206002200)"
    merge_points(conn)
    row = conn.execute(
        "select sum(r.count) from metrics.rollup_1m r join metrics.series s on s.id = r.series_id"
        " where r.project_id = %s and s.name = 'step_seconds'",
        (project,),
    ).fetchone()
    assert row == (6,), "the RPC's 3 values and these 3"


# a count that is a JSON string has no array literal: the client leaves that batch to the RPC (tests/client)
AS_ARRAYS = {k: v for k, v in (BAD_POINTS | CAPPED_POINTS).items() if k != "sketch count not an integer"}


@pytest.mark.parametrize("case", sorted(AS_ARRAYS))
def test_a_bad_point_fails_as_on_the_rpc_and_nothing_is_stored(
    conn: psycopg.Connection[Any], case: str
) -> None:
    project = uuid.uuid4()
    good, changes = AS_ARRAYS[case]
    good = wire(good)  # a copy: series_ids() writes the id into the point (test_copy_ingest's run did)
    valid = counter("jobs_total", 1)
    series_ids(conn, project, [valid, good])
    bad = {**good, "ts": time.time(), **changes}
    valid["ts"] = time.time()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_rpc:
        ingest(conn, batch(project, [wire(valid), wire(bad)]))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_known:
        ingest_known(conn, project, [valid, bad], batch_id="the-batch")
    assert via_known.value.diag.message_primary == via_rpc.value.diag.message_primary
    assert "points[1]" in str(via_known.value.diag.message_primary)
    assert stored(conn, project) == 0
    assert ingest_known(conn, project, [valid], batch_id="the-batch")["status"] == "accepted", (
        "the refused batch left no ledger row"
    )


@pytest.mark.parametrize("field", ["sum", "min", "max", "last", "ts"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(conn: psycopg.Connection[Any], field: str, value: float) -> None:
    project = uuid.uuid4()
    point = gauge("depth", 1)
    series_ids(conn, project, [point])
    point.update(ts=time.time())
    point[field] = value
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[0\]"):
        ingest_known(conn, project, [point])
    assert stored(conn, project) == 0


def test_only_the_projects_own_series_are_taken(conn: psycopg.Connection[Any]) -> None:
    project, other = uuid.uuid4(), uuid.uuid4()
    mine, theirs = counter("jobs_total", 1), counter("jobs_total", 1)
    series_ids(conn, project, [mine])
    series_ids(conn, other, [theirs])
    mine["ts"] = theirs["ts"] = time.time()
    with pytest.raises(
        psycopg.errors.InvalidParameterValue,
        match=rf"points\[1\]\.series_id: {theirs['series_id']} is not a series of project {project}",
    ):
        ingest_known(conn, project, [mine, theirs])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[0\]\.series_id: 0 is not"):
        ingest_known(conn, project, [{**mine, "series_id": 0}])
    assert stored(conn, project) == stored(conn, other) == 0


def test_the_envelope_and_the_arrays_are_checked(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    point = counter("jobs_total", 1)
    series_ids(conn, project, [point])
    point["ts"] = time.time()
    columns = list(array_literals([point], [point["series_id"]]))

    def call(source: str, *arrays: str) -> None:
        conn.execute(INGEST_KNOWN, (str(project), source, f"b-{uuid.uuid4()}", *arrays))

    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.points: must not be empty"):
        call("s", *(["{}"] * 12))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.source: required string"):
        call("", *columns)
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=r"batch\.points: every array .* \(1 series"
    ):
        call("s", *columns[:3], "{1,2}", *columns[4:])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.points: every array"):
        call("s", *columns[:7], "{}", *columns[8:])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.points: every array"):
        call("s", *columns[:10], "{}", *columns[11:])
    assert stored(conn, project) == 0


def test_only_trusted_producers_may_call_it(conn: psycopg.Connection[Any]) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    add_member(conn, project, user, "admin")
    point = counter("jobs_total", 1)
    series_ids(conn, project, [point])
    point["ts"] = time.time()
    for claims in (user_claims(user), {"role": "anon"}):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), as_caller(conn, claims):
            ingest_known(conn, project, [point])
    assert stored(conn, project) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("count", None), ("sum", None), ("ts", None), ("ts", 1e20), ("ts", -1e20)],
    ids=["null-count", "null-sum", "null-ts", "ts-past-range", "ts-before-range"],
)
def test_missing_and_out_of_range_values_fail_as_on_the_rpc(
    conn: psycopg.Connection[Any], field: str, value: float | None
) -> None:
    """A NULL array element is a missing field; a finite time PostgreSQL cannot hold is outside the window:
    the same error as the RPC gives for the JSON null or number."""
    project = uuid.uuid4()
    point = gauge("depth", 1)
    series_ids(conn, project, [point])
    point.update(ts=time.time())
    point[field] = value
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_rpc:
        ingest(conn, batch(project, [wire(point)]))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as via_known:
        ingest_known(conn, project, [point])
    assert via_known.value.diag.message_primary == via_rpc.value.diag.message_primary
    assert stored(conn, project) == 0


def test_null_arrays_and_ids_from_any_index_are_named(conn: psycopg.Connection[Any]) -> None:
    project, other = uuid.uuid4(), uuid.uuid4()
    mine, theirs = counter("jobs_total", 1), counter("jobs_total", 1)
    series_ids(conn, project, [mine])
    series_ids(conn, other, [theirs])
    mine["ts"] = time.time()
    literals = list(array_literals([mine, mine], [mine["series_id"], theirs["series_id"]]) or ())
    # an array may start at any index: the message names the id of the point, not a subscript
    literals[0] = f"[5:6]={literals[0]}"
    with pytest.raises(
        psycopg.errors.InvalidParameterValue,
        match=rf"points\[1\]\.series_id: {theirs['series_id']} is not a series of project {project}",
    ):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "b-index", *literals))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[0\]\.series_id: null is not"):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "b-null-id", "{NULL,NULL}", *literals[1:]))
    one = array_literals([mine], [mine["series_id"]]) or ()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"batch\.points: every array"):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "b-null-array", one[0], None, *one[2:]))
    assert stored(conn, project) == 0


def test_a_batch_across_midnight_makes_each_days_partition(conn: psycopg.Connection[Any]) -> None:
    """A batch within one UTC day ensures that day's partition only (migration 20261206001600); one whose
    points fall on two days still gets both."""
    project = uuid.uuid4()
    now_point, other = counter("jobs_total", 1), counter("jobs_total", 1, {"day": "other"})
    series_ids(conn, project, [now_point, other])  # through the RPC, at the current time
    now = time.time()
    midnight = now - now % 86400
    # the other point on another UTC day within the accepted window (24 h back, 5 minutes ahead): 30 s before
    # today's midnight, or 30 s after tomorrow's in the last 90 s of a day
    now_point["ts"] = now
    other["ts"] = midnight - 30 if now - midnight < 86400 - 90 else midnight + 86400 + 30
    days = conn.execute(
        "select to_char(to_timestamp(%s) at time zone 'UTC', 'YYYYMMDD'),"
        " to_char(to_timestamp(%s) at time zone 'UTC', 'YYYYMMDD')",
        (other["ts"], now_point["ts"]),
    ).fetchone()
    assert days is not None and days[0] != days[1]
    # the other day's partition, if another test made it, held none of this project's points: this call makes it
    conn.execute(f"drop table if exists metrics.points_{days[0]}")
    assert ingest_known(conn, project, [other, now_point])["status"] == "accepted"
    partitions = {
        row[0]
        for row in conn.execute(
            "select tableoid::regclass::text from metrics.points where project_id = %s", (project,)
        )
    }
    assert partitions == {f"metrics.points_{days[0]}", f"metrics.points_{days[1]}"}
    assert stored(conn, project) == 2


def test_open_batch_is_no_entry_point(conn: psycopg.Connection[Any]) -> None:
    """The envelope helper runs inside the definer functions only: no API role may call it directly."""
    for role in ("anon", "authenticated", "service_role"):
        row = conn.execute(
            "select has_function_privilege(%s,"
            " 'metrics.open_batch(uuid, text, text, integer, metrics.config)', 'execute')",
            (role,),
        ).fetchone()
        assert row == (False,), role
