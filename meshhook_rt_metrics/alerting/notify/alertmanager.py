"""Prometheus Alertmanager: POST ``<target>/api/v2/alerts`` with the group's alerts as postable alerts.

``target`` is the Alertmanager base URL (a path prefix such as ``/alertmanager`` is kept). Labels are the alert's
own plus ``alertname`` (the rule's name) and ``severity`` (the rule's); label names are made valid for
Alertmanager < 0.28 (``[a-zA-Z_][a-zA-Z0-9_]*``, anything else becomes ``_``), empty values dropped (an empty
label is an absent one). A resolved alert carries ``endsAt`` = when it resolved, which resolves it there; a firing
one carries none, so Alertmanager resolves it by itself after its ``resolve_timeout`` unless it is sent again.
A ``secret`` is sent as ``Authorization: Bearer`` (for a proxy in front: Alertmanager has no auth of its own).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx

from meshhook_rt_metrics.alerting.notify.base import JSON_HEADERS, Delivery, DeliveryResult, json_bytes, post

UNSET_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: "not set" in Alertmanager's JSON
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """A legacy-valid label name (Alertmanager 0.25, as Debian ships, rejects others with 400)."""
    name = _INVALID_NAME.sub("_", name) or "_"
    return "_" + name if name[0].isdigit() else name


def alerts_url(target: str) -> str:
    """``<target>/api/v2/alerts`` whether or not ``target`` ends with ``/``."""
    url = httpx.URL(target)
    return str(url.copy_with(path=url.path.rstrip("/") + "/api/v2/alerts"))


def postable_alert(
    group: dict[str, Any], alert: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """One alert of Alertmanager's ``postableAlerts``."""
    rule = group.get("rule") or {}
    labels = {label_name(k): str(v) for k, v in (alert.get("labels") or {}).items() if v not in (None, "")}
    labels["alertname"] = str(rule.get("name") or labels.get("alertname") or "alert")
    if rule.get("severity"):
        labels["severity"] = str(rule["severity"])
    annotations = {label_name(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
    posted: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": alert.get("startsAt")}
    if alert.get("status") == "resolved":
        ends = alert.get("endsAt")
        if not ends or ends == UNSET_TIME:
            ends = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
        posted["endsAt"] = ends
    if alert.get("generatorURL"):
        posted["generatorURL"] = alert["generatorURL"]
    return posted


class AlertmanagerNotifier:
    """Posts the group's alerts to an Alertmanager's API v2."""

    kind = "alertmanager"

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult:
        try:
            url = alerts_url(delivery.target)
        except httpx.InvalidURL:
            return DeliveryResult(ok=False, error="invalid target URL", permanent=True)
        alerts = [postable_alert(delivery.group, alert) for alert in delivery.group.get("alerts", [])]
        headers = dict(JSON_HEADERS)
        if delivery.secret:
            headers["Authorization"] = f"Bearer {delivery.secret}"
        return await post(http, url, json_bytes(alerts), headers)
