"""Which PostgreSQL binaries the local stack runs: override, newest Debian version, PATH, pgserver wheel."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from meshhook_rt_metrics.localstack import postgres
from meshhook_rt_metrics.localstack.postgres import PostgresError, find_binaries


def _fake_install(root: Path, *versions: str) -> None:
    for version in versions:
        bindir = root / version / "bin"
        bindir.mkdir(parents=True)
        (bindir / "pg_ctl").touch()


def test_newest_debian_version_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHHOOK_METRICS_PG_BINDIR", raising=False)
    _fake_install(tmp_path, "9", "15", "13")
    assert find_binaries(tmp_path).bindir == tmp_path / "15" / "bin"


def test_override_must_contain_pg_ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHHOOK_METRICS_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresError, match="has no pg_ctl"):
        find_binaries()
    (tmp_path / "pg_ctl").touch()
    assert find_binaries().bindir == tmp_path


def test_pgserver_wheel_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHHOOK_METRICS_PG_BINDIR", raising=False)
    monkeypatch.setattr(postgres.shutil, "which", lambda _: None)
    fake = types.ModuleType("pgserver")
    fake.__file__ = str(tmp_path / "pgserver" / "__init__.py")
    monkeypatch.setitem(sys.modules, "pgserver", fake)
    assert find_binaries(tmp_path / "no-debian").bindir == tmp_path / "pgserver" / "pginstall" / "bin"


def test_no_postgres_anywhere_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHHOOK_METRICS_PG_BINDIR", raising=False)
    monkeypatch.setattr(postgres.shutil, "which", lambda _: None)
    monkeypatch.setitem(sys.modules, "pgserver", None)  # import fails
    with pytest.raises(PostgresError, match="no PostgreSQL server binaries found"):
        find_binaries(tmp_path)
