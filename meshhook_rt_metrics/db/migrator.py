"""Apply ``supabase/migrations`` and record them exactly where the Supabase CLI does.

The history table is ``supabase_migrations.schema_migrations(version, statements, name)``, so
``supabase migration list|up`` and ``meshhook-metrics migrate`` can follow each other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

FILENAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")

HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key,
    statements text[],
    name text
);
"""


# a migration's transaction may lose a lock race with the database's own jobs (pg_cron's rollup passes and
# maintenance, scheduled by the migrations before it, run while the later ones apply): it is rolled back whole,
# so it is applied again, a few times
TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
ATTEMPTS = 4


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """The repository's ``supabase/migrations`` in a checkout, else the copy shipped in the wheel."""
    checkout = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("meshhook_rt_metrics") / "_sql" / "migrations"))


def discover(directory: Path | None = None) -> list[Migration]:
    """Migration files in version order; a misnamed ``.sql`` file is an error, not silently skipped."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILENAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: migration files are named <14-digit version>_<snake_name>.sql"
            )
        found.append(Migration(match["version"], match["name"], path))
    return found


def applied_versions(conn: psycopg.Connection) -> set[str]:
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return set()
    return {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}


def pending(conn: psycopg.Connection, directory: Path | None = None) -> list[Migration]:
    done = applied_versions(conn)
    return [m for m in discover(directory) if m.version not in done]


def migrate(
    db_url: str,
    directory: Path | None = None,
    progress: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply every pending migration, each in its own transaction with its history row."""
    applied: list[Migration] = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(HISTORY_DDL)
        for migration in pending(conn, directory):
            if progress:
                progress(migration)
            _apply(conn, migration)
            applied.append(migration)
    return applied


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    """One migration and its history row in one transaction; again after a deadlock or serialization failure."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, statements, name)"
                    " values (%s, %s, %s)",
                    (migration.version, [migration.sql], migration.name),
                )
            return
        except TRANSIENT as exc:
            if attempt == ATTEMPTS:
                raise MigrationError(f"{migration.path.name}: {exc} (after {ATTEMPTS} attempts)") from exc
            time.sleep(0.2 * attempt)
        except psycopg.Error as exc:
            raise MigrationError(f"{migration.path.name}: {exc}") from exc
