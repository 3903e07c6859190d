"""The SSRF guard: address rules, URL spellings, and a real loopback HTTP server behind the guarded client.

This machine has no internet and no DNS beyond ``localhost``: names other than ``localhost`` are answered by
an injected fake resolver, and no traffic is ever sent to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshhook_rt_metrics.alerting.ssrf import (
    GuardedTransport,
    SsrfPolicy,
    SsrfRefused,
    check_address,
    check_url,
    guarded_client,
    resolve_and_check,
)

DEFAULT = SsrfPolicy()
LOOPBACK_ALLOWED = SsrfPolicy.from_settings(["127.0.0.0/8", "::1/128"])
GLOBAL_V4 = "93.184.215.14"  # never connected to: only checked


class FakeResolver:
    """Answers from a table, one answer list per call (the last repeats); records every question."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        answers = self.answers[host]
        nth = sum(1 for called, _ in self.calls if called == host)
        return answers[min(nth, len(answers)) - 1]


class Receiver:
    """A loopback HTTP server recording what reaches it; ``/redirect`` answers 302 to ``/second``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                receiver.hits.append((self.path, self.headers.get("Host", "")))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/second")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]


def serve(receiver: Receiver) -> Iterator[Receiver]:
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[Receiver]:
    yield from serve(Receiver())


def self_signed(hostname: str, directory: Path) -> tuple[Path, Path, str]:
    """A throwaway certificate for ``hostname`` only (no IP in it): (cert file, key file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file, pem


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, str, list[str]]]:
    """An HTTPS receiver whose certificate names ``receiver.test``; yields it, its PEM and the SNI names seen."""
    cert_file, key_file, pem = self_signed("receiver.test", tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    sni: list[str] = []

    def record_sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        sni.append(name or "")

    context.sni_callback = record_sni
    for receiver in serve(Receiver(context)):
        yield receiver, pem, sni


@pytest.fixture
def receiver(server: Receiver) -> Receiver:
    server.hits.clear()
    return server


def get(policy: SsrfPolicy, url: str, resolver: FakeResolver | None = None) -> httpx.Response:
    async def scenario() -> httpx.Response:
        async with guarded_client(policy, timeout=5.0, resolver=resolver) as client:
            return await client.get(url)

    return asyncio.run(scenario())


REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "::1",
    "::",
    "fd00:ec2::254",
    "fc00::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "3fff::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::7f00:1",  # IPv4-compatible
    "::8.8.8.8",  # IPv4-compatible: deprecated, refused whatever it embeds
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001::1",  # Teredo
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_forbidden_addresses_are_refused_naming_the_address(address: str) -> None:
    reason = check_address(ip_address(address), DEFAULT)
    assert reason is not None
    assert str(ip_address(address)) in reason


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("127.0.0.1", "loopback"),
        ("100.64.0.1", "CGNAT"),
        ("::ffff:127.0.0.1", "reaches 127.0.0.1: loopback"),
        ("64:ff9b::a9fe:a9fe", "reaches 169.254.169.254: cloud metadata"),
    ],
)
def test_reasons_say_why(address: str, label: str) -> None:
    assert label in (check_address(ip_address(address), DEFAULT) or "")


@pytest.mark.parametrize(
    "address",
    [
        GLOBAL_V4,
        "8.8.8.8",
        "2606:4700::1",
        "2001:4860:4860::8888",
        "::ffff:93.184.215.14",
        "64:ff9b::8.8.8.8",
    ],
)
def test_global_addresses_pass(address: str) -> None:
    assert check_address(ip_address(address), DEFAULT) is None


def test_allowed_networks_exempt_exactly_their_addresses() -> None:
    assert check_address(ip_address("127.0.0.1"), LOOPBACK_ALLOWED) is None
    assert check_address(ip_address("::1"), LOOPBACK_ALLOWED) is None
    assert (
        check_address(ip_address("::ffff:127.0.0.1"), LOOPBACK_ALLOWED) is None
    )  # judged by what it reaches
    assert check_address(ip_address("10.0.0.1"), LOOPBACK_ALLOWED) is not None
    assert check_address(ip_address("169.254.169.254"), LOOPBACK_ALLOWED) is not None
    assert LOOPBACK_ALLOWED.allowed_networks == (ip_network("127.0.0.0/8"), ip_network("::1/128"))


def test_allowed_networks_must_be_networks() -> None:
    with pytest.raises(ValueError):
        SsrfPolicy.from_settings(["127.0.0.1/8"])


def test_disabled_policy_passes_everything() -> None:
    off = SsrfPolicy(enabled=False)
    assert check_address(ip_address("169.254.169.254"), off) is None
    assert check_url("http://2130706433/", off) is None
    assert check_url("http://user:pw@127.0.0.1/", off) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://2130706433/", "numeric"),
        ("http://0x7f000001/", "numeric"),
        ("http://0x7f.0.0.1/", "numeric"),
        ("http://127.0.0x1/", "numeric"),
        ("http://127.1/", "numeric"),
        ("http://127.0.1/", "numeric"),
        ("http://1.2.3.4./", "numeric"),
        ("http://0177.0.0.1/", "Invalid IPv4"),  # httpx itself rejects octal quads
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "reaches 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("ftp://example.com/", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("http:///path", "empty host"),
    ],
)
def test_urls_refused_statically(url: str, expected: str) -> None:
    reason = check_url(url, DEFAULT)
    assert reason is not None
    assert expected in reason


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0/B0/x?token=y",
        "http://93.184.215.14:8080/hook",
        "https://[2606:4700::1]/hook",
        "https://events.pagerduty.com./v2/enqueue",
        "https://1password.example/",  # numeric first label, named TLD: a name
        "http://localhost:9093/",  # a name: refused at connection time, not here
    ],
)
def test_urls_passing_static_checks(url: str) -> None:
    assert check_url(url, DEFAULT) is None


def test_reason_does_not_leak_the_url() -> None:
    reason = check_url("http://user:s3cret@example.com/path?token=abc", DEFAULT) or ""
    assert "credentials" in reason
    assert not any(part in reason for part in ("s3cret", "user", "/path", "token", "abc"))
    reason = check_url("http://2130706433/path?token=abc", DEFAULT) or ""
    assert "2130706433" in reason
    assert "token" not in reason
    assert "/path" not in reason


def test_refusal_is_not_an_httpx_error() -> None:
    """A generic ``except httpx.HTTPError`` (retry later) must not swallow a permanent refusal."""
    assert not issubclass(SsrfRefused, httpx.HTTPError)


def test_names_resolving_to_forbidden_addresses_are_refused() -> None:
    resolver = FakeResolver(
        {
            "evil.example": [["127.0.0.1"]],
            "mixed.example": [[GLOBAL_V4, "10.0.0.1"]],
            "good.example": [[GLOBAL_V4, GLOBAL_V4]],
        }
    )
    with pytest.raises(SsrfRefused, match=r"evil\.example resolves to a forbidden address \(loopback"):
        asyncio.run(resolve_and_check("evil.example", 443, DEFAULT, resolver))
    with pytest.raises(
        SsrfRefused, match=r"mixed\.example resolves to a forbidden address \(private"
    ) as refused:
        asyncio.run(resolve_and_check("mixed.example", 443, DEFAULT, resolver))
    assert "10.0.0.1" not in str(refused.value)  # stored and shown to members: no map of internal addresses
    good = asyncio.run(resolve_and_check("good.example", 443, DEFAULT, resolver))
    assert good == [IPv4Address(GLOBAL_V4)]  # deduplicated
    assert resolver.calls == [("evil.example", 443), ("mixed.example", 443), ("good.example", 443)]


def test_numeric_spellings_are_refused_before_resolution() -> None:
    resolver = FakeResolver({})
    for host in ("2130706433", "0x7f000001", "127.1"):
        with pytest.raises(SsrfRefused, match="non-canonical numeric host"):
            asyncio.run(resolve_and_check(host, 80, DEFAULT, resolver))
    assert resolver.calls == []


def test_localhost_is_refused_through_the_system_resolver() -> None:
    with pytest.raises(SsrfRefused, match="localhost resolves to a forbidden address"):
        asyncio.run(resolve_and_check("localhost", 80, DEFAULT))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_guarded_client_refuses_loopback_by_default(receiver: Receiver, host: str) -> None:
    with pytest.raises(SsrfRefused, match="loopback"):
        get(DEFAULT, f"http://{host}:{receiver.port}/")
    assert receiver.hits == []


def test_guarded_client_reaches_allowed_loopback(receiver: Receiver) -> None:
    response = get(LOOPBACK_ALLOWED, f"http://127.0.0.1:{receiver.port}/hook")
    assert response.status_code == 200
    assert receiver.hits == [("/hook", f"127.0.0.1:{receiver.port}")]


def test_disabled_guard_reaches_loopback(receiver: Receiver) -> None:
    assert get(SsrfPolicy(enabled=False), f"http://127.0.0.1:{receiver.port}/").status_code == 200
    assert len(receiver.hits) == 1


def test_credentials_in_url_are_refused_at_request_time(receiver: Receiver) -> None:
    with pytest.raises(SsrfRefused, match="credentials"):
        get(LOOPBACK_ALLOWED, f"http://user:pw@127.0.0.1:{receiver.port}/")
    assert receiver.hits == []


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    response = get(LOOPBACK_ALLOWED, f"http://127.0.0.1:{receiver.port}/redirect")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/second")
    assert [path for path, _ in receiver.hits] == ["/redirect"]


def test_name_is_connected_to_by_checked_address_keeping_host_header(receiver: Receiver) -> None:
    """``receiver.test`` is unknown to the system: reaching the server proves the connection used the IP."""
    resolver = FakeResolver({"receiver.test": [["127.0.0.1"], ["10.0.0.1"]]})
    response = get(LOOPBACK_ALLOWED, f"http://receiver.test:{receiver.port}/hook", resolver)
    assert response.status_code == 200
    assert receiver.hits == [("/hook", f"receiver.test:{receiver.port}")]
    assert resolver.calls == [("receiver.test", receiver.port)]  # one lookup: no second, rebindable one


@pytest.mark.parametrize("answer", [["::1", "127.0.0.1"], ["127.0.0.1", "::1"]])
def test_every_checked_address_is_tried_by_ip_in_order(receiver: Receiver, answer: list[str]) -> None:
    """``::1`` is checked and allowed but nothing listens there (the server is IPv4 only): the other one works."""
    resolver = FakeResolver({"receiver.test": [answer]})
    assert get(LOOPBACK_ALLOWED, f"http://receiver.test:{receiver.port}/", resolver).status_code == 200
    assert len(receiver.hits) == 1


def test_dns_rebinding_is_refused_at_connection_time(receiver: Receiver) -> None:
    """The name passed an earlier check with a global address; at connection time it answers loopback."""
    resolver = FakeResolver({"rebind.test": [[GLOBAL_V4], ["127.0.0.1"]]})
    checked = asyncio.run(resolve_and_check("rebind.test", receiver.port, DEFAULT, resolver))
    assert checked == [IPv4Address(GLOBAL_V4)]
    with pytest.raises(SsrfRefused, match=r"rebind\.test resolves to a forbidden address \(loopback"):
        get(DEFAULT, f"http://rebind.test:{receiver.port}/", resolver)
    assert len(resolver.calls) == 2
    assert receiver.hits == []


def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    tls_server: tuple[Receiver, str, list[str]],
) -> None:
    """The certificate names only ``receiver.test`` (no IP): success means SNI and verification used the name."""
    receiver, pem, sni = tls_server
    resolver = FakeResolver({"receiver.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    trust = ssl.create_default_context(cadata=pem)

    async def fetch(host: str) -> httpx.Response:
        transport = GuardedTransport(LOOPBACK_ALLOWED, resolver, ssl_context=trust)
        async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
            return await client.get(f"https://{host}:{receiver.port}/secure")

    assert asyncio.run(fetch("receiver.test")).status_code == 200
    assert receiver.hits == [("/secure", f"receiver.test:{receiver.port}")]
    assert sni[-1] == "receiver.test"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(fetch("other.test"))  # same address, wrong name: the certificate does not match
    assert len(receiver.hits) == 1
