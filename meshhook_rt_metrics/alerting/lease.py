"""Who evaluates which project: lease rows in PostgreSQL with an epoch (``metrics.claim_alert_leases``).

Rows, not advisory locks (Supavisor's transaction mode has none). The epoch fences writes: every evaluation
checks it in SQL, so a worker that lost a lease (paused, cut off) cannot write after another took over.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from meshhook_rt_metrics.alerting.database import Conn

Leases = dict[UUID, int]  # project -> epoch


async def claim(conn: Conn, owner: str, ttl: float) -> Leases:
    """Renew ours, take the free and the expired ones; the projects this worker evaluates now."""
    cursor = await conn.execute(
        "select project_id, epoch from metrics.claim_alert_leases(%s, %s)", (owner, timedelta(seconds=ttl))
    )
    return {project: int(epoch) for project, epoch in await cursor.fetchall()}


async def release(conn: Conn, owner: str) -> int:
    """Hand every lease over at once (a clean stop); another worker takes them at its next claim."""
    cursor = await conn.execute("select metrics.release_alert_leases(%s)", (owner,))
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
