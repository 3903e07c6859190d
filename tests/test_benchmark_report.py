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


@pytest.mark.parametrize(
    ("per_round", "at_most", "verdict"),
    [
        ([0.99, 1.0, 1.01, 0.98, 1.0], True, True),  # 5 of 5 under 1.02: 1/32 by chance
        ([1.03, 1.05, 1.1, 1.04, 1.2], True, False),
        ([0.9, 1.1, 0.95, 1.05, 0.97, 1.08, 1.0, 1.3], True, None),  # the noise spans the goal
        ([0.9, 0.95, 1.0], True, None),  # 3 rounds cannot tell: 1/8 by chance
        ([0.9, 0.95, 1.0, 0.99, 1.01, 0.98, 1.05, 0.97], True, True),  # one miss in 8: 9/256
        ([0.9, 0.95, 1.0, 0.99, 1.01, 0.98, 1.05, 1.07], True, None),  # two misses in 8: 37/256
        ([0.995, 0.992, 1.0, 0.991, 0.999], False, True),  # a floor (kept >= 0.99)
        ([0.98, 0.97, 0.985, 0.96, 0.95], False, False),
        ([], True, None),
    ],
)
def test_a_goal_is_judged_by_a_sign_test_over_the_paired_rounds(
    per_round: list[float], at_most: bool, verdict: bool | None
) -> None:
    goal = 1.02 if at_most else 0.99
    assert _report.paired_verdict(per_round, goal, at_most=at_most) is verdict
    assert _report.verdict_text(verdict) in {"met", "not met", "no verdict"}


def test_a_goal_without_a_verdict_is_counted_and_shown_as_such(tmp_path: Path) -> None:
    def row(figure: str, goal: str, met: bool | None) -> dict[str, object]:
        return _report.summary_row(figure, 1.0, 1.0, 1.0, goal, met, "load", "ms")

    rows = [
        row("p99, ours", "<= 1.02; sign test, 8 rounds: no verdict", None),
        row("throughput, ours", ">= 0.99; sign test, 8 rounds: met", True),
        row("p50, ours", "-", None),  # no goal at all
    ]
    (tmp_path / "load_webhook.json").write_text(json.dumps({"command": "x", "figures": rows}))
    text = summary.build(tmp_path)
    assert "Goals met: 1 of 2." in text
    assert "| no verdict |" in text and text.count("| – |") == 1


def test_a_round_without_a_ratio_or_on_the_goal_says_nothing_either_way() -> None:
    # a NaN (a round that measured nothing) or a ratio exactly on the goal is left out of the count: five
    # clean rounds under the goal stay a verdict
    rounds = [0.99, 1.0, 1.01, 0.98, 1.0, float("nan"), 1.02]
    assert _report.paired_verdict(rounds, 1.02, at_most=True) is True
    assert _report.paired_verdict([float("nan")] * 6, 1.02, at_most=True) is None
