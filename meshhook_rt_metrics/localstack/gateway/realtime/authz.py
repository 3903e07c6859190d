"""Authorisation of private channels by row-level security on ``realtime.messages``.

As Supabase Realtime does it, per join: in a transaction that is always rolled back, set the caller's
claims and ``realtime.topic``, insert a probe row as admin, then as the caller's role check whether the
row is visible (may read) and whether the caller may insert such a row (may write).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from meshhook_rt_metrics.localstack.gateway.keys import Claims

log = logging.getLogger(__name__)


class _Rollback(Exception):  # noqa: N818  (control flow)
    """Raised to roll the probe transaction back."""


@dataclass(frozen=True)
class Permissions:
    read: bool
    write: bool


DENIED = Permissions(read=False, write=False)


def claim_settings(claims: Claims, topic: str) -> list[tuple[str, str]]:
    return [
        ("request.jwt.claims", json.dumps(claims.raw)),
        ("request.jwt.claim.sub", claims.sub or ""),
        ("request.jwt.claim.role", claims.role),
        ("realtime.topic", topic),
    ]


async def _set(conn: psycopg.AsyncConnection[Any], settings: list[tuple[str, str]]) -> None:
    for name, value in settings:
        await conn.execute("select set_config(%s, %s, true)", (name, value))


async def check(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], claims: Claims, topic: str
) -> Permissions:
    """What the caller may do on private topic ``topic`` (without the ``realtime:`` prefix)."""
    result = DENIED
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                await _set(conn, claim_settings(claims, topic))
                cur = await conn.execute(
                    "insert into realtime.messages (topic, extension, payload, event, private)"
                    " values (%s, 'broadcast', '{}', 'localstack_probe', true) returning id",
                    (topic,),
                )
                row = await cur.fetchone()
                probe = row[0] if row else None
                try:
                    await conn.execute("select set_config('role', %s, true)", (claims.role,))
                except psycopg.errors.InvalidParameterValue:
                    raise _Rollback from None  # a role that does not exist: nothing allowed
                cur = await conn.execute(
                    "select exists (select 1 from realtime.messages"
                    " where id = %s and topic = %s and extension = 'broadcast')",
                    (probe, topic),
                )
                row = await cur.fetchone()
                read = bool(row and row[0])
                write = True
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "insert into realtime.messages (topic, extension, payload, event, private)"
                            " values (%s, 'broadcast', '{}', 'localstack_probe', true)",
                            (topic,),
                        )
                except psycopg.errors.InsufficientPrivilege:
                    write = False
                result = Permissions(read=read, write=write)
                raise _Rollback
        except _Rollback:
            pass
        except psycopg.errors.InsufficientPrivilege:
            result = DENIED
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            # e.g. a policy that raises: treat as no access, and say why in the log (no claims logged)
            log.warning(
                "authorisation probe on %r failed: %s %s", topic, exc.sqlstate, exc.diag.message_primary
            )
            result = DENIED
    return result


async def insert_message(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
    claims: Claims,
    topic: str,
    event: str,
    payload: Any,
) -> bool:
    """Store a client's broadcast in ``realtime.messages`` as the caller (``persist``); False when refused."""
    async with pool.connection() as conn:
        try:
            async with conn.transaction():
                await _set(conn, claim_settings(claims, topic))
                await conn.execute("select set_config('role', %s, true)", (claims.role,))
                await conn.execute(
                    "insert into realtime.messages (topic, extension, payload, event, private)"
                    " values (%s, 'broadcast', %s::jsonb, %s, true)",
                    (topic, json.dumps(payload), event),
                )
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.info("persisted broadcast on %r refused: %s", topic, exc.sqlstate)
            return False
    return True
