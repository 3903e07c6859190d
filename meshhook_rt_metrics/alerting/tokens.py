"""The service token the Realtime connection authenticates with, refreshed before it expires.

With the project's JWT secret the worker mints short-lived ``service_role`` tokens itself; with only a key it
uses the key (Supabase's service key lives for years) and says so when it is about to expire.
"""

from __future__ import annotations

import logging
import time

import jwt

log = logging.getLogger(__name__)
MINTED_LIFETIME = 3600.0
REFRESH_SHARE = 0.2  # refresh when less than this share of the lifetime is left


class ServiceTokens:
    def __init__(self, key: str | None, jwt_secret: str | None) -> None:
        if not key and not jwt_secret:
            raise ValueError("the Realtime connection needs a service key or the JWT secret")
        self._key = key
        self._secret = jwt_secret
        self._token = ""
        self._issued = 0.0
        self._expires = 0.0
        self.renew()

    @property
    def token(self) -> str:
        return self._token

    def renew(self) -> str:
        """A fresh token (minted), or the key again (checked for its expiry)."""
        now = time.time()
        if self._secret:
            claims = {"role": "service_role", "iss": "meshhook-metrics-alert-worker", "iat": int(now)}
            self._token = jwt.encode(
                {**claims, "exp": int(now + MINTED_LIFETIME)}, self._secret, algorithm="HS256"
            )
            self._issued, self._expires = now, now + MINTED_LIFETIME
            return self._token
        assert self._key is not None
        self._token = self._key
        exp = jwt.decode(self._key, options={"verify_signature": False}).get("exp")
        self._issued, self._expires = now, float(exp) if exp else float("inf")
        if self._expires - now < 86400:
            log.warning(
                "the service key expires in %.0f s; give the worker the JWT secret to mint tokens",
                self._expires - now,
            )
        return self._token

    def due(self) -> bool:
        """Whether the token should be replaced now (less than a fifth of its life left)."""
        life = self._expires - self._issued
        return self._secret is not None and time.time() > self._expires - REFRESH_SHARE * life
