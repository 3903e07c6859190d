"""JWTs as Supabase issues them: HS256 with the project's secret; anon and service keys are such JWTs.

A neutral module: the HTTP service (``api/``) verifies tokens with :class:`JwtKeys` and reads a local state
dir's secret with :func:`load_or_create_secret`, and the local stack's gateway mints and verifies its tokens
with the same code (``localstack/gateway/keys.py`` re-exports these names), so the two never disagree while
product code never imports the development stack.

The secret is per state directory (file mode 0600) so that two local stacks never accept each other's
tokens, and it is never logged.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

ISSUER = "meshhook-localstack"
KEY_LIFETIME = 10 * 365 * 24 * 3600
"""Anon and service keys live ten years, like the demo keys of ``supabase start``."""
USER_TOKEN_LIFETIME = 3600
SECRET_FILE = Path("gateway") / "jwt-secret"


class TokenError(Exception):
    """A token that must be refused; ``code`` is the Data API error code, ``expired`` tells why."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired

    @property
    def code(self) -> str:
        return "PGRST303" if self.expired else "PGRST301"


@dataclass(frozen=True)
class Claims:
    """A verified token: the raw claims plus the fields the gateway acts on."""

    raw: dict[str, Any]

    @property
    def role(self) -> str:
        return str(self.raw["role"])

    @property
    def sub(self) -> str | None:
        sub = self.raw.get("sub")
        return None if sub is None else str(sub)

    @property
    def exp(self) -> float | None:
        exp = self.raw.get("exp")
        return float(exp) if isinstance(exp, int | float) else None


class JwtKeys:
    """Mint and verify the tokens of one local project."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret

    @property
    def secret(self) -> str:
        return self._secret

    def __repr__(self) -> str:  # never show the secret in tracebacks or logs
        return "JwtKeys(secret=<hidden>)"

    # -- minting --------------------------------------------------------------------------------
    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _key(self, role: str) -> str:
        # iat fixed at 0 so that the keys of a state dir are stable strings (like Supabase's)
        return self.sign({"iss": ISSUER, "role": role, "iat": 0, "exp": KEY_LIFETIME + 1_700_000_000})

    @property
    def anon_key(self) -> str:
        return self._key("anon")

    @property
    def service_role_key(self) -> str:
        return self._key("service_role")

    def user_token(
        self,
        user_id: uuid.UUID | str,
        *,
        expires_in: float = USER_TOKEN_LIFETIME,
        email: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """An access token as Supabase Auth issues it for a signed-in user."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": "authenticated",
            "role": "authenticated",
            "sub": str(uuid.UUID(str(user_id))),
            "iat": now,
            "exp": int(now + expires_in),
            "email": email or "",
            "app_metadata": {"provider": "localstack", "providers": ["localstack"]},
            "user_metadata": {},
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        claims.update(extra or {})
        return self.sign(claims)

    # -- verification ---------------------------------------------------------------------------
    def verify(self, token: str, *, require_exp: bool = False) -> Claims:
        """Claims of a valid token, else :class:`TokenError` with a Supabase-like message."""
        if not token:
            raise TokenError("No suitable key or wrong key type")
        try:
            raw = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"verify_aud": False, "require": ["exp"] if require_exp else []},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("JWT expired", expired=True) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("JWT has no exp claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("JWSError JWSInvalidSignature") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(
                "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts)"
            ) from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("role"), str) or not raw["role"]:
            raise TokenError("JWT has no role claim")
        return Claims(raw)


def load_or_create_secret(state_dir: Path) -> str:
    """The state dir's JWT secret, created (0600) on first use."""
    path = state_dir / SECRET_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def keys_for_state_dir(state_dir: Path) -> JwtKeys:
    return JwtKeys(load_or_create_secret(state_dir.resolve()))
