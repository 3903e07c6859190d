"""Shared strategies and helpers of the fuzz suites."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# characters that break parsers: quotes, escapes, separators, controls, a lone surrogate is left out
# (not encodable as UTF-8, so no client can send it), NUL is in (PostgreSQL text cannot hold it)
NASTY_CHARS = st.sampled_from(
    list("\"\\'=!~{}[](),;:&%#?+*.^$|/ \t\r\n\x00\x01\x1f\x7f\u0085\u2028\u200b\ufeff\U0001f600é𝄞")
)
NASTY_TEXT = st.text(st.one_of(NASTY_CHARS, st.characters(exclude_categories=["Cs"])), max_size=40)
SQL_TEXT = st.text(
    st.one_of(
        NASTY_CHARS.filter(lambda c: c != "\x00"),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=40,
)
"""NASTY_TEXT without NUL, which no jsonb or text value can hold (an input error before any function runs)."""
LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
OPS = st.sampled_from(["=", "!=", "=~", "!~"])

# PostgreSQL ARE regexes that are valid alone but change meaning or break inside ^(?:...)$
TRICKY_REGEXES = [
    "***=(",
    "***=abc",
    "***:a+",
    "(?i)abc",
    "(?x) a b",
    "(?b)a{1,2}",
    "(?e)a{1,2}",
    "(?q)(",
    "a)|(b",
    "a)(?:b",
    ")(",
    "\\",
    "a\\",
    "[",
    "(?",
    "x{1000}{1000}",
    "((((((((((a))))))))))",
    "(a|b)*c\\1",
    "\\Z",
    "\\m\\M",
    ".*" * 40,
    "[[:alpha:]]+",
    "[[:nope:]]",
    "a{,3}",
    "(?=a)a",
    "(?<=a)b",
]


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is (numbers JSON allows but Python would normalise: 1e400, 5.0, -0)."""

    text: str


@dataclass(frozen=True)
class Dup:
    """A JSON object written with its pairs as given (duplicated keys included)."""

    pairs: tuple[tuple[str, Any], ...]


def dump(value: Any) -> str:
    """JSON text of a tree that may hold :class:`Raw` and :class:`Dup` nodes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Dup):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value, allow_nan=False)


RAW_NUMBERS = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "1e-400",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "-0",
        "-0.0",
        "0.0000",
        "5.0",
        "5.00000000000000000001",
        "1E+2",
        "123456789012345678901234567890",
        "999999999999999999",
        "1000000000000000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "2147483648",
        "-2147483649",
        "0." + "0" * 200 + "1",
        "1" + "0" * 1000,
    ]
).map(Raw)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON (no NUL, which jsonb cannot hold), raw number tokens included."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        RAW_NUMBERS,
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30),
    )
    keys = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: str = "1") -> Raw:
    """``depth`` levels of arrays and objects around ``leaf``, as JSON text (no Python recursion)."""
    opens = "".join("[" if i % 2 else '{"a": ' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return Raw(opens + leaf + closes)
