"""Data API (PostgREST) semantics for RPC: ``/rest/v1/rpc/<function>``.

Each call runs in its own transaction on an ``authenticator`` connection that switches to the token's
role and carries the claims in ``request.jwt.claims``, so that row-level security and ``auth.uid()``
behave exactly as on Supabase. Named JSON arguments are converted by ``json_to_record`` with the
function's declared types, never by string interpolation.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshhook_rt_metrics.localstack.gateway.auth import AuthFailure, authenticate
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig, connection_pool
from meshhook_rt_metrics.localstack.gateway.keys import Claims

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
STATEMENT_TIMEOUT = "8s"
"""Supabase's default for the ``authenticated`` role."""
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_HIDDEN_HEADERS = {"authorization", "apikey", "cookie"}


def error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "details": details, "hint": hint, "message": message}, status_code=status
    )


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit`` (never buffers more than that)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def pg_status(sqlstate: str, authed: bool) -> int:
    """HTTP status for a PostgreSQL error, following PostgREST's table."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
        "21000": 500,
    }
    if sqlstate == "42501":
        return 403 if authed else 401
    if sqlstate in exact:
        return exact[sqlstate]
    prefixes = {
        "08": 503,
        "09": 500,
        "0L": 403,
        "0P": 403,
        "25": 500,
        "28": 403,
        "2D": 500,
        "38": 500,
        "39": 500,
        "3B": 500,
        "40": 500,
        "53": 503,
        "54": 500,
        "55": 500,
        "57": 500,
        "58": 500,
        "F0": 500,
        "HV": 500,
        "P0": 500,
        "XX": 500,
    }
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return prefixes.get(sqlstate[:2], 400)


@dataclass(frozen=True)
class Function:
    """One overload of a function as the catalog describes it."""

    schema: str
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    n_defaults: int
    returns_set: bool
    return_type: str
    return_kind: str

    @property
    def required(self) -> set[str]:
        return set(self.arg_names[: len(self.arg_names) - self.n_defaults])

    @property
    def single_unnamed_json(self) -> bool:
        return len(self.arg_types) == 1 and self.arg_names == ("",) and self.arg_types[0] in ("json", "jsonb")

    def signature(self) -> str:
        return f"{self.schema}.{self.name}({', '.join(self.arg_names)})"


_LOOKUP = """
select p.proname::text, coalesce(p.proargnames, '{}')::text[], coalesce(p.proargmodes::text[], '{}'),
       coalesce(p.proallargtypes, p.proargtypes::oid[])::oid[],
       coalesce((select array_agg(format_type(u.t, null) order by u.o)
                   from unnest(p.proargtypes::oid[]) with ordinality u(t, o)), '{}')::text[],
       p.pronargdefaults,
       p.proretset, format_type(p.prorettype, null), t.typtype::text
  from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
  join pg_type t on t.oid = p.prorettype
 where n.nspname = %s and p.proname = %s and p.prokind = 'f'
"""


async def lookup(conn: psycopg.AsyncConnection[Any], schema: str, name: str) -> list[Function]:
    cur = await conn.execute(_LOOKUP, (schema, name))
    rows = await cur.fetchall()
    found: list[Function] = []
    for proname, names, arg_modes, all_types, in_types, n_defaults, retset, rettype, typtype in rows:
        modes = arg_modes or ["i"] * len(all_types)
        in_names = [
            (names[i] if i < len(names) else "") for i, mode in enumerate(modes) if mode in ("i", "b", "v")
        ]
        found.append(
            Function(
                schema,
                proname,
                tuple(in_names),
                tuple(in_types),
                int(n_defaults),
                bool(retset),
                rettype,
                typtype,
            )
        )
    return found


def choose(functions: list[Function], keys: set[str]) -> Function | list[Function] | None:
    """The overload the named arguments select (PostgREST's rule); a list when ambiguous."""
    matches = [f for f in functions if all(f.arg_names) and keys <= set(f.arg_names) and f.required <= keys]
    if not matches:
        matches = [f for f in functions if f.single_unnamed_json]
    if len(matches) > 1:
        return matches
    return matches[0] if matches else None


def call_statement(fn: Function, keys: set[str]) -> sql.Composed:
    """``select <json of the result> from fn(a => _.a, ...)`` with arguments from ``json_to_record``."""
    target = sql.SQL("{}.{}").format(sql.Identifier(fn.schema), sql.Identifier(fn.name))
    if fn.single_unnamed_json:
        call = sql.SQL("{}(%(body)s::{})").format(target, sql.SQL(fn.arg_types[0]))
        source: sql.Composable = sql.SQL("")
    else:
        used = [(n, t) for n, t in zip(fn.arg_names, fn.arg_types, strict=True) if n in keys]
        call = sql.SQL("{}({})").format(
            target,
            sql.SQL(", ").join(
                sql.SQL("{} => _args.{}").format(sql.Identifier(n), sql.Identifier(n)) for n, _ in used
            ),
        )
        source = (
            sql.SQL(", json_to_record(%(body)s::json) as _args({})").format(
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in used)
            )
            if used
            else sql.SQL("")
        )
    if fn.return_type == "void":
        return sql.SQL("select {}, null::text from (select 1) _one{}").format(call, source)
    if fn.returns_set:
        return sql.SQL(
            "select coalesce(json_agg(_r), '[]'::json)::text from (select 1) _one{}, lateral {} _r"
        ).format(source, call)
    return sql.SQL("select to_json(_r)::text from (select 1) _one{}, lateral {} _r").format(source, call)


def query_arguments(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Named arguments of a ``GET`` call (the ``apikey`` parameter is not one)."""
    return {key: value for key, value in items if key != "apikey"}


def body_arguments(raw: bytes) -> dict[str, Any] | JSONResponse:
    """Named arguments of a ``POST`` body, else a ``PGRST102`` answer (never an exception)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, ints over 4,300 digits, deep nesting
        details = str(exc) if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        return error(400, "PGRST102", "Empty or invalid json", details=details)
    if not isinstance(body, dict):
        return error(400, "PGRST102", "Invalid body: expected a JSON object of named arguments")
    return body


def encode_arguments(args: dict[str, Any]) -> str | JSONResponse:
    """The arguments as JSON text for ``json_to_record``, else a ``PGRST102`` answer."""
    try:
        return json.dumps(args)
    except (ValueError, RecursionError) as exc:
        return error(400, "PGRST102", "Empty or invalid json", details=type(exc).__name__)


class DataApi:
    """RPC endpoint over a pool of ``authenticator`` connections."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pool = connection_pool(config.authenticator_url, "meshhook-gateway-rest")

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    def _schema(self, request: Request) -> str | JSONResponse:
        header = "content-profile" if request.method == "POST" else "accept-profile"
        schema = request.headers.get(header) or self.config.exposed_schemas[0]
        if schema not in self.config.exposed_schemas:
            return error(
                406,
                "PGRST106",
                "Invalid schema: " + schema,
                hint="Only the following schemas are exposed: " + ", ".join(self.config.exposed_schemas),
            )
        return schema

    async def _arguments(self, request: Request) -> dict[str, Any] | JSONResponse:
        if request.method == "GET":
            return query_arguments(request.query_params.multi_items())
        raw = await read_limited(request, MAX_BODY_BYTES)
        if raw is None:
            return error(413, "PGRST413", f"Payload too large: the limit is {MAX_BODY_BYTES} bytes")
        return body_arguments(raw)

    async def rpc(self, request: Request) -> Response:
        try:
            claims = authenticate(request, self.config.keys)
        except AuthFailure as failure:
            return failure.response
        schema = self._schema(request)
        if isinstance(schema, JSONResponse):
            return schema
        args = await self._arguments(request)
        if isinstance(args, JSONResponse):
            return args
        body = encode_arguments(args)
        if isinstance(body, JSONResponse):
            return body
        name = request.path_params["name"]
        if "\x00" in name or "\x00" in schema or any("\x00" in key for key in args):
            # PostgreSQL text cannot hold NUL: no function has such a name
            return error(404, "PGRST202", "Could not find the function in the schema cache")
        try:
            async with self.pool.connection() as conn:
                return await self._call(conn, request, claims, schema, name, args, body)
        except PoolTimeout:
            return error(503, "PGRST000", "Database client error. Retrying the connection.")
        except psycopg.OperationalError as exc:
            log.warning(
                "rpc %s.%s: database unavailable: %s", schema, name, exc.sqlstate or type(exc).__name__
            )
            return error(503, "PGRST000", "Database client error. Retrying the connection.")

    async def _call(
        self,
        conn: psycopg.AsyncConnection[Any],
        request: Request,
        claims: Claims,
        schema: str,
        name: str,
        args: dict[str, Any],
        body: str,
    ) -> Response:
        functions = await lookup(conn, schema, name)
        chosen = choose(functions, set(args))
        if chosen is None:
            listed = ", ".join(sorted(args))
            return error(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{name}({listed}) in the schema cache",
                details=(
                    f"Searched for the function {schema}.{name} with parameters {listed} or with a single "
                    "unnamed json/jsonb parameter, but no matches were found in the schema cache."
                ),
                hint=None,
            )
        if isinstance(chosen, list):
            return error(
                300,
                "PGRST203",
                f"Could not choose the best candidate function between: {', '.join(f.signature() for f in chosen)}",
                hint="Try renaming the parameters or the function itself in the database so function overloading can be resolved",
            )
        statement = call_statement(chosen, set(args))
        settings = self._settings(request, claims, schema)
        authed = claims.role != "anon"
        try:
            async with conn.transaction():
                if request.method == "GET":
                    await conn.execute("set transaction read only")
                await conn.execute(
                    sql.SQL("select {}").format(
                        sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in settings)
                    ),
                    [item for pair in settings for item in pair],
                )
                await conn.execute("select set_config('role', %s, true)", (claims.role,))
                cur = await conn.execute(statement, {"body": body})
                row = await cur.fetchone()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and not (exc.sqlstate or "").startswith("28"):
                raise  # the connection failed; 28xxx raised by a function is the function's answer (403)
            diag = exc.diag
            sqlstate = exc.sqlstate or "XX000"
            if sqlstate == "22023" and (diag.message_primary or "").startswith('role "'):
                # an unknown role in a valid token: PostgREST answers 401
                return error(401, "PGRST301", diag.message_primary or "invalid role")
            return error(
                pg_status(sqlstate, authed),
                sqlstate,
                diag.message_primary or str(exc),
                diag.message_detail,
                diag.message_hint,
            )
        if chosen.return_type == "void":
            return Response(status_code=204)
        body = row[0] if row and row[0] is not None else "null"
        return Response(body, media_type="application/json", headers={"Content-Profile": schema})

    def _settings(self, request: Request, claims: Claims, schema: str) -> list[tuple[str, str]]:
        headers = {k: v for k, v in request.headers.items() if k not in _HIDDEN_HEADERS}
        settings = [
            ("search_path", f'"{schema}", public, extensions' if '"' not in schema else "public"),
            ("statement_timeout", STATEMENT_TIMEOUT),
            ("request.jwt.claims", json.dumps(claims.raw)),
            ("request.method", request.method),
            ("request.path", request.url.path),
            ("request.headers", json.dumps(headers)),
        ]
        for key, value in claims.raw.items():
            if _CLAIM_NAME.match(key):
                text = value if isinstance(value, str) else json.dumps(value)
                settings.append((f"request.jwt.claim.{key}", text))
        return settings
