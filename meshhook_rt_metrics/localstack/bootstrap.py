"""Prepare a database of the local cluster so it looks like a Supabase database to our migrations."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from meshhook_rt_metrics.localstack.postgres import LocalPostgres

OPTIONAL_EXTENSIONS = ("pgtap", "plpgsql_check")


def bootstrap_sql() -> str:
    return (resources.files("meshhook_rt_metrics.localstack") / "bootstrap.sql").read_text(encoding="utf-8")


def bootstrap_gateway_sql() -> str:
    """Local-only objects the gateway's Realtime server needs (applied after the look-alike)."""
    return (resources.files("meshhook_rt_metrics.localstack") / "bootstrap_gateway.sql").read_text(
        encoding="utf-8"
    )


def bootstrap_database(cluster: LocalPostgres, database: str = "postgres") -> list[str]:
    """Apply the look-alike objects and the optional extensions; returns the extensions enabled."""
    enabled: list[str] = []
    with psycopg.connect(cluster.admin_url(database), autocommit=True) as conn:
        conn.execute(bootstrap_sql().encode())
        conn.execute(bootstrap_gateway_sql().encode())
        set_role_passwords(conn, cluster)
        for name in OPTIONAL_EXTENSIONS:
            if cluster.binaries.has_extension(name):
                conn.execute(f"create extension if not exists {name} with schema extensions")
                enabled.append(name)
        if database == "postgres" and "pg_cron" in cluster.preload_libraries():
            conn.execute("create extension if not exists pg_cron")
            conn.execute("grant usage on schema cron to postgres")
            conn.execute("grant all on all tables in schema cron to postgres")
            conn.execute("grant all on all sequences in schema cron to postgres")
            enabled.append("pg_cron")
    return enabled


def set_role_passwords(conn: psycopg.Connection[Any], cluster: LocalPostgres) -> None:
    """Give the login roles the state dir's generated passwords, sent as SCRAM verifiers (the server never
    sees nor logs the plain text)."""
    for role, password in cluster.ensure_passwords().items():
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(verifier.decode()))
        )


def create_database(cluster: LocalPostgres, name: str, template: str | None = None) -> None:
    """A new database owned by the admin (as on Supabase), bootstrapped unless cloned from a template."""
    with psycopg.connect(cluster.admin_url(), autocommit=True) as conn:
        clause = f' template "{template}"' if template else ""
        conn.execute(f'create database "{name}"{clause}')
        # database-level grants and settings are not copied from a template
        conn.execute(f'grant create, connect, temporary on database "{name}" to postgres')
        conn.execute(f'alter database "{name}" set search_path = "$user", public, extensions')
    if template is None:
        bootstrap_database(cluster, name)


def drop_database(cluster: LocalPostgres, name: str) -> None:
    with psycopg.connect(cluster.admin_url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
