"""Behaviour behind the cheaper paths: lock-free gauges, overflow and redaction caches, host metric
sampling, /proc reading. Timing lives in benchmarks/; these check that nothing observable changed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhook_rt_metrics.client import instruments
from meshhook_rt_metrics.client.labels import _reference_redactor, default_redactor
from meshhook_rt_metrics.client.registry import REDACTION_CACHE_SIZE
from meshhook_rt_metrics.client.sketch import Sketch
from tests.client._helpers import health_total, memory_client, totals, user_points, with_concurrent_flushes


def _gauge_points(batches: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [p for p in user_points(batches) if p["name"] == name]


# -- gauges: lock-free log, exact interval statistics ---------------------------------------------------
Op = tuple[str, float]
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["set", "inc", "dec", "flush"]),
        st.one_of(st.integers(-50, 50), st.floats(-1e3, 1e3, allow_nan=False)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy)
def test_gauge_points_equal_a_sequential_model(ops: list[Op]) -> None:
    """count/sum/min/max/last of every flush are those of the updates applied one by one."""
    client, sink = memory_client()
    g = client.gauge("g").labels()
    expected: list[tuple[int, float, float, float, float]] = []
    v, vals, has = 0.0, [], False
    for op, x in [*ops, ("flush", 0)]:
        if op == "flush":
            client.flush()
            if vals:
                expected.append((len(vals), sum(vals), min(vals), max(vals), vals[-1]))
            elif has:
                expected.append((1, v, v, v, v))
            vals = []
            continue
        v = float(x) if op == "set" else v + x if op == "inc" else v - x
        vals.append(v)
        has = True
        getattr(g, op)(x)
    got = [(p["count"], p["sum"], p["min"], p["max"], p["last"]) for p in _gauge_points(sink.batches, "g")]
    assert len(got) == len(expected)
    for (n, s, mn, mx, last), (en, es, emn, emx, elast) in zip(got, expected, strict=True):
        assert (n, mn, mx, last) == (en, emn, emx, elast)
        assert s == pytest.approx(es, rel=1e-12, abs=1e-9)
    assert g.value == (v if has else 0.0)


def test_gauge_inc_dec_is_exact_across_threads_with_concurrent_flushes() -> None:
    client, sink = memory_client()
    inflight = client.up_down_counter("inflight")
    child = inflight.labels()
    threads, per = 6, 20_000

    def work(i: int) -> None:
        for _ in range(per):
            child.inc()
            child.dec()
        child.inc(2)

    with_concurrent_flushes(client, work, threads)
    points = _gauge_points(sink.batches, "inflight")
    assert child.value == 2 * threads
    assert points[-1]["last"] == 2 * threads
    # every update counted, none lost; a flush that saw no update samples the value once (count 1, the
    # previous last: an update here always changes the value)
    updates, last = 0, 0.0
    for p in points:
        if not (p["count"] == 1 and p["last"] == last):
            updates += p["count"]
        last = p["last"]
    assert updates == threads * (2 * per + 1)
    # every value an in-flight counter took lies between 0 and the number of updates in flight
    assert min(p["min"] for p in points) >= 0
    assert max(p["max"] for p in points) <= 2 * threads
    assert len(child._log) == 0


def test_gauge_log_is_bounded_without_flushes() -> None:
    client, sink = memory_client()
    g = client.gauge("g").labels()
    for i in range(10 * instruments.LOG_MAX + 7):
        g.inc(1)
        assert len(g._log) <= instruments.LOG_MAX
        if i % 1000 == 0:
            g.set(5)
    client.flush()
    (point,) = _gauge_points(sink.batches, "g")
    n = 10 * instruments.LOG_MAX + 7
    assert point["count"] == n + len(range(0, n, 1000))
    assert point["last"] == g.value == 5 + (n - 1 - max(range(0, n, 1000)))
    assert point["min"] == 1  # the first inc, before the first set


def test_gauge_odd_numbers_and_bad_values() -> None:
    from decimal import Decimal
    from fractions import Fraction

    client, sink = memory_client()
    g = client.gauge("g").labels()
    g.set(Decimal("1.5"))  # type: ignore[arg-type]
    g.inc(Fraction(1, 2))  # type: ignore[arg-type]
    g.inc(True)
    g.set(float("nan"))
    g.inc("3")  # type: ignore[arg-type]
    client.flush()
    client.flush()
    (point, *_) = _gauge_points(sink.batches, "g")
    assert (point["count"], point["last"], point["max"]) == (3, 3.0, 3.0)
    assert health_total(client, "meshhook_metrics_client_invalid_values_total", metric="g") == 2


def test_gauge_after_fork_starts_clean() -> None:
    client, _ = memory_client()
    g = client.gauge("g").labels()
    g.inc(3)
    g.after_fork()
    g.inc()
    assert g.value == 1.0 and not g._log


# -- label sets beyond the cap: cached decisions, bounded memory -----------------------------------------
def test_overflow_decisions_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instruments, "OVERFLOW_MEMORY", 50)
    client, sink = memory_client(max_label_sets=5)
    calls: list[str] = []
    base = client.registry.redact

    def counting(v: str) -> str:
        calls.append(v)
        return base(v)

    client.registry.redact = counting
    c = client.counter("tenants_total", labels=("tenant",))
    for i in range(5):
        c.inc(tenant=f"t{i}")
    for _ in range(3):
        for i in range(5, 205):
            c.inc(tenant=f"t{i}")
        c.inc(tenant="t0")  # an existing series stays itself
        c.inc(tenant=3)  # an int beyond the cap
    assert calls.count("t7") == 1  # redacted once, then remembered
    assert len(c._overflowed) <= 50 and len(c._dropped_recent) <= 50
    assert len(c._cache) <= 4 * 5 + 16
    client.flush()
    client.flush()
    got = totals(sink.batches, "tenants_total")
    assert got[(("tenant", "__overflow__"),)] == [603, 603]
    assert got[(("tenant", "t0"),)] == [4, 4]
    assert len(got) == 6
    # every distinct set is counted once while remembered; sets forgotten (beyond 50) count again
    dropped = health_total(client, "meshhook_metrics_client_dropped_label_sets_total", metric="tenants_total")
    assert 201 <= dropped <= 3 * 201


def test_labels_that_clean_to_an_existing_series_are_not_overflow() -> None:
    client, sink = memory_client(max_label_sets=2, max_label_value_length=8)
    c = client.counter("x_total", labels=("v",))
    c.inc(v="aaaaaaaa")
    c.inc(v="bbbb")
    for _ in range(3):
        c.inc(v="aaaaaaaaXYZ")  # truncates to an existing series: never overflow
        c.inc(v="zzzz")
    client.flush()
    got = totals(sink.batches, "x_total")
    assert got[(("v", "aaaaaaaa"),)] == [4, 4]
    assert got[(("v", "__overflow__"),)] == [3, 3]


# -- redaction ----------------------------------------------------------------------------------------
SAMPLES = [
    "Bearer abcdef0123456789abcdef",
    "token=abc",
    "x token abcdefgh1",
    "postgresql://postgres:hunter2@db:5432/x",
    "https://user@host/path",
    "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoieCJ9.sig",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "6f1c2a9e-3b7d-4c5e-9a10-1234567890ab",
    "\u017fecret=abc",  # re's IGNORECASE folds the long s to s: non-ASCII values take every pattern
    "\u212aey=abc",
    "PASSWORD: x",
    "/api/hooks/[slug]",
    "sk_live_51HxYzAbCdEfGhIjKlMn",
]
ALPHABET = st.sampled_from(
    [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=:/@.&; \u017f\u212a",
        *("eyJ", "://", "Bearer ", "token", "key", "secret", "passw", "pwd", "sk_live_", "ghp_", "AKIA"),
        "AIza",
    ]
)


@pytest.mark.parametrize("value", SAMPLES)
def test_default_redactor_agrees_with_every_pattern_on_every_value(value: str) -> None:
    assert default_redactor(value) == _reference_redactor(value)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(ALPHABET, max_size=40))
def test_default_redactor_prefilters_never_change_the_result(parts: list[str]) -> None:
    value = "".join(parts)
    assert default_redactor(value) == _reference_redactor(value)


def test_redaction_cache_is_bounded_and_follows_a_replaced_redactor() -> None:
    client, _ = memory_client()
    r = client.registry
    for i in range(REDACTION_CACHE_SIZE + 100):
        assert r.redact_cached(f"v{i}") == f"v{i}"
    assert len(r._redacted) == REDACTION_CACHE_SIZE
    assert r.redact_cached("x" * 10_000) == "x" * 10_000 and len(r._redacted) == REDACTION_CACHE_SIZE
    r.redact = str.upper
    assert r.redact_cached("v1") == "V1"


# -- system metrics -------------------------------------------------------------------------------------
def test_host_metrics_are_read_every_host_interval_and_lose_no_increase(tmp_path: Path) -> None:
    client, sink = memory_client(tmp_path, system_metrics=True, host_metrics_interval=3600)
    readings: list[int] = []
    system = client._system
    assert system is not None
    real = system._collect_host
    system._collect_host = lambda: (readings.append(1), real())  # type: ignore[method-assign]
    for _ in range(5):
        client.flush()
    assert len(readings) == 1  # the first flush, then once an hour
    system._host_due = 0.0  # the hour is over
    client.flush()
    assert len(readings) == 2
    names = {p["name"] for b in sink.batches for p in b["points"]}
    assert "system_memory_available_bytes" in names and "process_cpu_seconds_total" in names
    client.close()


def test_process_readings_from_proc_match_psutil() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("Linux /proc only")
    client, sink = memory_client(system_metrics=True, host_metrics=False)
    assert client._system is not None and client._system._proc_stat_ok
    client.flush()
    assert client._system._proc_stat_ok  # the fast path worked, no fallback
    got = {p["name"]: p for p in user_points(sink.batches)}
    proc = psutil.Process()
    assert got["process_threads"]["last"] == proc.num_threads()
    assert abs(got["process_resident_memory_bytes"]["last"] - proc.memory_info().rss) < 64 << 20
    assert abs(got["process_virtual_memory_bytes"]["last"] - proc.memory_info().vms) < 256 << 20
    assert abs(got["process_open_fds"]["last"] - proc.num_fds()) <= 2
    cpu = proc.cpu_times()
    assert 0 < got["process_cpu_seconds_total"]["sum"] <= cpu.user + cpu.system + 0.05


# -- counters and histograms: a call appends, a fold does the arithmetic -----------------------------------
def test_counter_and_histogram_logs_are_bounded_and_fold_in_order() -> None:
    client, sink = memory_client()
    c = client.counter("c_total", labels=("k",))
    h = client.histogram("h_seconds", labels=("k",))
    child_c, child_h = c.labels("a"), h.labels("a")
    n = 10 * instruments.LOG_MAX + 7
    values = [((i * 7919) % 1000 - 300) / 10 for i in range(n)]  # negatives, zero and positives
    for i, v in enumerate(values):
        c.inc(i % 3, k="a")
        h.observe(v, k="a")
        assert len(child_c._log) <= instruments.LOG_MAX and len(child_h._log) <= instruments.LOG_MAX
    assert child_c.cumulative() == (n, sum(i % 3 for i in range(n)))  # a reader folds what is pending
    client.flush()
    assert not child_c._log and not child_h._log
    (hist,) = [p for p in user_points(sink.batches) if p["name"] == "h_seconds"]
    expected = Sketch()
    for v in values:
        expected.add(v)
    assert (hist["count"], hist["min"], hist["max"]) == (n, min(values), max(values))
    assert hist["sketch"] == expected.to_wire()
    assert math.isclose(hist["sum"], math.fsum(values), abs_tol=1e-6)
    assert totals(sink.batches, "c_total") == {(("k", "a"),): [n, sum(i % 3 for i in range(n))]}


def test_numbers_of_other_types_add_up() -> None:
    from decimal import Decimal
    from fractions import Fraction

    client, sink = memory_client()
    c = client.counter("c_total")
    h = client.histogram("h_seconds")
    c.inc(Decimal("1.5"))  # type: ignore[arg-type]
    c.inc(0.5)
    c.inc(Fraction(1, 2))  # type: ignore[arg-type]
    h.observe(Decimal("2"))  # type: ignore[arg-type]
    h.observe(0.5)
    client.flush()
    (counted,) = totals(sink.batches, "c_total").values()
    assert counted[0] == 3 and math.isclose(counted[1], 2.5)
    (hist,) = [p for p in user_points(sink.batches) if p["name"] == "h_seconds"]
    assert (hist["count"], hist["sum"], hist["min"], hist["max"]) == (2, 2.5, 0.5, 2.0)


def test_a_fold_never_raises_and_keeps_the_valid_entries() -> None:
    # a strict call refuses its own bad value before logging it; whatever else reaches a fold is counted
    client, _ = memory_client(mode="development")
    c = client.counter("c_total").labels()
    h = client.histogram("h_seconds").labels()
    g = client.gauge("g").labels()
    for child, bad, good in ((c, -1, 2), (h, math.nan, 0.5), (g, "x", 3.0)):
        child._log.extend([bad, good])
        child._fold()
        assert not child._log
    assert c.cumulative() == (1, 2)
    assert h.cumulative()[:2] == (1, 0.5)
    assert g.value == 3.0
    client.flush()
    for name in ("c_total", "h_seconds", "g"):  # counted in the flush that folded them
        assert health_total(client, "meshhook_metrics_client_invalid_values_total", metric=name) == 1


def test_strict_calls_raise_before_logging_and_others_go_on() -> None:
    client, _ = memory_client(mode="development")
    c = client.counter("c_total", labels=("k",))
    g = client.gauge("g").labels()
    with pytest.raises(ValueError, match=r"c_total: counter increment must be finite and >= 0, got -1"):
        c.inc(-1, k="a")
    with pytest.raises(ValueError, match=r"g: gauge decrement must be a finite number, got inf"):
        g.dec(math.inf)
    c.inc(2, k="a")
    g.dec(2)
    assert c.labels("a").cumulative() == (1, 2) and g.value == -2.0


def test_a_writer_never_waits_for_a_fold() -> None:
    # a fold in progress (here: its lock held, as by the flush, or by this very thread in a signal handler
    # or finaliser) never blocks a writer: the log takes the entries until the lock is free
    client, _ = memory_client()
    c = client.counter("c_total").labels()
    with c._lock:
        for _ in range(instruments.LOG_MAX + 10):
            c.inc()
        assert len(c._log) == instruments.LOG_MAX + 10
    c.inc()
    assert not c._log and c.cumulative() == (instruments.LOG_MAX + 11, instruments.LOG_MAX + 11)


def test_huge_ints_whose_sum_cancels_are_refused_one_by_one() -> None:
    client, sink = memory_client()
    h = client.histogram("h_seconds")
    h.observe(10**400)
    h.observe(-(10**400))
    h.observe(1.0)
    client.flush()
    (hist,) = [p for p in user_points(sink.batches) if p["name"] == "h_seconds"]
    assert (hist["count"], hist["min"], hist["max"]) == (1, 1.0, 1.0)
    assert health_total(client, "meshhook_metrics_client_invalid_values_total", metric="h_seconds") == 2


def test_a_decimal_then_a_float_in_the_next_fold_add_up() -> None:
    from decimal import Decimal

    client, sink = memory_client()
    c = client.counter("c_total").labels()
    c.inc(Decimal("1"))  # type: ignore[arg-type]
    assert c.cumulative() == (1, Decimal("1"))
    c.inc(0.5)
    assert c.cumulative() == (2, 1.5)
    client.flush()
    assert totals(sink.batches, "c_total") == {(): [2, 1.5]}


def test_a_scrape_sees_a_gauge_set_since_the_last_fold() -> None:
    client, _ = memory_client()
    client.gauge("g").set(4.0)
    assert "g 4.0" in client.prometheus_text().decode()
