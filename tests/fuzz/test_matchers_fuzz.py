"""Label matchers: the HTTP parser (``parse_matcher``) and the SQL rule (``metrics.matchers_problem``).

- any text: ``parse_matcher`` returns a matcher or raises ``ValueError`` (nothing else);
- a parsed matcher written back (quoted) parses to the same matcher;
- any jsonb: ``metrics.matchers_problem`` returns a message or null, never raises;
- matchers it accepts never make ``metrics.series_matches`` (the query's filter) raise, whatever the labels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshhook_rt_metrics.api.models import Matcher, parse_matcher
from tests.fuzz.conftest import fuzz
from tests.fuzz.strategies import (
    LABEL_NAMES,
    NASTY_TEXT,
    OPS,
    SQL_TEXT,
    TRICKY_REGEXES,
    Raw,
    dump,
    json_values,
)
from tests.support import TestDatabase


def quoted(matcher: Matcher) -> str:
    """A matcher as ``label<op>"value"`` (backslashes and quotes escaped)."""
    escaped = matcher.value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{matcher.label}{matcher.op}"{escaped}"'


MATCHER_TEXT = st.one_of(
    NASTY_TEXT,
    st.builds(lambda label, op, value: f"{label}{op}{value}", LABEL_NAMES, OPS, NASTY_TEXT),
    st.builds(
        lambda pad, label, op, value: f'{pad}{label}{pad}{op}{pad}"{value}"{pad}',
        st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u3000"]),
        st.one_of(LABEL_NAMES, NASTY_TEXT),
        st.one_of(OPS, NASTY_TEXT),
        NASTY_TEXT,
    ),
    st.builds(lambda n: "a=" + "x" * n, st.integers(1000, 1100)),
    st.builds(lambda n: "l" * n + "=x", st.integers(95, 105)),
)


@fuzz()
@given(MATCHER_TEXT)
@example('a="')
@example('a=""')
@example('a="\\"')
@example("a=\x00")
@example("é=x")
def test_parse_matcher_returns_a_matcher_or_raises_value_error(text: str) -> None:
    try:
        matcher = parse_matcher(text)
    except ValueError:
        return
    assert isinstance(matcher, Matcher)
    assert matcher.op in ("=", "!=", "=~", "!~")
    assert len(matcher.label) <= 100 and len(matcher.value) <= 1024
    # what it parsed, written back, is the same matcher
    assert parse_matcher(quoted(matcher)) == matcher


@fuzz()
@given(LABEL_NAMES, OPS, NASTY_TEXT)
@example("a", "=", '\\"')
@example("a", "=", '\\\\"')
@example("a", "=~", "\\")
@example("a", "=", ' "x" ')
def test_a_quoted_matcher_round_trips(label: str, op: str, value: str) -> None:
    matcher = Matcher(label=label, op=op, value=value)  # type: ignore[arg-type]
    assert parse_matcher(quoted(matcher)) == matcher


# -- SQL ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conn(db: TestDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url, autocommit=True) as connection:
        yield connection


def matcher_objects() -> st.SearchStrategy[Any]:
    good = st.fixed_dictionaries(
        {
            "label": st.one_of(LABEL_NAMES, SQL_TEXT),
            "op": st.one_of(OPS, SQL_TEXT),
            "value": st.one_of(SQL_TEXT, st.sampled_from(TRICKY_REGEXES)),
        }
    )
    return st.one_of(good, json_values(6), good.map(lambda m: {**m, "extra": 1}))


JSONB_MATCHERS = st.one_of(
    st.lists(matcher_objects(), max_size=4),
    st.lists(matcher_objects(), max_size=1).map(
        lambda m: [{"label": "a", "op": "=", "value": ""}] * 19 + m * 3
    ),
    json_values(),
)


def matchers_problem(conn: psycopg.Connection[Any], text: str, regex_max: int | None) -> Any:
    """The problem (or None); a raised error fails the test with the input in its message."""
    try:
        row = conn.execute(
            "select metrics.matchers_problem(%s::jsonb), metrics.matchers_problem(%s::jsonb, %s)",
            (text, text, regex_max),
        ).fetchone()
    except psycopg.Error as exc:
        pytest.fail(f"matchers_problem raised {exc.sqlstate} {exc} for {text!r}")
    assert row is not None
    assert row[0] is None or isinstance(row[0], str)
    assert row[1] is None or isinstance(row[1], str)
    return row[0]


LABEL_SETS = st.dictionaries(LABEL_NAMES, SQL_TEXT, max_size=4)


@fuzz()
@given(JSONB_MATCHERS, st.one_of(st.none(), st.integers(-5, 2000)), LABEL_SETS)
@example([{"label": "a", "op": "!~", "value": "a)|(b"}], None, {})
@example(Raw("1e400"), None, {})
def test_matchers_problem_never_raises_and_accepted_matchers_always_run(
    conn: psycopg.Connection[Any], matchers: Any, regex_max: int | None, labels: dict[str, str]
) -> None:
    text = dump(matchers)
    problem = matchers_problem(conn, text, regex_max)
    if problem is not None:
        return
    # accepted: the query's filter must run on any label set without an error
    try:
        conn.execute("select metrics.series_matches(%s::jsonb, %s::jsonb)", (json.dumps(labels), text))
    except psycopg.Error as exc:
        pytest.fail(f"matchers_problem accepted {text!r} but series_matches raised {exc.sqlstate}: {exc}")


@pytest.mark.parametrize("regex", ["***=(", "(?i)abc", "***:a+"])
def test_a_regex_that_fails_anchored_is_refused_by_matchers_problem(
    conn: psycopg.Connection[Any], regex: str
) -> None:
    """Found by this suite: the check compiled the bare regex while queries run ^(?:re)$ (a mode prefix or
    leading inline options compile alone only); migration 20261206000300 checks the anchored form."""
    found = json.dumps([{"label": "a", "op": "=~", "value": regex}])
    problem = matchers_problem(conn, found, None)
    assert problem is not None and problem.startswith("[0].value: invalid regex")


@fuzz()
@given(MATCHER_TEXT)
def test_what_parse_matcher_accepts_the_sql_rule_judges_without_raising(
    conn: psycopg.Connection[Any], text: str
) -> None:
    """The HTTP path: parse_matcher, then matchers_problem over the parsed list (as check_matchers does)."""
    try:
        matcher = parse_matcher(text)
    except ValueError:
        return
    if "\x00" in matcher.value or "\x00" in matcher.label:
        return  # a NUL never reaches SQL: the route's pattern refuses it? (checked by the API fuzz suite)
    found = json.dumps([matcher.model_dump()])
    if matchers_problem(conn, found, None) is None:
        conn.execute('select metrics.series_matches(\'{"a": "x"}\'::jsonb, %s::jsonb)', (found,))
