"""pgTAP: every file in supabase/tests runs through pg_prove against a fresh migrated database.

pg_prove connects as ``postgres``, the non-superuser migration owner, as ``supabase test db`` would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support import TestDatabase

TESTS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "tests"
PG_PROVE = shutil.which("pg_prove") or "/usr/bin/pg_prove"


def pgtap_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.sql"))


def test_pgtap_files_exist_and_follow_the_layout() -> None:
    """Each file plans its tests, finishes and rolls back, so files are independent of each other."""
    files = pgtap_files()
    assert len(files) >= 5, f"expected the pgTAP suite in {TESTS_DIR}"
    for path in files:
        sql = path.read_text(encoding="utf-8")
        assert re.search(r"^begin;$", sql, re.M), f"{path.name}: no 'begin;'"
        assert re.search(r"^select plan\(\d+\);$", sql, re.M), f"{path.name}: no 'select plan(n);'"
        assert "select * from finish();" in sql, f"{path.name}: no 'select * from finish();'"
        assert sql.rstrip().endswith("rollback;"), f"{path.name}: must end with 'rollback;'"


def test_pgtap_suite_passes_with_pg_prove(fresh_db: TestDatabase) -> None:
    """pg_prove reports success and ran every file with every planned test."""
    assert Path(PG_PROVE).exists(), "pg_prove not found (Debian package 'pgtap')"
    files = pgtap_files()
    result = subprocess.run(
        [PG_PROVE, "--dbname", fresh_db.url, "--failures", "--nocolor", *(p.name for p in files)],
        cwd=TESTS_DIR,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = f"pg_prove exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Result: PASS" in result.stdout, output
    assert f"Files={len(files)}," in result.stdout, output
    for path in files:
        assert re.search(rf"^{re.escape(path.name)} \.+ ok", result.stdout, re.M), (
            f"{path.name} did not pass\n{output}"
        )
    planned = sum(int(m) for p in files for m in re.findall(r"^select plan\((\d+)\);$", p.read_text(), re.M))
    assert f"Tests={planned}," in result.stdout, output


def test_pg_prove_fails_a_file_that_runs_fewer_tests_than_planned(db: TestDatabase, tmp_path: Path) -> None:
    """The harness is not blind: a file that dies half way (fewer tests than planned) fails the run."""
    broken = tmp_path / "broken.sql"
    broken.write_text(
        "begin;\nselect plan(2);\nselect ok(true, 'only one');\nselect * from finish();\nrollback;\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [PG_PROVE, "--dbname", db.url, "--nocolor", broken.name],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stdout
    assert "Result: FAIL" in result.stdout, result.stdout
