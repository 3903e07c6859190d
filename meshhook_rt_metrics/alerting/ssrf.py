"""The SSRF guard every outgoing notification request passes: receiver URLs are user input.

Without it a receiver could point the worker at the cloud metadata service, the database or anything else on
the private network. It allows only global unicast addresses (IPv4-mapped, 6to4 and NAT64 ones judged by the
IPv4 address they reach); refuses non-canonical numeric hosts (``127.1``, ``2130706433``, ``0x7f000001``:
curl and browsers read them as IPs), credentials in URLs and schemes other than http(s). It resolves the host
once per connection, checks every address and connects to a checked one itself: no second lookup, so no DNS
rebinding between check and connect. Redirects are never followed: a 3xx goes back to the caller as is.

A refused request raises ``SsrfRefused``: a plain ``Exception``, deliberately not an ``httpx.HTTPError``, so a
generic transport-error handler cannot take it for a retryable failure. Catch it to fail the delivery for
good; its message is safe to store and show (at most the host and the address, never the URL).

``SsrfPolicy(enabled=False)`` lets everything through: only for tests and operators who know their network.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpcore
import httpx

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves ``(host, port)`` to address strings; injectable so tests need no DNS."""


class SsrfRefused(Exception):  # noqa: N818  (a verdict, the name callers match on)
    """The guard refused a target; ``str(exc)`` says why, naming at most the host and the address."""


@dataclass(frozen=True)
class SsrfPolicy:
    """What the guard lets through: ``allowed_networks`` are exempt (the local demo allows loopback)."""

    enabled: bool = True
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, allowed_networks: Iterable[str] = (), *, enabled: bool = True) -> SsrfPolicy:
        """Build from CIDR strings (strict: ``127.0.0.1/8`` is a typo, not a network)."""
        return cls(enabled, tuple(ip_network(network) for network in allowed_networks))


_METADATA = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
# Ranges that Python 3.11's ipaddress misses or names poorly; the flags in _kind cover the rest.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = (
    (ip_network("0.0.0.0/8"), "'this network'"),
    (ip_network("100.64.0.0/10"), "shared address space (CGNAT)"),
    (ip_network("192.88.99.0/24"), "deprecated 6to4 relay"),
    (ip_network("::/96"), "IPv4-compatible (deprecated)"),
    (ip_network("64:ff9b:1::/48"), "local-use NAT64"),
    (ip_network("3fff::/20"), "documentation"),
    (ip_network("5f00::/16"), "SRv6 SID"),
    (ip_network("fec0::/10"), "site-local"),
)
_NAT64 = ip_network("64:ff9b::/96")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def _kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is no target (a short label), or None for a global unicast address."""
    if ip in _METADATA:
        return "cloud metadata"
    flags = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_multicast, "multicast"),
        (ip.is_link_local, "link-local"),
    )
    for flag, label in flags:
        if flag:
            return label
    for network, label in _SPECIAL:
        if ip in network:
            return label
    if ip.is_private:
        return "private or special-purpose"
    if ip.is_reserved or not ip.is_global:
        return "reserved or not globally routable"
    return None


def _embedded_v4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a mapped, 6to4 or NAT64 (64:ff9b::/96) address reaches: what must be judged."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def _allowed(ip: IPAddress, policy: SsrfPolicy) -> bool:
    return any(ip in network for network in policy.allowed_networks)


def check_address(ip: IPAddress, policy: SsrfPolicy) -> str | None:
    """Why the guard refuses ``ip`` under ``policy``, or None if it may be connected to."""
    if not policy.enabled or _allowed(ip, policy):
        return None
    inner = _embedded_v4(ip) if isinstance(ip, IPv6Address) else None
    if inner is not None and _allowed(inner, policy):
        return None
    kind = _kind(ip if inner is None else inner)
    via = "" if inner is None else f"reaches {inner}: "
    return None if kind is None else f"forbidden address {ip} ({via}{kind})"


def _literal(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in canonical form (dotted quad, or IPv6 without brackets)."""
    try:
        return ip_address(host)
    except ValueError:
        return None


def _check_host(host: str) -> str | None:
    """Refuse empty hosts and what curl or a browser would read as a non-canonical IPv4 address.

    WHATWG rule: a host whose last label is numeric (decimal, ``0x`` hex, octal) is an IPv4 address; no TLD is.
    """
    if not host:
        return "empty host"
    if _literal(host) is None and _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        return f"non-canonical numeric host {host!r}: write IPv4 addresses as a.b.c.d"
    return None


def check_url(url: str | httpx.URL, policy: SsrfPolicy) -> str | None:
    """The static checks (scheme, credentials, host spelling, IP literals): reason to refuse, or None.

    Names are not resolved here (that happens at every connection); good for validating a receiver on save.
    """
    if not policy.enabled:
        return None
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:  # httpx's messages name at most the host or the port
        return f"invalid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    if parsed.userinfo:
        return "credentials in the URL are not allowed"
    host = parsed.raw_host.decode("ascii")
    if (reason := _check_host(host)) is not None:
        return reason
    literal = _literal(host)
    return None if literal is None else check_address(literal, policy)


async def system_resolver(host: str, port: int) -> list[str]:
    """The event loop's getaddrinfo (in a thread: the loop never blocks)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_and_check(
    host: str, port: int, policy: SsrfPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """The addresses of ``host``, every one checked: one forbidden address refuses them all.

    Raises ``SsrfRefused``; an unresolvable host raises ``OSError`` (a network failure, maybe transient).
    """
    if policy.enabled and (reason := _check_host(host)) is not None:
        raise SsrfRefused(reason)
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        answers = await (resolver or system_resolver)(host, port)
        addresses = list(dict.fromkeys(ip_address(answer) for answer in answers))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for ip in addresses:
        if (reason := check_address(ip, policy)) is not None:
            if literal is not None:
                raise SsrfRefused(reason)
            # not the address itself: the reason is stored and shown, and must not map internal names
            raise SsrfRefused(f"{host} resolves to a forbidden address ({_kind_of(ip)})")
    return addresses


def _kind_of(ip: IPAddress) -> str:
    inner = _embedded_v4(ip) if isinstance(ip, IPv6Address) else None
    return _kind(ip if inner is None else inner) or "forbidden"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer, checking at every connection and connecting to the checked address.

    httpcore still passes the URL's host to ``start_tls``, so SNI and certificate checks use the name.
    """

    def __init__(self, policy: SsrfPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_and_check(host, port, self._policy, self._resolver)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        for ip in addresses[:-1]:  # all checked: fall through to the next on a refused/unreachable one
            with contextlib.suppress(httpcore.ConnectError):
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
        return await self._inner.connect_tcp(str(addresses[-1]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise SsrfRefused("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on the guarded network backend, plus the static URL checks on every request."""

    def __init__(
        self,
        policy: SsrfPolicy,
        resolver: Resolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` replaces httpx's default (certifi CAs): for a private CA, or a test's own."""
        super().__init__(trust_env=False)
        self._policy = policy
        # httpx 0.28 takes no network backend: swap its (never opened) pool for one on the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy, resolver or system_resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (reason := check_url(request.url, self._policy)) is not None:
            raise SsrfRefused(reason)
        return await super().handle_async_request(request)


def guarded_client(
    policy: SsrfPolicy, *, timeout: float = 10.0, resolver: Resolver | None = None
) -> httpx.AsyncClient:
    """The client notifiers get: guarded transport, no redirects, no proxies or .netrc from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, resolver), timeout=timeout, follow_redirects=False, trust_env=False
    )
