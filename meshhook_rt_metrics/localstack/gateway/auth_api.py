"""Email + password sign-in as Supabase Auth (GoTrue) serves it: ``/auth/v1/token``, ``/user``, ``/logout``.

Local stack only. Users live in the ``auth.users`` look-alike (bootstrap_gateway.sql) with bcrypt hashes;
a sign-in opens a row of ``auth.sessions`` and a refresh token (stored as its SHA-256 digest) in
``auth.refresh_tokens``. Refresh tokens rotate: each is good for one refresh; presenting a used one again
is refused and, as GoTrue does when reuse detection fires, revokes the whole session. Sign-out deletes
sessions, so their refresh tokens stop working at once (access tokens stay valid until they expire, as
on Supabase, except on ``/auth/v1/user``, which checks that the session still exists).

Errors follow GoTrue: ``{"code": <status>, "error_code", "msg"}``, or ``{"code": <error_code>, "message"}``
when the request names API version 2024-01-01 or later in ``X-Supabase-Api-Version`` (what auth-js and
supabase-py send); both clients read either shape.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from typing import Any

import bcrypt
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshhook_rt_metrics.localstack.gateway.auth import bearer, is_project_key
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig, connection_pool
from meshhook_rt_metrics.localstack.gateway.keys import TokenError
from meshhook_rt_metrics.localstack.gateway.rest import read_limited

log = logging.getLogger(__name__)

API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION = "2024-01-01"
BCRYPT_ROUNDS = 10
"""GoTrue's cost (Go's ``bcrypt.DefaultCost``)."""
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72
"""bcrypt reads no further; longer passwords are refused rather than silently truncated."""
MAX_BODY_BYTES = 64 * 1024
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DUMMY_HASH = bcrypt.hashpw(b"meshhook-no-such-user", bcrypt.gensalt(BCRYPT_ROUNDS))
_VERSION = re.compile(r"^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class UserInputError(ValueError):
    """An email or password the stack refuses to store."""


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 255 or not EMAIL.match(email):
        raise UserInputError(f"invalid email address: {email!r}")
    return email


def check_password(password: str) -> bytes:
    raw = password.encode("utf-8")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserInputError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise UserInputError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    return raw


def hash_password(password: str) -> str:
    return bcrypt.hashpw(check_password(password), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


def verify_password(password: str, hashed: str | None) -> bool:
    """Constant work whether or not the user exists (no user enumeration by timing)."""
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD_BYTES or not hashed:
        bcrypt.checkpw(b"x", _DUMMY_HASH)
        return False
    try:
        return bcrypt.checkpw(raw, hashed.encode("ascii"))
    except ValueError:
        return False


def upsert_user(conn: psycopg.Connection[Any], email: str, password: str) -> uuid.UUID:
    """Create the user or set a new password (re-hashed); the caller owns the transaction."""
    hashed = hash_password(password)
    row = conn.execute(
        "insert into auth.users (email, encrypted_password) values (%s, %s)"
        " on conflict (email) do update set encrypted_password = excluded.encrypted_password,"
        " updated_at = now() returning id",
        (normalise_email(email), hashed),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def user_object(row: dict[str, Any]) -> dict[str, Any]:
    """The user as GoTrue returns it."""
    return {
        "id": str(row["id"]),
        "aud": row["aud"],
        "role": row["role"],
        "email": row["email"],
        "email_confirmed_at": _iso(row["email_confirmed_at"]),
        "confirmed_at": _iso(row["email_confirmed_at"]),
        "phone": "",
        "last_sign_in_at": _iso(row["last_sign_in_at"]),
        "app_metadata": row["raw_app_meta_data"],
        "user_metadata": row["raw_user_meta_data"],
        "identities": [],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "is_anonymous": False,
    }


class AuthError(Exception):
    """A GoTrue error answer: HTTP status, ``error_code`` and message."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


_USER_COLUMNS = (
    "id, aud, role, email, encrypted_password, email_confirmed_at, last_sign_in_at,"
    " raw_app_meta_data, raw_user_meta_data, created_at, updated_at"
)


class AuthApi:
    """The ``/auth/v1`` routes over a pool of connections as ``postgres`` (the tables' only reader)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pool = connection_pool(config.db_url, "meshhook-gateway-auth")
        self.access_token_lifetime = config.access_token_lifetime

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    # -- responses ------------------------------------------------------------------------------
    @staticmethod
    def _versioned(request: Request) -> bool:
        value = request.headers.get(API_VERSION_HEADER, "")
        return bool(_VERSION.match(value)) and value >= API_VERSION

    def _error(self, request: Request, failure: AuthError) -> JSONResponse:
        body: dict[str, Any]
        if self._versioned(request):
            # error_code too: a browser cannot read the version header unless CORS exposes it
            body = {"code": failure.error_code, "error_code": failure.error_code, "message": failure.message}
        else:
            body = {"code": failure.status, "error_code": failure.error_code, "msg": failure.message}
        return JSONResponse(body, status_code=failure.status, headers={API_VERSION_HEADER: API_VERSION})

    @staticmethod
    def _ok(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, headers={API_VERSION_HEADER: API_VERSION, "Cache-Control": "no-store"})

    def _check_apikey(self, request: Request) -> None:
        apikey = request.headers.get("apikey") or request.query_params.get("apikey")
        if not apikey:
            raise AuthError(401, "no_api_key", "No API key found in request")
        if not is_project_key(apikey, self.config.keys):  # the anon or service key, not any token
            raise AuthError(401, "invalid_api_key", "Invalid API key")

    async def _json(self, request: Request) -> dict[str, Any]:
        raw = await read_limited(request, MAX_BODY_BYTES)
        if raw is None:
            raise AuthError(413, "request_too_large", "Request body too large")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge ints, deep nesting
            raise AuthError(400, "bad_json", "Could not parse request body as JSON") from exc
        if not isinstance(body, dict):
            raise AuthError(400, "bad_json", "Could not parse request body as JSON: expected an object")
        return body

    async def _guard(self, request: Request, handler: Any) -> Response:
        try:
            self._check_apikey(request)
            result: Response = await handler(request)
            return result
        except AuthError as failure:
            return self._error(request, failure)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("auth: database unavailable: %s", type(exc).__name__)
            return self._error(request, AuthError(503, "unexpected_failure", "Database unavailable"))
        except psycopg.Error as exc:  # e.g. a database bootstrapped before the auth tables existed
            log.error("auth: database error %s: %s", exc.sqlstate, type(exc).__name__)
            return self._error(request, AuthError(500, "unexpected_failure", "Unexpected database error"))

    # -- routes ---------------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        return await self._guard(request, self._token)

    async def user(self, request: Request) -> Response:
        return await self._guard(request, self._user)

    async def logout(self, request: Request) -> Response:
        return await self._guard(request, self._logout)

    async def not_found(self, request: Request) -> Response:
        return self._error(request, AuthError(404, "not_found", "Unhandled path"))

    async def _token(self, request: Request) -> Response:
        grant = request.query_params.get("grant_type", "")
        body = await self._json(request)
        if grant == "password":
            return await self._password_grant(body)
        if grant == "refresh_token":
            return await self._refresh_grant(body)
        raise AuthError(400, "unsupported_grant_type", "unsupported_grant_type")

    async def _password_grant(self, body: dict[str, Any]) -> Response:
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not email.strip():
            raise AuthError(422, "validation_failed", "An email address is required")
        if not isinstance(password, str) or not password:
            raise AuthError(422, "validation_failed", "A password is required")
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"select {_USER_COLUMNS} from auth.users where email = %s", (email.strip().lower(),)
            )
            row = await cur.fetchone()
        hashed = None if row is None else str(row["encrypted_password"])
        if not await asyncio.to_thread(verify_password, password, hashed) or row is None:
            raise AuthError(400, "invalid_credentials", "Invalid login credentials")
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"update auth.users set last_sign_in_at = now() where id = %s returning {_USER_COLUMNS}",
                (row["id"],),
            )
            user = await cur.fetchone()
            if user is None:  # deleted meanwhile
                raise AuthError(400, "invalid_credentials", "Invalid login credentials")
            await cur.execute("insert into auth.sessions (user_id) values (%s) returning id", (user["id"],))
            session = await cur.fetchone()
            assert session is not None
            refresh = await self._new_refresh_token(cur, user["id"], session["id"], None)
        return self._ok(self._session(user, session["id"], refresh))

    async def _refresh_grant(self, body: dict[str, Any]) -> Response:
        presented = body.get("refresh_token")
        if not isinstance(presented, str) or not presented:
            raise AuthError(422, "validation_failed", "A refresh_token is required")
        digest = token_digest(presented)
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "select id, user_id, session_id, revoked from auth.refresh_tokens where token = %s"
                    " for update",
                    (digest,),
                )
                current = await cur.fetchone()
                if current is None:
                    raise AuthError(
                        400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
                    )
                if not current["revoked"]:
                    await cur.execute(
                        "update auth.refresh_tokens set revoked = true, updated_at = now() where id = %s",
                        (current["id"],),
                    )
                    await cur.execute(
                        "update auth.sessions set refreshed_at = now(), updated_at = now() where id = %s",
                        (current["session_id"],),
                    )
                    await cur.execute(
                        f"select {_USER_COLUMNS} from auth.users where id = %s", (current["user_id"],)
                    )
                    user = await cur.fetchone()
                    if user is None:
                        raise AuthError(
                            400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
                        )
                    refresh = await self._new_refresh_token(cur, user["id"], current["session_id"], digest)
                    return self._ok(self._session(user, current["session_id"], refresh))
            # a used token presented again: possibly stolen, so the session ends (GoTrue's reuse detection)
            await conn.execute("delete from auth.sessions where id = %s", (current["session_id"],))
        log.info("auth: a used refresh token was presented again; its session is revoked")
        raise AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")

    @staticmethod
    async def _new_refresh_token(
        cur: psycopg.AsyncCursor[dict[str, Any]], user_id: Any, session_id: Any, parent: str | None
    ) -> str:
        token = secrets.token_urlsafe(24)
        await cur.execute(
            "insert into auth.refresh_tokens (token, user_id, session_id, parent) values (%s, %s, %s, %s)",
            (token_digest(token), user_id, session_id, parent),
        )
        return token

    def _session(self, user: dict[str, Any], session_id: Any, refresh: str) -> dict[str, Any]:
        now = int(time.time())
        expires_at = now + self.access_token_lifetime
        claims = {
            "iss": f"{self.config.public_url}/auth/v1",
            "aud": "authenticated",
            "role": "authenticated",
            "sub": str(user["id"]),
            "iat": now,
            "exp": expires_at,
            "email": user["email"],
            "phone": "",
            "app_metadata": user["raw_app_meta_data"],
            "user_metadata": user["raw_user_meta_data"],
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": str(session_id),
            "is_anonymous": False,
        }
        return {
            "access_token": self.config.keys.sign(claims),
            "token_type": "bearer",
            "expires_in": self.access_token_lifetime,
            "expires_at": expires_at,
            "refresh_token": refresh,
            "user": user_object(user),
        }

    async def _caller(self, request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        """The signed-in user of the bearer token and the token's claims."""
        token = bearer(request)
        if token is None:
            raise AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        try:
            claims = self.config.keys.verify(token, require_exp=True).raw
        except TokenError as exc:
            raise AuthError(
                403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}"
            ) from exc
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError as exc:
            raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim") from exc
        session_id = claims.get("session_id")
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"select {_USER_COLUMNS} from auth.users where id = %s", (user_id,))
            user = await cur.fetchone()
            if user is None:
                raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
            if session_id is not None:
                try:
                    sid = uuid.UUID(str(session_id))
                except ValueError as exc:
                    raise AuthError(403, "bad_jwt", "invalid claim: session_id is not a UUID") from exc
                await cur.execute(
                    "select 1 from auth.sessions where id = %s and user_id = %s", (sid, user_id)
                )
                if await cur.fetchone() is None:
                    raise AuthError(
                        403, "session_not_found", "Session from session_id claim in JWT does not exist"
                    )
        return user, claims

    async def _user(self, request: Request) -> Response:
        user, _claims = await self._caller(request)
        return self._ok(user_object(user))

    async def _logout(self, request: Request) -> Response:
        scope = request.query_params.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise AuthError(422, "validation_failed", f"Unsupported logout scope {scope!r}")
        user, claims = await self._caller(request)
        session_id = claims.get("session_id")
        async with self.pool.connection() as conn:
            if scope == "global":
                await conn.execute("delete from auth.sessions where user_id = %s", (user["id"],))
            elif scope == "local" and session_id is not None:
                await conn.execute("delete from auth.sessions where id = %s", (str(session_id),))
            elif scope == "others":
                await conn.execute(
                    "delete from auth.sessions where user_id = %s and id is distinct from %s::uuid",
                    (user["id"], None if session_id is None else str(session_id)),
                )
        return Response(status_code=204, headers={API_VERSION_HEADER: API_VERSION})
