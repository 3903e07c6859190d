"""Generic webhook: the Alertmanager v4 group as JSON, signed per the Standard Webhooks spec.

https://www.standardwebhooks.com: ``webhook-id`` (always sent: the receiver's idempotency key, the same for every
attempt), ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``{id}.{timestamp}.{body}``. The key is the base64 part of a ``whsec_...`` secret; any other secret is used as
its raw UTF-8 bytes (so a receiver verifies with ``Webhook(secret.encode())``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

import httpx

from meshhook_rt_metrics.alerting.notify.base import JSON_HEADERS, Delivery, DeliveryResult, json_bytes, post

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key: base64-decoded after ``whsec_`` (the spec's format), else the secret's own bytes."""
    if secret.startswith(SECRET_PREFIX):
        # padding added as the reference library does: unpadded secrets are common (extra "=" are ignored)
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (one ``v1`` signature)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(delivery: Delivery, body: bytes, now: float | None = None) -> dict[str, str]:
    """JSON headers plus the Standard Webhooks ones; the signature only when the receiver has a secret."""
    timestamp = int(time.time() if now is None else now)
    headers = {**JSON_HEADERS, "webhook-id": delivery.key, "webhook-timestamp": str(timestamp)}
    if delivery.secret:
        headers["webhook-signature"] = sign(delivery.secret, delivery.key, timestamp, body)
    return headers


class WebhookNotifier:
    """POSTs ``delivery.group`` as is to ``delivery.target``."""

    kind = "webhook"

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult:
        body = json_bytes(delivery.group)
        try:
            headers = webhook_headers(delivery, body)
        except binascii.Error:
            return DeliveryResult(ok=False, error="invalid whsec_ secret (not base64)", permanent=True)
        return await post(http, delivery.target, body, headers)
