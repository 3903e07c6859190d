"""The gateway's JWTs: the names of :mod:`meshhook_rt_metrics.jwt_keys`, which the HTTP service shares.

The code lives in the neutral module so that product code (``api/``) never imports the local stack; this
module keeps the gateway's (and its tests') imports working.
"""

from __future__ import annotations

from meshhook_rt_metrics.jwt_keys import (
    ISSUER,
    KEY_LIFETIME,
    SECRET_FILE,
    USER_TOKEN_LIFETIME,
    Claims,
    JwtKeys,
    TokenError,
    keys_for_state_dir,
    load_or_create_secret,
)

__all__ = [
    "ISSUER",
    "KEY_LIFETIME",
    "SECRET_FILE",
    "USER_TOKEN_LIFETIME",
    "Claims",
    "JwtKeys",
    "TokenError",
    "keys_for_state_dir",
    "load_or_create_secret",
]
