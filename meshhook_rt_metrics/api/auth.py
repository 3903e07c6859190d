"""Who is calling: a verified Supabase JWT, a per-project scrape token, or nobody.

HS256 tokens are verified by :class:`JwtKeys` of the neutral ``meshhook_rt_metrics.jwt_keys`` (the code the
local gateway uses too, so the two never disagree); asymmetric tokens (RS256/ES256, Supabase's newer signing
keys) against a JWKS URL. ``alg: none``, expired, tampered, wrong-audience and role-less tokens are refused.
What a verified caller may see is decided by PostgreSQL (row-level security), never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from meshhook_rt_metrics.db.session import CALLER_ROLES
from meshhook_rt_metrics.jwt_keys import JwtKeys, TokenError

SCRAPE_TOKEN_PREFIX = "mhm_"
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


class UnauthorizedError(Exception):
    """A missing or invalid credential (HTTP 401)."""


@dataclass(frozen=True)
class Caller:
    """A verified JWT: the claims the database will see as ``request.jwt.claims``."""

    claims: dict[str, Any]

    @property
    def role(self) -> str:
        return str(self.claims["role"])


@dataclass(frozen=True)
class ScrapeToken:
    """An opaque per-project scrape token; PostgreSQL checks it (metrics.scrape)."""

    token: str


Credential = Caller | ScrapeToken


class TokenVerifier:
    def __init__(
        self, secret: str | None, *, jwks_url: str | None = None, audience: str | None = None
    ) -> None:
        self._keys = JwtKeys(secret) if secret else None
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        self._audience = audience

    def __repr__(self) -> str:
        return "TokenVerifier(<hidden>)"

    def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError("malformed token") from exc
        alg = header.get("alg")
        if alg == "HS256" and self._keys is not None:
            try:
                claims = self._keys.verify(token, require_exp=True).raw
            except TokenError as exc:
                raise UnauthorizedError(str(exc)) from exc
        elif alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            claims = self._verify_jwks(token, str(alg))
        else:
            raise UnauthorizedError(f"unsupported token algorithm {alg!r}")
        self._check(claims)
        return Caller(claims)

    def _verify_jwks(self, token: str, alg: str) -> dict[str, Any]:
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], options={"verify_aud": False, "require": ["exp"]}
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("JWT expired") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise UnauthorizedError("invalid token") from exc
        return claims

    def _check(self, claims: dict[str, Any]) -> None:
        role = claims.get("role")
        if role not in CALLER_ROLES:
            raise UnauthorizedError("token role must be anon, authenticated or service_role")
        aud = claims.get("aud")
        if self._audience and aud is not None:
            auds = aud if isinstance(aud, list) else [aud]
            if self._audience not in auds:
                raise UnauthorizedError("token audience not accepted")
        elif self._audience and role == "authenticated":
            raise UnauthorizedError("user token without audience")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def credential(authorization: str | None, verifier: TokenVerifier, *, allow_scrape_token: bool) -> Credential:
    """The caller of a request, or :class:`UnauthorizedError`."""
    token = bearer_token(authorization)
    if token is None:
        raise UnauthorizedError("missing bearer token")
    if token.startswith(SCRAPE_TOKEN_PREFIX):
        if not allow_scrape_token:
            raise UnauthorizedError("scrape tokens are only accepted by GET /metrics")
        if len(token) > 200:
            raise UnauthorizedError("invalid scrape token")
        return ScrapeToken(token)
    return verifier.verify(token)
