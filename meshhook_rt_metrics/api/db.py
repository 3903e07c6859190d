"""The service's connection pool; every user query runs in a transaction AS THE CALLER."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from meshhook_rt_metrics.api.errors import from_database
from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.db.health import rollup_health
from meshhook_rt_metrics.db.session import as_caller

ANON_CLAIMS: dict[str, Any] = {"role": "anon"}


class Database:
    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, statement_timeout_ms: int = 15000
    ) -> None:
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "application_name": "meshhook-metrics-api"},
            check=ConnectionPool.check_connection,
            timeout=10.0,
            name="meshhook-metrics-api",
        )
        self.statement_timeout_ms = statement_timeout_ms

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def caller(
        self, claims: Mapping[str, Any], *, one_snapshot: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside a transaction running as the JWT's role with its claims (``one_snapshot``:
        repeatable read, every statement seeing the database as of the first).

        Database errors become :class:`ApiError` (401/403 depend on the caller's role).
        """
        try:
            with self.pool.connection() as conn, as_caller(conn, claims, one_snapshot=one_snapshot):
                conn.execute(
                    "select set_config('statement_timeout', %s, true)", (str(self.statement_timeout_ms),)
                )
                yield conn
        except psycopg.Error as exc:
            raise from_database(exc, str(claims.get("role"))) from exc

    def health(self) -> dict[str, Any]:
        """Database reachable and migrations current (as the service's login role)."""
        expected = [m.version for m in migrator.discover()]
        with self.pool.connection(timeout=5.0) as conn:
            conn.execute("select 1")
            try:
                with conn.transaction():
                    applied = migrator.applied_versions(conn)
            except psycopg.errors.InsufficientPrivilege:
                return {
                    "database": "ok",
                    "migrations": "unknown",
                    "detail": "no access to the migration history",
                }
            rollups = rollup_health(conn)
        pending = [v for v in expected if v not in applied]
        return {
            "database": "ok",
            "migrations": "current" if not pending else "pending",
            "expected": len(expected),
            "applied": len(applied),
            "pending": pending,
            **rollups,
        }
