"""What every notifier takes and returns: one delivery (a batch of alert notifications for one receiver).

Plus the HTTP helpers the HTTP receivers share, so that every kind classifies outcomes alike: 2xx ok, 408/429/5xx
retry (honouring ``Retry-After``), redirects and other 4xx permanent, errors short and free of URL, secret and body.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from uuid import UUID

import httpx


@dataclass(frozen=True)
class Delivery:
    """One message to one receiver, assembled in SQL (``metrics.claim_alert_deliveries``).

    ``group`` is the Alertmanager v4 shaped body (``version``, ``groupKey``, ``status``, ``receiver``,
    ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``, ``truncatedAlerts``, ``alerts[]``
    with ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``,
    plus ``value`` and ``state``), and our own ``project_id`` and ``rule`` (``id``, ``name``, ``severity``).
    ``target`` and ``secret`` are credentials: never log them.
    """

    id: int
    key: str  # idempotency key: the same for every attempt (webhook-id, PagerDuty dedup, Message-Id)
    receiver_id: UUID
    receiver_name: str
    kind: str
    target: str
    secret: str | None
    group: dict[str, Any]
    attempt: int  # 1 for the first attempt
    thread_key: str  # stable per (receiver, alert group): e-mail threading

    def __repr__(self) -> str:  # never show target or secret
        return f"Delivery(id={self.id}, key={self.key!r}, kind={self.kind!r}, attempt={self.attempt})"


@dataclass(frozen=True)
class DeliveryResult:
    """How an attempt went: ``ok``; else whether to retry (``permanent`` false), after ``retry_after`` s."""

    ok: bool
    status: int | None = None
    error: str | None = None  # short, safe to store and show: no URL, no secret, no response body dump
    retry_after: float | None = None
    permanent: bool = False


class Notifier(Protocol):
    """A receiver kind. ``http`` is the SSRF-guarded client (no redirects, checked addresses only)."""

    kind: str

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult: ...


USER_AGENT = "meshhook-rt-metrics-alerts"
JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": USER_AGENT}


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON: the bytes a signature covers are the bytes sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def post(http: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]) -> DeliveryResult:
    """POST and classify the outcome; transport errors become safe results instead of exceptions."""
    try:
        # streamed and never read: the status and headers decide, and a huge body cannot fill memory
        async with http.stream("POST", url, content=content, headers=headers) as response:
            return result_from_response(response)
    except httpx.InvalidURL:
        return DeliveryResult(ok=False, error="invalid target URL", permanent=True)
    except httpx.HTTPError as exc:
        return result_from_error(exc)


def result_from_response(response: httpx.Response) -> DeliveryResult:
    """2xx ok; 408, 429 and 5xx retry (after ``Retry-After``); 3xx and other 4xx are permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(ok=True, status=status)
    if 300 <= status < 400:  # the guarded client must not be led elsewhere
        return DeliveryResult(
            ok=False, status=status, error=f"HTTP {status}: redirects are not followed", permanent=True
        )
    if status in (408, 429) or status >= 500:
        delay = retry_after_seconds(response.headers.get("retry-after"))
        return DeliveryResult(ok=False, status=status, error=f"HTTP {status}", retry_after=delay)
    return DeliveryResult(ok=False, status=status, error=f"HTTP {status}", permanent=True)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP-date, RFC 9110 §10.2.3), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def result_from_error(exc: httpx.HTTPError) -> DeliveryResult:
    """A transport error as a result (retryable unless the URL scheme is wrong); names the failure class only."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return DeliveryResult(ok=False, error="unsupported URL scheme", permanent=True)
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryResult(ok=False, error="timed out")
    if isinstance(exc, httpx.ConnectError):
        return DeliveryResult(ok=False, error=_connect_failure(exc))
    if isinstance(exc, httpx.RemoteProtocolError):
        return DeliveryResult(ok=False, error="protocol error")
    return DeliveryResult(ok=False, error=f"transport error ({type(exc).__name__})")


def _connect_failure(exc: BaseException) -> str:
    """The root cause's kind; its text is not used (it carries the address)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "name resolution failed"
        if isinstance(seen, ssl.SSLError):
            return "TLS error"
        seen = seen.__cause__ or seen.__context__
    return "connection failed"


def clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, an ellipsis marking a cut (receivers reject longer fields)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rule_name(group: dict[str, Any]) -> str:
    """The rule's name, else the group's ``alertname``: what a person recognises the alert by."""
    rule = group.get("rule") or {}
    return str(rule.get("name") or (group.get("commonLabels") or {}).get("alertname") or "alert")


def format_labels(labels: dict[str, Any], skip: tuple[str, ...] = ("alertname",)) -> str:
    """``k=v, k=v`` sorted by name, without the labels every line would repeat."""
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


def group_title(group: dict[str, Any]) -> str:
    """``[FIRING:2] name`` / ``[RESOLVED] name``, as Alertmanager's default templates say it."""
    if group.get("status") == "resolved":
        return f"[RESOLVED] {rule_name(group)}"
    firing = sum(1 for alert in group.get("alerts", []) if alert.get("status") == "firing")
    return f"[FIRING:{firing}] {rule_name(group)}"
