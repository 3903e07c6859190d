"""benchmarks.load_instructions without valgrind: the periodic work runs by request count (what makes the
counts independent of the clock), callgrind's per-thread files are summed, and the summary's ratio is the
paired median of ours' addition over prometheus_client's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import load_instructions


@pytest.mark.parametrize(("n", "every", "ticks"), [(64, 32, 2), (64, 1000, 0), (96, 40, 2)])
def test_the_tick_runs_by_request_count(n: int, every: int, ticks: int) -> None:
    ran = load_instructions.drive("prometheus", "", n, every)  # prometheus_client's app needs no database
    assert (ran["requests"], ran["ticks"]) == (n, ticks)
    assert ran["full_collections"] >= 0


def test_the_plain_service_has_no_tick() -> None:
    ran = load_instructions.drive("plain", "", 32, 16)
    assert (ran["requests"], ran["ticks"]) == (32, 0)


def test_callgrind_files_of_every_thread_are_summed(tmp_path: Path) -> None:
    prefix = tmp_path / "ours-1000.callgrind"
    prefix.write_text("")  # the process's own file stays empty with --separate-threads
    for thread, counts in enumerate(["1000 10 1 0 0 0 0 0 0", "500 1"], start=1):  # trailing zeros left out
        (tmp_path / f"ours-1000.callgrind-0{thread}").write_text(
            f"version: 1\nthread: {thread}\nevents: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\nsummary: {counts}\n"
        )
    events = load_instructions.events_of(prefix)
    assert events["Ir"] == 1500
    assert events["I1mr"] == 11
    assert events["DLmw"] == 0
    assert load_instructions.cycles(events) == 1500 + 10 * 11 + 100 * 1
    assert load_instructions.cycles({"Ir": 5}) is None
    assert load_instructions.cycles({"Ir": 5, "I1mr": 1}) == 15  # trailing zero counts left out


def test_no_totals_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.callgrind").write_text("")
    with pytest.raises(RuntimeError, match="no totals"):
        load_instructions.events_of(tmp_path / "x.callgrind")


def test_the_ratio_is_the_paired_median_at_each_rate_and_the_goal_is_judged() -> None:
    def runs(*costs: tuple[float, float]) -> list[dict[str, dict[str, float]]]:
        return [{"instructions": {"request": r, "tick": t}} for r, t in costs]

    variants = {
        "plain": runs((100, 0), (110, 0), (100, 0)),
        "ours": runs((120, 10_000), (135, 10_000), (125, 10_000)),  # +20, +25, +25 a request; 10k a flush
        "prometheus": runs((200, 0), (210, 0), (150, 0)),  # +100, +100, +50
    }
    result: dict[str, Any] = {"n1": 1000, "n2": 2000, "ticks": 4, "repeats": 3, "variants": variants}
    slow, fast = load_instructions.rows(result, {"slow": 1000.0, "fast": 1e12})
    # at 1,000 requests/s the flush adds 10 a request: 30, 35, 35 against 100, 100, 50
    assert slow["value"] == 35 and slow["baseline"] == 100
    assert slow["ratio"] == pytest.approx(0.35)
    assert slow["ratio_spread"] == [pytest.approx(0.3), pytest.approx(0.7)]
    assert slow["met"] is False
    assert "1,000 requests/s" in slow["load"] and "plain 100 instructions" in slow["load"]
    assert fast["ratio"] == pytest.approx(0.25)  # paired: 0.2, 0.25, 0.5
    assert fast["met"] is True
    variants["prometheus"] = runs((100, 0), (110, 0), (100, 0))  # adds nothing: no ratio, a clear error
    with pytest.raises(RuntimeError, match="prometheus_client added nothing"):
        load_instructions.rows(result, {"slow": 1000.0})


def test_costs_of_a_request_and_of_a_tick() -> None:
    def run(requests: int, ir: int, ticks: int = 0) -> dict[str, Any]:
        return {"requests": requests, "ticks": ticks, "events": {"Ir": ir}}

    got = load_instructions._costs(
        "instructions", run(1000, 5_000_000), run(2000, 8_000_000), run(2000, 8_400_000, 4)
    )
    assert got == {"request": 3000.0, "tick": 100_000.0}
    assert load_instructions._costs("cycles_estimate", run(1000, 1), run(2000, 2), None) is None
    with pytest.raises(RuntimeError, match="served other requests"):
        load_instructions._costs("instructions", run(1000, 1), run(2000, 2), run(2016, 3, 4))
    with pytest.raises(RuntimeError, match="had no tick"):
        load_instructions._costs("instructions", run(1000, 1), run(2000, 2), run(2000, 3, 0))
