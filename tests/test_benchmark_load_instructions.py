"""benchmarks.load_instructions without valgrind: the periodic work runs by request count (what makes the
counts independent of the clock), callgrind's per-thread files are summed, and the summary's ratio is the
paired median of ours' addition over prometheus_client's."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import load_http, load_instructions


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


def test_http_gc_requests_too_few_for_a_rate_are_refused_and_the_given_ones_are_served(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_stack(url: str | None) -> Any:
        raise AssertionError("the arguments should have been refused before any stack started")

    monkeypatch.setattr(load_instructions, "database", no_stack)
    with pytest.raises(SystemExit):
        load_instructions.main(["--http-gc-requests", "5000"])
    assert "--http-gc-requests: at least 10000" in capsys.readouterr().err
    served: list[int] = []

    def rates(variant: str, setup: str, db_url: str, work: Path, cpu: int | None, n: int) -> dict[str, Any]:
        served.append(n)
        return {"per_request": 1 / 5000}

    monkeypatch.setattr(load_http, "request_instructions", lambda *a: {"counted": True})
    monkeypatch.setattr(load_http, "idle_instructions", lambda *a: 0.0)
    monkeypatch.setattr(
        load_http,
        "at_native_speed",
        lambda got, idle: {"request": 1.0, "request_counted": 1.0, "clock_per_request": 0.0},
    )
    monkeypatch.setattr(load_http, "full_collection_rates", rates)
    load_instructions._over_http("uvicorn", ("plain", "ours"), "", Path("."), None, 300_000)
    assert served == [300_000, 300_000]


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
        {
            "request": 5000,
            "between": 3000,
            "full": 2000,
            "full_collection": 600_000,
            "tick": 400_000,
            "tick_full": 300_000,
            "monitor_second": 0.0,
        }
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


def test_our_lag_monitor_is_priced_idle_and_charged_once_a_second_not_in_the_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def run(requests: int, ir: int, ticks: int = 0, monitor: int = 0) -> dict[str, Any]:
        return {
            "requests": requests,
            "ticks": ticks,
            "full_collections": 0,
            "monitor_ticks": monitor,
            "events": {"Ir": ir},
        }

    idle = iter(
        [run(0, 1_000_000, monitor=300), run(0, 11_000_000, monitor=1300)]
    )  # 1,000 timers: 10,000 each
    monkeypatch.setattr(load_instructions, "run_once", lambda *a, **k: next(idle))
    price = load_instructions.monitor_price("ours", "", Path("/nonexistent"), False, None)
    assert price == {"timers": 1000, "instructions": 40_000}  # 4 timers a second at native speed

    short, long_, ticked = run(1000, 5_000_000), run(2000, 8_000_000), run(2000, 8_400_000, 4)
    priced = run(1000, 5_000_000)
    got = load_instructions._costs("instructions", short, long_, ticked, priced, 0.0, 0.0, 40_000)
    assert got is not None
    assert (got["request"], got["tick"], got["monitor_second"]) == (3000, 140_000, 40_000)
    with pytest.raises(RuntimeError, match="the lag monitor fired in a window"):
        load_instructions._costs("instructions", short, run(2000, 8_000_000, monitor=1), None, priced, 0.0)
    few = iter([run(0, 1_000_000, monitor=8), run(0, 1_000_000, monitor=58)])
    monkeypatch.setattr(load_instructions, "run_once", lambda *a, **k: next(few))
    with pytest.raises(RuntimeError, match="fired 50 times more in the longer idle window, fewer than 100"):
        load_instructions.monitor_price("ours", "", Path("/nonexistent"), False, None)


def test_the_windows_stop_our_lag_monitor_and_the_idle_window_prices_it_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real app in process (no database: its flushes spool), as the counted runs drive it; the
    client's monitor made to fire every millisecond, so a window it were left running in would see it."""
    from meshhook_rt_metrics.client import MetricsClient

    monkeypatch.setattr(MetricsClient.monitor_event_loop, "__defaults__", (None, 0.001))
    counted = load_instructions.drive("ours-log", "", 64, load_instructions.NO_TICK)
    assert counted["requests"] == 64 and counted["monitor_ticks"] == 0
    monkeypatch.setattr(load_instructions, "_stop_lag_monitors", lambda app, restart=None: None)
    assert load_instructions.drive("ours-log", "", 64, load_instructions.NO_TICK)["monitor_ticks"] > 0
    monkeypatch.undo()
    idle = load_instructions.drive("ours-log", "", 0, load_instructions.NO_TICK, idle=0.3)
    assert idle["requests"] == 0 and idle["monitor_ticks"] >= 50  # PRICING_INTERVAL, not every 0.25 s
    assert (
        load_instructions.drive("prometheus", "", 0, load_instructions.NO_TICK, idle=0.3)["monitor_ticks"]
        == 0
    )


def _runs(*costs: tuple[float, float]) -> list[dict[str, dict[str, float]]]:
    """Runs of a variant: (request, tick); the request is all between full collections, which cost 0."""
    return [
        {"instructions": {"request": r, "tick": t, "between": r, "full_collection": 0.0}} for r, t in costs
    ]


def _result(**variants: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    return {"n1": 1000, "n2": 2000, "repeats": len(variants["plain"]), "variants": variants}


def _over_http(request: float, **full_per_request: float) -> dict[str, Any]:
    return {
        "n1": 500,
        "n2": 2500,
        "request": request,
        "full_collections": {v: {"per_request": r} for v, r in full_per_request.items()},
    }


def test_each_handler_style_is_paired_with_its_own_style() -> None:
    result = _result(
        plain=_runs((100, 0)),
        ours=_runs((130, 10_000)),  # +30 a request, a flush of 10,000
        prometheus=_runs((200, 0)),  # +100
        **{"ours-bound": _runs((110, 10_000)), "prometheus-bound": _runs((150, 0))},  # +10, +50
    )
    got = {row["figure"]: row for row in load_instructions.rows(result, {"1k": 1000.0})}
    labeled = got["[callgrind] added instructions per request, ours vs prometheus_client (1k)"]
    bound = got[
        "[callgrind] added instructions per request, ours vs prometheus_client, children bound once (1k)"
    ]
    assert (labeled["value"], labeled["baseline"], labeled["ratio"]) == (40, 100, 0.4)  # 30 + 10,000 / 1,000
    assert (bound["value"], bound["baseline"], bound["ratio"]) == (20, 50, 0.4)
    assert len(got) == 2  # no count over HTTP: no throughput rows
    result["variants"]["ours-log"] = _runs((105, 5_000))  # +5: against prometheus_client's best style
    logged = {row["figure"]: row for row in load_instructions.rows(result, {"1k": 1000.0})}[
        "[callgrind] added instructions per request, ours, request log vs prometheus_client, children bound once (1k)"
    ]
    assert (logged["value"], logged["baseline"], logged["ratio"]) == (10, 50, 0.2)
    del result["variants"]["ours-log"]
    del result["variants"]["prometheus-bound"]  # a style without its counterpart gets no ratio
    assert list(r["figure"] for r in load_instructions.rows(result, {"1k": 1000.0})) == [labeled["figure"]]


def test_the_throughput_is_against_the_whole_http_request_with_full_collections_at_their_http_rate() -> None:
    plain, ours = _runs((100, 0), (100, 0)), _runs((130, 10_000), (150, 10_000))  # +30 / +50 a request
    theirs = _runs((200, 0), (200, 0))  # +100
    for runs, price in ((plain, 1000.0), (ours, 3000.0), (theirs, 1000.0)):  # a full collection's price
        for run in runs:
            run["instructions"]["full_collection"] = price
    result = _result(plain=plain, ours=ours, prometheus=theirs)
    # over HTTP a full collection every 100 requests for plain, every 50 for ours
    result["http"] = {"uvicorn": _over_http(4000.0, plain=0.01, ours=0.02, prometheus=0.01)}
    rows = load_instructions.rows(result, {"1k": 1000.0}, {"sat": 1000.0})
    got = {row["figure"]: row for row in rows}
    row = got["[callgrind] throughput over HTTP (uvicorn), ours vs uninstrumented (sat)"]
    # ours adds 30 / 50 between collections, 0.02 x 3,000 - 0.01 x 1,000 = 50 in collections, 10 of its flush
    assert load_instructions.added_over_http(result, "ours", "uvicorn", 1000.0) == [90, 110]
    assert row["baseline"] == pytest.approx(1e9 / 4000)
    assert row["value"] == pytest.approx(row["baseline"] * row["ratio"])  # value / baseline = ratio
    assert row["ratio"] == pytest.approx(statistics.median([4000 / 4090, 4000 / 4110]))
    assert row["ratio_spread"] == [pytest.approx(4000 / 4110), pytest.approx(4000 / 4090)]
    assert row["goal"] == ">= 0.99" and row["met"] is False  # a 2.2-2.7 % loss
    prom = got["[callgrind] throughput over HTTP (uvicorn), prometheus_client vs uninstrumented (sat)"]
    assert prom["ratio"] == pytest.approx(4000 / 4100) and prom["goal"] == "-" and prom["met"] is None
    result["http"]["uvicorn"]["request"] = 40_000.0  # the same addition on a request ten times dearer: met
    assert load_instructions.rows(result, {"1k": 1000.0}, {"sat": 1000.0})[-2]["met"] is True
    # throughput rows only at the saturation rates named
    assert not [f for f in got if "throughput" in f and "(1k)" in f]


def test_a_saturation_rate_measured_in_one_set_up_is_scaled_to_the_others() -> None:
    result = _result(plain=_runs((100, 0)), ours=_runs((100, 8_000)), prometheus=_runs((200, 0)))
    zero = {"plain": 0.0, "ours": 0.0, "prometheus": 0.0}
    result["http"] = {"uvicorn": _over_http(4000.0, **zero), "uvicorn[standard]": _over_http(2000.0, **zero)}
    rows = load_instructions.rows(result, {"1k": 1000.0}, {"sat": 1000.0}, "uvicorn")
    got = {row["figure"]: row for row in rows}
    # the flush alone: 8 a request at 1,000 requests/s, 4 at the 2,000 the cheaper set-up serves
    assert (
        got["[callgrind] throughput over HTTP (uvicorn), ours vs uninstrumented (sat)"]["ratio"]
        == 4000 / 4008
    )
    standard = "[callgrind] throughput over HTTP (uvicorn[standard]), ours vs uninstrumented (sat)"
    assert got[standard]["ratio"] == pytest.approx(2000 / 2004)


def test_bad_variants_and_set_ups_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stack(url: str | None) -> Any:
        raise AssertionError("the arguments should have been refused before any stack started")

    monkeypatch.setattr(load_instructions, "database", no_stack)
    for bad in ("ours,prometheus", "plain,ours,theirs", "plain,ours,ours"):
        with pytest.raises(SystemExit):
            load_instructions.main(["--variants", bad])
    with pytest.raises(ValueError, match="variants: 'plain'"):
        load_instructions.measure("", 1000, 4000, variants=("ours",))
    monkeypatch.setattr(load_http, "available_setups", lambda: ("uvicorn",))
    parser = argparse.ArgumentParser()
    assert load_instructions._setups(parser, None) == ("uvicorn",)
    assert load_instructions._setups(parser, "none") == ()
    assert load_instructions._setups(parser, "uvicorn") == ("uvicorn",)
    for bad in ("uvicorn[standard]", "uvicorn,uvicorn", "gunicorn", ""):
        with pytest.raises(SystemExit):
            load_instructions._setups(parser, bad)
        with pytest.raises(SystemExit):
            load_instructions.main(["--setups", bad])


def test_the_http_request_is_the_difference_of_two_runs_less_the_clock_driven_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    counted = {500: (1_000_000_000, 10.0), 2500: (3_400_000_000, 70.0)}  # 1.2 million a request, 30 ms each
    monkeypatch.setattr(load_http, "_counted_run", lambda setup, n, work, cpu, idle=0.0: counted[n])
    got = load_http.request_instructions("uvicorn", 500, 2500, tmp_path, None)
    assert got["request_counted"] == 1_200_000 and got["seconds_per_request"] == pytest.approx(0.03)
    native = load_http.at_native_speed(got, 2_000_000.0)  # 2 million a second idle: 60,000 of a request
    assert native["request"] == pytest.approx(1_140_000) and native["clock_per_request"] == pytest.approx(
        60_000
    )
    with pytest.raises(ValueError, match="0 < n1 < n2"):
        load_http.request_instructions("uvicorn", 500, 500, tmp_path, None)


def test_uvicorn_set_ups_are_found_where_their_servers_look(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    monkeypatch.setattr(load_http, "BENCH_SITE", tmp_path)
    found = importlib.util.find_spec
    monkeypatch.setattr(  # the project's own venv without uvicorn[standard]'s modules, as in CI
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("httptools", "uvloop") else found(name, *a),
    )
    assert load_http.available_setups() == ("uvicorn",)  # h11 and asyncio come with uvicorn
    (tmp_path / "httptools").mkdir()
    assert load_http.available_setups() == ("uvicorn",)  # both modules, or not the set-up
    (tmp_path / "httptools").rmdir()
    for module in ("httptools", "uvloop"):
        (tmp_path / module).mkdir()
    assert load_http.available_setups() == ("uvicorn", "uvicorn[standard]")
    assert str(tmp_path) in load_http._env()["PYTHONPATH"].split(os.pathsep)


def _webhook_lines(variant: str, requests: int) -> list[str]:
    """The webhook metrics' exposition lines that do not depend on timing, after ``requests`` requests
    through the variant's app in process (ours: its client's Prometheus text; prometheus_client: a scrape)."""
    import asyncio
    import tempfile
    import uuid

    from benchmarks.load_webhook import asgi_requester, build_app

    app = build_app(variant, "", str(uuid.uuid4()), tempfile.mkdtemp(), background=False, db_seconds=0)
    request, statuses = asgi_requester(app)
    text: list[str] = []

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await asyncio.gather(*(request() for _ in range(requests)))
            tick = app.state.tick  # ours' request log: folded by the scrape as by the flush
            scraped = tick() if variant.startswith("prometheus") else tick.__self__.prometheus_text()
            text.extend(scraped.decode().splitlines())

    asyncio.run(run())
    assert statuses == [200] * requests
    timed = ("duration_seconds{", "duration_seconds_bucket", "_sum", "_created")
    return [  # series never touched (a child bound at start-up, a gauge back at 0) left out
        line
        for line in text
        if line.startswith("meshhook_webhook")
        and not any(t in line.split(" ")[0] for t in timed)
        and not line.endswith(" 0.0")
    ]


@pytest.mark.parametrize(
    ("labeled", "bound"),
    [("ours", "ours-bound"), ("prometheus", "prometheus-bound"), ("ours", "ours-log")],
)
def test_children_bound_once_record_what_labels_at_every_call_record(labeled: str, bound: str) -> None:
    # ours' app has no database here: its flush would spool, so the client's own exposition is read instead
    got = _webhook_lines(bound, 40)
    assert got == _webhook_lines(labeled, 40)
    counts = [line for line in got if "requests" in line and "accepted" in line and "created" not in line]
    assert len(counts) == 1 and counts[0].endswith(" 40.0")
    assert any("duration_seconds_count" in line and line.endswith(" 40.0") for line in got)


def test_the_full_collections_rate_over_http_leaves_out_the_warm_up_and_the_shutdown() -> None:
    warm = load_http.WARMUP
    report = {"served": warm + 9000, "full_at": [100, warm + 1000, warm + 4000, warm + 7000, warm + 9000]}
    got = load_http.rate_of(report, "ours", "uvicorn", 9000)
    assert got["full_at"] == [warm + 1000, warm + 4000, warm + 7000]
    assert got["per_request"] == pytest.approx(2 / 6000)
    with pytest.raises(RuntimeError, match="too few for a rate"):
        load_http.rate_of({"served": warm + 9000, "full_at": [warm + 10, warm + 20]}, "ours", "uvicorn", 9000)
    with pytest.raises(RuntimeError, match="served 9,000 requests, not"):
        load_http.rate_of({"served": 9000, "full_at": []}, "ours", "uvicorn", 9000)


def test_a_set_up_that_fails_over_http_gets_no_rows_and_the_counts_stand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def over_http(setup: str, *args: Any) -> dict[str, Any]:
        if setup == "uvicorn[standard]":
            raise RuntimeError("the service exited before listening (1)")
        return _over_http(4000.0, plain=0.0, ours=0.0, prometheus=0.0)

    monkeypatch.setattr(load_instructions, "_over_http", over_http)
    result = _result(plain=_runs((100, 0)), ours=_runs((130, 0)), prometheus=_runs((200, 0)))
    load_instructions._count_over_http(
        result, ("uvicorn[standard]", "uvicorn"), ("plain", "ours", "prometheus"), "", Path("."), None, 60_000
    )
    assert list(result["http"]) == ["uvicorn"]
    assert "exited before listening" in result["http_failed"]["uvicorn[standard]"]
    figures = [r["figure"] for r in load_instructions.rows(result, {"1k": 1000.0})]
    assert any("(uvicorn)" in f for f in figures) and not any("standard" in f for f in figures)


def test_a_tick_s_full_collections_are_not_charged_twice_over_http() -> None:
    plain, ours = _runs((100, 0)), _runs((100, 10_000))
    ours[0]["instructions"]["tick_full"] = 4_000.0  # in the tick, and in the rate over HTTP as well
    result = _result(plain=plain, ours=ours, prometheus=_runs((200, 0)))
    result["http"] = {"uvicorn": _over_http(4000.0, plain=0.0, ours=0.0, prometheus=0.0)}
    assert load_instructions.added_over_http(result, "ours", "uvicorn", 1000.0) == [6]
    row = load_instructions.rows(result, {"1k": 1000.0})[1]
    assert row["value"] / row["baseline"] == pytest.approx(row["ratio"])  # the summary's convention


def test_the_timed_runs_serve_each_role_in_the_style_chosen() -> None:
    """``benchmarks.load_webhook --ours log --prometheus bound``: the roles keep their names in the report,
    the servers run the chosen handlers."""
    from benchmarks import load_webhook

    chosen = argparse.Namespace(ours="log", prometheus="bound")
    assert [load_webhook.served(v, chosen) for v in load_webhook.VARIANTS] == [
        "plain",
        "ours-log",
        "prometheus-bound",
    ]
    default = argparse.Namespace(ours="labels", prometheus="labels")
    assert [load_webhook.served(v, default) for v in load_webhook.VARIANTS] == list(load_webhook.VARIANTS)


def test_a_childs_spool_directory_is_removed_when_the_child_exits() -> None:
    """Each counted run is a child process with a client; their spool directories used to pile up in /tmp."""
    code = "from benchmarks.load_webhook import temporary_spool; print(temporary_spool())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    made = Path(done.stdout.strip())
    assert made.name.startswith("meshhook-spool-") and not made.exists()
