"""One Realtime WebSocket: Phoenix channel semantics on top of a protocol codec.

Client mistakes get the answers Phoenix/Supabase give (an error reply, a ``system`` message, a
``phx_close``, or closing the socket for undecodable frames); nothing a client sends can raise out of
this module into the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.websockets import WebSocket, WebSocketDisconnect

from meshhook_rt_metrics.localstack.gateway.keys import Claims, JwtKeys, TokenError
from meshhook_rt_metrics.localstack.gateway.realtime import authz
from meshhook_rt_metrics.localstack.gateway.realtime.authz import Permissions
from meshhook_rt_metrics.localstack.gateway.realtime.hub import Channel, Hub, Subscriber
from meshhook_rt_metrics.localstack.gateway.realtime.protocol import Codec, Frame, ProtocolError

log = logging.getLogger(__name__)

OUTGOING_QUEUE = 10_000
DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024
DEFAULT_CLIENT_BROADCASTS_PER_SECOND = 100.0
RATE_LIMIT_REASON = "Too many messages per second"
_EMPTY_STR_SIZE = sys.getsizeof("")
CLOSE_NORMAL = 1000
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
FULL_ACCESS = Permissions(read=True, write=True)


@dataclass(frozen=True)
class Runtime:
    """What every socket shares."""

    keys: JwtKeys
    hub: Hub
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    idle_timeout: float
    max_channels: int
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    """Bytes of frames a socket may have waiting to be sent; over it the socket is closed (1013)."""
    client_broadcasts_per_second: float = DEFAULT_CLIENT_BROADCASTS_PER_SECOND
    """Client broadcasts one socket may send per second (burst as many); more are dropped."""


def frame_size(frame: str | bytes) -> int:
    """Bytes a queued frame holds (O(1): a text frame's in-memory size, not its UTF-8 length)."""
    if isinstance(frame, bytes):
        return len(frame)
    return len(frame) if frame.isascii() else sys.getsizeof(frame) - _EMPTY_STR_SIZE


class TokenBucket:
    """``rate`` events per second, bursts up to ``rate`` (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True  # no limit
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def expired_message(claims: Claims) -> str:
    ago = max(0, int(time.time() - (claims.exp or time.time())))
    return f"Token has expired {ago} seconds ago"


class Connection(Subscriber):
    def __init__(self, ws: WebSocket, codec: Codec, claims: Claims, runtime: Runtime) -> None:
        self.ws = ws
        self.codec = codec
        self.claims = claims
        self.rt = runtime
        self.channels: dict[str, Channel] = {}
        self.out: asyncio.Queue[str | bytes | None] = asyncio.Queue(OUTGOING_QUEUE)
        self.queued_bytes = 0
        """Bytes of frames queued or being sent."""
        self.broadcasts = TokenBucket(runtime.client_broadcasts_per_second)
        self._close: tuple[int, str] | None = None
        self._closing = asyncio.Event()

    # -- outgoing -------------------------------------------------------------------------------
    def push(self, frame: str | bytes) -> None:
        if self._close is not None:
            return
        size = frame_size(frame)
        if self.queued_bytes and self.queued_bytes + size > self.rt.max_queued_bytes:
            log.warning(
                "closing a Realtime socket that does not keep up (over %d bytes pending)",
                self.rt.max_queued_bytes,
            )
            self.close(
                CLOSE_TRY_AGAIN,
                f"too many pending messages: over the {self.rt.max_queued_bytes}-byte send buffer",
            )
            return
        try:
            self.out.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("closing a Realtime socket that does not keep up (%d frames queued)", OUTGOING_QUEUE)
            self.close(CLOSE_TRY_AGAIN, "too many pending messages")
            return
        self.queued_bytes += size

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._closing.set()
            if code == CLOSE_TRY_AGAIN:  # a stuck client: what is queued will never be read anyway
                while not self.out.empty():
                    dropped = self.out.get_nowait()
                    if dropped is not None:
                        self.queued_bytes -= frame_size(dropped)
            # the writer sends what is queued before this marker, then closes
            self.out.put_nowait(None)

    def reply(self, frame: Frame, status: str, response: dict[str, Any]) -> None:
        self.push(self.codec.reply(frame.topic, frame.ref, frame.join_ref, status, response))

    def system(self, channel: Channel, status: str, message: str, extension: str = "system") -> None:
        payload = {"channel": channel.sub_topic, "extension": extension, "message": message, "status": status}
        self.push(self.codec.encode(channel.topic, "system", payload, None, channel.join_ref))

    async def _writer(self) -> None:
        while True:
            frame = await self.out.get()
            if frame is None:
                break
            if isinstance(frame, str):
                await self.ws.send_text(frame)
            else:
                await self.ws.send_bytes(frame)
            self.queued_bytes -= frame_size(frame)
        code, reason = self._close or (CLOSE_NORMAL, "")
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    # -- main loop ------------------------------------------------------------------------------
    async def serve(self) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            closing = asyncio.ensure_future(self._closing.wait())
            receive: asyncio.Future[Any] | None = None
            try:
                while self._close is None:
                    receive = asyncio.ensure_future(self.ws.receive())
                    done, _ = await asyncio.wait(
                        (receive, closing), timeout=self.rt.idle_timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receive not in done:  # idle, or closed by the server (e.g. over the send buffer)
                        if not done:
                            self.close(CLOSE_NORMAL, "heartbeat timeout")
                        break
                    message = receive.result()
                    receive = None
                    if message["type"] == "websocket.disconnect":
                        break
                    await self._handle_raw(message)
            finally:
                closing.cancel()
                if receive is not None and not receive.done():
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                        await receive
        except WebSocketDisconnect:
            pass
        finally:  # also on cancellation (server shutdown): leave the hub, flush and close
            for channel in list(self.channels.values()):
                self._drop(channel)
            if self._close is None:
                self._close = (CLOSE_NORMAL, "")
                with contextlib.suppress(asyncio.QueueFull):
                    self.out.put_nowait(None)
            try:
                await asyncio.wait_for(writer, 5.0)
            except (TimeoutError, Exception):
                writer.cancel()

    async def _handle_raw(self, message: MutableMapping[str, Any]) -> None:
        try:
            if message.get("text") is not None:
                frame = self.codec.decode_text(message["text"])
            elif message.get("bytes") is not None:
                frame = self.codec.decode_binary(message["bytes"])
            else:
                return
        except (
            ProtocolError,
            ValueError,
            RecursionError,
        ) as exc:  # ProtocolError is the rule; the rest a net
            log.info("closing a Realtime socket after a malformed frame: %s", exc)
            self.close(CLOSE_INVALID, f"malformed message: {exc}")
            return
        try:
            await self._dispatch(frame)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("database unavailable while handling %s: %s", frame.event, type(exc).__name__)
            self.reply(frame, "error", {"reason": "Realtime was unable to connect to the project database"})
        except Exception:  # a bug must cost one reply, not the socket or the server
            log.exception("handling a %r frame failed", frame.event)
            self.reply(frame, "error", {"reason": "internal error"})

    async def _dispatch(self, frame: Frame) -> None:
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.reply(frame, "ok", {})
            else:
                self.reply(frame, "error", {"reason": f"unknown event {frame.event!r}"})
            return
        if frame.event == "phx_join":
            await self._join(frame)
            return
        channel = self.channels.get(frame.topic)
        if channel is None:
            self.reply(frame, "error", {"reason": "unmatched topic"})
            return
        match frame.event:
            case "phx_leave":
                self.reply(frame, "ok", {})
                self._leave(channel)
            case "broadcast":
                await self._broadcast(channel, frame)
            case "access_token":
                await self._access_token(channel, frame)
            case "presence":
                self.reply(
                    frame, "error", {"reason": "Presence is not supported by the MeshHook local stack"}
                )
            case _:
                self.reply(frame, "error", {"reason": f"unknown event {frame.event!r}"})

    # -- channels -------------------------------------------------------------------------------
    def _drop(self, channel: Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
        self.rt.hub.remove(channel)
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]

    def _leave(self, channel: Channel) -> None:
        """Server-side close of one channel (leave, expiry, lost authorisation)."""
        self._drop(channel)
        self.push(self.codec.encode(channel.topic, "phx_close", {}, None, channel.join_ref))

    def _schedule_expiry(self, channel: Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = None
        exp = channel.claims.exp
        if exp is not None:
            loop = asyncio.get_running_loop()
            channel.expiry = loop.call_later(max(0.0, exp - time.time()), self._expire, channel)

    def _expire(self, channel: Channel) -> None:
        if self.channels.get(channel.topic) is not channel:
            return
        self.system(channel, "error", expired_message(channel.claims))
        self._leave(channel)

    def _verify(self, token: str) -> Claims | str:
        try:
            return self.rt.keys.verify(token, require_exp=True)
        except TokenError as exc:
            if exc.expired:
                return "Token has expired"
            return f"Invalid token: {exc}"

    async def _join(self, frame: Frame) -> None:
        if not frame.topic.startswith("realtime:") or frame.topic == "realtime:":
            self.reply(frame, "error", {"reason": "unmatched topic"})
            return
        payload = frame.payload if frame.payload is not None else {}
        config = payload.get("config") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(config or {}, dict):
            self.reply(
                frame, "error", {"reason": "Invalid join payload: expected an object with a config object"}
            )
            return
        config = config or {}
        old = self.channels.get(frame.topic)
        if old is not None:  # a second join of the same topic replaces the first, as in Phoenix
            self._leave(old)
        elif len(self.channels) >= self.rt.max_channels:
            self.reply(frame, "error", {"reason": "Too many channels on this connection"})
            return
        token = payload.get("access_token")
        claims: Claims | str = self.claims if not token else self._verify(str(token))
        if isinstance(claims, str):
            self.reply(frame, "error", {"reason": claims})
            return
        if claims.exp is not None and claims.exp <= time.time():
            self.reply(frame, "error", {"reason": expired_message(claims)})
            return
        postgres_changes = config.get("postgres_changes") or []
        if postgres_changes:
            self.reply(
                frame,
                "error",
                {
                    "reason": "postgres_changes is not supported by the MeshHook local stack; use Broadcast from Database"
                },
            )
            return
        broadcast_config = config.get("broadcast")
        broadcast: dict[str, Any] = broadcast_config if isinstance(broadcast_config, dict) else {}
        private = config.get("private") is True
        sub_topic = frame.topic.removeprefix("realtime:")
        perms = await authz.check(self.rt.pool, claims, sub_topic) if private else FULL_ACCESS
        if not perms.read:
            log.info("join of %s refused: no read permission", frame.topic)
            self.reply(
                frame,
                "error",
                {
                    "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}"
                },
            )
            return
        channel = Channel(
            conn=self,
            topic=frame.topic,
            join_ref=frame.join_ref or frame.ref,
            private=private,
            claims=claims,
            perms=perms,
            self_broadcast=bool(broadcast.get("self")),
            ack=bool(broadcast.get("ack")),
        )
        self.channels[frame.topic] = channel
        self.rt.hub.add(channel)
        self.reply(frame, "ok", {"postgres_changes": []})
        self._schedule_expiry(channel)
        replayed = self.rt.hub.replay(channel, self.push)
        log.info(
            "joined %s (%s, vsn %s)%s",
            frame.topic,
            "private" if private else "public",
            self.codec.vsn,
            f", replayed {replayed} message(s) from before the restart" if replayed else "",
        )

    async def _broadcast(self, channel: Channel, frame: Frame) -> None:
        envelope = frame.payload
        if not isinstance(envelope, dict) or not isinstance(envelope.get("event"), str):
            self.reply(frame, "error", {"reason": "Invalid broadcast: expected {type, event, payload}"})
            return
        if channel.private and not channel.perms.write:
            if channel.ack:
                self.reply(
                    frame,
                    "error",
                    {
                        "reason": f"Unauthorized: You do not have permissions to write to this Channel topic: {channel.sub_topic}"
                    },
                )
            return
        if not self.broadcasts.take():
            # dropped, as Supabase drops messages over the rate; told only to senders asking for acks
            self.rt.hub.stats.rate_limited += 1
            if channel.ack:
                self.reply(frame, "error", {"reason": RATE_LIMIT_REASON})
            return
        event, payload = envelope["event"], envelope.get("payload")
        self.rt.hub.stats.client_broadcasts += 1
        if envelope.get("persist") is True and channel.private and frame.binary is None:
            stored = await authz.insert_message(
                self.rt.pool, channel.claims, channel.sub_topic, event, payload
            )
            if channel.ack:
                self.reply(
                    frame,
                    "ok" if stored else "error",
                    {} if stored else {"error": "could not store the message"},
                )
            return
        self.rt.hub.publish(
            channel.sub_topic, channel.private, event, payload, None, frame.binary, sender=channel
        )
        if channel.ack:
            self.reply(frame, "ok", {})

    async def _access_token(self, channel: Channel, frame: Frame) -> None:
        token = frame.payload.get("access_token") if isinstance(frame.payload, dict) else None
        if not isinstance(token, str) or not token:
            return
        claims = self._verify(token)
        if isinstance(claims, str):
            self.system(channel, "error", claims)
            self._leave(channel)
            return
        if claims.exp is not None and claims.exp <= time.time():
            self.system(channel, "error", expired_message(claims))
            self._leave(channel)
            return
        channel.claims = claims
        if channel.private:
            channel.perms = await authz.check(self.rt.pool, claims, channel.sub_topic)
            if not channel.perms.read:
                self.system(
                    channel,
                    "error",
                    f"You do not have permissions to read from this Channel topic: {channel.sub_topic}",
                )
                self._leave(channel)
                return
        self._schedule_expiry(channel)
