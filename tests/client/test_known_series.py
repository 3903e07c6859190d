"""``array_literals``: the known-series path's batch as PostgreSQL array literals (no database needed; the
round trip through ``metrics.ingest_known`` is in tests/db/test_ingest_known.py)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from meshhook_rt_metrics.client.known_series import array_literals


def point(**fields: Any) -> dict[str, Any]:
    return {"ts": 1765000000.25, "count": 1, "sum": 2.5, **fields}


def test_numbers_nulls_and_non_finite_values_become_array_elements() -> None:
    literals = array_literals(
        [point(count=3.0, min=None, max=math.nan, last=math.inf), point(sum=-0.5, last=-math.inf)], [7, 8]
    )
    assert literals == (
        "{7,8}",
        "{1765000000.25,1765000000.25}",
        "{3,1}",  # an integral float count is written as an integer
        "{2.5,-0.5}",
        "{null,null}",
        "{NaN,null}",  # for the database to refuse with ingest's error
        "{Infinity,-Infinity}",
        "{null,null}",  # no sketch: no zeros, and no store below
        "{NULL,NULL}",
        "{NULL,NULL}",
        "{NULL,NULL}",
        "{NULL,NULL}",
    )


def test_a_sketch_is_its_zeros_and_each_stores_keys_and_counts_as_inner_literals() -> None:
    sketches = [{"z": 1, "p": {"-115": 2, "7": 1}, "n": {}}, {"p": {"3": 4}}, {"z": 2, "n": {"0": 5}}]
    literals = array_literals([point(sketch=s) for s in sketches] + [point()], [7, 8, 9, 10])
    assert literals is not None
    assert literals[7:] == (
        "{1,0,2,null}",  # z, 0 when left out
        '{"{-115,7}","{3}","{}",NULL}',
        '{"{2,1}","{4}","{}",NULL}',
        '{"{}","{}","{0}",NULL}',
        '{"{}","{}","{5}",NULL}',
    )


@pytest.mark.parametrize(
    "sketch",
    [
        {"p": {"x": 1}},
        {"p": {"1,2": 1}},
        {"p": {"": 1}},
        {"p": {"01": 1}},
        {"p": {"-0": 1}},
        {"p": {"\u0663": 1}},
        {"p": {5: 1}},
        {"p": {"1": "1"}},
        {"p": {"1": [1]}},
        {"p": {"1": True}},
        {"n": {"1": {"a": 1}}},
        {"z": "1"},
        {"p": [1]},
        {"odd": 1},
        [1],
    ],
    ids=[
        "word-key",
        "comma-key",
        "empty-key",
        "leading-zero-key",
        "minus-zero-key",
        "arabic-digit-key",
        "int-key",
        "string-count",
        "list-count",
        "bool-count",
        "object-count",
        "string-zeros",
        "list-store",
        "unknown-member",
        "list-sketch",
    ],
)
def test_a_sketch_not_of_the_clients_shape_is_left_to_the_rpc(sketch: Any) -> None:
    """The RPC names what is wrong with it by its JSON; as array literals it could not even be said."""
    assert array_literals([point(), point(sketch=sketch)], [7, 8]) is None


@pytest.mark.parametrize(
    "fields",
    [{"count": True}, {"count": "3"}, {"sum": "1.5"}, {"min": [1]}, {"last": {"a": 1}}, {"ts": False}],
    ids=["bool-count", "string-count", "string-sum", "list-min", "object-last", "bool-ts"],
)
def test_a_value_that_is_not_a_number_is_left_to_the_rpc(fields: dict[str, Any]) -> None:
    """The RPC refuses these by their JSON types; an array literal would read "3" as 3."""
    assert array_literals([point(), point(**fields)], [7, 8]) is None


def test_integral_float_counts_are_written_as_integers() -> None:
    """2.0 is a count as 2 is (the RPC takes it): written as 2, so the arrays path does not refuse it."""
    literals = array_literals([point(count=3, sketch={"z": 1.0, "p": {"4": 2.0}})], [7])
    assert literals is not None
    assert literals[7:10] == ("{1}", '{"{4}"}', '{"{2}"}')


@pytest.mark.parametrize(
    "fields", [{"sum": Decimal("1.5")}, {"sketch": {"z": {1, 2}}}], ids=["decimal", "set"]
)
def test_a_value_json_cannot_write_is_left_to_the_rpc(fields: dict[str, Any]) -> None:
    assert array_literals([point(**fields)], [7]) is None
