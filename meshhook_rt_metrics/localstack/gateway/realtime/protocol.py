"""Phoenix channel wire formats: vsn 1.0.0 (JSON objects) and 2.0.0 (JSON arrays, binary kinds 3/4).

Decoders raise :class:`ProtocolError` for anything that is not a well-formed frame; the socket closes
the connection then, as Phoenix does when its serializer cannot decode a frame.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4
ENC_BINARY = 0
ENC_JSON = 1


class ProtocolError(ValueError):
    """The frame cannot be decoded."""


@dataclass(frozen=True)
class Frame:
    """One client message. ``payload`` is JSON data; ``binary`` holds a raw user payload (kind 3, enc 0)."""

    topic: str
    event: str
    payload: Any
    ref: str | None
    join_ref: str | None
    binary: bytes | None = None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("ref must be a string or null")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity, which no client sends and no client could read back).

    ``ValueError`` covers syntax errors and integers over Python's 4,300-digit limit;
    ``RecursionError`` nesting deeper than the parser goes.
    """
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("frame is not valid JSON") from exc


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Codec:
    """Base class: the operations the socket needs from a protocol version."""

    vsn = ""

    def decode_text(self, text: str) -> Frame:
        raise NotImplementedError

    def decode_binary(self, data: bytes) -> Frame:
        raise ProtocolError("binary frames are not supported by this protocol version")

    def encode(
        self, topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None
    ) -> str:
        raise NotImplementedError

    def encode_broadcast(
        self, topic: str, event: str, payload: Any, meta: dict[str, Any] | None, binary: bytes | None = None
    ) -> str | bytes | None:
        """A broadcast push; None when this version cannot carry it (binary payload on vsn 1)."""
        raise NotImplementedError

    def reply(
        self, topic: str, ref: str | None, join_ref: str | None, status: str, response: dict[str, Any]
    ) -> str:
        return self.encode(topic, "phx_reply", {"status": status, "response": response}, ref, join_ref)


def broadcast_envelope(event: str, payload: Any, meta: dict[str, Any] | None) -> dict[str, Any]:
    envelope: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta:
        envelope["meta"] = meta
    return envelope


class V1(Codec):
    """vsn 1.0.0: ``{topic, event, payload, ref, join_ref}`` objects in text frames."""

    vsn = "1.0.0"

    def decode_text(self, text: str) -> Frame:
        data = _loads(text)
        if not isinstance(data, dict):
            raise ProtocolError("frame must be a JSON object")
        topic, event = data.get("topic"), data.get("event")
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("frame needs string topic and event")
        return Frame(topic, event, data.get("payload"), _ref(data.get("ref")), _ref(data.get("join_ref")))

    def encode(
        self, topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None
    ) -> str:
        return _dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})

    def encode_broadcast(
        self, topic: str, event: str, payload: Any, meta: dict[str, Any] | None, binary: bytes | None = None
    ) -> str | None:
        if binary is not None:
            return None
        return self.encode(topic, "broadcast", broadcast_envelope(event, payload, meta), None)


class V2(Codec):
    """vsn 2.0.0: ``[join_ref, ref, topic, event, payload]`` arrays; binary user broadcasts."""

    vsn = "2.0.0"

    def decode_text(self, text: str) -> Frame:
        data = _loads(text)
        if not isinstance(data, list) or len(data) != 5:
            raise ProtocolError("frame must be a JSON array of five elements")
        join_ref, ref, topic, event, payload = data
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("frame needs string topic and event")
        return Frame(topic, event, payload, _ref(ref), _ref(join_ref))

    def decode_binary(self, data: bytes) -> Frame:
        if len(data) < 7 or data[0] != KIND_USER_BROADCAST_PUSH:
            raise ProtocolError("unsupported binary frame")
        jr_len, ref_len, topic_len, event_len, meta_len, enc = data[1:7]
        offset = 7
        fields: list[str] = []
        for size in (jr_len, ref_len, topic_len, event_len, meta_len):
            chunk = data[offset : offset + size]
            if len(chunk) != size:
                raise ProtocolError("truncated binary frame")
            try:
                fields.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ProtocolError("binary frame header is not UTF-8") from exc
            offset += size
        join_ref, ref, topic, event, meta_text = fields
        body = data[offset:]
        meta: Any = {}
        if meta_text:
            meta = _loads(meta_text)
            if not isinstance(meta, dict):
                raise ProtocolError("binary frame metadata must be a JSON object")
        envelope: dict[str, Any] = {**meta, "type": "broadcast", "event": event}
        binary: bytes | None = None
        if enc == ENC_JSON:
            try:
                envelope["payload"] = _loads(body.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ProtocolError("binary frame JSON payload is not UTF-8") from exc
        elif enc == ENC_BINARY:
            binary = bytes(body)
            envelope["payload"] = None
        else:
            raise ProtocolError("unknown payload encoding")
        return Frame(topic, "broadcast", envelope, ref or None, join_ref or None, binary)

    def encode(
        self, topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None
    ) -> str:
        return _dumps([join_ref, ref, topic, event, payload])

    def encode_broadcast(
        self, topic: str, event: str, payload: Any, meta: dict[str, Any] | None, binary: bytes | None = None
    ) -> str | bytes:
        topic_b, event_b = topic.encode(), event.encode()
        meta_b = _dumps(meta).encode() if meta else b""
        if max(len(topic_b), len(event_b), len(meta_b)) > 255:
            # does not fit the kind-4 header: the text form carries the same message
            if binary is not None:
                raise ProtocolError("binary broadcast with header fields longer than 255 bytes")
            return self.encode(topic, "broadcast", broadcast_envelope(event, payload, meta), None)
        enc, body = (ENC_BINARY, binary) if binary is not None else (ENC_JSON, _dumps(payload).encode())
        header = struct.pack("BBBBB", KIND_USER_BROADCAST, len(topic_b), len(event_b), len(meta_b), enc)
        return header + topic_b + event_b + meta_b + body


def codec_for(vsn: str | None) -> Codec | None:
    if vsn in (None, "", "1.0.0"):
        return V1()
    if vsn == "2.0.0":
        return V2()
    return None
