"""Sketches as integer arrays (migration 20261206002200, issue #14): ``metrics.ingest_known`` takes and stores
each histogram's zeros and stores as arrays; the JSON paths keep jsonb. Whichever form the points came in,
mixed within a minute or not, the rollups are the same; bad arrays are refused as a whole batch with an error
naming the point; a key given twice is one bucket; the jsonb overload still serves earlier producers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from meshhook_rt_metrics.client.known_series import INGEST_KNOWN, array_literals
from tests.db.test_copy_ingest import days, series_ids, stored, wire
from tests.support import TestDatabase, batch, counter, histogram, ingest, merge_points

SOURCE = "copy-source"  # what tests.db.test_copy_ingest.stored counts
INGEST_KNOWN_JSONB = (
    "select metrics.ingest_known(%s, %s, %s, %s::bigint[], %s::float8[], %s::bigint[], %s::float8[],"
    " %s::float8[], %s::float8[], %s::float8[], %s::jsonb[])"
)


@pytest.fixture
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def workload(now: float) -> list[dict[str, Any]]:
    """Histograms with one point in a minute and with several, negative values and zeros, and a counter."""
    points = [
        histogram("step_seconds", [0.1, 0.2, 0.4, 0.4], {"node": "a"}, ts=now - 120),
        histogram("step_seconds", [0.3, 8.0], {"node": "a"}, ts=now - 1),
        histogram("step_seconds", [0.3, 0.0, -2.5], {"node": "a"}, ts=now - 2),
        histogram("step_seconds", [5.0], {"node": "b"}, ts=now - 1),
        histogram("balance", [-1.0, -1.0, 0.0, 2.0, 1e6], ts=now - 3),
        counter("jobs_total", 4, ts=now - 1),
    ]
    return points


def known_ids(conn: psycopg.Connection[Any], project: uuid.UUID, points: list[dict[str, Any]]) -> None:
    """The points' series created through the RPC (its points then removed with what they rolled up to), and
    their ids set on the points."""
    probes = [{**p, "ts": time.time()} for p in points]
    series_ids(conn, project, probes)
    for table in ("points", "rollup_1m", "series_totals"):
        conn.execute(f"delete from metrics.{table} where project_id = %s", (project,))
    for p, probe in zip(points, probes, strict=True):
        p["series_id"] = probe["series_id"]


def send_known(conn: psycopg.Connection[Any], project: uuid.UUID, points: list[dict[str, Any]]) -> str:
    literals = array_literals(points, [int(p["series_id"]) for p in points])
    assert literals is not None
    row = conn.execute(INGEST_KNOWN, (str(project), SOURCE, f"k-{uuid.uuid4()}", *literals)).fetchone()
    assert row is not None
    return str(row[0]["status"])


def rollups(conn: psycopg.Connection[Any], project: uuid.UUID) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select s.name, s.labels, r.bucket, r.count, r.sum, r.min, r.max, r.last, r.sketch,"
        " metrics.series_total_sketch(r.series_id)"
        " from metrics.rollup_1m r join metrics.series s on s.id = r.series_id"
        " where r.project_id = %s order by 1, 2::text, 3",
        (project,),
    ).fetchall()


def test_rollups_are_the_same_whichever_form_the_sketches_came_in(conn: psycopg.Connection[Any]) -> None:
    now = time.time()
    as_json, as_arrays, mixed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ingest(conn, batch(as_json, [wire(p) for p in workload(now)]))
    for project, known in ((as_arrays, slice(0, 6)), (mixed, slice(1, 6, 2))):
        points = workload(now)
        known_ids(conn, project, points)
        assert send_known(conn, project, points[known]) == "accepted"
        rest = [p for p in points if p not in points[known]]
        if rest:  # the same minutes, the other form
            ingest(conn, batch(project, [wire(p) for p in rest]), merge=False)
    merge_points(conn)
    forms = conn.execute(
        "select project_id, count(p.sketch), count(p.sketch_zeros) from metrics.points p"
        " where project_id = any(%s) group by 1",
        ([as_json, as_arrays, mixed],),
    ).fetchall()
    assert {row[0]: row[1:] for row in forms} == {as_json: (5, 0), as_arrays: (0, 5), mixed: (3, 2)}
    want = rollups(conn, as_json)
    minutes = {
        (p["name"], json.dumps(p["labels"], sort_keys=True), int(p["ts"] // 60)) for p in workload(now)
    }
    assert len(want) == len(minutes)  # 5, or 6 when a minute begins between now - 2 and now - 1
    assert rollups(conn, as_arrays) == want
    assert rollups(conn, mixed) == want


def test_point_sketch_reads_either_form_as_sent(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    point = histogram("step_seconds", [0.1, 0.0, -3.0, 0.1])
    series_ids(conn, project, [point])  # stored through the RPC, as jsonb
    assert send_known(conn, project, [point]) == "accepted"
    sketches = conn.execute(
        "select p.sketch is null, metrics.point_sketch(p) from metrics.points p where p.project_id = %s"
        " order by p.sketch is null",
        (project,),
    ).fetchall()
    assert sketches == [(False, point["sketch"]), (True, point["sketch"])], "the RPC's jsonb, then the arrays"


def test_a_key_given_twice_is_one_bucket(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    point = histogram("step_seconds", [0.1, 0.1, 0.1])
    known_ids(conn, project, [point])
    literals = list(array_literals([point], [point["series_id"]]) or ())
    key = next(iter(point["sketch"]["p"]))
    literals[8:10] = [f'{{"{{{key},{key}}}"}}', '{"{1,2}"}']
    conn.execute(INGEST_KNOWN, (str(project), SOURCE, "twice", *literals))
    row = conn.execute(
        "select metrics.point_sketch(p) from metrics.points p where p.project_id = %s", (project,)
    ).fetchone()
    assert row == ({"z": 0, "p": {key: 3}, "n": {}},)
    merge_points(conn)
    minute = conn.execute("select sketch from metrics.rollup_1m where project_id = %s", (project,)).fetchone()
    assert minute == ({"z": 0, "p": {key: 3}, "n": {}},)


# (position in the literals: 7 zeros, 8 positive keys, 9 positive counts, 10 negative keys, 11 negative
# counts; the point is a histogram of count 2 unless changed) -> the error's message
BAD_ARRAYS: dict[str, tuple[dict[int, str], str]] = {
    "key above the range": ({8: '{"{35489}"}', 9: '{"{2}"}'}, r"points\[1\]\.sketch: bucket keys must be"),
    "key below the range": (
        {10: '{"{-1037}"}', 11: '{"{2}"}', 8: '{"{}"}', 9: '{"{}"}'},
        r"bucket keys must be",
    ),
    "zero count": ({8: '{"{5,6}"}', 9: '{"{2,0}"}'}, r"points\[1\]\.sketch: bucket keys .* counts positive"),
    "negative count": (
        {8: '{"{5,6}"}', 9: '{"{3,-1}"}'},
        r"points\[1\]\.sketch: bucket keys .* counts positive",
    ),
    "counts do not add up": ({8: '{"{5}"}', 9: '{"{3}"}'}, r"points\[1\]\.sketch: bucket counts must add up"),
    "negative zeros": ({7: "{-1}", 8: '{"{5}"}', 9: '{"{3}"}'}, r"points\[1\]\.sketch"),
    "fewer counts than keys": (
        {8: '{"{5,6}"}', 9: '{"{2}"}'},
        r"points\[1\]\.sketch: each store's keys and counts",
    ),
    "a key repeated, a bad count hidden": (
        {8: '{"{5,5}"}', 9: '{"{3,-1}"}'},
        r"points\[1\]\.sketch: bucket keys .* counts",
    ),
    "zeros beyond any count": (
        {7: "{9223372036854775807}"},
        r"points\[1\]\.sketch: bucket counts must add up",
    ),
    "more elements than keys": (
        {8: '{"{' + ",".join(["5"] * 36526) + '}"}', 9: '{"{' + ",".join(["1"] * 36526) + '}"}'},
        r"points\[1\]\.sketch: .* \(at most 36525\)",
    ),
    "two dimensions": ({8: '{"{{5},{6}}"}', 9: '{"{{1},{1}}"}'}, r"points\[1\]\.sketch: each store's keys"),
    "a null key": ({8: '{"{5,NULL}"}', 9: '{"{1,1}"}'}, r"points\[1\]\.sketch: each store's keys"),
    "a null store": ({8: "{NULL}"}, r"points\[1\]\.sketch: each store's keys"),
    "not an integer": (
        {8: '{"{5.5}"}', 9: '{"{2}"}'},
        r"points\[1\]\.sketch: each store's keys and counts must be array",
    ),
    "count beyond integer": (  # a count past 2^31 is past the point's cap (10^9) anyway
        {9: '{"{3000000000}"}'},
        r"points\[1\]\.sketch: .* array literals of integers",
    ),
    "no sketch": (
        {7: "{NULL}", 8: "{NULL}", 9: "{NULL}", 10: "{NULL}", 11: "{NULL}"},
        r"required for histogram",
    ),
    "arrays without zeros": ({7: "{NULL}"}, r"points\[1\]\.sketch: required for histogram"),
    "bounds reversed": ({10: '{"[3:1]={}"}'}, r"points\[1\]\.sketch: .* array literals of integers"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_arrays_refuse_the_batch_naming_the_point(conn: psycopg.Connection[Any], case: str) -> None:
    project = uuid.uuid4()
    valid, point = counter("jobs_total", 1), histogram("step_seconds", [0.25, 0.5])
    known_ids(conn, project, [valid, point])
    columns = list(array_literals([point], [point["series_id"]]) or ())
    changes, message = BAD_ARRAYS[case]
    for index, literal in changes.items():
        columns[index] = literal
    good = array_literals([valid], [valid["series_id"]]) or ()
    both = [
        "{" + a[1:-1] + "," + b[1:-1] + "}" for a, b in zip(good, columns, strict=True)
    ]  # the valid point first, then the bad one
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "the-batch", *both))
    assert stored(conn, project) == 0
    assert send_known(conn, project, [valid]) == "accepted", "the refused batch left no ledger row"


def test_a_counter_carries_no_sketch_arrays(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    point = counter("jobs_total", 1)
    known_ids(conn, project, [point])
    literals = list(array_literals([point], [point["series_id"]]) or ())
    literals[8:10] = ['{"{5}"}', '{"{1}"}']
    with pytest.raises(
        psycopg.errors.InvalidParameterValue,
        match=r"points\[0\]\.sketch: sketch arrays without their zero count",
    ):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "counter", *literals))
    assert stored(conn, project) == 0


def test_a_bad_store_is_named_whatever_the_arrays_first_index(conn: psycopg.Connection[Any]) -> None:
    """An outer literal may start at any index ('[0:1]={...}'): the error names the point by its position."""
    project = uuid.uuid4()
    points = [histogram("step_seconds", [0.1]), histogram("step_seconds", [0.2])]
    known_ids(conn, project, points)
    literals = list(array_literals(points, [p["series_id"] for p in points]) or ())
    literals[8] = '[0:1]={"{-69}","{x}"}'
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[1\]\.sketch: .* array literals"):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "bounds", *literals))


def test_a_null_key_elsewhere_does_not_hide_the_first_problem(conn: psycopg.Connection[Any]) -> None:
    project = uuid.uuid4()
    old, point = counter("jobs_total", 1), histogram("step_seconds", [0.2, 0.3])
    known_ids(conn, project, [old, point])
    old["ts"] = time.time() - 2 * 86400
    literals = list(array_literals([old, point], [old["series_id"], point["series_id"]]) or ())
    literals[8], literals[9] = '{NULL,"{5,NULL}"}', '{NULL,"{1,1}"}'
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"points\[0\]\.ts"):
        conn.execute(INGEST_KNOWN, (str(project), SOURCE, "order", *literals))


@pytest.mark.parametrize(
    ("kind", "arrays", "message"),
    [
        ("counter", (0, [5], [1]), r"points\[0\]\.sketch: only histograms carry a sketch"),
        (
            "histogram",
            (0, [-80, -115], [1, 1]),
            r"points\[0\]\.sketch: one sketch, as jsonb or as arrays, not both",
        ),
        ("histogram-arrays", (0, [None, -80], [1, 1]), r"points\[0\]\.sketch: each store's keys"),
        ("histogram-arrays", (0, [-80], [3]), r"points\[0\]\.sketch: bucket counts must add up"),
    ],
    ids=["arrays-on-a-counter", "both-forms", "null-key", "count-differs"],
)
def test_a_copy_is_checked_in_its_arrays_too(
    conn: psycopg.Connection[Any], kind: str, arrays: tuple[Any, ...], message: str
) -> None:
    """The COPY path may fill the array columns (the service role inserts into metrics.points) and the pass
    reads them: check_copied_points applies the arrays' rule, so such a batch is refused whole."""
    project = uuid.uuid4()
    point = counter("jobs_total", 1) if kind == "counter" else histogram("step_seconds", [0.25, 0.5])
    sketch = json.dumps(point["sketch"]) if kind == "histogram" else None
    known_ids(conn, project, [point])
    columns = (
        "project_id, series_id, ts, source, batch_id, count, sum, min, max, last, sketch,"
        " sketch_zeros, sketch_pos_keys, sketch_pos_counts, sketch_neg_keys, sketch_neg_counts"
    )
    row = (
        project,
        point["series_id"],
        datetime.fromtimestamp(point["ts"], UTC),
        SOURCE,
        "copied",
        point["count"],
        point["sum"],
        point.get("min"),
        point.get("max"),
        point.get("last"),
        sketch,
        *arrays,
        [],
        [],
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message), conn.transaction():
        conn.execute(
            "select metrics.begin_copy_batch(%s, %s, %s, 1, %s)", (project, SOURCE, "copied", days([point]))
        )
        with conn.cursor().copy(f"copy metrics.points ({columns}) from stdin") as copy:
            copy.write_row(row)
        conn.execute("select metrics.check_copied_points()")
    assert stored(conn, project) == 0


def test_the_jsonb_overload_still_serves_earlier_producers(conn: psycopg.Connection[Any]) -> None:
    """A producer of an earlier version calls ingest_known with the sketches as jsonb: stored as jsonb,
    merged as before."""
    project = uuid.uuid4()
    point = histogram("step_seconds", [0.1, 0.2])
    known_ids(conn, project, [point])
    numbers = (array_literals([point], [point["series_id"]]) or ())[:7]
    sketch = '{"' + json.dumps(point["sketch"]).replace('"', '\\"') + '"}'
    row = conn.execute(INGEST_KNOWN_JSONB, (str(project), SOURCE, "old", *numbers, sketch)).fetchone()
    assert row is not None and row[0]["status"] == "accepted"
    merge_points(conn)
    got = conn.execute(
        "select p.sketch, r.sketch from metrics.points p join metrics.rollup_1m r using (series_id)"
        " where p.project_id = %s",
        (project,),
    ).fetchone()
    assert got == (point["sketch"], point["sketch"])


def test_a_key_out_of_range_stays_in_its_own_series(conn: psycopg.Connection[Any]) -> None:
    """A row written around the checks (the service role may insert into metrics.points) with a key past the
    range: the pass's one-bigint cells keep its bucket in its own series' minute, not another project's."""
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    a, b = histogram("step_seconds", [0.25]), histogram("step_seconds", [0.25])
    known_ids(conn, mine, [a])
    known_ids(conn, theirs, [b])
    conn.execute(
        "insert into metrics.points (project_id, series_id, ts, source, batch_id, count, sum, min, max, last,"
        " sketch_zeros, sketch_pos_keys, sketch_pos_counts, sketch_neg_keys, sketch_neg_counts)"
        " values (%s, %s, now(), 's', 'x', 1, 1, 1, 1, 1, 0, '{64500}', '{1}', '{}', '{}'),"
        " (%s, %s, now(), 's', 'x', 1, 1, 1, 1, 1, 0, '{5}', '{1}', '{}', '{}')",
        (mine, a["series_id"], theirs, b["series_id"]),
    )
    merge_points(conn)
    sketches = conn.execute(
        "select project_id, sketch from metrics.rollup_1m where project_id = any(%s)", ([mine, theirs],)
    ).fetchall()
    assert dict(sketches) == {
        mine: {"z": 0, "p": {"64500": 1}, "n": {}},  # its own bucket, neither lost nor moved
        theirs: {"z": 0, "p": {"5": 1}, "n": {}},
    }
