"""Fuzzing of the gateway's parsers of untrusted input (issue #15, finding 13).

The Realtime frame decoders (vsn 1.0.0 JSON, vsn 2.0.0 JSON arrays and binary kind 3) must return a frame
or raise ``ProtocolError`` (the socket then closes with 1007); the Data API's request parsing must return
arguments or a ``400 PGRST102`` answer. Anything else escaping is a traceback in the server.

Derandomized, so CI runs the same cases every time; ``MESHHOOK_SOAK=1`` runs many more. Every crash the
fuzzers found is pinned by a regression test below.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from meshhook_rt_metrics.localstack.gateway.realtime.feed import UnreadableRowError, to_message
from meshhook_rt_metrics.localstack.gateway.realtime.protocol import V1, V2, Frame, ProtocolError
from meshhook_rt_metrics.localstack.gateway.rest import body_arguments, encode_arguments, query_arguments
from tests.localstack.realtime_helpers import kind3

SOAK = os.environ.get("MESHHOOK_SOAK") == "1"
FUZZ = settings(
    max_examples=50_000 if SOAK else 1_000,
    derandomize=True,  # the same cases on every run: CI is reproducible
    deadline=None,  # a shared machine: no timing
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DEEP = 5_000
HUGE_INT = "1" * 5_000  # over Python's 4,300-digit int limit

# -- strategies ----------------------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# pathological JSON text: nesting past the parser's recursion limit, huge numbers, constants, junk
hostile_fragments = st.sampled_from(
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        "[" * DEEP,
        HUGE_INT,
        "-" + HUGE_INT,
        "1e99999",
        "NaN",
        "Infinity",
        "-Infinity",
        '"\\ud800"',
        '"\\u0000"',
        "\ufeff{}",
        "",
    ]
)
json_texts = st.one_of(
    json_values.map(json.dumps),
    hostile_fragments,
    st.text(max_size=200),
    st.builds(lambda a, b: a + b, json_values.map(json.dumps), st.text(max_size=5)),
)


@st.composite
def v1_frames(draw: st.DrawFn) -> str:
    """Mostly well-formed vsn 1.0.0 objects with hostile fields."""
    field_value = st.one_of(json_values, hostile_fragments.map(lambda f: ("raw", f)))
    fields: dict[str, Any] = {}
    for key in ("topic", "event", "payload", "ref", "join_ref"):
        if draw(st.booleans()):
            fields[key] = draw(field_value)
    parts = [
        f"{json.dumps(key)}:{value[1] if isinstance(value, tuple) else json.dumps(value)}"
        for key, value in fields.items()
    ]
    return "{" + ",".join(parts) + "}"


@st.composite
def v2_frames(draw: st.DrawFn) -> str:
    """Mostly five-element vsn 2.0.0 arrays with hostile elements."""
    element = st.one_of(json_values.map(json.dumps), hostile_fragments, st.just('"realtime:t"'))
    count = draw(st.sampled_from([5, 5, 5, 4, 6, 0]))
    return "[" + ",".join(draw(element) for _ in range(count)) + "]"


@st.composite
def kind3_frames(draw: st.DrawFn) -> bytes:
    """Binary kind 3 pushes: consistent or lying header lengths, JSON or raw payloads, hostile meta."""
    fields = [draw(st.binary(max_size=12)) for _ in range(4)]
    meta = draw(st.one_of(st.binary(max_size=20), hostile_fragments.map(lambda f: f.encode()[:255])))
    meta = meta[:255]
    payload = draw(st.one_of(st.binary(max_size=64), json_texts.map(lambda t: t.encode("utf-8", "replace"))))
    lengths = [len(f) for f in fields] + [len(meta)]
    if draw(st.booleans()):  # lie about a length
        index = draw(st.integers(0, 4))
        lengths[index] = draw(st.integers(0, 255))
    enc = draw(st.sampled_from([0, 1, 1, 2, 255]))
    return struct.pack("BBBBBBB", 3, *lengths, enc) + b"".join(fields) + meta + payload


def decodes_or_refuses(decode: Any, data: Any) -> None:
    try:
        frame = decode(data)
    except ProtocolError:
        return
    assert isinstance(frame, Frame)
    assert isinstance(frame.topic, str) and isinstance(frame.event, str)
    assert frame.ref is None or isinstance(frame.ref, str)
    assert frame.join_ref is None or isinstance(frame.join_ref, str)


# -- Realtime decoders -----------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(v1_frames(), json_texts))
def test_fuzz_v1_text_frames(text: str) -> None:
    decodes_or_refuses(V1().decode_text, text)


@FUZZ
@given(st.one_of(v2_frames(), json_texts))
def test_fuzz_v2_text_frames(text: str) -> None:
    decodes_or_refuses(V2().decode_text, text)


@FUZZ
@given(st.one_of(kind3_frames(), st.binary(max_size=300)))
def test_fuzz_v2_binary_frames(data: bytes) -> None:
    decodes_or_refuses(V2().decode_binary, data)
    decodes_or_refuses(V1().decode_binary, data)  # vsn 1 refuses every binary frame


# -- Data API request parsing ----------------------------------------------------------------------------
def parses_or_400(raw: bytes) -> None:
    args = body_arguments(raw)
    if isinstance(args, JSONResponse):
        assert args.status_code == 400
        assert json.loads(bytes(args.body))["code"] == "PGRST102"
        return
    assert isinstance(args, dict)
    body = encode_arguments(args)
    if isinstance(body, JSONResponse):
        assert body.status_code == 400
    else:
        assert isinstance(json.loads(body), dict)


@FUZZ
@given(
    st.one_of(
        json_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
        st.builds(
            lambda key, fragment: ('{"' + key + '":' + fragment + "}").encode(),
            st.sampled_from(["batch", "p_project", ""]),
            hostile_fragments,
        ),
        st.binary(max_size=200),
    )
)
def test_fuzz_data_api_post_bodies(raw: bytes) -> None:
    parses_or_400(raw)


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=8))
def test_fuzz_data_api_query_arguments(items: list[tuple[str, str]]) -> None:
    args = query_arguments(items)
    assert "apikey" not in args
    body = encode_arguments(args)
    assert isinstance(body, str) and isinstance(json.loads(body), dict)


# -- regressions: the crashes the fuzzers found -------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            '{"topic":"realtime:t","event":"e","payload":' + HUGE_INT + ',"ref":"1"}', id="v1-huge-int"
        ),
        pytest.param(
            '{"topic":"realtime:t","event":"e","payload":{},"ref":' + HUGE_INT + "}", id="v1-huge-ref"
        ),
        pytest.param('{"topic":"realtime:t","event":"e","payload":NaN,"ref":"1"}', id="v1-nan"),
        pytest.param('{"topic":"realtime:t","event":"e","payload":[Infinity],"ref":"1"}', id="v1-infinity"),
    ],
)
def test_v1_refuses_huge_integers_and_constants(text: str) -> None:
    with pytest.raises(ProtocolError):  # was ValueError: a traceback instead of close 1007
        V1().decode_text(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('[null,"1","realtime:t","e",' + HUGE_INT + "]", id="v2-huge-int"),
        pytest.param('[null,"1","realtime:t","e",{"a":-Infinity}]', id="v2-infinity"),
    ],
)
def test_v2_text_refuses_huge_integers_and_constants(text: str) -> None:
    with pytest.raises(ProtocolError):
        V2().decode_text(text)


@pytest.mark.parametrize(
    ("payload", "meta"),
    [
        pytest.param(HUGE_INT.encode(), b"", id="kind3-huge-int-payload"),
        pytest.param(b"{}", b'{"n":' + b"9" * 240 + b"}", id="kind3-meta-ok-control"),
        pytest.param(b"[NaN]", b"", id="kind3-nan-payload"),
    ],
)
def test_v2_binary_refuses_huge_integers(payload: bytes, meta: bytes) -> None:
    data = kind3("1", "2", "realtime:t", "ev", payload, json_payload=True, meta=meta)
    if payload == b"{}":  # a 240-digit int is fine
        assert V2().decode_binary(data).payload["n"] == int("9" * 240)
        return
    with pytest.raises(ProtocolError):
        V2().decode_binary(data)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"batch":' + b"[" * DEEP + b"]" * DEEP + b"}", id="deep-nesting"),
        pytest.param(b'{"batch":' + HUGE_INT.encode() + b"}", id="huge-int"),
        pytest.param(b'{"batch":' + b"1" * 4301 + b"}", id="just-over-the-int-limit"),
    ],
)
def test_data_api_body_parsing_answers_400_not_a_traceback(raw: bytes) -> None:
    answer = body_arguments(raw)  # was RecursionError / ValueError: 500 and a traceback
    assert isinstance(answer, JSONResponse) and answer.status_code == 400
    assert json.loads(bytes(answer.body))["code"] == "PGRST102"


def test_data_api_arguments_that_cannot_be_reencoded_answer_400() -> None:
    deep: Any = []
    for _ in range(DEEP):
        deep = [deep]
    answer = encode_arguments({"batch": deep})
    assert isinstance(answer, JSONResponse) and answer.status_code == 400


@pytest.mark.parametrize(
    "payload",
    [pytest.param("[" * DEEP + "]" * DEEP, id="deep"), pytest.param(HUGE_INT, id="huge-int")],
)
def test_feed_rows_that_cannot_be_parsed_are_unreadable_not_a_crash(payload: str) -> None:
    row: dict[str, str | None] = {"topic": "t", "extension": "broadcast", "payload": payload, "id": "x"}
    with pytest.raises(UnreadableRowError):  # was RecursionError / ValueError: the feed task died
        to_message(row, backlog=False)
