"""Slack incoming webhook: Block Kit message with a plain-text fallback.

Slack's limits (https://api.slack.com/reference/block-kit): at most 50 blocks, a header's text at most 150
characters, a section's text at most 3000. Alerts beyond what fits are summed up in a last "and N more" section.
Slack answers 200 ``ok``; 429 carries ``Retry-After``; ``invalid_payload``, ``no_service`` and the like are 4xx
(permanent). The response body is never kept (the error says the status only).
"""

from __future__ import annotations

from typing import Any

import httpx

from meshhook_rt_metrics.alerting.notify.base import (
    JSON_HEADERS,
    Delivery,
    DeliveryResult,
    clip,
    format_labels,
    group_title,
    json_bytes,
    post,
)

MAX_BLOCKS = 50
HEADER_LIMIT = 150
TEXT_LIMIT = 3000
BLOCKS_PER_ALERT = 2  # a section and its context


def escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as Slack asks (labels are user data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header(group: dict[str, Any]) -> dict[str, Any]:
    icon = "✅" if group.get("status") == "resolved" else "🔥"
    text = clip(f"{icon} {group_title(group)}", HEADER_LIMIT)
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, TEXT_LIMIT)}}


def _alert_blocks(alert: dict[str, Any]) -> list[dict[str, Any]]:
    """A section (status, labels, value, summary) and a context line (when it started / ended)."""
    lines = [
        f"*{escape(str(alert.get('status', '')).upper())}* {escape(format_labels(alert.get('labels', {})))}"
    ]
    if alert.get("value") is not None:
        lines.append(f"*Value:* {escape(str(alert['value']))}")
    summary = (alert.get("annotations") or {}).get("summary")
    if summary:
        lines.append(f"*Summary:* {escape(str(summary))}")
    when = f"Started {alert.get('startsAt', '?')}"
    if alert.get("status") == "resolved":
        when += f" · resolved {alert.get('endsAt', '?')}"
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(escape(when), TEXT_LIMIT)}]}
    return [_section("\n".join(lines)), context]


def slack_message(group: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: ``text`` (notifications, screen readers) and ``blocks`` within Slack's limits."""
    alerts: list[dict[str, Any]] = group.get("alerts", [])
    truncated = int(group.get("truncatedAlerts") or 0)
    room = MAX_BLOCKS - 1  # below the header
    if truncated or len(alerts) * BLOCKS_PER_ALERT > room:
        alerts = alerts[: (room - 1) // BLOCKS_PER_ALERT]  # keeping a block for "and N more"
    hidden = len(group.get("alerts", [])) - len(alerts) + truncated
    blocks = [_header(group)]
    for alert in alerts:
        blocks.extend(_alert_blocks(alert))
    if hidden:
        blocks.append(_section(f"…and {hidden} more alert{'s' if hidden != 1 else ''}"))
    summary = (group.get("commonAnnotations") or {}).get("summary")
    text = group_title(group) + (f": {summary}" if summary else "")
    return {"text": clip(text, TEXT_LIMIT), "blocks": blocks}


class SlackNotifier:
    """POSTs a Block Kit message to the incoming-webhook URL (the URL is the credential; no secret)."""

    kind = "slack"

    async def send(self, delivery: Delivery, http: httpx.AsyncClient) -> DeliveryResult:
        body = json_bytes(slack_message(delivery.group))
        return await post(http, delivery.target, body, dict(JSON_HEADERS))
