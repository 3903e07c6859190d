"""Helpers for Realtime tests: a raw Phoenix client (for protocol-level checks) and waiting utilities."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import websockets

WAIT = 15.0
"""Generous bound for things that should happen in milliseconds; never a latency assertion."""


class Inbox:
    """Collects callback payloads and lets a test await one that matches."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, *args: Any) -> None:
        self.items.append(args[0] if len(args) == 1 else args)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT) -> Any:
        async def _wait() -> Any:
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)


class RawClient:
    """A minimal Phoenix client speaking vsn 1.0.0 or 2.0.0, to test what official clients never send."""

    def __init__(self, ws: Any, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0

    @classmethod
    async def connect(cls, url: str, apikey: str, vsn: str = "1.0.0", **kwargs: Any) -> RawClient:
        ws = await websockets.connect(f"{url}?apikey={apikey}&vsn={vsn}", **kwargs)
        return cls(ws, vsn)

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(
        self, topic: str, event: str, payload: Any, ref: str | None = None, join_ref: str | None = None
    ) -> str:
        ref = ref or self.next_ref()
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await self.ws.send(
                json.dumps(
                    {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
                )
            )
        return ref

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame as ``{topic, event, payload, ref, join_ref, binary}``."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            return decode_kind4(raw)
        data = json.loads(raw)
        if isinstance(data, list):
            join_ref, ref, topic, event, payload = data
            return {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
        return {**data, "join_ref": data.get("join_ref")}

    async def recv_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        async def _loop() -> dict[str, Any]:
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

        return await asyncio.wait_for(_loop(), timeout)

    async def join(
        self, topic: str, config: dict[str, Any] | None = None, access_token: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"config": config or {}}
        if access_token:
            payload["access_token"] = access_token
        ref = self.next_ref()
        await self.send(f"realtime:{topic}", "phx_join", payload, ref=ref, join_ref=ref)
        return await self.recv_until(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)

    async def close(self) -> None:
        await self.ws.close()


def kind3(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes, *, json_payload: bool, meta: bytes = b""
) -> bytes:
    fields = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), meta]
    header = struct.pack("BBBBBBB", 3, *(len(f) for f in fields), 1 if json_payload else 0)
    return header + b"".join(fields) + payload


def decode_kind4(raw: bytes) -> dict[str, Any]:
    kind, topic_len, event_len, meta_len, enc = raw[:5]
    assert kind == 4
    offset = 5
    topic = raw[offset : offset + topic_len].decode()
    offset += topic_len
    event = raw[offset : offset + event_len].decode()
    offset += event_len
    meta = json.loads(raw[offset : offset + meta_len]) if meta_len else None
    offset += meta_len
    body = raw[offset:]
    payload: Any = json.loads(body) if enc == 1 else body
    envelope = {"type": "broadcast", "event": event, "payload": payload}
    if meta:
        envelope["meta"] = meta
    return {
        "topic": topic,
        "event": "broadcast",
        "payload": envelope,
        "ref": None,
        "join_ref": None,
        "binary": enc == 0,
    }


def db_send(db_url: str, topic: str, event: str, payload: dict[str, Any], private: bool = True) -> None:
    """``realtime.send`` from the database, as the product's publish does."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "select realtime.send(%s::jsonb, %s, %s, %s)", (json.dumps(payload), event, topic, private)
        )


def new_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
