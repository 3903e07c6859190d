"""The Realtime endpoints: the WebSocket, the REST broadcast API, and the database feed behind them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from meshhook_rt_metrics.localstack.gateway.auth import AuthFailure, authenticate
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig, connection_pool
from meshhook_rt_metrics.localstack.gateway.keys import TokenError
from meshhook_rt_metrics.localstack.gateway.realtime import authz
from meshhook_rt_metrics.localstack.gateway.realtime.feed import DatabaseFeed, slot_name_for
from meshhook_rt_metrics.localstack.gateway.realtime.hub import Hub
from meshhook_rt_metrics.localstack.gateway.realtime.protocol import codec_for
from meshhook_rt_metrics.localstack.gateway.realtime.socket import Connection, Runtime
from meshhook_rt_metrics.localstack.gateway.rest import read_limited

log = logging.getLogger(__name__)

MAX_REST_MESSAGES = 100
MAX_REST_BODY = 1024 * 1024


class RealtimeService:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.hub = Hub(config.replay_grace)
        self.slot = config.slot_name or slot_name_for(config.database_name)
        self.pool = connection_pool(config.db_url, "meshhook-gateway-realtime")
        self.feed = DatabaseFeed(config.db_url, self.slot, self.hub.from_database, config.poll_interval)
        self.runtime = Runtime(
            keys=config.keys,
            hub=self.hub,
            pool=self.pool,
            idle_timeout=config.idle_timeout,
            max_channels=config.max_channels_per_socket,
            max_queued_bytes=config.max_queued_bytes_per_socket,
            client_broadcasts_per_second=config.client_broadcasts_per_second,
        )
        self.connections = 0
        self._feed_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self.pool.open(wait=False)
        self._stopping = False
        self._start_feed()

    def _start_feed(self) -> None:
        self._feed_task = asyncio.create_task(self.feed.run(), name="realtime-feed")
        self._feed_task.add_done_callback(self._feed_ended)

    def _feed_ended(self, task: asyncio.Task[None]) -> None:
        """The feed never ends on its own; should it anyway (a BaseException), start it again."""
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        log.error(
            "the database feed task ended (%s); starting it again", type(exc).__name__ if exc else "no error"
        )
        self.feed.status.restarts += 1
        asyncio.get_running_loop().call_later(self.feed.max_backoff, self._restart_feed)

    def _restart_feed(self) -> None:
        if not self._stopping:
            self._start_feed()

    def feed_running(self) -> bool:
        """Whether Broadcast from Database works right now (the feed task is alive and caught up)."""
        task = self._feed_task
        return (
            task is not None
            and not task.done()
            and self.feed.status.state == "running"
            and self.feed.ready.is_set()
        )

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.feed.ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
        await self.pool.close()

    async def websocket(self, ws: WebSocket) -> None:
        codec = codec_for(ws.query_params.get("vsn"))
        if codec is None:
            await ws.send_denial_response(JSONResponse({"error": "Unsupported protocol version (vsn)"}, 400))
            return
        token = ws.query_params.get("apikey") or ws.headers.get("apikey") or ""
        try:
            claims = self.config.keys.verify(token, require_exp=True)  # as Supabase Realtime: no iss check
        except TokenError as exc:
            message = "Token has expired" if exc.expired else f"Invalid token: {exc}"
            if not token:
                message = "No API key found in request"
            await ws.send_denial_response(JSONResponse({"error": message}, 401))
            return
        await ws.accept()
        self.connections += 1
        try:
            await Connection(ws, codec, claims, self.runtime).serve()
        finally:
            self.connections -= 1

    async def broadcast(self, request: Request) -> Response:
        """``POST /realtime/v1/api/broadcast``: messages from a server, authorised like a client send."""
        try:
            claims = authenticate(request, self.config.keys)
        except AuthFailure as failure:
            return failure.response
        raw = await read_limited(request, MAX_REST_BODY)
        if raw is None:
            return JSONResponse({"message": f"Payload too large: the limit is {MAX_REST_BODY} bytes"}, 413)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return JSONResponse({"message": "Invalid JSON body"}, 400)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or len(messages) > MAX_REST_MESSAGES:
            return JSONResponse(
                {"message": f"Expected 'messages': a list of 1 to {MAX_REST_MESSAGES} messages"}, 400
            )
        errors: dict[str, list[str]] = {}
        for index, message in enumerate(messages):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("topic"), str)
                or not isinstance(message.get("event"), str)
            ):
                errors[f"messages[{index}]"] = ["needs string 'topic' and 'event'"]
        if errors:
            return JSONResponse({"message": "Invalid messages", "errors": errors}, 422)
        allowed: dict[str, bool] = {}
        try:
            for message in messages:
                topic = message["topic"].removeprefix("realtime:")
                private = message.get("private") is True
                if private and claims.role != "service_role":
                    if topic not in allowed:
                        allowed[topic] = (await authz.check(self.pool, claims, topic)).write
                    if not allowed[topic]:
                        continue
                self.hub.publish(topic, private, message["event"], message.get("payload"), None)
        except (PoolTimeout, psycopg.OperationalError):
            return JSONResponse({"message": "Realtime was unable to connect to the project database"}, 503)
        return Response(status_code=202)
