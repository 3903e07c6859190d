"""The request log: one entry a request, folded into the same series, with the same values, as the calls
it replaces (shipped into a MemorySink: no database needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhook_rt_metrics.client import MetricsClient, RequestLog
from tests.client._helpers import (
    health_total,
    in_a_fork,
    memory_client,
    totals,
    user_points,
    with_concurrent_flushes,
)

OUTCOMES = (("accepted", "verified"), ("rejected", "invalid"))
NAMES = ("accepted", "rejected")


class Webhook:
    """The load test's handler's four metrics, fed by five calls a request or by a request log."""

    def __init__(self, client: MetricsClient, *, logged: bool) -> None:
        requests = client.counter("hook_requests_total", labels=("outcome", "signature"))
        self.outcomes = [requests.labels(*o) for o in OUTCOMES]
        self.duration = client.histogram("hook_duration_seconds", labels=("route",)).labels(route="/h")
        self.size = client.histogram("hook_body_bytes")
        self.in_flight = client.up_down_counter("hook_in_flight").labels()
        self.log = (
            client.request_log(
                self.duration,
                self.size,
                outcomes=dict(zip(NAMES, self.outcomes, strict=True)),
                in_flight=self.in_flight,
            )
            if logged
            else None
        )

    def start(self) -> None:
        if self.log is None:
            self.in_flight.inc()
        else:
            self.log.start()

    def end(self, outcome: int, seconds: float, size: float) -> None:
        child = self.outcomes[outcome]
        if self.log is None:
            self.size.observe(size)
            child.inc()
            self.in_flight.dec()
            self.duration.observe(seconds)
        else:
            self.log.record((NAMES[outcome], seconds, size))


def _comparable(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user points without their timestamps, sums rounded (float sums in another order differ by ulps)."""
    out = []
    for p in user_points(batches):
        q = {k: v for k, v in p.items() if k != "ts"}
        q["sum"] = round(q["sum"], 9)
        out.append(q)
    return sorted(out, key=lambda q: json.dumps(q, sort_keys=True))


values = st.floats(min_value=0, max_value=1e6, allow_nan=False)
ops_strategy = st.lists(
    st.one_of(
        st.just(("start",)),
        st.tuples(st.just("end"), st.integers(0, 1), values, values),
        st.just(("flush",)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy)
def test_a_request_log_ships_what_the_five_calls_ship(ops: list[tuple[Any, ...]]) -> None:
    """Flush by flush, point by point: counts, sums, min, max, last and sketches (the in-flight gauge's
    every value, in the one order of starts and ends)."""
    shipped = []
    for logged in (False, True):
        client, sink = memory_client()
        hook = Webhook(client, logged=logged)
        open_requests = 0
        flushes = []
        for op in ops:
            if op[0] == "start":
                hook.start()
                open_requests += 1
            elif op[0] == "end" and open_requests:
                hook.end(*op[1:])
                open_requests -= 1
            elif op[0] == "flush":
                client.flush()
                flushes.append(_comparable(sink.batches))
                sink.batches.clear()
        client.flush()
        flushes.append(_comparable(sink.batches))
        shipped.append(flushes)
    assert shipped[0] == shipped[1]


def test_exact_under_threads_with_concurrent_flushes() -> None:
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    start, record = hook.log.start, hook.log.record
    per_thread, threads_n = 5_000, 4

    def handler(i: int) -> None:
        for j in range(per_thread):
            start()
            record(("accepted", 0.001, j % 7))

    with_concurrent_flushes(client, handler, threads_n)
    n = per_thread * threads_n
    assert totals(sink.batches, "hook_requests_total") == {
        (("outcome", "accepted"), ("signature", "verified")): [n, n]
    }
    assert totals(sink.batches, "hook_body_bytes")[()] == [
        n,
        threads_n * sum(i % 7 for i in range(per_thread)),
    ]
    assert hook.in_flight.value == 0
    gauge = [p for p in user_points(sink.batches) if p["name"] == "hook_in_flight"]
    # every start and every end a value of the gauge (a flush that saw no change samples it once more)
    assert sum(p["count"] for p in gauge) >= 2 * n
    assert max(p["max"] for p in gauge) <= threads_n
    assert min(p["min"] for p in gauge) >= 0


def test_malformed_entries_are_counted_and_dropped_the_rest_kept() -> None:
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    hook.log.record(("accepted", 0.5, 10))
    for bad in [
        ("accepted", 0.5),  # too short
        ["accepted", 0.5, 10],  # not a tuple
        (hook.outcomes[0], 0.5, 10),  # the child itself, not its name
        ("unknown", 0.5, 10),
        7,
        ([], 1, 2),  # unhashable
    ]:
        hook.log.record(bad)  # type: ignore[arg-type]
    hook.log.record(("accepted", float("nan"), 10))  # a bad value: counted against its series only
    client.flush()
    assert totals(sink.batches, "hook_requests_total") == {
        (("outcome", "accepted"), ("signature", "verified")): [2, 2]
    }
    assert totals(sink.batches, "hook_duration_seconds") == {(("route", "/h"),): [1, 0.5]}
    assert totals(sink.batches, "hook_body_bytes") == {(): [2, 20]}
    invalid = "meshhook_metrics_client_invalid_values_total"
    assert health_total(client, invalid, metric="request_log") == 6
    assert health_total(client, invalid, metric="hook_duration_seconds") == 1
    assert hook.in_flight.value == -8  # records without starts: the gauge follows what was logged


class _Weird:
    """An entry whose ``==`` and hash raise, as a numpy array's comparison does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("ambiguous")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


def test_one_malformed_entry_alone_is_found_and_never_costs_the_others() -> None:
    """Each shape alone among well-formed entries: the fast path must refuse it by itself."""
    from collections import namedtuple

    Entry = namedtuple("Entry", "outcome seconds size")
    shapes = [
        Entry("accepted", 0.5, 10),  # a tuple subclass: refused as any other non-tuple
        ["accepted", 0.5, 10],
        ("accepted", 0.5),
        ("accepted", 0.5, 10, 99),
        {"accepted": 0, "x": 1, "y": 2},
        "abc",
        (),
        _Weird(),  # its == and hash raise
        (_Weird(), 0.5, 10),  # an outcome that cannot be hashed
        (["accepted"], 0.5, 10),
    ]
    for bad in shapes:
        client, sink = memory_client()
        hook = Webhook(client, logged=True)
        assert hook.log is not None
        for _ in range(3):
            hook.log.start()
        hook.log.record(("accepted", 0.5, 10))
        hook.log.record(bad)  # type: ignore[arg-type]
        hook.log.record(("rejected", 0.25, 4))
        client.flush()
        assert totals(sink.batches, "hook_requests_total") == {
            (("outcome", "accepted"), ("signature", "verified")): [1, 1],
            (("outcome", "rejected"), ("signature", "invalid")): [1, 1],
        }, bad
        assert totals(sink.batches, "hook_body_bytes") == {(): [2, 14]}, bad
        invalid = "meshhook_metrics_client_invalid_values_total"
        assert health_total(client, invalid, metric="request_log") == 1, bad
        assert health_total(client, invalid, metric="hook_body_bytes") == 0, bad
        assert hook.in_flight.value == 0  # three starts, three records (one malformed)


def test_a_strict_client_counts_what_its_calls_would_raise() -> None:
    client, sink = memory_client(mode="development")
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    with pytest.raises(ValueError, match="finite"):
        hook.duration.observe(float("nan"))
    hook.log.record(("accepted", float("nan"), 10))
    hook.log.record(("nobody", 0.1, 10))
    client.flush()  # no raise in the flush: counted
    invalid = "meshhook_metrics_client_invalid_values_total"
    assert health_total(client, invalid, metric="hook_duration_seconds") == 1
    assert health_total(client, invalid, metric="request_log") == 1
    assert totals(sink.batches, "hook_body_bytes") == {(): [1, 10]}


def test_asking_twice_for_a_log_returns_it_and_one_log_alone_feeds_an_in_flight_gauge() -> None:
    client, _ = memory_client()
    hook = Webhook(client, logged=True)
    again = client.request_log(
        hook.duration,
        hook.size,
        outcomes=dict(zip(NAMES, hook.outcomes, strict=True)),
        in_flight=client.up_down_counter("hook_in_flight"),  # the same series, by its metric
    )
    assert again is hook.log  # an app factory run twice on one client
    with pytest.raises(ValueError, match="'request_log' is already registered with other series"):
        client.request_log(hook.size, outcomes={"a": hook.outcomes[0]})
    with pytest.raises(ValueError, match="'hook_in_flight' is fed by another request log already"):
        client.request_log(outcomes={"a": hook.outcomes[0]}, in_flight=hook.in_flight, name="other")
    assert client.registry._request_logs == [hook.log]


def test_a_log_that_fails_to_fold_counts_its_entries_and_the_flush_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    other = client.counter("other_total")
    other.inc()
    hook.log.start()
    hook.log.record(("accepted", 0.1, 1))
    hook.log.record(("accepted", 0.1, 1))

    def broken(self: RequestLog, entries: list[Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(RequestLog, "_fold", broken)
    client.flush()
    assert totals(sink.batches, "other_total") == {(): [1, 1]}
    invalid = "meshhook_metrics_client_invalid_values_total"
    assert health_total(client, invalid, metric="request_log") == 2  # the records, not the start


def test_bad_series_are_refused_when_the_log_is_made() -> None:
    client, _ = memory_client()
    other, _ = memory_client()
    ok = {"ok": client.counter("ok_total").labels()}
    labelled = client.histogram("h_seconds", labels=("route",))
    with pytest.raises(TypeError, match=r"'h_seconds' has labels \('route',\); pass one series"):
        client.request_log(labelled, outcomes=ok)
    with pytest.raises(TypeError, match="observed must be a histogram or counter series"):
        client.request_log(client.gauge("g").labels(), outcomes=ok)
    with pytest.raises(TypeError, match="in_flight must be a gauge series"):
        client.request_log(outcomes=ok, in_flight=client.counter("c_total").labels())
    with pytest.raises(TypeError, match="outcome 'bad' must be a counter series"):
        client.request_log(outcomes={"bad": client.histogram("x_seconds").labels()})
    with pytest.raises(ValueError, match="'o_seconds' belongs to another client"):
        client.request_log(other.histogram("o_seconds"), outcomes=ok)
    with pytest.raises(ValueError, match="outcomes must name at least one counter series"):
        client.request_log(outcomes={})
    assert client.registry._request_logs == []  # nothing half-made


def test_a_counter_observes_amounts_and_unlabelled_metrics_are_their_only_series() -> None:
    client, sink = memory_client()
    jobs = client.counter("jobs_total", labels=("queue",))
    log = client.request_log(
        client.counter("bytes_total"),
        outcomes={"mail": jobs.labels(queue="mail"), "done": client.counter("done_total")},
        name="jobs",
    )
    assert isinstance(log, RequestLog) and log.name == "jobs"
    log.record(("mail", 100))
    log.record(("mail", 20))
    log.record(("done", 1))
    client.flush()
    assert totals(sink.batches, "jobs_total") == {(("queue", "mail"),): [2, 2]}
    assert totals(sink.batches, "done_total") == {(): [1, 1]}
    assert totals(sink.batches, "bytes_total") == {(): [3, 121]}


def test_entries_of_names_and_numbers_leave_the_garbage_collectors_watch() -> None:
    """Tracked entries would survive young collections until the fold and bring on full ones."""
    import gc

    client, _ = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    for i in range(1000):
        hook.log.record(("accepted", i / 1000, i))
    gc.collect(0)
    assert not any(gc.is_tracked(e) for e in hook.log._log)


def test_a_scrape_folds_the_log() -> None:
    client, _ = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    hook.log.start()
    hook.log.record(("rejected", 0.25, 3))
    hook.log.start()
    text = client.prometheus_text().decode()
    assert 'hook_requests_total{outcome="rejected",signature="invalid"} 1.0' in text
    assert "hook_in_flight 1.0" in text
    assert "hook_body_bytes_count 1.0" in text


def test_fork_child_starts_clean_and_its_bound_record_still_ships() -> None:
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    record = hook.log.record
    record(("accepted", 0.1, 5))  # unflushed in the parent at fork time: the parent's to ship

    def in_child() -> Any:
        record(("accepted", 0.2, 7))
        client.flush()
        return totals(sink.batches, "hook_body_bytes")[()]

    assert in_a_fork(in_child)[1] == [1, 7]
    client.flush()
    assert totals(sink.batches, "hook_body_bytes") == {(): [1, 5]}
