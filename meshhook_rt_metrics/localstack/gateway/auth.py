"""Request authentication shared by the HTTP routes, as Supabase's API gateway does it.

The ``apikey`` (header or query) must be one of the project's keys — the anon key or the service role
key, not just any token signed with the secret; ``Authorization: Bearer`` carries the caller's token
and falls back to the apikey when absent. The caller's token must carry ``exp`` and ``iss`` (every token
the stack issues does: keys, ``meshhook-metrics token``, ``/auth/v1`` sessions, the alert worker's).
"""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from meshhook_rt_metrics.localstack.gateway.keys import Claims, JwtKeys, TokenError


def is_project_key(apikey: str, keys: JwtKeys) -> bool:
    """Whether ``apikey`` is the anon or the service role key (compared in constant time)."""
    given = apikey.encode()
    return any(hmac.compare_digest(given, key.encode()) for key in (keys.anon_key, keys.service_role_key))


def verify_token(token: str, keys: JwtKeys) -> Claims:
    """Claims of a caller's token: valid signature, a ``role``, a future ``exp`` and an ``iss``."""
    claims = keys.verify(token, require_exp=True)
    iss = claims.raw.get("iss")
    if not isinstance(iss, str) or not iss:
        raise TokenError("JWT has no iss claim")
    return claims


class AuthFailure(Exception):  # noqa: N818  (an answer, not an error of ours)
    """The request carries no acceptable credentials; ``response`` is what to answer."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(conn: HTTPConnection, keys: JwtKeys) -> Claims:
    """The verified claims of the caller, else :class:`AuthFailure` with a Supabase-shaped body."""
    apikey = conn.headers.get("apikey") or conn.query_params.get("apikey")
    token = bearer(conn)
    if not apikey and not token:
        raise AuthFailure(
            JSONResponse(
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
                status_code=401,
            )
        )
    if apikey and not is_project_key(apikey, keys):
        raise AuthFailure(
            JSONResponse(
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
                status_code=401,
            )
        )
    try:
        return verify_token(token or apikey or "", keys)
    except TokenError as exc:
        raise AuthFailure(
            JSONResponse(
                {"code": exc.code, "details": None, "hint": None, "message": str(exc)},
                status_code=401,
                headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc}"'},
            )
        ) from exc
