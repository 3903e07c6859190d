"""The shared sketch: constants as the SQL side embeds them, accuracy vs exact sorting and vs ddsketch."""

from __future__ import annotations

import math
import random
from decimal import Decimal, InvalidOperation

import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from meshhook_rt_metrics.client import sketch
from meshhook_rt_metrics.client.sketch import ALPHA, MULTIPLIER, ZERO_THRESHOLD, Sketch, key, value

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)

magnitudes = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
values = st.one_of(magnitudes, magnitudes.map(lambda v: -v), st.just(0.0))


def test_constants_are_computed_exactly_as_the_contract_says() -> None:
    assert ALPHA == 0.01
    assert 1 / math.log1p(2 * 0.01 / (1 - 0.01)) == MULTIPLIER
    assert repr(MULTIPLIER) == "49.998333288886556"  # the literal the SQL migration embeds
    assert sketch.GAMMA == (1 + 0.01) / (1 - 0.01)
    assert ZERO_THRESHOLD == 1e-9


def test_known_keys() -> None:
    assert key(1.0) == 0
    assert key(1.02) == math.ceil(math.log(1.02) * MULTIPLIER) == 1
    assert key(0.5) == math.ceil(math.log(0.5) * MULTIPLIER)
    assert key(1e-9) == -1036 and key(1.7976931348623157e308) <= 35488  # the range the SQL side accepts


@given(magnitudes)
def test_bucket_value_within_alpha(v: float) -> None:
    assert abs(value(key(v)) - v) <= ALPHA * v * (1 + 1e-9)


def _exact(sorted_values: list[float], q: float) -> float:
    return sorted_values[math.floor(q * (len(sorted_values) - 1))]


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * abs(b) + 1e-12


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=400))
def test_quantiles_match_exact_sorting_and_ddsketch(data: list[float]) -> None:
    ours = Sketch()
    ours.extend(data)
    oracle = DDSketch(relative_accuracy=ALPHA)
    for v in data:
        oracle.add(v)
    exact = sorted(data)
    assert ours.count == len(data)
    for q in QUANTILES:
        got = ours.quantile(q, min(data), max(data))
        assert got is not None
        assert _close(got, _exact(exact, q), ALPHA * (1 + 1e-9)), (q, got, _exact(exact, q))
        theirs = oracle.get_quantile_value(q)
        theirs = min(max(theirs, min(data)), max(data))
        # same mapping up to log(v) vs log2(v)*ln2 rounding on a bucket boundary: within one bucket
        assert _close(got, theirs, 2.5 * ALPHA), (q, got, theirs)


def test_agrees_with_ddsketch_bucket_for_bucket_on_a_large_sample() -> None:
    rng = random.Random(7)
    data = [rng.lognormvariate(-3, 2) for _ in range(50_000)]
    ours = Sketch()
    ours.extend(data)
    oracle = DDSketch(relative_accuracy=ALPHA)
    for v in data:
        oracle.add(v)
    for q in QUANTILES[1:-1]:
        assert ours.quantile(q) == oracle.get_quantile_value(q) or _close(
            ours.quantile(q) or 0.0, oracle.get_quantile_value(q), 2.5 * ALPHA
        )


@given(st.lists(values, max_size=200), st.lists(values, max_size=200))
def test_merge_is_exact(a: list[float], b: list[float]) -> None:
    left, right, whole = Sketch(), Sketch(), Sketch()
    left.extend(a)
    right.extend(b)
    whole.extend(a + b)
    left.merge(right)
    assert left.to_wire() == whole.to_wire()


@given(st.lists(values, min_size=1, max_size=200))
def test_wire_form(data: list[float]) -> None:
    s = Sketch()
    s.extend(data)
    wire = s.to_wire()
    assert set(wire) == {"z", "p", "n"}
    assert wire["z"] + sum(wire["p"].values()) + sum(wire["n"].values()) == len(data)
    assert all(isinstance(k, str) and int(k) == int(k, 10) for k in [*wire["p"], *wire["n"]])
    assert all(c >= 1 for c in [*wire["p"].values(), *wire["n"].values()])
    assert Sketch.from_wire(wire).to_wire() == wire


def test_negative_values_walk_from_the_most_negative() -> None:
    s = Sketch()
    s.extend([-100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0])
    assert _close(s.quantile(0.0) or 0, -100.0, ALPHA)
    assert _close(s.quantile(1 / 6) or 0, -10.0, ALPHA)
    assert s.quantile(0.5) == 0.0
    assert _close(s.quantile(1.0) or 0, 100.0, ALPHA)
    assert Sketch().quantile(0.5) is None


def test_tiny_values_count_as_zero() -> None:
    s = Sketch()
    s.extend([1e-10, -1e-10, 0.0])
    assert s.zero == 3 and not s.pos and not s.neg


@settings(max_examples=300, derandomize=True)
@given(st.one_of(st.lists(values, max_size=300), st.lists(magnitudes, max_size=300)))
def test_extend_buckets_exactly_as_add_does(data: list[float]) -> None:
    # extend is how the client folds its instruments' logs: a positive batch takes a counted path
    one_by_one, batched = Sketch(), Sketch()
    for v in data:
        one_by_one.add(v)
    batched.extend(data)
    assert (batched.zero, batched.pos, batched.neg) == (one_by_one.zero, one_by_one.pos, one_by_one.neg)


def _bucket_end(k: int) -> float:
    """The largest float of bucket ``k``, by plain stepping (independent of the bisection in the module)."""
    v = math.exp(k / MULTIPLIER)
    while key(v) > k:
        v = math.nextafter(v, 0.0)
    while key(math.nextafter(v, math.inf)) <= k:
        v = math.nextafter(v, math.inf)
    return v


def _near_boundary(k: int, steps: int) -> float:
    """A float ``steps`` representable numbers away from the end of bucket ``k`` (0: the end itself)."""
    v = _bucket_end(k)
    for _ in range(abs(steps)):
        v = math.nextafter(v, math.inf if steps > 0 else 0.0)
    return v


@settings(max_examples=300, derandomize=True)
@given(
    # keys low enough that 300 values near them still sum to a finite number, as a batch must to be
    # counted bucket by bucket
    st.integers(-1036, 35300).flatmap(
        lambda k: st.lists(
            st.builds(_near_boundary, st.integers(k, k + 2), st.integers(-3, 3)), min_size=15, max_size=300
        )
    )
)
def test_a_batch_of_few_buckets_is_counted_bucket_by_bucket_exactly_as_add_does(data: list[float]) -> None:
    # at most 4 buckets and 15 values or more: extend sorts the batch and counts each bucket's run, whose
    # end is found by bisection; values sit on the buckets' very edges, where a wrong end shows
    one_by_one, batched = Sketch(), Sketch()
    for v in data:
        one_by_one.add(v)
    batched.extend(data)
    assert batched.pos == one_by_one.pos and not batched.neg and not batched.zero


@settings(max_examples=100, derandomize=True)
@given(
    st.lists(st.integers(100, 104), min_size=20, max_size=300),
    st.lists(st.floats(100.0, 104.0), max_size=20),
)
def test_repeated_sizes_mixed_with_floats_are_counted_as_add_does(
    sizes: list[int], floats: list[float]
) -> None:
    data: list[float] = [*sizes, *floats]
    one_by_one, batched = Sketch(), Sketch()
    for v in data:
        one_by_one.add(v)
    batched.extend(data)
    assert batched.pos == one_by_one.pos


@settings(max_examples=100, derandomize=True)
@given(
    st.lists(st.integers(100, 104), max_size=300),
    st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=300),
)
def test_a_sorted_batch_is_counted_as_add_does(sizes: list[int], floats: list[float]) -> None:
    """``extend_finite(..., ordered=True)`` (a histogram's fold has sorted its batch): few buckets or many,
    ints and floats."""
    for data in (sorted([*sizes, *floats]), sorted([*sizes, floats[0]]), sorted(floats)):
        one_by_one, batched = Sketch(), Sketch()
        for v in data:
            one_by_one.add(v)
        batched.extend_finite(data, data[0], data[-1], ordered=True)
        assert batched.pos == one_by_one.pos


def test_every_bucket_ends_where_the_next_key_starts() -> None:
    for k in range(-1036, 35489):  # every key the wire accepts (~1 s)
        sketch._UPPER.clear()  # found, not remembered
        end = sketch._upper(k)
        assert key(end) == k
        assert end == 1.7976931348623157e308 or key(math.nextafter(end, math.inf)) == k + 1
    assert sketch._upper(35488) == 1.7976931348623157e308


def test_a_bucket_end_is_found_without_exps_window_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # the bisection starts from a window around exp(k / MULTIPLIER); if that did not bracket the end,
    # it would search all the positive floats
    sketch._UPPER.clear()
    monkeypatch.setattr(sketch.math, "exp", lambda x: 1.0)
    for k in (-1036, -5, 3000, 35487):
        end = sketch._upper(k)
        assert key(end) == k and key(math.nextafter(end, math.inf)) == k + 1
    sketch._UPPER.clear()


def test_the_remembered_bucket_ends_start_afresh_when_full() -> None:
    sketch._UPPER.clear()
    for k in range(sketch._UPPER_MAX):
        sketch._upper(k)
    assert len(sketch._UPPER) == sketch._UPPER_MAX
    end = sketch._upper(sketch._UPPER_MAX)
    assert list(sketch._UPPER.items()) == [(sketch._UPPER_MAX, end)]


def test_a_batch_of_few_buckets_is_sorted_and_a_wide_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    original = Sketch._extend_runs

    def spy(self: Sketch, ordered: list[float]) -> None:
        runs.append(len(ordered))
        original(self, ordered)

    monkeypatch.setattr(Sketch, "_extend_runs", spy)
    Sketch().extend([321] * 30)  # one bucket
    Sketch().extend([100.0 + k / 10 for k in range(60)])  # 100 to 106: 4 buckets, 60 values
    assert runs == [30, 60]
    Sketch().extend([1.5**k for k in range(30)])  # 30 values, each in a bucket of its own
    Sketch().extend([1.0, 2.0, 3.0])  # 56 buckets' span for 3 values
    assert runs == [30, 60]


@pytest.mark.timeout(10)
def test_an_int_above_a_bucket_end_that_rounds_onto_it_is_counted_as_add_does() -> None:
    # it sorts after the bucket's largest float yet has that float's key: the run ends before it, and the
    # count must still move on (it did not: an endless loop) and give it the same key
    end = sketch._upper(3000)
    above = int(end) + 1
    assert above > end and float(above) == end
    data = [end] * 10 + [above] * 10
    batched = Sketch()
    batched.extend(data)
    assert batched.pos == {3000: 20}


def test_a_decimal_nan_raises_as_add_does_after_the_same_values() -> None:
    data = [Decimal(5)] * 30 + [Decimal("NaN")]
    batched, one_by_one = Sketch(), Sketch()
    with pytest.raises(InvalidOperation):
        batched.extend(data)
    with pytest.raises(InvalidOperation):
        for v in data:
            one_by_one.add(v)
    assert batched.pos == one_by_one.pos == {key(5.0): 30}


def test_a_nan_in_a_batch_of_one_bucket_is_taken_as_add_does() -> None:
    # min() and max() pass over it; the batch is not sorted with it (the order would be arbitrary)
    data = [5.0] * 10 + [math.nan] + [5.0] * 10
    a, b = Sketch(), Sketch()
    a.extend(data)
    for v in data:
        b.add(v)
    assert (a.zero, a.pos) == (b.zero, b.pos) == (1, {key(5.0): 20})


def test_extend_takes_ints_and_iterators() -> None:
    a, b = Sketch(), Sketch()
    a.extend(iter([1, 2011, 7.5]))
    for v in (1, 2011, 7.5):
        b.add(v)
    assert a.pos == b.pos and a.count == 3


def test_extend_takes_a_nan_as_add_does() -> None:
    a, b = Sketch(), Sketch()
    a.extend([1.0, math.nan, 3.0])
    for v in (1.0, math.nan, 3.0):
        b.add(v)
    assert (a.zero, a.pos, a.neg) == (b.zero, b.pos, b.neg)
