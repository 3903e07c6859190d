"""The outbox's sending side: claim due messages, send each through its receiver's notifier, record it.

Claims are ``FOR UPDATE SKIP LOCKED`` with a lock that lapses (``metrics.claim_alert_deliveries``): a worker
killed mid-delivery leaves the message to be tried again with the same idempotency key, so the receiver sees
one notice (``webhook-id``, PagerDuty ``dedup_key``, ``Message-Id``). Messages of a batch go out concurrently,
so a slow or failing receiver never holds up the others; retries and dead letters are SQL's decision
(``metrics.finish_alert_delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx

from meshhook_rt_metrics.alerting.database import Conn
from meshhook_rt_metrics.alerting.notify import (
    Delivery,
    DeliveryResult,
    Notifier,
    UnknownReceiverKindError,
    notifier_for,
)
from meshhook_rt_metrics.alerting.ssrf import SsrfRefused

log = logging.getLogger(__name__)

CLAIM_SQL = (
    "select id, key, receiver_id, receiver_name, kind, target, secret, body, attempt, thread_key"
    " from metrics.claim_alert_deliveries(%s, %s, %s)"
)
FINISH_SQL = "select metrics.finish_alert_delivery(%s, %s, %s, %s, %s, %s, %s)"
# Slack accepts about one message per second per incoming webhook; others pace themselves with 429s
PACE_SECONDS = {"slack": 1.0}


class Pacer:
    """Spaces the messages to one receiver where its kind asks for it (Slack: one a second)."""

    def __init__(self) -> None:
        self._next: dict[Any, float] = {}

    async def wait(self, delivery: Delivery) -> None:
        gap = PACE_SECONDS.get(delivery.kind)
        if gap is None:
            return
        now = time.monotonic()
        start = max(now, self._next.get(delivery.receiver_id, now))
        self._next[delivery.receiver_id] = start + gap
        await asyncio.sleep(start - now)


async def claim(conn: Conn, worker: str, limit: int, lock: float) -> list[Delivery]:
    cursor = await conn.execute(CLAIM_SQL, (worker, limit, timedelta(seconds=lock)))
    return [
        Delivery(
            id=row[0],
            key=row[1],
            receiver_id=row[2],
            receiver_name=row[3],
            kind=row[4],
            target=row[5],
            secret=row[6],
            group=row[7],
            attempt=row[8],
            thread_key=row[9],
        )
        for row in await cursor.fetchall()
    ]


async def attempt(
    delivery: Delivery, notifiers: Mapping[str, Notifier], http: httpx.AsyncClient
) -> DeliveryResult:
    """One attempt; never raises (an unexpected error is a retryable failure with a safe message)."""
    try:
        return await notifier_for(notifiers, delivery.kind).send(delivery, http)
    except SsrfRefused as exc:
        return DeliveryResult(ok=False, error=f"refused by the SSRF guard: {exc}"[:300], permanent=True)
    except UnknownReceiverKindError as exc:
        return DeliveryResult(ok=False, error=str(exc)[:300], permanent=True)
    except Exception as exc:  # a notifier bug must not stop the loop or lose the message
        log.exception("notifier %s failed on %r", delivery.kind, delivery)
        return DeliveryResult(ok=False, error=f"internal error ({type(exc).__name__})")


async def finish(conn: Conn, worker: str, delivery: Delivery, result: DeliveryResult) -> str:
    cursor = await conn.execute(
        FINISH_SQL,
        (delivery.id, worker, result.ok, result.status, result.error, result.retry_after, result.permanent),
    )
    row = await cursor.fetchone()
    return str(row[0]) if row else "stale"


async def deliver_due(
    conn: Conn,
    worker: str,
    notifiers: Mapping[str, Notifier],
    http: httpx.AsyncClient,
    pacer: Pacer,
    limit: int,
    lock: float,
    timeout: float,
) -> int:
    """Claim, send concurrently, record each as soon as it is done; returns how many were attempted.

    ``timeout`` bounds a whole attempt (httpx's own timeouts are per operation: a receiver that drips its
    answer a byte at a time would hold the batch, and the message's lock, for ever).
    """
    batch = await claim(conn, worker, limit, lock)

    async def one(delivery: Delivery) -> tuple[Delivery, DeliveryResult]:
        await pacer.wait(delivery)
        try:
            async with asyncio.timeout(timeout):
                return delivery, await attempt(delivery, notifiers, http)
        except TimeoutError:
            return delivery, DeliveryResult(ok=False, error=f"no answer within {timeout:.0f} s")

    for done in asyncio.as_completed([asyncio.create_task(one(d)) for d in batch]):
        delivery, result = await done
        outcome = await finish(conn, worker, delivery, result)
        log.info(
            "delivery %s to %s (%s) attempt %s: %s%s",
            delivery.key,
            delivery.receiver_name,
            delivery.kind,
            delivery.attempt,
            outcome,
            f" ({result.error})" if result.error else "",
        )
    return len(batch)


async def prune(conn: Conn) -> dict[str, int]:
    """Old history, finished messages and their outbox rows go (``metrics.prune_alert_history``)."""
    cursor = await conn.execute("select metrics.prune_alert_history()")
    row = await cursor.fetchone()
    return dict(row[0]) if row else {}
