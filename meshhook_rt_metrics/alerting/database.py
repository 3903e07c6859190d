"""The worker's database connections: autocommit, acting as ``service_role`` (the alert functions' grantee)."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.AsyncConnection[Any]


async def connect(url: str, purpose: str) -> Conn:
    """A connection of its own per loop (evaluation, delivery, leases), so a slow one never holds up another."""
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, application_name=f"meshhook-metrics alert-worker {purpose}", connect_timeout=10
    )
    await conn.execute("set role service_role")
    return conn
