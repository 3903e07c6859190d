"""The SQL sketch agrees with the Python client's bit for bit, and its quantiles stay within 1 %."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhook_rt_metrics.client import sketch as pysketch
from tests.support import TestDatabase


@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def test_sql_uses_the_python_multiplier_literally() -> None:
    assert repr(pysketch.MULTIPLIER) == "49.998333288886556"


def test_keys_match_python_for_values_across_the_range(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(1)
    values = [10 ** rng.uniform(-9, 300) for _ in range(5000)]
    values += [pysketch.value(k) for k in range(-1000, 1000, 7)]  # bucket representatives
    values += [math.exp(k / pysketch.MULTIPLIER) for k in range(-1000, 1000, 3)]  # near bucket boundaries
    sql_keys = conn.execute(
        "select array_agg(metrics.sketch_key(v) order by i) from unnest(%s::float8[]) with ordinality t(v, i)",
        (values,),
    ).fetchone()
    assert sql_keys is not None
    assert sql_keys[0] == [pysketch.key(v) for v in values]


def test_bucket_values_match_python(conn: psycopg.Connection[Any]) -> None:
    keys = list(range(-1036, 35488, 97))
    row = conn.execute(
        "select array_agg(metrics.sketch_value(k) order by k) from unnest(%s::int[]) k", (keys,)
    ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx([pysketch.value(k) for k in keys], rel=1e-15)


def test_sketch_built_in_sql_equals_the_python_wire_form(conn: psycopg.Connection[Any]) -> None:
    values = [0.0, 1e-12, -3.5, -3.5, 0.001, 0.2, 0.2, 7.0, 1234.5]
    sketch = pysketch.Sketch()
    for v in values:
        sketch.add(v)
    row = conn.execute("select metrics.sketch_from_values(%s::float8[])", (values,)).fetchone()
    assert row is not None
    assert row[0] == {"z": 0, "p": {}, "n": {}} | sketch.to_wire()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=300,
    ),
    st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]),
)
def test_quantiles_within_one_percent_of_exact_and_equal_to_ddsketch(values: list[float], q: float) -> None:
    url = _URL["conn"]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select metrics.sketch_quantile(metrics.sketch_from_values(%s::float8[]), %s)", (values, q)
        ).fetchone()
    assert row is not None
    got = row[0]
    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    if abs(exact) < 1e-9:
        assert abs(got) < 1e-9 * 1.02 or got == 0
    else:
        assert got == pytest.approx(exact, rel=0.01)
    oracle = DDSketch(relative_accuracy=0.01)
    for v in values:
        oracle.add(v)
    expected = oracle.get_quantile_value(q)
    if abs(exact) >= 1e-9 and expected is not None and abs(expected) > 1e-6:
        assert got == pytest.approx(expected, rel=0.0201)


_URL: dict[str, str] = {}


@pytest.fixture(autouse=True, scope="module")
def _remember_url(db: TestDatabase) -> None:
    """hypothesis tests cannot take function fixtures; they read the module's database URL from here."""
    _URL["conn"] = db.url


def test_merged_sketches_equal_one_sketch_of_all_values(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(3)
    parts = [[rng.lognormvariate(0, 2) for _ in range(200)] for _ in range(5)]
    row = conn.execute(
        "select metrics.sketch_union(metrics.sketch_from_values(p.v)) = metrics.sketch_from_values(%s::float8[])"
        " from (select unnest(%s::jsonb[]) j) x,"
        " lateral (select array(select jsonb_array_elements_text(x.j)::float8) v) p",
        ([v for part in parts for v in part], [psycopg.types.json.Jsonb(p) for p in parts]),
    ).fetchone()
    assert row == (True,)


def test_quantile_is_clamped_into_min_max_and_null_when_undefined(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "select metrics.sketch_quantile(metrics.sketch_from_values('{10,20,30}'), 1, 10, 30),"
        " metrics.sketch_quantile(metrics.sketch_from_values('{}'), 0.5),"
        " metrics.sketch_quantile(metrics.sketch_from_values('{1}'), 1.5)"
    ).fetchone()
    assert row == (30.0, None, None)


_stores = st.dictionaries(st.integers(-2000, 2000), st.integers(1, 10**12), max_size=40)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_stores, _stores, _stores, _stores, st.integers(0, 5), st.integers(0, 5))
def test_sql_merge_equals_python_merge(
    pa: dict[int, int], na: dict[int, int], pb: dict[int, int], nb: dict[int, int], za: int, zb: int
) -> None:
    a, b = pysketch.Sketch(), pysketch.Sketch()
    a.zero, a.pos, a.neg = za, dict(pa), dict(na)
    b.zero, b.pos, b.neg = zb, dict(pb), dict(nb)
    expected = pysketch.Sketch()
    expected.merge(a)
    expected.merge(b)
    with psycopg.connect(_URL["conn"], autocommit=True) as conn:
        (got,) = conn.execute(
            "select metrics.sketch_merge(%s::jsonb, %s::jsonb)",
            (psycopg.types.json.Jsonb(a.to_wire()), psycopg.types.json.Jsonb(b.to_wire())),
        ).fetchone() or (None,)
    assert got == expected.to_wire()


def test_json_number_is_inlined_and_nulls_what_json_cannot_carry(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "select metrics.json_number(v) from unnest(array[1.5, 'infinity', '-infinity', 'NaN', -0.0]::float8[])"
        " with ordinality t (v, i) order by i"
    ).fetchall()
    assert [r[0] for r in rows] == [1.5, None, None, None, -0.0]
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "explain (verbose) select metrics.json_number(g::float8) from generate_series(1, 3) g"
        ).fetchall()
    )
    assert "CASE" in plan and "json_number" not in plan  # inlined: no function call per number


@pytest.mark.parametrize(
    ("call", "inlined"),
    [
        ("metrics.later_last(g::float8, now(), (g + 1)::float8, now())", "CASE"),
        ("metrics.sketch_value(g)", "exp("),
        ("metrics.five_minute_window(now() + g * interval '1 minute')", "date_bin("),
    ],
)
def test_small_functions_are_inlined(conn: psycopg.Connection[Any], call: str, inlined: str) -> None:
    plan = "\n".join(
        r[0] for r in conn.execute(f"explain (verbose) select {call} from generate_series(1, 3) g").fetchall()
    )
    name = call.split("(", 1)[0]
    assert inlined in plan and name not in plan  # no function call per row
