"""The benchmarks' results keep no password: the command a result records names its database's URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import _report, summary

URL = "postgresql://postgres:s3cr3t-Pa55@127.0.0.1:5432/postgres"


def test_a_result_file_records_its_command_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    path = _report.write("load_instructions", f"python -m benchmarks.load_instructions --db-url {URL}", {})
    command = json.loads(path.read_text())["command"]
    assert "s3cr3t-Pa55" not in command
    assert command.startswith("python -m benchmarks.load_instructions --db-url postgresql://postgres:")
    assert "@127.0.0.1:5432" in command, "the host stays readable"


def test_the_summary_redacts_results_written_before(tmp_path: Path) -> None:
    (tmp_path / "hotpath.json").write_text(
        json.dumps({"command": f"python -m benchmarks.hotpath --db-url {URL}"})
    )
    text = summary.build(tmp_path)
    assert "s3cr3t-Pa55" not in text and "- `hotpath`: `python -m benchmarks.hotpath --db-url" in text
