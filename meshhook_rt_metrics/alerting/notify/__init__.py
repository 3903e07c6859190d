"""Receiver kinds, one module each; the worker picks a notifier by the receiver's ``kind``.

The registry is built, not a module constant: the e-mail notifier needs the SMTP relay's settings, which come
from the worker's configuration. ``build_notifiers(smtp)`` returns every kind (``email`` only when SMTP is
configured) and ``notifier_for(notifiers, kind)`` finds one or says clearly why not.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshhook_rt_metrics.alerting.notify.alertmanager import AlertmanagerNotifier
from meshhook_rt_metrics.alerting.notify.base import Delivery, DeliveryResult, Notifier
from meshhook_rt_metrics.alerting.notify.email import EmailNotifier, SmtpSettings
from meshhook_rt_metrics.alerting.notify.pagerduty import PagerDutyNotifier
from meshhook_rt_metrics.alerting.notify.slack import SlackNotifier
from meshhook_rt_metrics.alerting.notify.webhook import WebhookNotifier

__all__ = [
    "Delivery",
    "DeliveryResult",
    "Notifier",
    "SmtpSettings",
    "UnknownReceiverKindError",
    "build_notifiers",
    "notifier_for",
]


class UnknownReceiverKindError(LookupError):
    """No notifier for a receiver's kind (unknown, or ``email`` without SMTP settings)."""


def build_notifiers(smtp: SmtpSettings | None = None) -> dict[str, Notifier]:
    """Every receiver kind by name; ``email`` only with an SMTP relay to send through."""
    notifiers: list[Notifier] = [
        WebhookNotifier(),
        SlackNotifier(),
        PagerDutyNotifier(),
        AlertmanagerNotifier(),
    ]
    if smtp is not None:
        notifiers.append(EmailNotifier(smtp))
    return {notifier.kind: notifier for notifier in notifiers}


def notifier_for(notifiers: Mapping[str, Notifier], kind: str) -> Notifier:
    """The notifier of ``kind``; raises ``UnknownReceiverKindError`` naming the kinds there are."""
    try:
        return notifiers[kind]
    except KeyError:
        hint = " (e-mail needs SMTP settings)" if kind == "email" else ""
        known = ", ".join(sorted(notifiers))
        raise UnknownReceiverKindError(
            f"no notifier for receiver kind {kind!r}{hint}; known: {known}"
        ) from None
