"""PagerDuty Events API v2: one event per alert of the group.

https://developer.pagerduty.com/docs/events-api-v2/trigger-events/. The receiver's ``target`` is the events
endpoint (production: ``EVENTS_URL``), its ``secret`` the integration's routing key (required). A firing alert
``trigger``s, a resolved one ``resolve``s, both under ``dedup_key`` = the alert's fingerprint, so PagerDuty
keeps one incident per alert instance. Events go one by one and the first failure ends the attempt; the retry
sends them all again, which is harmless: PagerDuty deduplicates by ``dedup_key`` (a repeated trigger updates the
open incident, a repeated resolve is a no-op). PagerDuty answers 202; 429 and 5xx retry; 400 is permanent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from meshhook_rt_metrics.alerting.notify.base import (
    JSON_HEADERS,
    USER_AGENT,
    Delivery,
    DeliveryResult,
    clip,
    format_labels,
    json_bytes,
    post,
    rule_name,
)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_LIMIT = 1024
SEVERITIES = {"info": "info", "warning": "warning", "critical": "critical"}


def severity(group: dict[str, Any], alert: dict[str, Any]) -> str:
    """The rule's severity in PagerDuty's terms; an alert about missing data is a warning."""
    if alert.get("state") == "nodata":
        return "warning"
    return SEVERITIES.get(str((group.get("rule") or {}).get("severity")), "warning")


def dedup_key(group: dict[str, Any], alert: dict[str, Any]) -> str:
    """The alert's fingerprint; without one, a hash of rule and labels (stable, so resolve finds the incident)."""
    if alert.get("fingerprint"):
        return str(alert["fingerprint"])[:255]
    rule_id = (group.get("rule") or {}).get("id")
    identity = json.dumps([rule_id, alert.get("labels", {})], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def _payload(group: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    labels: dict[str, Any] = alert.get("labels", {})
    annotations: dict[str, Any] = alert.get("annotations") or {}
    summary = annotations.get("summary") or f"{rule_name(group)}: {format_labels(labels)}".rstrip(": ")
    source = labels.get("instance") or f"meshhook-rt-metrics/{group.get('project_id', '')}".rstrip("/")
    return {
        "summary": clip(str(summary), SUMMARY_LIMIT),
        "source": str(source),
        "severity": severity(group, alert),
        "timestamp": alert.get("startsAt"),
        "custom_details": {"labels": labels, "annotations": annotations, "value": alert.get("value")},
    }


def pagerduty_event(routing_key: str, group: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    """One event: ``resolve`` for a resolved alert (PagerDuty needs only the key), else ``trigger``."""
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": dedup_key(group, alert)}
    if alert.get("status") == "resolved":
        return {**event, "event_action": "resolve"}
    event |= {"event_action": "trigger", "payload": _payload(group, alert), "client": USER_AGENT}
    if group.get("externalURL"):
        event["client_url"] = group["externalURL"]
    if alert.get("generatorURL"):
        event["links"] = [{"href": alert["generatorURL"], "text": "Source"}]
    return event


class PagerDutyNotifier:
    """Sends the group's alerts as Events API v2 events to ``target`` (or ``EVENTS_URL``)."""

    kind = "pagerduty"

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult:
        if not delivery.secret:
            return DeliveryResult(ok=False, error="PagerDuty routing key (secret) is missing", permanent=True)
        url = delivery.target or EVENTS_URL
        result = DeliveryResult(ok=True)
        for alert in delivery.group.get("alerts", []):
            event = pagerduty_event(delivery.secret, delivery.group, alert)
            result = await post(http, url, json_bytes(event), dict(JSON_HEADERS))
            if not result.ok:
                return result
        return result
