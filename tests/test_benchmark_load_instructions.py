"""benchmarks.load_instructions without valgrind: the periodic work runs by request count (what makes the
counts independent of the clock), callgrind's per-thread files are summed, and the summary's ratio is the
paired median of ours' addition over prometheus_client's."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from benchmarks import load_instructions


@pytest.mark.parametrize(("n", "every", "ticks"), [(64, 32, 2), (64, 1000, 0), (96, 40, 2)])
def test_the_tick_runs_by_request_count(n: int, every: int, ticks: int) -> None:
    ran = load_instructions.drive("prometheus", "", n, every)  # prometheus_client's app needs no database
    assert (ran["requests"], ran["ticks"]) == (n, ticks)


def test_a_window_makes_no_full_collection_of_its_own_unless_asked() -> None:
    # in processes of their own, as measured (this one's large heap would delay a full collection: the
    # collector waits until a quarter of the old objects are new); 12,000 requests make ~60 collections
    # of the middle generation, past the 11 after which the collector makes a full one of its own
    argv = load_instructions._child_argv(
        "prometheus", "", 12_000, load_instructions.NO_TICK, 0, automatic=False
    )
    counted = load_instructions._run_child(argv, "prometheus")
    assert counted["full_collections"] == 0 and counted["middle_collections"] > 3 * 11
    assert counted["full_at"] == [] and counted["objects"] > 1000
    steady = load_instructions.full_collection_rate("prometheus", "", 12_000, load_instructions.NO_TICK)
    assert steady["full_collections"] >= 3
    at = steady["full_at"]
    assert len(at) == steady["full_collections"] and at == sorted(at) and 0 < at[0] < at[-1] <= 12_000
    # between the first and the last collection: the window starts right after one (a forced one)
    assert steady["per_request"] > steady["full_collections"] / 12_000 * 0.9


def test_the_rate_runs_between_the_first_and_the_last_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = {"requests": 6000, "full_collections": 3, "full_at": [1000, 3000, 5000]}
    monkeypatch.setattr(load_instructions, "_run_child", lambda argv, what: dict(ran))
    assert load_instructions.full_collection_rate("ours", "", 6000, 1000)["per_request"] == 1 / 2000
    with pytest.raises(RuntimeError, match="served 6000 requests, not 6016"):
        load_instructions.full_collection_rate("ours", "", 6016, 1000)


def test_gc_requests_must_be_whole_rounds_of_requests() -> None:
    with pytest.raises(SystemExit):
        load_instructions.main(["--gc-requests", "40001"])


def test_the_collector_is_restored_after_a_window_in_process() -> None:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    ran = load_instructions.drive("prometheus", "", 64, load_instructions.NO_TICK, collections=1)
    assert ran["requests"] == 64
    assert gc.get_threshold() == thresholds and gc.callbacks == callbacks


def test_too_few_full_collections_for_a_rate_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="raise --gc-requests"):
        load_instructions.full_collection_rate("prometheus", "", 640, load_instructions.NO_TICK)


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
    def run(requests: int, ir: int, ticks: int = 0, full: int = 0) -> dict[str, Any]:
        return {"requests": requests, "ticks": ticks, "full_collections": full, "events": {"Ir": ir}}

    short, long_, ticked = run(1000, 5_000_000), run(2000, 8_000_000), run(2000, 8_400_000, 4)
    priced = run(1000, 5_000_000 + 2 * 600_000)  # two full collections of 600,000 instructions each
    got = load_instructions._costs("instructions", short, long_, ticked, priced, 1 / 300, 0.5)
    # 3,000 a request between full collections, plus one of 600,000 every 300 requests; a tick's 100,000
    # plus the half full collection it brings on
    assert got == pytest.approx(
        {"request": 5000, "between": 3000, "full": 2000, "full_collection": 600_000, "tick": 400_000}
    )
    assert load_instructions._costs("cycles_estimate", short, long_, None, priced, 0.0) is None
    with pytest.raises(RuntimeError, match="served other requests"):
        load_instructions._costs("instructions", short, long_, run(2016, 3, 4), priced, 0.0)
    with pytest.raises(RuntimeError, match="had no tick"):
        load_instructions._costs("instructions", short, long_, run(2000, 3, 0), priced, 0.0)
    with pytest.raises(RuntimeError, match="full collection of its own"):
        load_instructions._costs("instructions", short, run(2000, 8_000_000, full=1), None, priced, 0.0)
    with pytest.raises(RuntimeError, match="pricing a full collection served other requests"):
        load_instructions._costs("instructions", short, long_, None, run(1016, 6_000_000), 0.0)
