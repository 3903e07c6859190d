"""``array_literals``: the known-series path's batch as PostgreSQL array literals (no database needed; the
round trip through ``metrics.ingest_known`` is in tests/db/test_ingest_known.py)."""

from __future__ import annotations

import json
import math
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
        "{NULL,NULL}",
    )


def test_sketches_are_quoted_elements_that_read_back_as_the_json() -> None:
    sketch = {"z": 1, "p": {"-115": 2}, "n": {}, "odd": 'a "quoted" back\\slash'}
    literals = array_literals([point(sketch=sketch)], [7])
    assert literals is not None
    element = literals[-1][1:-1]  # one element: "..."
    assert element.startswith('"') and element.endswith('"')
    unescaped = element[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    assert json.loads(unescaped) == sketch


@pytest.mark.parametrize(
    "fields",
    [{"count": True}, {"count": "3"}, {"sum": "1.5"}, {"min": [1]}, {"last": {"a": 1}}, {"ts": False}],
    ids=["bool-count", "string-count", "string-sum", "list-min", "object-last", "bool-ts"],
)
def test_a_value_that_is_not_a_number_is_left_to_the_rpc(fields: dict[str, Any]) -> None:
    """The RPC refuses these by their JSON types; an array literal would read "3" as 3."""
    assert array_literals([point(), point(**fields)], [7, 8]) is None
