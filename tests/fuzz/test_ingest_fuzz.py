"""The batch validator, ``metrics.ingest``, fed valid batches and mutations of them.

Every answer is ``accepted`` (exactly the batch's points stored, one ledger row), ``duplicate`` (a batch id
already accepted; nothing stored) or a clean error: SQLSTATE 22023 with a ``<where>: <problem>`` message and
the documented detail and hint, or 42501 for a caller who may not write the project (docs/schema.md, "Batch
wire format"). Never an internal error (XX000, 42883, 54001 stack depth, 22P02 from a stray cast, ...), and
a rejected batch changes nothing.

One database, one connection: each example runs in a transaction that is rolled back, the ingest itself in
a savepoint, so 1,000 examples take seconds and never see each other.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from meshhook_rt_metrics.db.session import claims_for_user
from tests.fuzz.conftest import fuzz
from tests.fuzz.strategies import RAW_NUMBERS, SQL_TEXT, Dup, Raw, dump, json_values, nested
from tests.support import TestDatabase, add_member, batch, counter, gauge, histogram, ingest

DETAIL = "the batch was rejected as a whole; nothing of it was stored"
HINT = 'see docs/schema.md, "Batch wire format"'
WHERE = re.compile(r"^(batch(\..*?)?|points\[\d+\](\..*?)?): .+", re.DOTALL)  # field names may be anything
KNOWN_BATCH = "fuzz-known-batch"
SOURCE = "fuzz-source"


@dataclass(frozen=True)
class Setup:
    project: uuid.UUID
    editor: uuid.UUID
    viewer: uuid.UUID


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def setup(conn: psycopg.Connection[Any]) -> Setup:
    """A project with an editor and a viewer, a metric of each kind stored, one batch id already taken."""
    s = Setup(project=uuid.uuid4(), editor=uuid.uuid4(), viewer=uuid.uuid4())
    add_member(conn, s.project, s.editor, "editor")
    add_member(conn, s.project, s.viewer, "viewer")
    now = time.time()
    ingest(
        conn,
        batch(
            s.project,
            [
                counter("fz_c_known", 1, {"a": "1"}, ts=now),
                gauge("fz_g_known", 1, {"a": "1"}, ts=now),
                histogram("fz_h_known", [0.5, 1.5], {"a": "1"}, ts=now),
            ],
            source=SOURCE,
            batch_id=KNOWN_BATCH,
        ),
    )
    return s


# -- valid batches ---------------------------------------------------------------------------------------
LABELS = st.dictionaries(
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,10}", fullmatch=True),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
    max_size=4,
)
SUFFIX = st.sampled_from(["known", "x", "y", "z_1", "total", "a:b"])
VALUES = st.lists(  # huge values whose sum (at most 20 of them) stays within metrics.max_point_sum(), 1e290
    st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 1e-12, -1e-12, 1e288, -1e288])),
    min_size=1,
    max_size=20,
)


@st.composite
def valid_points(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["counter", "gauge", "histogram"]))
    name = f"fz_{kind[0]}_{draw(SUFFIX)}"
    labels = draw(LABELS)
    ts = time.time() - draw(st.floats(0, 3600))
    if kind == "counter":
        point = counter(name, draw(st.floats(0, 1e12)), labels, ts=ts, count=draw(st.integers(1, 10**9)))
    elif kind == "gauge":
        point = gauge(name, draw(st.floats(-1e12, 1e12)), labels, ts=ts)
    else:
        point = histogram(name, draw(VALUES), labels, ts=ts)
    if draw(st.booleans()):
        point["unit"] = draw(st.sampled_from(["seconds", "", "bytes", None]))
    if draw(st.booleans()):
        point["help"] = draw(st.one_of(st.none(), SQL_TEXT))
    return point


@st.composite
def valid_batches(draw: st.DrawFn) -> dict[str, Any]:
    points = draw(st.lists(valid_points(), min_size=1, max_size=5))
    body: dict[str, Any] = {
        "project_id": "PROJECT",
        "source": draw(st.sampled_from([SOURCE, "w/1", "é" * 200])),
        "batch_id": KNOWN_BATCH
        if draw(st.integers(0, 9)) == 9  # not 0: Hypothesis favours the simplest draw
        else draw(st.from_regex(r"[a-z0-9-]{1,30}", fullmatch=True)),
        "points": points,
    }
    if draw(st.booleans()):
        body["sent_at"] = draw(st.one_of(st.none(), st.floats(0, 2e9)))
    return body


# -- mutations -------------------------------------------------------------------------------------------
NASTY = st.one_of(
    json_values(8),
    RAW_NUMBERS,
    SQL_TEXT,
    st.sampled_from(
        [
            "",
            "x" * 2000,
            "\u0001\u001f\u007f",
            "a\nb",
            "NaN",
            "Infinity",
            True,
            [],
            {},
            {"z": 1},
            "6f1c2a7e-3b9d-4c1e-9a55-0d2f8e4b7c10",
            "00000000-0000-0000-0000-00000000000G",
            "{6f1c2a7e-3b9d-4c1e-9a55-0d2f8e4b7c10}",
            "6f1c2a7e3b9d4c1e9a550d2f8e4b7c10",
        ]
    ),
    st.integers(0, 300).map(nested),
).map(copy.deepcopy)  # sampled {} and [] are shared objects: mutating one in place could make a cycle
POINT_FIELDS = [
    "name",
    "kind",
    "labels",
    "ts",
    "count",
    "sum",
    "min",
    "max",
    "last",
    "sketch",
    "unit",
    "help",
]
ENVELOPE_FIELDS = ["project_id", "source", "batch_id", "points", "sent_at"]


def mutated_labels(draw: st.DrawFn, labels: dict[str, Any]) -> Any:
    """Too many labels, bad names, long or odd values, or no object at all."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        labels.update({f"l{i}": "v" for i in range(draw(st.integers(30, 40)))})
    elif choice == 1:
        labels[draw(st.sampled_from(["__name__", "1a", "a-b", "é", "", "a" * 101, "a\u0001"]))] = "v"
    elif choice == 2:
        labels["a"] = draw(st.sampled_from(["x" * 1024, "x" * 1025, "é" * 1025, "\u0001\n\t", ""]))
    elif choice == 3:
        labels["a"] = draw(NASTY)
    elif choice == 4:
        return draw(NASTY)
    else:
        labels[draw(SQL_TEXT)] = draw(SQL_TEXT)
    return labels


SKETCH_KEYS = st.one_of(
    st.sampled_from(["0", "-0", "01", "+1", "1.0", "-1036", "-1037", "35488", "35489", "1e2", "", "x"]),
    st.integers(-(2**40), 2**40).map(str),
)


def mutated_sketch(draw: st.DrawFn, sketch: dict[str, Any]) -> dict[str, Any]:
    """A bucket or the zero count set to an odd key or count, or an unknown member."""
    sketch = dict(sketch)
    store = draw(st.sampled_from(["p", "n", "z", "q"]))
    count = draw(st.one_of(st.integers(-2, 10**20), RAW_NUMBERS, NASTY))
    if store == "z":
        sketch["z"] = count
    else:
        current = sketch.get(store)
        inner = current if isinstance(current, dict) else {}
        sketch[store] = {**inner, draw(SKETCH_KEYS): count}
    return sketch


def mutate(draw: st.DrawFn, body: dict[str, Any]) -> Any:
    """One mutation of the batch tree (in place where possible; returns the new root)."""
    points = body.get("points")
    where = draw(st.integers(0, len(points))) if isinstance(points, list) else 0
    op = draw(
        st.sampled_from(
            [
                "set",
                "delete",
                "unknown",
                "duplicate",
                "labels",
                "sketch",
                "number",
                "kind",
                "points",
                "root",
            ]
        )
    )
    target = body if where == 0 or not isinstance(points, list) else points[where - 1]
    if not isinstance(target, dict):
        return body
    fields = ENVELOPE_FIELDS if target is body else POINT_FIELDS
    field = draw(st.sampled_from(fields))
    if op == "set":
        target[field] = draw(NASTY)
    elif op == "delete":
        target.pop(field, None)
    elif op == "unknown":
        target[draw(st.sampled_from(["extra", "", "Name", "name ", "__proto__", "é"]))] = draw(NASTY)
    elif op == "duplicate":
        pairs = [*target.items(), (field, draw(NASTY))]
        if target is body:
            return Dup(tuple(pairs))
        assert isinstance(points, list)
        points[where - 1] = Dup(tuple(pairs))
    elif op == "labels" and target is not body:
        labels = target.get("labels")  # a previous mutation may have left anything there
        target["labels"] = mutated_labels(draw, dict(labels) if isinstance(labels, dict) else {})
    elif op == "sketch" and target is not body:
        sketch = target.get("sketch")
        target["sketch"] = mutated_sketch(
            draw, sketch if isinstance(sketch, dict) else {"z": 0, "p": {}, "n": {}}
        )
    elif op == "number":
        target[draw(st.sampled_from(["ts", "count", "sum", "min", "max", "last", "sent_at"]))] = draw(
            st.one_of(
                RAW_NUMBERS, st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**64), 2**64)
            )
        )
    elif op == "kind" and target is not body:
        target["kind"] = draw(st.sampled_from(["counter", "gauge", "histogram", "Counter", "summary", ""]))
    elif op == "points":
        how = draw(st.sampled_from(["none", "empty", "many", "object"]))
        if how != "many":
            body["points"] = {"none": None, "empty": [], "object": {"0": 1}}[how]
        elif isinstance(points, list):
            body["points"] = points * 3  # past a small max_points_per_batch (see the test's parameters)
    elif op == "root":
        return draw(st.one_of(NASTY, st.just([body])))
    return body


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, int, str]:
    """(batch tree, how many mutations it got, who sends it)."""
    body: Any = draw(valid_batches())
    mutations = draw(st.integers(0, 3))
    for _ in range(mutations):
        if not isinstance(body, dict):
            break
        body = mutate(draw, body)
    caller = draw(st.sampled_from(["owner", "owner", "editor", "viewer", "other project"]))
    return body, mutations, caller


def place_project(tree: Any, project: str) -> Any:
    """The placeholder project id replaced by the real one."""
    if isinstance(tree, str):
        return project if tree == "PROJECT" else tree
    if isinstance(tree, Dup):
        return Dup(tuple((k, place_project(v, project)) for k, v in tree.pairs))
    if isinstance(tree, dict):
        return {k: place_project(v, project) for k, v in tree.items()}
    if isinstance(tree, list):
        return [place_project(v, project) for v in tree]
    return tree


COUNTS = (
    "select (select count(*) from metrics.points), (select count(*) from metrics.batches),"
    " (select count(*) from metrics.series), (select count(*) from metrics.families),"
    " (select count(*) from metrics.projects)"
)


@fuzz()
@given(cases(), st.sampled_from([None, 1, 2]), st.sampled_from([None, 1, 3]))
@example(
    ({"project_id": "PROJECT", "source": "s", "batch_id": "b", "points": [nested(2000)]}, 1, "owner"),
    None,
    None,
)
@example(
    (
        {
            "project_id": "PROJECT",
            "source": "s",
            "batch_id": "b",
            "points": [{**counter("fz_c_x", 1), "sum": Raw("1e400")}],
        },
        1,
        "owner",
    ),
    None,
    None,
)
@example(
    (
        {
            "project_id": "PROJECT",
            "source": "s",
            "batch_id": "b",
            "points": [{**histogram("fz_h_x", [1.0]), "sketch": {"p": {"0": Raw("1e400")}}}],
        },
        1,
        "owner",
    ),
    None,
    None,
)
def test_ingest_accepts_or_rejects_cleanly(
    conn: psycopg.Connection[Any],
    setup: Setup,
    case: tuple[Any, int, str],
    max_points: int | None,
    max_labels: int | None,
) -> None:
    tree, mutations, caller = case
    text = dump(place_project(tree, str(setup.project)))
    with conn.transaction(force_rollback=True):
        if max_points is not None or max_labels is not None:  # the limits, made small for this example
            conn.execute(
                "update metrics.config set max_points_per_batch = coalesce(%s, max_points_per_batch),"
                " max_labels = coalesce(%s, max_labels)",
                (max_points, max_labels),
            )
        before = conn.execute(COUNTS).fetchone()
        assert before is not None
        result: dict[str, Any] | None = None
        error: psycopg.Error | None = None
        try:
            with conn.transaction():
                if caller != "owner":
                    user = {"editor": setup.editor, "viewer": setup.viewer}.get(caller, uuid.uuid4())
                    conn.execute("set local role authenticated")
                    conn.execute(
                        "select set_config('request.jwt.claims', %s, true)",
                        (json.dumps(claims_for_user(str(user))),),
                    )
                row = conn.execute("select metrics.ingest(%s::jsonb)", (text,)).fetchone()
                assert row is not None
                result = dict(row[0])
                conn.execute("reset role")
        except psycopg.Error as exc:
            error = exc
        after = conn.execute(COUNTS).fetchone()
        assert after is not None
    event(f"outcome {error.sqlstate if error is not None else result and result['status']}")
    if error is not None:
        diag = error.diag
        assert error.sqlstate in ("22023", "42501"), f"{error.sqlstate}: {error} (batch {text[:2000]!r})"
        if error.sqlstate == "22023":
            assert WHERE.match(diag.message_primary or ""), diag.message_primary
            assert diag.message_detail == DETAIL
            assert diag.message_hint == HINT
        else:
            assert caller in ("viewer", "other project"), f"42501 for {caller}: {error}"
        assert after == before, "a rejected batch changed the tables"
        assert mutations or caller in ("viewer", "other project") or max_points or max_labels, (
            f"a valid batch was rejected: {error} ({text[:2000]!r})"
        )
        return
    assert result is not None
    assert result["status"] in ("accepted", "duplicate"), result
    if result["status"] == "duplicate":
        assert after == before
        assert result == {"status": "duplicate", "points": 0, "series_created": 0, "overflowed": 0}
        return
    assert caller in ("owner", "editor"), f"{caller} could ingest"
    points, batches = after[0] - before[0], after[1] - before[1]
    assert (points, batches) == (result["points"], 1), (result, before, after)
    assert after[2] - before[2] == result["series_created"]
