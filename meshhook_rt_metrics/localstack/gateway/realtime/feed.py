"""Broadcast from Database: read new rows of ``realtime.messages`` from a logical replication slot.

A persistent ``pgoutput`` slot on Supabase's publication ``supabase_realtime_messages_publication``
yields rows in commit order and keeps them while the gateway is down, so no message is lost across a
restart. A statement trigger's NOTIFY (bootstrap_gateway.sql) wakes the feed within milliseconds; a
slow poll covers a missed notification. The slot is read with the SQL interface (peek, deliver, then
advance), so a crash between reading and delivering repeats messages rather than losing them.

A row the feed cannot read (say a payload nested deeper than Python's JSON parser goes, or an integer
with more digits than ``int`` parses) is skipped and counted, and the slot advances past it: one bad
row never stops the feed nor makes the slot keep WAL. Any other failure restarts the session with
backoff; :class:`FeedStatus` says how the feed is doing (``/health`` reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

PUBLICATION = "supabase_realtime_messages_publication"
WAKEUP_CHANNEL = "localstack_realtime"
BATCH_ROWS = 5000
PARTITION_EVERY = 3600.0


@dataclass(frozen=True)
class DbMessage:
    """One committed row of ``realtime.messages``."""

    topic: str
    extension: str
    event: str
    payload: Any
    private: bool
    id: str
    backlog: bool = False
    """Committed before this gateway started (read from the slot's backlog)."""


@dataclass
class FeedStatus:
    """How the feed is doing, for ``/health``."""

    state: str = "starting"
    """``starting`` (first session not yet caught up), ``running``, ``restarting`` (waiting to retry
    after an error) or ``stopped``."""
    skipped_rows: int = 0
    """Rows of ``realtime.messages`` that could not be read and were skipped (the slot moved on)."""
    restarts: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of an error (no message text: it could quote row data)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' {sqlstate}' if sqlstate else ''}"


def slot_name_for(database: str) -> str:
    """Slot names are cluster-wide: one per database the gateway serves."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return f"meshhook_gw_{cleaned}"[:63]


class PgOutputDecoder:
    """Decodes the ``pgoutput`` protocol (version 1) messages the SQL interface returns."""

    def __init__(self) -> None:
        self.relations: dict[int, tuple[str, str, list[str]]] = {}

    @staticmethod
    def _cstring(data: bytes, offset: int) -> tuple[str, int]:
        end = data.index(b"\0", offset)
        return data[offset:end].decode("utf-8"), end + 1

    def decode(self, data: bytes) -> dict[str, str | None] | None:
        """The inserted row (column name → text value) for an Insert on realtime.messages, else None."""
        kind = data[:1]
        if kind == b"R":
            (oid,) = struct.unpack_from("!I", data, 1)
            nsp, offset = self._cstring(data, 5)
            rel, offset = self._cstring(data, offset)
            offset += 1  # replica identity
            (ncols,) = struct.unpack_from("!H", data, offset)
            offset += 2
            names = []
            for _ in range(ncols):
                offset += 1  # flags
                name, offset = self._cstring(data, offset)
                names.append(name)
                offset += 8  # type oid, typmod
            self.relations[oid] = (nsp, rel, names)
            return None
        if kind != b"I":
            return None
        (oid,) = struct.unpack_from("!I", data, 1)
        relation = self.relations.get(oid)
        if relation is None or data[5:6] != b"N":
            return None
        nsp, rel, names = relation
        if nsp != "realtime" or not (rel == "messages" or rel.startswith("messages_")):
            return None
        (ncols,) = struct.unpack_from("!H", data, 6)
        offset = 8
        row: dict[str, str | None] = {}
        for index in range(ncols):
            col_kind = data[offset : offset + 1]
            offset += 1
            value: str | None = None
            if col_kind == b"t":
                (length,) = struct.unpack_from("!I", data, offset)
                offset += 4
                value = data[offset : offset + length].decode("utf-8")
                offset += length
            if index < len(names):
                row[names[index]] = value
        return row


class UnreadableRowError(ValueError):
    """A row of ``realtime.messages`` the gateway cannot turn into a message."""


def to_message(row: dict[str, str | None], backlog: bool) -> DbMessage | None:
    """The message of a decoded row; None when the row is not a message; UnreadableRowError when broken."""
    raw = row.get("payload")
    try:
        payload = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError) as exc:  # bad JSON, an int over 4,300 digits, deep nesting
        raise UnreadableRowError(f"payload cannot be parsed ({type(exc).__name__})") from None
    topic, extension = row.get("topic"), row.get("extension")
    if topic is None or extension is None:
        return None
    return DbMessage(
        topic=topic,
        extension=extension,
        event=row.get("event") or "",
        payload=payload,
        private=row.get("private") == "t",
        id=row.get("id") or "",
        backlog=backlog,
    )


class DatabaseFeed:
    """Keeps reading the slot and hands each committed broadcast row to ``deliver``."""

    def __init__(
        self,
        db_url: str,
        slot: str,
        deliver: Callable[[DbMessage], None],
        poll_interval: float,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 5.0,
    ) -> None:
        self.db_url = db_url
        self.slot = slot
        self.deliver = deliver
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.decoder = PgOutputDecoder()
        self.ready = asyncio.Event()
        self.status = FeedStatus()
        self._wake = asyncio.Event()
        self._started = False
        self._backoff = min_backoff

    async def run(self) -> None:
        """Run until cancelled; any failure restarts the session with backoff (0.5 s to 5 s)."""
        try:
            while True:
                try:
                    await self._session()
                    raise RuntimeError("the database feed session ended")
                except asyncio.CancelledError:
                    raise
                except (psycopg.Error, OSError) as exc:
                    self._failed(exc)
                    log.warning(
                        "database feed interrupted (%s); retrying in %.1fs", describe(exc), self._backoff
                    )
                except Exception as exc:  # a bug: log it, and keep the feed alive
                    self._failed(exc)
                    log.error(
                        "database feed failed (%s); restarting in %.1fs",
                        describe(exc),
                        self._backoff,
                        exc_info=True,
                    )
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, self.max_backoff)
        finally:
            self.ready.clear()
            self.status.state = "stopped"

    def _failed(self, exc: BaseException) -> None:
        self.ready.clear()
        self.status.state = "restarting"
        self.status.restarts += 1
        self.status.last_error = describe(exc)

    async def _session(self) -> None:
        async with (
            await psycopg.AsyncConnection.connect(
                self.db_url, autocommit=True, application_name="meshhook-gateway-feed"
            ) as conn,
            await psycopg.AsyncConnection.connect(
                self.db_url, autocommit=True, application_name="meshhook-gateway-listen"
            ) as listener,
        ):
            await self._ensure_slot(conn)
            await listener.execute(f"listen {WAKEUP_CHANNEL}")
            watcher = asyncio.create_task(self._watch(listener))
            try:
                last_partitions = 0.0
                while True:
                    if time.monotonic() - last_partitions > PARTITION_EVERY:
                        await self._ensure_partitions(conn)
                        last_partitions = time.monotonic()
                    self._wake.clear()
                    while await self._poll(conn, backlog=not self._started) >= BATCH_ROWS:
                        pass
                    self._started = True
                    self.ready.set()
                    self.status.state = "running"
                    self._backoff = self.min_backoff
                    if watcher.done():
                        watcher.result()  # re-raise the listener's failure
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await watcher

    async def _watch(self, listener: psycopg.AsyncConnection[Any]) -> None:
        async for _ in listener.notifies():
            self._wake.set()

    async def _ensure_slot(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute("select 1 from pg_replication_slots where slot_name = %s", (self.slot,))
        if await cur.fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                await conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
            log.info("created replication slot %s", self.slot)

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.execute("select localstack.ensure_realtime_partitions()")
        except psycopg.Error as exc:
            log.warning("could not ensure realtime.messages partitions: %s", exc.sqlstate)

    async def _poll(self, conn: psycopg.AsyncConnection[Any], *, backlog: bool) -> int:
        cur = await conn.execute("select pg_current_wal_flush_lsn()")
        row = await cur.fetchone()
        upto = row[0] if row else None
        cur = await conn.execute(
            "select lsn, data from pg_logical_slot_peek_binary_changes(%s, %s, %s,"
            " 'proto_version', '1', 'publication_names', %s)",
            (self.slot, upto, BATCH_ROWS, PUBLICATION),
        )
        rows = await cur.fetchall()
        for lsn, data in rows:
            try:
                decoded = self.decoder.decode(bytes(data))
                message = to_message(decoded, backlog) if decoded is not None else None
            except (ValueError, RecursionError, IndexError, struct.error) as exc:
                # skip and count it; the slot advances past it below
                self.status.skipped_rows += 1
                self.status.last_error = f"skipped an unreadable row at {lsn}: {exc}"
                log.warning("database feed skipped an unreadable row at %s: %s", lsn, exc)
                continue
            if message is None or message.extension != "broadcast":
                continue
            try:
                self.deliver(message)
            except Exception:  # a delivery bug must not stop the feed
                log.exception("delivering a database broadcast failed")
        target = rows[-1][0] if len(rows) >= BATCH_ROWS else upto
        if target is not None:
            await conn.execute("select pg_replication_slot_advance(%s, %s)", (self.slot, target))
        return len(rows)


async def drop_slot(db_url: str, slot: str) -> None:
    """Remove the gateway's slot (a database with a logical slot cannot be dropped)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
            (slot,),
        )
