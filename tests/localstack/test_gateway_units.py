"""Pure parts of the gateway: protocol codecs, the pgoutput decoder, PostgREST's status table."""

from __future__ import annotations

import json
import struct

import pytest

from meshhook_rt_metrics.localstack.gateway.realtime.feed import PgOutputDecoder, slot_name_for, to_message
from meshhook_rt_metrics.localstack.gateway.realtime.protocol import V1, V2, ProtocolError, codec_for
from meshhook_rt_metrics.localstack.gateway.rest import pg_status
from tests.localstack.realtime_helpers import decode_kind4, kind3


def test_codec_selection() -> None:
    assert isinstance(codec_for(None), V1) and isinstance(codec_for("1.0.0"), V1)
    assert isinstance(codec_for("2.0.0"), V2)
    assert codec_for("3.0.0") is None


def test_v1_round_trip_and_broadcast_shape() -> None:
    frame = V1().decode_text(
        json.dumps({"topic": "realtime:a", "event": "phx_join", "payload": {}, "ref": 3, "join_ref": "3"})
    )
    assert (frame.topic, frame.event, frame.ref, frame.join_ref) == ("realtime:a", "phx_join", "3", "3")
    pushed = json.loads(V1().encode_broadcast("realtime:a", "e", {"x": 1}, {"id": "m"}) or "")
    assert pushed == {"topic": "realtime:a", "event": "broadcast", "ref": None,
                      "payload": {"type": "broadcast", "event": "e", "payload": {"x": 1}, "meta": {"id": "m"}}}  # fmt: skip
    assert V1().encode_broadcast("realtime:a", "e", None, None, binary=b"\x00") is None


def test_v2_kind3_json_and_binary_and_kind4() -> None:
    codec = V2()
    frame = codec.decode_binary(
        kind3("1", "2", "realtime:t", "ev", b'{"a":[1]}', json_payload=True, meta=b'{"persist":true}')
    )
    assert (frame.join_ref, frame.ref, frame.topic, frame.event) == ("1", "2", "realtime:t", "broadcast")
    assert frame.payload == {"type": "broadcast", "event": "ev", "payload": {"a": [1]}, "persist": True}
    raw = codec.decode_binary(kind3("1", "2", "realtime:t", "ev", b"\xff\x00", json_payload=False))
    assert raw.binary == b"\xff\x00"
    # meta cannot override the event or the type
    sneaky = codec.decode_binary(
        kind3("1", "2", "realtime:t", "ev", b"{}", json_payload=True, meta=b'{"event":"x","type":"y"}')
    )
    assert sneaky.payload["event"] == "ev" and sneaky.payload["type"] == "broadcast"
    out = codec.encode_broadcast("realtime:t", "ev", {"b": 2}, {"id": "m"})
    assert isinstance(out, bytes)
    assert decode_kind4(out)["payload"] == {
        "type": "broadcast",
        "event": "ev",
        "payload": {"b": 2},
        "meta": {"id": "m"},
    }
    long_topic = "realtime:" + "x" * 300
    text = codec.encode_broadcast(long_topic, "ev", {"b": 2}, None)
    assert isinstance(text, str) and json.loads(text)[2] == long_topic


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x04\x00\x00\x00\x00\x00\x00",
        b"\x03\x01\x00\x00\x00\x00\x07x",
        b"\x03\x00\x00\x00\x00\x02\x01{}",
        b"\x03\x00\x00\x00\x00\x00\x01\xff",
    ],
)
def test_v2_rejects_bad_binary(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        V2().decode_binary(data)


@pytest.mark.parametrize("text", ["", "null", "[1,2,3,4]", '[null, null, 1, "e", {}]', "{}", "[" * 5000])
def test_v2_rejects_bad_text(text: str) -> None:
    with pytest.raises(ProtocolError):
        V2().decode_text(text)


def _cstr(value: str) -> bytes:
    return value.encode() + b"\0"


def test_pgoutput_decoder_reads_inserts_of_realtime_messages_only() -> None:
    columns = ["topic", "extension", "payload", "event", "private", "updated_at", "inserted_at", "id"]
    relation = (
        b"R"
        + struct.pack("!I", 42)
        + _cstr("realtime")
        + _cstr("messages_2026_11_27")
        + b"d"
        + struct.pack("!H", len(columns))
    )
    for name in columns:
        relation += b"\0" + _cstr(name) + struct.pack("!Ii", 25, -1)
    values = ["metrics:p", "broadcast", '{"a": 1}', "rollup", "t", "x", "y", "0f0e"]
    insert = b"I" + struct.pack("!I", 42) + b"N" + struct.pack("!H", len(values))
    for value in values:
        insert += b"t" + struct.pack("!I", len(value.encode())) + value.encode()
    decoder = PgOutputDecoder()
    assert decoder.decode(b"B" + b"\0" * 20) is None
    assert decoder.decode(relation) is None
    row = decoder.decode(insert)
    assert row is not None
    message = to_message(row, backlog=False)
    assert message is not None
    assert (message.topic, message.event, message.payload, message.private, message.id) == (
        "metrics:p",
        "rollup",
        {"a": 1},
        True,
        "0f0e",
    )
    other = b"R" + struct.pack("!I", 7) + _cstr("public") + _cstr("messages") + b"d" + struct.pack("!H", 0)
    decoder.decode(other)
    assert decoder.decode(b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!H", 0)) is None


def test_slot_names_are_valid_identifiers() -> None:
    assert slot_name_for("Test-DB 1") == "meshhook_gw_test_db_1"
    assert len(slot_name_for("x" * 200)) <= 63


@pytest.mark.parametrize(
    ("sqlstate", "authed", "status"),
    [("42501", False, 401), ("42501", True, 403), ("P0001", True, 400), ("22023", True, 400), ("23505", True, 409),
     ("23503", True, 409), ("25006", True, 405), ("PT418", True, 418), ("08006", True, 503), ("XX000", True, 500),
     ("P0002", True, 500), ("42883", True, 404), ("53300", True, 503), ("57P01", True, 503)],
)  # fmt: skip
def test_postgrest_status_table(sqlstate: str, authed: bool, status: int) -> None:
    assert pg_status(sqlstate, authed) == status
