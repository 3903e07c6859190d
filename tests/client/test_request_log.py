"""The request log: bare appends while a request runs, folded into the same series, with the same values, as
the calls they replace (shipped into a MemorySink: no database needed)."""

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
            took, sized = self.log.observe
            self.log.end[NAMES[outcome]]()
            took(seconds)
            sized(size)


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
    start, accepted, (took, sized) = hook.log.start, hook.log.end["accepted"], hook.log.observe
    per_thread, threads_n = 5_000, 4

    def handler(i: int) -> None:
        for j in range(per_thread):
            start()
            accepted()
            took(0.001)
            sized(j % 7)

    with_concurrent_flushes(client, handler, threads_n)
    n = per_thread * threads_n
    assert totals(sink.batches, "hook_requests_total") == {
        (("outcome", "accepted"), ("signature", "verified")): [n, n]
    }
    assert totals(sink.batches, "hook_body_bytes")[()] == [
        n,
        threads_n * sum(i % 7 for i in range(per_thread)),
    ]
    assert totals(sink.batches, "hook_duration_seconds")[(("route", "/h"),)][0] == n
    assert hook.in_flight.value == 0
    gauge = [p for p in user_points(sink.batches) if p["name"] == "hook_in_flight"]
    # every start and every end a value of the gauge (a flush that saw no change samples it once more)
    assert sum(p["count"] for p in gauge) >= 2 * n
    assert max(p["max"] for p in gauge) <= threads_n
    assert min(p["min"] for p in gauge) >= 0


def test_a_flush_between_a_requests_end_and_its_values_ships_each_once() -> None:
    """Each series folds its own deque: a request's fields may land in two flushes, none twice or lost."""
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    took, sized = hook.log.observe
    hook.log.start()
    hook.log.end["rejected"]()
    client.flush()
    took(0.5)
    sized(9)
    client.flush()
    assert [len(b["points"]) > 0 for b in sink.batches] == [True, True]
    assert totals(sink.batches, "hook_requests_total") == {
        (("outcome", "rejected"), ("signature", "invalid")): [1, 1]
    }
    assert totals(sink.batches, "hook_duration_seconds") == {(("route", "/h"),): [1, 0.5]}
    assert totals(sink.batches, "hook_body_bytes") == {(): [1, 9]}


class _Weird:
    """A value whose ``==``, ordering and hash raise, as a numpy array's comparison does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("ambiguous")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


ODD_VALUES: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    "abc",
    "1.5",  # a string float() would parse: still not a number
    None,
    [1.0],
    (1.0,),
    _Weird(),
    10**400,  # an int beyond any float
    True,
]


@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
def test_an_odd_value_among_good_ones_is_judged_as_an_observe_call_judges_it(odd: Any) -> None:
    """The log's ``observe`` against the histogram's own ``observe``, the same values in the same order:
    the same points and the same invalid counts; the other series never pay for it."""
    shipped = []
    for logged in (False, True):
        client, sink = memory_client()
        hook = Webhook(client, logged=logged)
        for value in (0.5, odd, 0.25):
            hook.start()
            hook.end(0, value, 10)
        client.flush()
        invalid = "meshhook_metrics_client_invalid_values_total"
        counted = health_total(client, invalid, metric="hook_duration_seconds")
        shipped.append((_comparable(sink.batches), counted))
        assert totals(sink.batches, "hook_body_bytes") == {(): [3, 30]}, logged
        assert hook.in_flight.value == 0
    assert shipped[0] == shipped[1]


def test_a_strict_client_counts_what_its_calls_would_raise() -> None:
    client, sink = memory_client(mode="development")
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    took, sized = hook.log.observe
    with pytest.raises(ValueError, match="finite"):
        hook.duration.observe(float("nan"))
    took(float("nan"))
    sized(10)
    client.flush()  # no raise in the flush: counted
    invalid = "meshhook_metrics_client_invalid_values_total"
    assert health_total(client, invalid, metric="hook_duration_seconds") == 1
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
    reordered = dict(zip(reversed(NAMES), reversed(hook.outcomes), strict=True))
    assert client.request_log(hook.duration, hook.size, outcomes=reordered, in_flight=hook.in_flight) is again
    with pytest.raises(ValueError, match="'request_log' is already registered with other series"):
        client.request_log(hook.size, hook.duration, outcomes=reordered, in_flight=hook.in_flight)
    with pytest.raises(ValueError, match="'request_log' is already registered with other series"):
        client.request_log(hook.size, outcomes={"a": hook.outcomes[0]})
    with pytest.raises(ValueError, match="'hook_in_flight' is fed by another request log already"):
        client.request_log(outcomes={"a": hook.outcomes[0]}, in_flight=hook.in_flight, name="other")
    assert client.registry._request_logs == [hook.log]


def test_a_series_that_fails_to_fold_loses_only_its_share_counted_and_the_flush_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meshhook_rt_metrics.client.instruments import CounterChild

    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    other = client.counter("other_total")
    other.inc()
    for outcome in (0, 0, 1):
        hook.start()
        hook.end(outcome, 0.5, 10)

    def broken(self: CounterChild, n: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CounterChild, "absorb_ones", broken)
    client.flush()
    assert totals(sink.batches, "other_total") == {(): [1, 1]}
    assert "hook_requests_total" not in {p["name"] for p in user_points(sink.batches)}
    assert totals(sink.batches, "hook_body_bytes") == {(): [3, 30]}  # the other series fold as ever
    assert hook.in_flight.value == 0
    invalid = "meshhook_metrics_client_invalid_values_total"
    assert health_total(client, invalid, metric="hook_requests_total") == 3  # its share, under its name


@pytest.mark.parametrize("base", [0.1, 1 / 3, 2.0**53, -7.0])
def test_a_gauge_set_directly_before_is_stepped_as_the_calls_step_it(base: float) -> None:
    """From a whole value the steps are summed as ints; from any other, replayed in floats as the calls
    are: the same points either way."""
    shipped = []
    for logged in (False, True):
        client, sink = memory_client()
        hook = Webhook(client, logged=logged)
        hook.in_flight.set(base)
        client.flush()
        for k in range(300):
            hook.start()
            if k % 3:
                hook.end(0, 0.5, 1)
        client.flush()
        shipped.append(_comparable(sink.batches))
    assert shipped[0] == shipped[1]


def test_the_last_of_255_outcomes_is_an_end_not_a_start() -> None:
    client, sink = memory_client()
    outcomes = client.counter("many_total", labels=("i",))
    in_flight = client.up_down_counter("many_in_flight").labels()
    log = client.request_log(outcomes={i: outcomes.labels(i=str(i)) for i in range(255)}, in_flight=in_flight)
    log.start()
    log.start()
    log.end[254]()
    log.end[0]()
    client.flush()
    assert totals(sink.batches, "many_total") == {(("i", "0"),): [1, 1], (("i", "254"),): [1, 1]}
    gauge = [p for p in user_points(sink.batches) if p["name"] == "many_in_flight"]
    assert [(p["count"], p["max"], p["last"]) for p in gauge] == [(4, 2.0, 0.0)]


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
    many = {i: client.counter("many_total", labels=("i",)).labels(i=str(i)) for i in range(256)}
    with pytest.raises(ValueError, match="at most 255 outcomes, got 256"):
        client.request_log(outcomes=many)
    assert client.registry._request_logs == []  # nothing half-made


def test_an_unknown_outcome_fails_at_its_lookup_and_the_outcomes_are_copied() -> None:
    client, sink = memory_client()
    outcomes = {"ok": client.counter("ok_total").labels()}
    log = client.request_log(outcomes=outcomes, name="jobs")
    with pytest.raises(
        KeyError, match=r"request log 'jobs' has no outcome 'timeout'; its outcomes: \['ok'\]"
    ):
        log.end["timeout"]
    assert log.end.get("timeout") is None  # a default for outcomes chosen at run time
    outcomes["late"] = client.counter("late_total").labels()  # too late: the log copied them
    assert list(log.end) == ["ok"]
    with pytest.raises(TypeError):
        log.end["late"] = log.end["ok"]  # type: ignore[index]
    log.end["ok"]()
    client.flush()
    assert totals(sink.batches, "ok_total") == {(): [1, 1]}


def test_a_log_nothing_folds_for_long_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from meshhook_rt_metrics.client import request_log

    monkeypatch.setattr(request_log, "UNFOLDED_WARNING", 50)
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    for _ in range(40):  # 80 starts and ends, 40 values a series
        hook.start()
        hook.end(0, 0.5, 1)
    with caplog.at_level("WARNING"):
        client.flush()
    assert "request log request_log held 80 unfolded appends" in caplog.text
    assert totals(sink.batches, "hook_body_bytes") == {(): [40, 40]}  # warned, and folded all the same


def test_a_counter_observes_amounts_and_unlabelled_metrics_are_their_only_series() -> None:
    client, sink = memory_client()
    jobs = client.counter("jobs_total", labels=("queue",))
    log = client.request_log(
        client.counter("bytes_total"),
        outcomes={("mail", 1): jobs.labels(queue="mail"), "done": client.counter("done_total")},
        name="jobs",
    )
    assert isinstance(log, RequestLog) and log.name == "jobs"
    (amount,) = log.observe
    for outcome, size in ((("mail", 1), 100), (("mail", 1), 20), ("done", 1)):
        log.end[outcome]()
        amount(size)
    client.flush()
    assert totals(sink.batches, "jobs_total") == {(("queue", "mail"),): [2, 2]}
    assert totals(sink.batches, "done_total") == {(): [1, 1]}
    assert totals(sink.batches, "bytes_total") == {(): [3, 121]}


def test_a_request_allocates_nothing_the_garbage_collector_counts() -> None:
    """No container a request: the first design's entry tuple brought on more young collections, and
    with them more full ones (counted in the load test's service)."""
    import gc

    client, _ = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    start, accepted, (took, sized) = hook.log.start, hook.log.end["accepted"], hook.log.observe
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for i in range(1000):
            start()
            accepted()
            took(i / 1000)
            sized(i)
        allocated = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert allocated < 10  # ints and floats are not containers, nor are the deques' blocks


def test_a_scrape_folds_the_log() -> None:
    client, _ = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    hook.log.start()
    hook.end(1, 0.25, 3)
    hook.log.start()
    text = client.prometheus_text().decode()
    assert 'hook_requests_total{outcome="rejected",signature="invalid"} 1.0' in text
    assert "hook_in_flight 1.0" in text
    assert "hook_body_bytes_count 1.0" in text


def test_fork_child_starts_clean_and_its_bound_callables_still_ship() -> None:
    client, sink = memory_client()
    hook = Webhook(client, logged=True)
    assert hook.log is not None
    accepted, (_, sized) = hook.log.end["accepted"], hook.log.observe
    accepted()  # unflushed in the parent at fork time: the parent's to ship
    sized(5)

    def in_child() -> Any:
        accepted()
        sized(7)
        client.flush()
        requests = totals(sink.batches, "hook_requests_total")
        return totals(sink.batches, "hook_body_bytes")[()], list(requests.values())

    sizes, requests = in_a_fork(in_child)[1]
    assert sizes == [1, 7]
    assert requests == [[1, 1]]
    client.flush()
    assert totals(sink.batches, "hook_body_bytes") == {(): [1, 5]}
