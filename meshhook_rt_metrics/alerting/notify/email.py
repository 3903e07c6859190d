"""E-mail over SMTP (stdlib ``smtplib`` in a thread): the receiver's ``target`` is the recipient address.

``Message-Id`` is ``<{delivery.key}@meshhook-rt-metrics>``, the same for every attempt, so a retry after a lost
reply is recognisable as the same message. Threading is per alert group: every message (the first one too) says
``In-Reply-To`` and ``References`` = ``<{delivery.thread_key}@meshhook-rt-metrics>``; mail clients thread
messages referencing the same id even though no message carries it as its own ``Message-Id``.
STARTTLS is required unless ``SmtpSettings.starttls`` is off: a server not offering it fails the attempt
(retryable: likely a transient misconfiguration; nothing is ever sent in clear). SMTP replies 4xx retry, 5xx are
permanent, connection and TLS errors retry. Errors name the reply code or failure class only.
"""

from __future__ import annotations

import asyncio
import html
import smtplib
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

import httpx

from meshhook_rt_metrics.alerting.notify.base import (
    USER_AGENT,
    Delivery,
    DeliveryResult,
    clip,
    format_labels,
    group_title,
)

MSGID_DOMAIN = "meshhook-rt-metrics"
SUBJECT_LIMIT = 200


@dataclass(frozen=True)
class SmtpSettings:
    """The SMTP relay all e-mail receivers share; ``ca_file`` trusts a private CA (else the system's)."""

    host: str
    from_address: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ca_file: str | None = None


class StartTlsUnavailableError(smtplib.SMTPException):
    """The server does not offer STARTTLS although it is required."""


def subject(group: dict[str, Any]) -> str:
    """``[FIRING:2] name (group labels)``, one line whatever the labels contain."""
    labels = format_labels(group.get("groupLabels") or {})
    text = group_title(group) + (f" ({labels})" if labels else "")
    return clip(" ".join(text.split()), SUBJECT_LIMIT)


def _alert_text(alert: dict[str, Any]) -> str:
    """One alert: status and labels, then value, annotations and times, indented."""
    lines = [f"{str(alert.get('status', '')).upper()} {format_labels(alert.get('labels') or {})}"]
    if alert.get("value") is not None:
        lines.append(f"  value: {alert['value']}")
    lines += [f"  {name}: {value}" for name, value in sorted((alert.get("annotations") or {}).items())]
    lines.append(f"  started: {alert.get('startsAt')}")
    if alert.get("status") == "resolved":
        lines.append(f"  resolved: {alert.get('endsAt')}")
    return "\n".join(lines)


def plain_body(group: dict[str, Any]) -> str:
    """The text part: a title, then a paragraph per alert."""
    paragraphs = [group_title(group)] + [_alert_text(alert) for alert in group.get("alerts", [])]
    if group.get("truncatedAlerts"):
        paragraphs.append(f"…and {group['truncatedAlerts']} more alerts")
    if group.get("externalURL"):
        paragraphs.append(str(group["externalURL"]))
    return "\n\n".join(paragraphs) + "\n"


def html_body(group: dict[str, Any]) -> str:
    """The HTML alternative: the same text, escaped, a preformatted block per alert."""
    blocks = "".join(f"<pre>{html.escape(_alert_text(alert))}</pre>" for alert in group.get("alerts", []))
    return f"<html><body><h2>{html.escape(group_title(group))}</h2>{blocks}</body></html>\n"


def build_message(delivery: Delivery, settings: SmtpSettings) -> EmailMessage:
    """The message; its ids are stable per delivery (``Message-Id``) and per alert group (threading)."""
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = delivery.target
    message["Subject"] = subject(delivery.group)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{delivery.key}@{MSGID_DOMAIN}>"
    message["In-Reply-To"] = message["References"] = f"<{delivery.thread_key}@{MSGID_DOMAIN}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message["X-Mailer"] = USER_AGENT
    message.set_content(plain_body(delivery.group))
    message.add_alternative(html_body(delivery.group), subtype="html")
    return message


def transmit(settings: SmtpSettings, message: EmailMessage, recipient: str) -> None:
    """One blocking SMTP session (run in a thread): EHLO, STARTTLS, AUTH if configured, the message."""
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        smtp.ehlo()
        if settings.starttls:
            if not smtp.has_extn("starttls"):
                raise StartTlsUnavailableError
            smtp.starttls(context=ssl.create_default_context(cafile=settings.ca_file))
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        smtp.send_message(message, parseaddr(settings.from_address)[1], [recipient])


def result_from_smtp_error(exc: Exception) -> DeliveryResult:
    """SMTP 4xx and connection trouble retry; 5xx and a server without AUTH are permanent."""
    if isinstance(exc, StartTlsUnavailableError):
        return DeliveryResult(ok=False, error="STARTTLS required but not offered by the server")
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code = next(iter(exc.recipients.values()))[0]
        return DeliveryResult(ok=False, error=f"SMTP {code}: recipient refused", permanent=code >= 500)
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryResult(ok=False, error=f"SMTP {exc.smtp_code}", permanent=exc.smtp_code >= 500)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryResult(ok=False, error="SMTP server does not support AUTH", permanent=True)
    if isinstance(exc, ssl.SSLError):
        return DeliveryResult(ok=False, error="TLS error")
    if isinstance(exc, TimeoutError):
        return DeliveryResult(ok=False, error="timed out")
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryResult(ok=False, error="connection refused")
    if isinstance(exc, socket.gaierror):
        return DeliveryResult(ok=False, error="name resolution failed")
    return DeliveryResult(ok=False, error=f"SMTP connection error ({type(exc).__name__})")


class EmailNotifier:
    """Sends through the configured SMTP relay; ``http`` is unused (SMTP is not HTTP)."""

    kind = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        # SMTP sessions block a thread each: a pool of their own, so a slow relay never takes the threads the
        # event loop resolves host names with (the SSRF guard's lookups of every HTTP receiver)
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="smtp")

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult:
        try:
            message = build_message(delivery, self.settings)
        except ValueError:  # a header the email package refuses (e.g. a line break)
            return DeliveryResult(ok=False, error="invalid e-mail header (address or id)", permanent=True)
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._threads, transmit, self.settings, message, delivery.target)
        except (smtplib.SMTPException, OSError) as exc:
            return result_from_smtp_error(exc)
        return DeliveryResult(ok=True)
