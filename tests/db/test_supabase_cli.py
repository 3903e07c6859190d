"""The migrations with the real, pinned Supabase CLI, and our migrator following it (and vice versa).

Everything connects as ``postgres``, which is NOT a superuser, exactly as on hosted Supabase.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from meshhook_rt_metrics.db import migrator
from meshhook_rt_metrics.localstack.bootstrap import create_database, drop_database
from meshhook_rt_metrics.localstack.postgres import LocalPostgres
from tests.support import TestDatabase

REPO = Path(__file__).resolve().parents[2]
SUPABASE = shutil.which("supabase") or str(REPO / "tools" / "node_modules" / ".bin" / "supabase")


def supabase(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned Supabase CLI against ``db_url`` with the repository as its workdir."""
    assert Path(SUPABASE).exists(), "Supabase CLI not found: run 'make install' (npm, tools/package.json)"
    return subprocess.run(
        [SUPABASE, *args, "--db-url", f"{db_url}?sslmode=disable", "--workdir", str(REPO)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{result.args}\nexit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def recorded_versions(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [
            row[0]
            for row in conn.execute("select version from supabase_migrations.schema_migrations order by 1")
        ]


def all_versions() -> list[str]:
    return [m.version for m in migrator.discover()]


@pytest.fixture
def bare_db(cluster: LocalPostgres) -> Iterator[TestDatabase]:
    """A bootstrapped database (Supabase look-alike) without any migration."""
    name = f"cli_{uuid.uuid4().hex[:12]}"
    create_database(cluster, name)
    yield TestDatabase(name=name, url=cluster.url(database=name), admin_url=cluster.admin_url(name))
    drop_database(cluster, name)


def test_migration_owner_is_not_a_superuser(bare_db: TestDatabase) -> None:
    """The premise of this module: the CLI runs as a role without superuser powers."""
    with psycopg.connect(bare_db.url) as conn:
        row = conn.execute(
            "select current_user, rolsuper from pg_roles where rolname = current_user"
        ).fetchone()
    assert row == ("postgres", False)


def test_supabase_migration_up_applies_everything_and_our_migrator_agrees(bare_db: TestDatabase) -> None:
    """``supabase migration up`` as non-superuser applies every file; then ``migrate`` finds nothing pending."""
    result = supabase("migration", "up", db_url=bare_db.url)
    assert result.returncode == 0, shown(result)
    for migration in migrator.discover():
        assert f"Applying migration {migration.path.name}" in result.stderr + result.stdout, shown(result)
    assert recorded_versions(bare_db.url) == all_versions()

    assert migrator.migrate(bare_db.url) == []
    with psycopg.connect(bare_db.url) as conn:
        assert conn.execute("select to_regprocedure('metrics.ingest(jsonb)') is not null").fetchone() == (
            True,
        )


def test_supabase_cli_sees_our_migrator_history(bare_db: TestDatabase) -> None:
    """After ``migrate``, ``migration list`` shows every version local and remote; ``migration up`` is a no-op."""
    applied = migrator.migrate(bare_db.url)
    assert [m.version for m in applied] == all_versions()

    listed = supabase("migration", "list", db_url=bare_db.url)
    assert listed.returncode == 0, shown(listed)
    rows = {
        match["local"]: match["remote"]
        for match in re.finditer(
            r"^\s*`?(?P<local>\d{14})?`?\s*\|\s*`?(?P<remote>\d{14})?`?\s*\|", listed.stdout, re.M
        )
    }
    for version in all_versions():
        assert rows.get(version) == version, f"{version} not applied locally and remotely\n{shown(listed)}"

    up = supabase("migration", "up", db_url=bare_db.url)
    assert up.returncode == 0, shown(up)
    assert "Applying migration" not in up.stdout + up.stderr, shown(up)
    assert recorded_versions(bare_db.url) == all_versions()


def test_supabase_db_lint_is_clean(fresh_db: TestDatabase) -> None:
    """``supabase db lint --fail-on error`` (plpgsql_check) finds no error in schema metrics."""
    with psycopg.connect(fresh_db.url) as conn:
        assert conn.execute(
            "select count(*) from pg_extension where extname = 'plpgsql_check'"
        ).fetchone() == (1,), (
            "plpgsql_check is not installed (Debian postgresql-15-plpgsql-check); lint cannot run"
        )
    result = supabase("db", "lint", "--schema", "metrics", "--fail-on", "error", db_url=fresh_db.url)
    assert result.returncode == 0, shown(result)


def test_meshhook_metrics_migrate_reports_progress_and_is_idempotent(bare_db: TestDatabase) -> None:
    """``meshhook-metrics migrate`` names each file it applies; a second run applies nothing."""
    command = [sys.executable, "-m", "meshhook_rt_metrics.cli", "migrate", "--db-url", bare_db.url]
    first = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, shown(first)
    for migration in migrator.discover():
        assert f"applying {migration.path.name}" in first.stderr, shown(first)
    assert f"{len(all_versions())} migration(s) applied" in first.stderr, shown(first)

    second = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, shown(second)
    assert "applying" not in second.stderr, shown(second)
    assert "0 migration(s) applied" in second.stderr, shown(second)
    assert recorded_versions(bare_db.url) == all_versions()


def test_misnamed_migration_file_is_rejected_before_anything_is_applied(
    bare_db: TestDatabase, tmp_path: Path
) -> None:
    """A ``.sql`` file not named ``<14 digits>_<snake_name>.sql`` is an error naming the file, not skipped."""
    (tmp_path / "20261126000100_good_one.sql").write_text("create table public.good_one (id int);\n")
    (tmp_path / "2026-11-26_Bad Name.sql").write_text("create table public.bad_one (id int);\n")

    with pytest.raises(migrator.MigrationError, match=r"2026-11-26_Bad Name\.sql: migration files are named"):
        migrator.discover(tmp_path)
    with pytest.raises(migrator.MigrationError, match=r"2026-11-26_Bad Name\.sql"):
        migrator.migrate(bare_db.url, directory=tmp_path)
    with psycopg.connect(bare_db.url) as conn:
        assert conn.execute("select to_regclass('public.good_one')").fetchone() == (None,)


def test_migration_files_are_well_named() -> None:
    """The repository's own migrations pass the same naming rule, in strictly increasing version order."""
    versions = all_versions()
    assert versions, "no migrations found"
    assert versions == sorted(set(versions))


def test_a_migration_that_loses_a_deadlock_is_applied_again(bare_db: TestDatabase, tmp_path: Path) -> None:
    """A real deadlock, as a pg_cron job of an earlier migration can cause while later ones apply (CI saw one during
    `up`): the migration, which waited first, is the victim; its transaction is rolled back whole and applied
    again once the other side has finished, instead of failing the whole `up`."""
    with psycopg.connect(bare_db.url, autocommit=True) as conn:
        conn.execute("create table public.left_side (); create table public.right_side ()")
    (tmp_path / "20990101000000_takes_both.sql").write_text(
        "lock table public.right_side in access exclusive mode;\n"
        "lock table public.left_side in access exclusive mode;\n"
        "create table public.took_both ();\n"
    )
    with psycopg.connect(bare_db.url) as other:
        other.execute("lock table public.left_side in access exclusive mode")
        outcome: list[object] = []
        migrating = threading.Thread(
            target=lambda: outcome.append(migrator.migrate(bare_db.url, directory=tmp_path)), daemon=True
        )
        migrating.start()
        waiting = (
            "select count(*) from pg_locks where not granted and relation = 'public.left_side'::regclass"
        )
        with psycopg.connect(bare_db.url, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while watcher.execute(waiting).fetchone() != (1,) and time.monotonic() < deadline:
                time.sleep(0.02)
        other.execute(
            "lock table public.right_side in access exclusive mode"
        )  # the cycle: one side gives way
        other.commit()
    migrating.join(timeout=60)
    assert [m.version for m in outcome[0]] == ["20990101000000"]  # type: ignore[attr-defined]
    assert recorded_versions(bare_db.url) == ["20990101000000"]
    with psycopg.connect(bare_db.url) as conn:
        assert conn.execute("select to_regclass('public.took_both') is not null").fetchone() == (True,)
