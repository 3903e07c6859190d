"""The live topics (realtime-py): a private channel per evaluated project, wake-ups for the rules they name.

Realtime is only the fast path: it does not guarantee delivery, so the worker also sweeps on a timer and
catches up from SQL after every (re)subscribe. realtime-py can look connected while dead (it sends heartbeats
but never checks the replies), so a watchdog sends a probe broadcast to the worker's own private topic every
few seconds and rebuilds the connection when no echo came back within the bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import BroadcastPayload, RealtimeChannelOptions

from meshhook_rt_metrics.alerting.tokens import ServiceTokens

log = logging.getLogger(__name__)

OnRollup = Callable[[UUID, list[str]], None]
OnResubscribe = Callable[[], None]


def topic_of(project_id: UUID) -> str:
    """The project's private topic (``metrics.topic`` in SQL)."""
    return f"metrics:{project_id}"


def private_channel(*, echo: bool = False) -> RealtimeChannelOptions:
    """Options of a private channel (authorised by the policies on realtime.messages); ``echo``: own broadcasts too."""
    return {"config": {"private": True, "broadcast": {"self": echo}, "presence": None}}


def metrics_named(payload: dict[str, Any]) -> list[str]:
    """The metric names a ``rollup`` message carries (what changed; the values are read from SQL)."""
    series = payload.get("series")
    if not isinstance(series, list):
        return []
    return sorted({str(item["name"]) for item in series if isinstance(item, dict) and "name" in item})


class LiveTopics:
    """One Realtime socket with a channel per project and a probe channel for the watchdog."""

    def __init__(
        self,
        url: str,
        tokens: ServiceTokens,
        worker_id: str,
        on_rollup: OnRollup,
        on_resubscribe: OnResubscribe,
        watchdog_seconds: float,
    ) -> None:
        self._url = url.rstrip("/") + "/realtime/v1"
        self._tokens = tokens
        self._probe_topic = f"alert-worker:{worker_id}"
        self._on_rollup = on_rollup
        self._on_resubscribe = on_resubscribe
        self._bound = watchdog_seconds
        self._client: AsyncRealtimeClient | None = None
        self._channels: dict[UUID, AsyncRealtimeChannel] = {}
        self._wanted: set[UUID] = set()
        self._last_echo = time.monotonic()
        self._probe_sent: dict[str, float] = {}
        self._syncing = asyncio.Lock()

    async def sync(self, projects: Iterable[UUID]) -> None:
        """Join the projects' channels that are new, leave the ones no longer ours (one sync at a time)."""
        self._wanted = set(projects)
        async with self._syncing:
            await self._sync()

    async def _sync(self) -> None:
        client = await self._connected()
        for project in sorted(set(self._channels) - self._wanted, key=str):
            channel = self._channels.pop(project)
            await client.remove_channel(channel)
        joining = sorted(self._wanted - set(self._channels), key=str)
        for project in joining:
            self._channels[project] = await self._join(client, project)
        if joining:
            log.info("realtime: joined %d project topic(s), %d in all", len(joining), len(self._channels))

    async def _connected(self) -> AsyncRealtimeClient:
        if self._client is None:
            client = AsyncRealtimeClient(self._url, self._tokens.token, auto_reconnect=False)
            await client.connect()
            await client.set_auth(self._tokens.token)
            probe = client.channel(self._probe_topic, private_channel(echo=True))
            probe.on_broadcast("probe", self._echo)
            await self._subscribe(probe)
            self._client = client
            self._last_echo = time.monotonic()
        return self._client

    async def _join(self, client: AsyncRealtimeClient, project: UUID) -> AsyncRealtimeChannel:
        channel = client.channel(topic_of(project), private_channel())
        channel.on_broadcast("rollup", lambda message: self._rollup(project, message))
        await self._subscribe(channel)
        return channel

    @staticmethod
    async def _subscribe(channel: AsyncRealtimeChannel) -> None:
        outcome: list[tuple[RealtimeSubscribeStates, Exception | None]] = []
        await channel.subscribe(lambda state, error: outcome.append((state, error)))
        if not outcome or outcome[-1][0] != RealtimeSubscribeStates.SUBSCRIBED:
            raise ConnectionError(f"could not join {channel.topic}: {outcome[-1] if outcome else 'no reply'}")

    def _rollup(self, project: UUID, message: BroadcastPayload) -> None:
        payload = message.get("payload")
        self._last_echo = time.monotonic()  # any message proves the socket alive
        if isinstance(payload, dict):
            self._on_rollup(project, metrics_named(payload))

    def _echo(self, message: BroadcastPayload) -> None:
        payload = message.get("payload")
        if isinstance(payload, dict) and payload.get("probe") in self._probe_sent:
            self._probe_sent.pop(str(payload["probe"]))
            self._last_echo = time.monotonic()

    async def check(self) -> None:
        """One watchdog step: refresh the token when due, probe, rebuild when the socket went quiet."""
        if self._client is None:
            await self.sync(self._wanted)
            return
        if self._tokens.due():
            await self._client.set_auth(self._tokens.renew())
        if time.monotonic() - self._last_echo > self._bound:
            log.warning(
                "realtime: no echo for %.0f s; rebuilding the connection", time.monotonic() - self._last_echo
            )
            await self.rebuild()
            return
        probe = uuid.uuid4().hex
        self._probe_sent = {probe: time.monotonic()}
        probe_channel = self._client.channels.get(f"realtime:{self._probe_topic}")
        if probe_channel is not None:
            await probe_channel.send_broadcast("probe", {"probe": probe})

    async def rebuild(self) -> None:
        """A new socket and channels, then a catch-up from SQL (messages missed meanwhile are not replayed)."""
        await self.close()
        await self.sync(self._wanted)
        self._on_resubscribe()

    async def close(self) -> None:
        client, self._client = self._client, None
        self._channels.clear()
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), timeout=5)
            except Exception as exc:  # a dead socket may not close cleanly; it is dropped either way
                log.debug("realtime: close failed: %s", exc)
