"""Run SQL as a Data API caller: the role and JWT claims PostgREST would set, for one transaction.

Row-level security then decides what the caller sees; nothing is filtered in Python.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

CALLER_ROLES = frozenset({"anon", "authenticated", "service_role"})


def claims_for_user(user_id: str, role: str = "authenticated", **extra: Any) -> dict[str, Any]:
    """The claims of a signed-in user's access token (what ``auth.uid()``/``auth.role()`` read)."""
    return {"sub": str(user_id), "role": role, "aud": "authenticated", **extra}


@contextmanager
def as_caller(
    conn: psycopg.Connection[Any], claims: Mapping[str, Any], *, one_snapshot: bool = False
) -> Iterator[psycopg.Connection[Any]]:
    """A transaction in which ``conn`` acts as the JWT's role with ``request.jwt.claims`` set.

    The login role must be allowed to ``SET ROLE`` to the claim's role (``authenticator`` on Supabase,
    ``postgres`` locally). Everything is transaction-local, as in PostgREST. ``one_snapshot``: every statement
    sees the database as of the first one (repeatable read), for reads that must agree with each other.
    """
    role = str(claims.get("role", ""))
    if role not in CALLER_ROLES:
        raise ValueError(f"JWT role {role!r} is not one of {sorted(CALLER_ROLES)}")
    with conn.transaction():
        if one_snapshot:
            conn.execute("set transaction isolation level repeatable read")
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(dict(claims)),))
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(claims.get("sub", "")),))
        conn.execute("select set_config('request.jwt.claim.role', %s, true)", (role,))
        yield conn
