"""The local demo's webhook receiver: prints each notification it gets, after checking its signature.

What a MeshHook operator's endpoint would do with our webhooks, in a few lines: verify the Standard Webhooks
signature (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), then act on the Alertmanager-shaped
group. ``make up`` starts it; its output is in the stack's ``logs/receiver.log``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEMO_SECRET = "whsec_" + base64.b64encode(b"meshhook-local-demo-secret-only").decode()


def signature_ok(secret: str, headers: Any, body: bytes) -> bool:
    """The Standard Webhooks check: HMAC-SHA256 over ``id.timestamp.body`` with the secret's key, v1 scheme."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split() if "," in part]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


def describe(group: dict[str, Any]) -> str:
    lines = [
        f"{time.strftime('%H:%M:%S')} {group.get('status', '?').upper()} {group.get('rule', {}).get('name', '')}"
    ]
    for alert in group.get("alerts", []):
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()) if k != "alertname")
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(f"    {alert.get('status')}: {labels} value={alert.get('value')} {summary}")
    return "\n".join(lines)


def serve(port: int, secret: str = DEMO_SECRET) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not signature_ok(secret, self.headers, body):
                print(f"{time.strftime('%H:%M:%S')} refused a request with a bad signature", flush=True)
                self.send_response(401)
            else:
                print(describe(json.loads(body)), flush=True)
                self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    print(f"demo receiver listening on http://127.0.0.1:{port}/alerts", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
