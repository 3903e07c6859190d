"""The receiver kinds against real receivers: a local HTTP server, the Debian Alertmanager, an aiosmtpd server.

The client is a plain ``httpx.AsyncClient(follow_redirects=False)``: the SSRF guard the worker wraps around it is
tested separately, and loopback (which it refuses) is the only address reachable here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from meshhook_rt_metrics.alerting.notify import UnknownReceiverKindError, build_notifiers, notifier_for
from meshhook_rt_metrics.alerting.notify.alertmanager import AlertmanagerNotifier
from meshhook_rt_metrics.alerting.notify.base import Delivery, DeliveryResult, Notifier
from meshhook_rt_metrics.alerting.notify.email import EmailNotifier, SmtpSettings
from meshhook_rt_metrics.alerting.notify.pagerduty import PagerDutyNotifier
from meshhook_rt_metrics.alerting.notify.slack import SlackNotifier, slack_message
from meshhook_rt_metrics.alerting.notify.webhook import WebhookNotifier

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"

# -- deliveries ---------------------------------------------------------------------------------------------


def make_alert(i: int = 0, status: str = "firing", **extra: Any) -> dict[str, Any]:
    """One alert as the SQL assembles it (Alertmanager v4 plus ``value`` and ``state``)."""
    return {
        "status": status,
        "labels": {"alertname": "Slow hooks", "route": f"/api/hooks/[slug]/{i}"},
        "annotations": {"summary": f"p99 latency above 50 ms on route {i}"},
        "startsAt": "2026-12-05T10:00:00Z",
        "endsAt": "2026-12-05T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"fp{i:04d}",
        "value": 0.07,
        "state": status,
        **extra,
    }


def make_group(
    alerts: list[dict[str, Any]] | None = None, name: str = "Slow hooks", **extra: Any
) -> dict[str, Any]:
    alerts = [make_alert()] if alerts is None else alerts
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": '{}:{alertname="Slow hooks"}',
        "status": status,
        "receiver": "ops",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name},
        "commonAnnotations": {"summary": "hooks are slow"},
        "externalURL": "https://metrics.example.com/alerts",
        "truncatedAlerts": 0,
        "alerts": alerts,
        "project_id": "5a0c3b8e-0000-4000-8000-000000000001",
        "rule": {"id": "7f1e0000-0000-4000-8000-000000000002", "name": name, "severity": "critical"},
        **extra,
    }


def make_delivery(
    kind: str, target: str, secret: str | None = None, group: dict[str, Any] | None = None
) -> Delivery:
    return Delivery(
        id=42,
        key=f"delivery-{uuid.uuid4().hex}",
        receiver_id=uuid.uuid4(),
        receiver_name="ops",
        kind=kind,
        target=target,
        secret=secret,
        group=make_group() if group is None else group,
        attempt=1,
        thread_key="group-7f1e",
    )


def send(notifier: Notifier, delivery: Delivery) -> DeliveryResult:
    async def go() -> DeliveryResult:
        async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
            return await notifier.send(delivery, http)

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_safe(result: DeliveryResult, *secrets: str) -> None:
    """The error is short and leaks none of the given strings."""
    assert result.error is not None and len(result.error) < 80
    for secret in secrets:
        assert secret not in result.error


# -- a local HTTP receiver ----------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers the scripted replies in order, then 200 ``ok``."""

    requests: list[Recorded] = field(default_factory=list)
    replies: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    url: str = ""

    def reply(
        self, status: int, headers: dict[str, str] | None = None, body: bytes = b"BODY-MUST-NOT-LEAK"
    ) -> None:
        self.replies.append((status, headers or {}, body))


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests.append(Recorded(self.command, self.path, headers, body))
            status, extra, reply = receiver.replies.popleft() if receiver.replies else (200, {}, b"ok")
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorder = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


# -- webhook ------------------------------------------------------------------------------------------------


def test_webhook_posts_the_group_signed_per_standard_webhooks(receiver: Receiver) -> None:
    delivery = make_delivery("webhook", receiver.url + "/hook", SECRET)
    result = send(WebhookNotifier(), delivery)
    assert result.ok and result.status == 200
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.json() == delivery.group
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "meshhook-rt-metrics-alerts"
    assert request.headers["webhook-id"] == delivery.key
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert Webhook(SECRET).verify(request.body, request.headers) == delivery.group
    tampered = request.body.replace(b"Slow hooks", b"Fast hooks")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):  # another secret does not verify either
        Webhook("whsec_" + "b3RoZXI=").verify(request.body, request.headers)


def test_webhook_secret_without_whsec_prefix_is_used_as_raw_bytes(receiver: Receiver) -> None:
    raw = "plain shared secret"
    send(WebhookNotifier(), make_delivery("webhook", receiver.url, raw))
    [request] = receiver.requests
    assert Webhook(raw.encode()).verify(request.body, request.headers) is not None


def test_webhook_unsigned_still_sends_its_idempotency_key(receiver: Receiver) -> None:
    delivery = make_delivery("webhook", receiver.url)
    assert send(WebhookNotifier(), delivery).ok
    [request] = receiver.requests
    assert request.headers["webhook-id"] == delivery.key
    assert "webhook-signature" not in request.headers


def test_webhook_invalid_whsec_secret_is_permanent(receiver: Receiver) -> None:
    result = send(WebhookNotifier(), make_delivery("webhook", receiver.url, "whsec_a"))
    assert not result.ok and result.permanent
    assert receiver.requests == []
    assert_safe(result, "whsec_a")


@pytest.mark.parametrize(
    ("status", "headers", "permanent", "retry_after"),
    [
        (429, {"Retry-After": "7"}, False, 7.0),
        (503, {"Retry-After": "120"}, False, 120.0),
        (500, {}, False, None),
        (408, {}, False, None),
        (400, {}, True, None),
        (404, {}, True, None),
    ],
)
def test_webhook_status_classification(
    receiver: Receiver, status: int, headers: dict[str, str], permanent: bool, retry_after: float | None
) -> None:
    receiver.reply(status, headers)
    result = send(WebhookNotifier(), make_delivery("webhook", receiver.url + "/hook?token=abc", SECRET))
    assert not result.ok
    assert (result.status, result.permanent, result.retry_after) == (status, permanent, retry_after)
    assert result.error == f"HTTP {status}"
    assert_safe(result, receiver.url, "token=abc", SECRET, "BODY-MUST-NOT-LEAK")


def test_webhook_retry_after_http_date(receiver: Receiver) -> None:
    receiver.reply(
        429, {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)}
    )
    result = send(WebhookNotifier(), make_delivery("webhook", receiver.url))
    assert not result.ok and not result.permanent
    assert result.retry_after is not None and 100 <= result.retry_after <= 121


def test_webhook_redirect_is_permanent_and_not_followed(receiver: Receiver) -> None:
    receiver.reply(302, {"Location": receiver.url + "/elsewhere"})
    result = send(WebhookNotifier(), make_delivery("webhook", receiver.url + "/hook", SECRET))
    assert not result.ok and result.permanent and result.status == 302
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert result.error is not None and "redirect" in result.error
    assert_safe(result, receiver.url, "/elsewhere", SECRET)


def test_webhook_connection_refused_is_retryable_and_safe() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    result = send(WebhookNotifier(), make_delivery("webhook", url, SECRET))
    assert not result.ok and not result.permanent and result.status is None
    assert result.error == "connection refused"
    assert_safe(result, url, "127.0.0.1", SECRET)


def test_webhook_bad_target_is_permanent() -> None:
    result = send(WebhookNotifier(), make_delivery("webhook", "ftp://127.0.0.1/hook"))
    assert not result.ok and result.permanent
    assert_safe(result, "ftp://127.0.0.1/hook")


# -- slack --------------------------------------------------------------------------------------------------


def test_slack_message_fits_slacks_limits_with_many_alerts(receiver: Receiver) -> None:
    long_summary = "x" * 5000
    alerts = [make_alert(i, annotations={"summary": long_summary}) for i in range(80)]
    group = make_group(alerts, name="R" * 300)
    result = send(SlackNotifier(), make_delivery("slack", receiver.url + "/services/T/B/X", group=group))
    assert result.ok
    [request] = receiver.requests
    message = request.json()
    assert message == slack_message(group)
    blocks = message["blocks"]
    assert len(blocks) <= 50
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    assert blocks[0]["text"]["text"].startswith("🔥 [FIRING:80] RRR")
    sections = [b for b in blocks if b["type"] == "section"]
    assert all(len(b["text"]["text"]) <= 3000 for b in sections)
    shown = sum(1 for b in sections if "*FIRING*" in b["text"]["text"])
    assert (len(blocks), shown) == (50, 24)
    assert blocks[-1]["text"]["text"] == "…and 56 more alerts"
    assert message["text"].startswith("[FIRING:80] RRR") and len(message["text"]) <= 3000


def test_slack_message_of_a_small_resolved_group() -> None:
    group = make_group([make_alert(1, status="resolved")])
    message = slack_message(group)
    header, section, context = message["blocks"]
    assert header["text"]["text"] == "✅ [RESOLVED] Slow hooks"
    assert "route=/api/hooks/[slug]/1" in section["text"]["text"]
    assert "*Value:* 0.07" in section["text"]["text"]
    assert "p99 latency above 50 ms on route 1" in section["text"]["text"]
    assert "Started 2026-12-05T10:00:00Z" in context["elements"][0]["text"]
    assert "resolved 2026-12-05T10:05:00Z" in context["elements"][0]["text"]
    assert message["text"] == "[RESOLVED] Slow hooks: hooks are slow"


def test_slack_escapes_mrkdwn_control_characters() -> None:
    group = make_group([make_alert(annotations={"summary": "<!channel> & <https://evil|click>"})])
    text = slack_message(group)["blocks"][1]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in text


def test_slack_counts_alerts_the_group_already_truncated() -> None:
    message = slack_message(make_group([make_alert()], truncatedAlerts=3))
    assert message["blocks"][-1]["text"]["text"] == "…and 3 more alerts"


def test_slack_error_answers(receiver: Receiver) -> None:
    receiver.reply(404, body=b"no_service")
    receiver.reply(429, {"Retry-After": "30"}, b"rate_limited")
    url = receiver.url + "/services/T000/B000/XXXX"
    gone = send(SlackNotifier(), make_delivery("slack", url))
    limited = send(SlackNotifier(), make_delivery("slack", url))
    assert gone.permanent and not gone.ok
    assert not limited.permanent and limited.retry_after == 30.0
    assert_safe(gone, "no_service", "XXXX")
    assert_safe(limited, "rate_limited", "XXXX")


# -- pagerduty ----------------------------------------------------------------------------------------------


def test_pagerduty_sends_one_event_per_alert(receiver: Receiver) -> None:
    for _ in range(3):
        receiver.reply(202, body=b'{"status":"success","dedup_key":"x"}')
    alerts = [
        make_alert(1),
        make_alert(2, status="resolved"),
        make_alert(3, state="nodata", annotations={}, generatorURL="https://metrics.example.com/r/1"),
    ]
    delivery = make_delivery("pagerduty", receiver.url + "/v2/enqueue", "R0UTINGKEY", make_group(alerts))
    result = send(PagerDutyNotifier(), delivery)
    assert result.ok and result.status == 202
    events = [r.json() for r in receiver.requests]
    assert [r.path for r in receiver.requests] == ["/v2/enqueue"] * 3
    assert [e["routing_key"] for e in events] == ["R0UTINGKEY"] * 3
    assert [e["event_action"] for e in events] == ["trigger", "resolve", "trigger"]
    assert [e["dedup_key"] for e in events] == ["fp0001", "fp0002", "fp0003"]
    trigger, resolve, nodata = events
    assert trigger["payload"]["summary"] == "p99 latency above 50 ms on route 1"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["timestamp"] == "2026-12-05T10:00:00Z"
    assert trigger["payload"]["source"] == "meshhook-rt-metrics/5a0c3b8e-0000-4000-8000-000000000001"
    assert trigger["payload"]["custom_details"] == {
        "labels": alerts[0]["labels"],
        "annotations": alerts[0]["annotations"],
        "value": 0.07,
    }
    assert "payload" not in resolve
    assert nodata["payload"]["severity"] == "warning"
    assert nodata["payload"]["summary"] == "Slow hooks: route=/api/hooks/[slug]/3"
    assert nodata["links"] == [{"href": "https://metrics.example.com/r/1", "text": "Source"}]


def test_pagerduty_summary_is_clipped() -> None:
    from meshhook_rt_metrics.alerting.notify.pagerduty import pagerduty_event

    group = make_group([make_alert(annotations={"summary": "s" * 5000})])
    event = pagerduty_event("key", group, group["alerts"][0])
    assert len(event["payload"]["summary"]) == 1024


def test_pagerduty_without_routing_key_is_permanent(receiver: Receiver) -> None:
    result = send(PagerDutyNotifier(), make_delivery("pagerduty", receiver.url + "/v2/enqueue"))
    assert not result.ok and result.permanent and result.error is not None and "routing key" in result.error
    assert receiver.requests == []


def test_pagerduty_stops_at_the_first_failure_and_retries(receiver: Receiver) -> None:
    receiver.reply(202)
    receiver.reply(500)
    receiver.reply(400)
    group = make_group([make_alert(i) for i in range(3)])
    result = send(PagerDutyNotifier(), make_delivery("pagerduty", receiver.url, "R0UTINGKEY", group))
    assert not result.ok and not result.permanent and result.status == 500
    assert len(receiver.requests) == 2
    assert_safe(result, "R0UTINGKEY", receiver.url)
    bad = send(PagerDutyNotifier(), make_delivery("pagerduty", receiver.url, "R0UTINGKEY", group))
    assert bad.permanent and bad.status == 400


# -- alertmanager -------------------------------------------------------------------------------------------


def test_alertmanager_request_shape(receiver: Receiver) -> None:
    alert = make_alert(1, labels={"alertname": "ignored", "http.route": "/x", "empty": "", "9lives": "y"})
    alert["generatorURL"] = "https://metrics.example.com/r/1"
    delivery = make_delivery("alertmanager", receiver.url + "/am/", "T0KEN", make_group([alert]))
    assert send(AlertmanagerNotifier(), delivery).ok
    [request] = receiver.requests
    assert request.path == "/am/api/v2/alerts"
    assert request.headers["authorization"] == "Bearer T0KEN"
    [posted] = request.json()
    assert posted == {
        "labels": {"alertname": "Slow hooks", "severity": "critical", "http_route": "/x", "_9lives": "y"},
        "annotations": {"summary": "p99 latency above 50 ms on route 1"},
        "startsAt": "2026-12-05T10:00:00Z",
        "generatorURL": "https://metrics.example.com/r/1",
    }
    send(AlertmanagerNotifier(), make_delivery("alertmanager", receiver.url, None))
    assert receiver.requests[1].path == "/api/v2/alerts"
    assert "authorization" not in receiver.requests[1].headers


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Alertmanager (Debian's package; CI installs it with scripts/install-system-deps.sh)."""
    binary = shutil.which("prometheus-alertmanager") or ALERTMANAGER
    if not Path(binary).exists():
        pytest.fail(f"{ALERTMANAGER} is missing: install the prometheus-alertmanager package")
    state = tmp_path_factory.mktemp("alertmanager")
    (state / "alertmanager.yml").write_text(
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"
    )
    port = free_port()
    args = [f"--config.file={state / 'alertmanager.yml'}", f"--storage.path={state}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    log = (state / "log").open("w")
    process = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited with {process.returncode}")
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("Alertmanager was not ready within 30 s")


def _active(url: str, marker: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(
        url + "/api/v2/alerts", params={"filter": f'run="{marker}"'}
    ).json()
    return alerts


def _poll(check: Any, deadline_s: float = 10) -> Any:
    """``check()`` until it returns something truthy, within a bounded time."""
    deadline = time.monotonic() + deadline_s
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def test_alertmanager_receives_then_resolves_the_alert(alertmanager: str) -> None:
    marker = uuid.uuid4().hex
    started = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    firing = make_alert(1, startsAt=started, labels={"route": "/api/hooks/[slug]", "run": marker})
    result = send(
        AlertmanagerNotifier(), make_delivery("alertmanager", alertmanager + "/", None, make_group([firing]))
    )
    assert result.ok and result.status == 200
    [alert] = _poll(lambda: _active(alertmanager, marker))
    assert alert["labels"] == {
        "alertname": "Slow hooks",
        "severity": "critical",
        "route": "/api/hooks/[slug]",
        "run": marker,
    }
    assert alert["annotations"] == {"summary": "p99 latency above 50 ms on route 1"}
    assert alert["status"]["state"] in ("active", "unprocessed")
    assert datetime.fromisoformat(alert["endsAt"]) > datetime.now(UTC)  # open until resolve_timeout

    ended = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    resolved = {**firing, "status": "resolved", "endsAt": ended}
    result = send(
        AlertmanagerNotifier(), make_delivery("alertmanager", alertmanager, None, make_group([resolved]))
    )
    assert result.ok
    _poll(lambda: _active(alertmanager, marker) == [])  # the v2 API lists unresolved alerts only


def test_alertmanager_rejects_invalid_alerts_permanently(alertmanager: str) -> None:
    group = make_group([make_alert(1, startsAt="not a time")])
    result = send(AlertmanagerNotifier(), make_delivery("alertmanager", alertmanager, None, group))
    assert not result.ok and result.permanent and result.status in (400, 422)


# -- email --------------------------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts; ``refuse`` scripts an SMTP reply to RCPT TO."""

    def __init__(self, refuse: str | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse = refuse

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def message(self) -> Message:
        [envelope] = self.envelopes
        assert isinstance(envelope.content, bytes)
        return message_from_bytes(envelope.content)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A plain SMTP server (no STARTTLS offered)."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


def smtp_settings(port: int, **overrides: Any) -> SmtpSettings:
    return SmtpSettings(
        **{
            "host": "127.0.0.1",
            "port": port,
            "from_address": "Alerts <alerts@example.com>",
            "timeout": 5.0,
            **overrides,
        }
    )


def test_email_arrives_with_stable_ids_and_threading(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    group = make_group([make_alert(1), make_alert(2)])
    delivery = make_delivery("email", "oncall@example.com", group=group)
    result = send(EmailNotifier(smtp_settings(port, starttls=False)), delivery)
    assert result.ok
    [envelope] = mailbox.envelopes
    assert envelope.mail_from == "alerts@example.com" and envelope.rcpt_tos == ["oncall@example.com"]
    message = mailbox.message()
    assert message["To"] == "oncall@example.com"
    assert message["Message-ID"] == f"<{delivery.key}@meshhook-rt-metrics>"
    assert message["In-Reply-To"] == message["References"] == "<group-7f1e@meshhook-rt-metrics>"
    assert message["Subject"] == "[FIRING:2] Slow hooks"
    assert message["Auto-Submitted"] == "auto-generated"
    plain, html = (part.get_payload(decode=True) for part in message.walk() if not part.is_multipart())
    assert isinstance(plain, bytes) and isinstance(html, bytes)
    assert b"route=/api/hooks/[slug]/2" in plain and b"value: 0.07" in plain
    assert b"<h2>[FIRING:2] Slow hooks</h2>" in html


def test_email_subject_of_a_resolved_group_with_group_labels(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    group = make_group(
        [make_alert(1, status="resolved")], groupLabels={"alertname": "x", "route": "/a\r\nBcc: x@y"}
    )
    assert send(
        EmailNotifier(smtp_settings(port, starttls=False)),
        make_delivery("email", "a@example.com", None, group),
    ).ok
    message = mailbox.message()
    assert message["Subject"] == "[RESOLVED] Slow hooks (route=/a Bcc: x@y)"
    assert message["Bcc"] is None


def test_email_requires_starttls_by_default(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    result = send(EmailNotifier(smtp_settings(port)), make_delivery("email", "oncall@example.com"))
    assert not result.ok and not result.permanent
    assert result.error is not None and "STARTTLS" in result.error
    assert mailbox.envelopes == []


@pytest.mark.parametrize(
    ("reply", "permanent"), [("550 5.1.1 no such user", True), ("451 4.3.0 try later", False)]
)
def test_email_smtp_replies(reply: str, permanent: bool) -> None:
    mailbox = Mailbox(refuse=reply)
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        result = send(
            EmailNotifier(smtp_settings(controller.port, starttls=False)),
            make_delivery("email", "x@example.com"),
        )
    finally:
        controller.stop()
    assert not result.ok and result.permanent is permanent
    assert result.error == f"SMTP {reply[:3]}: recipient refused"
    assert_safe(result, "x@example.com", "no such user")


def test_email_connection_refused_is_retryable() -> None:
    result = send(EmailNotifier(smtp_settings(free_port())), make_delivery("email", "x@example.com"))
    assert (result.ok, result.permanent, result.error) == (False, False, "connection refused")


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    usage = {"content_commitment": False, "key_encipherment": False, "data_encipherment": False}
    usage |= {"key_agreement": False, "encipher_only": False, "decipher_only": False}

    def builder(subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder(subject_name=subject, issuer_name=ca_name, public_key=public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_email_over_starttls_verifies_the_server(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    mailbox = Mailbox()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=server_tls, require_starttls=True
    )
    controller.start()
    try:
        trusted = send(
            EmailNotifier(smtp_settings(controller.port, ca_file=str(ca))),
            make_delivery("email", "a@example.com"),
        )
        untrusted = send(
            EmailNotifier(smtp_settings(controller.port)), make_delivery("email", "b@example.com")
        )
    finally:
        controller.stop()
    assert trusted.ok
    assert (untrusted.ok, untrusted.permanent, untrusted.error) == (False, False, "TLS error")
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["a@example.com"]]


# -- the registry -------------------------------------------------------------------------------------------


def test_registry_by_kind() -> None:
    plain = build_notifiers()
    assert set(plain) == {"webhook", "slack", "pagerduty", "alertmanager"}
    assert all(notifier.kind == kind for kind, notifier in plain.items())
    assert isinstance(notifier_for(plain, "slack"), SlackNotifier)
    with pytest.raises(UnknownReceiverKindError, match="e-mail needs SMTP settings"):
        notifier_for(plain, "email")
    with pytest.raises(
        UnknownReceiverKindError, match=r"'sms'.*known: alertmanager, pagerduty, slack, webhook"
    ):
        notifier_for(plain, "sms")
    settings = SmtpSettings(host="smtp.example.com", from_address="a@example.com", password="hunter2")
    email = notifier_for(build_notifiers(settings), "email")
    assert isinstance(email, EmailNotifier) and email.settings is settings
    assert "hunter2" not in repr(settings)
