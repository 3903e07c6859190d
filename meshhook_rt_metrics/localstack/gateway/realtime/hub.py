"""Who is subscribed to what, and delivery of broadcasts to them.

Delivery never awaits: each socket has a bounded outgoing queue, so one slow client cannot delay
others. A frame is encoded once per protocol version and channel, whatever the number of subscribers.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshhook_rt_metrics.localstack.gateway.realtime.authz import Permissions
from meshhook_rt_metrics.localstack.gateway.realtime.feed import DbMessage

if TYPE_CHECKING:
    import asyncio

    from meshhook_rt_metrics.localstack.gateway.keys import Claims
    from meshhook_rt_metrics.localstack.gateway.realtime.protocol import Codec

log = logging.getLogger(__name__)

MAX_BACKLOG = 10_000


class Subscriber:
    """What the hub needs from a socket."""

    codec: Codec

    def push(self, frame: str | bytes) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Channel:
    """One joined channel of one socket."""

    conn: Subscriber
    topic: str
    join_ref: str | None
    private: bool
    claims: Claims
    perms: Permissions
    self_broadcast: bool = False
    ack: bool = False
    expiry: asyncio.TimerHandle | None = None
    joined_at: float = field(default_factory=time.monotonic)

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")


@dataclass
class HubStats:
    delivered: int = 0
    database_messages: int = 0
    client_broadcasts: int = 0
    rate_limited: int = 0
    """Client broadcasts dropped because their socket sent more than its rate allows."""
    unencodable: int = 0
    """Broadcasts dropped because they cannot be encoded (e.g. nested deeper than JSON encoding goes)."""


class Hub:
    """Channels by (topic without prefix, private flag)."""

    def __init__(self, replay_grace: float) -> None:
        self.channels: dict[tuple[str, bool], set[Channel]] = defaultdict(set)
        self.stats = HubStats()
        self._backlog: list[DbMessage] = []
        self._backlog_until = time.monotonic() + replay_grace

    def add(self, channel: Channel) -> None:
        self.channels[(channel.sub_topic, channel.private)].add(channel)

    def remove(self, channel: Channel) -> None:
        key = (channel.sub_topic, channel.private)
        members = self.channels.get(key)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.channels[key]

    def subscriber_count(self) -> int:
        return sum(len(members) for members in self.channels.values())

    def publish(
        self,
        sub_topic: str,
        private: bool,
        event: str,
        payload: Any,
        meta: dict[str, Any] | None,
        binary: bytes | None = None,
        sender: Channel | None = None,
    ) -> int:
        """Queue the broadcast on every matching channel; returns how many got it."""
        members = self.channels.get((sub_topic, private))
        if not members:
            return 0
        topic = "realtime:" + sub_topic
        encoded: dict[str, str | bytes | None] = {}
        count = 0
        for channel in list(members):
            if channel is sender and not channel.self_broadcast:
                continue
            if private and not channel.perms.read:
                continue
            codec = channel.conn.codec
            if codec.vsn not in encoded:
                try:
                    encoded[codec.vsn] = codec.encode_broadcast(topic, event, payload, meta, binary)
                except (ValueError, RecursionError) as exc:
                    log.warning(
                        "dropped a broadcast on %s that cannot be encoded: %s", topic, type(exc).__name__
                    )
                    self.stats.unencodable += 1
                    encoded[codec.vsn] = None
            frame = encoded[codec.vsn]
            if frame is not None:
                channel.conn.push(frame)
                count += 1
        self.stats.delivered += count
        return count

    def from_database(self, message: DbMessage) -> None:
        self.stats.database_messages += 1
        if message.backlog and time.monotonic() < self._backlog_until and len(self._backlog) < MAX_BACKLOG:
            self._backlog.append(message)
        self.publish(message.topic, message.private, message.event, message.payload, {"id": message.id})

    def replay(self, channel: Channel, push: Callable[[str | bytes], None]) -> int:
        """Messages committed while the gateway was down, for a channel (re)joined soon after a restart."""
        if not self._backlog:
            return 0
        if time.monotonic() >= self._backlog_until:
            self._backlog.clear()
            return 0
        if channel.private and not channel.perms.read:
            return 0
        sent = 0
        for message in self._backlog:
            if message.topic == channel.sub_topic and message.private == channel.private:
                try:
                    frame = channel.conn.codec.encode_broadcast(
                        channel.topic, message.event, message.payload, {"id": message.id}
                    )
                except (ValueError, RecursionError):
                    continue
                if frame is not None:
                    push(frame)
                    sent += 1
        return sent
