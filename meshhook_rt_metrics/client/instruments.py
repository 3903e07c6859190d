"""Instruments and their in-process aggregation.

Hot path design: a call only appends its value to its series' log (``list.append`` is atomic under the
GIL, so the log is the one order of every thread's updates) and checks the log's length. The work —
validating the values, summing them, bucketing them into the sketch, replaying a gauge's updates — is done
in batches by whoever *folds* the log: the flush (every series, before it collects), a reader (``value``,
``cumulative``), or the writer whose append took the log past ``LOG_MAX`` entries (which bounds memory per
series). Folders take a lock per series; a writer only tries it and never waits (the log then holds a few
more entries until the next append or the flush). Entries are taken with one slice and one delete (each
atomic), so every update is folded exactly once, in order: no lost update, exact interval min/max. A fold
never raises into a caller: an invalid entry is counted and dropped, the rest of the batch kept.

Why: in a real handler the calls run with cold interpreter caches, where each bytecode costs several times
what it costs in a loop. A call that does the least (find the series, append) and leaves the arithmetic to
a batch that runs warm costs a handler far less than the same arithmetic done per call (docs/architecture.md,
"The client in a real service"). A ``strict`` registry's calls also check their value before logging it, so
an invalid value raises ``ValueError`` at the call that passed it.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any, ParamSpec, TypeVar

from meshhook_rt_metrics.client.labels import (
    MAX_LABEL_VALUE,
    OVERFLOW_VALUE,
    check_label_names,
    check_metric_name,
)
from meshhook_rt_metrics.client.owner import InstrumentOwner
from meshhook_rt_metrics.client.sketch import Sketch

_INF = math.inf
_EXACT_INT = 2**52  # whole floats below it, stepped by ones, stay exact
_perf = time.perf_counter

P = ParamSpec("P")
R = TypeVar("R")

Point = dict[str, Any]
GaugeCallback = Callable[[], "float | Mapping[tuple[str, ...], float]"]


_CACHEABLE = (str, int)
OVERFLOW_MEMORY = 4096
"""Distinct label sets beyond the cardinality cap remembered per metric (for counting and routing)."""
OVERFLOW_KEY_MAX_CHARS = 256
"""Longer raw label values beyond the cap are not remembered (they take the slow path each time)."""


class LabelError(TypeError, ValueError):
    """An undeclared, missing or malformed label at a call site (always raised: a programming error).

    A ``TypeError`` like the interpreter's own refusal of an unknown keyword on the compiled
    ``inc``/``observe`` paths, so ``except TypeError`` catches every label mistake.
    """


# --------------------------------------------------------------------------------------------------
# children (one per label set)
# --------------------------------------------------------------------------------------------------
LOG_MAX = 256
"""Updates a series' log holds before the writer that filled it folds it (bounds memory per series)."""


class _Child:
    __slots__ = ("__weakref__", "_lock", "_log", "_metric", "_strict", "label_values", "labels", "meta_at")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        self._metric = metric
        self.label_values = label_values
        self.labels = dict(zip(metric.label_names, label_values, strict=True))
        self.meta_at = -_INF
        self._lock = threading.Lock()  # folders only: a writer never waits for it
        self._log: list[Any] = []
        # a strict registry raises on an invalid value: its calls check the value before they log it
        self._strict = metric._registry.strict

    def _point(self, ts: float) -> Point:
        metric = self._metric
        point: Point = {"name": metric.name, "kind": metric.kind, "labels": self.labels, "ts": ts}
        if ts - self.meta_at >= 300.0:  # metadata now and then, not on every point
            self.meta_at = ts
            if metric.unit:
                point["unit"] = metric.unit
            if metric.help:
                point["help"] = metric.help
        return point

    def _fold(self) -> None:
        with self._lock:
            self._fold_locked()

    def _fold_soon(self) -> None:
        """A writer's fold: only if no one else is folding (a writer never waits, and a fold re-entered
        from a signal handler or a finaliser on the same thread cannot deadlock); the log then just
        holds a few more entries until the next append or the flush."""
        if self._lock.acquire(blocking=False):
            try:
                self._fold_locked()
            finally:
                self._lock.release()

    def _check(self, v: Any, ok: Callable[[Any], bool], reason: str) -> None:
        """A strict call's check, before the value is logged: raises ``ValueError`` at that call."""
        if not _passes(ok, v):
            self._metric._invalid(v, reason)

    def _fold_locked(self) -> None:
        """Absorb the entries logged so far (caller holds ``_lock``). Entries appended meanwhile stay for
        the next fold: they come after these in the one order of updates."""
        log = self._log
        k = len(log)
        if k:
            entries = log[:k]  # slicing and deleting are single, atomic operations under the GIL
            del log[:k]
            try:
                self._absorb(entries)
            except Exception:  # values no check foresaw: dropped and counted, never raised into a caller
                self._report(entries)

    def absorb(self, entries: list[Any]) -> None:
        """Fold ``entries`` as if they had been logged after this series' own log (a request log's fold):
        the same validation, and never raising."""
        with self._lock:
            self._fold_locked()
            try:
                self._absorb(entries)
            except Exception:
                self._report(entries)

    def _absorb(self, entries: list[Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _valid(entries: list[Any], ok: Callable[[Any], bool]) -> tuple[list[Any], list[Any]]:
        """The entries that pass ``ok``, and the others."""
        kept: list[Any] = []
        bad: list[Any] = []
        for e in entries:
            (kept if _passes(ok, e) else bad).append(e)
        return kept, bad

    def _report(self, bad: list[Any]) -> None:
        """Count the invalid entries a fold found (a strict call refused its own before logging it)."""
        registry, name = self._metric._registry, self._metric.name
        for _ in bad:
            registry.count_invalid(name)

    def collect(self, ts: float) -> Point | None:
        raise NotImplementedError

    def after_fork(self) -> None:
        # the forking thread is the only one now: the log (the parent's unfolded updates, the parent's to
        # ship) is dropped with the rest; the fresh lock replaces one a vanished thread may have held
        self._lock = threading.Lock()
        self._log = []
        self._reset()

    def _reset(self) -> None:
        raise NotImplementedError


def _passes(ok: Callable[[Any], bool], e: Any) -> bool:
    """``ok(e)``, false where the value cannot even be compared or converted."""
    try:
        return bool(ok(e))
    except (TypeError, ValueError, ArithmeticError):
        return False


def _increment_ok(e: Any) -> bool:
    return bool(0 <= e < _INF) and 0 <= float(e) < _INF


def _value_ok(e: Any) -> bool:
    return bool(-_INF < e < _INF) and -_INF < float(e) < _INF


class CounterChild(_Child):
    """One counter series; ``inc`` is the hot path."""

    __slots__ = ("_cn", "_cs", "_n", "_s")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # the interval's increments and their sum (int while the increments are ints)
        self._s: float = 0
        self._cn = 0  # shipped intervals, for the cumulative view
        self._cs: float = 0

    def inc(self, amount: float = 1, /) -> None:
        """Add ``amount`` (>= 0, finite)."""
        if self._strict:
            self._check(amount, _increment_ok, _COUNTER_REASON)
        log = self._log
        log.append(amount)
        if len(log) > LOG_MAX:
            self._fold_soon()

    def _absorb(self, entries: list[Any]) -> None:
        try:
            s = sum(entries)
            ok = min(entries) >= 0 and 0 <= float(s) < _INF  # a NaN or infinity among them makes s one
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        bad: list[Any] = []
        if not ok:
            entries, bad = self._valid(entries, _increment_ok)
            s = _sum(entries)
        total = _add(self._s, s)  # before any change: a fold that fails changes nothing
        self._n += len(entries)
        self._s = total
        self._report(bad)

    def absorb_ones(self, n: int) -> None:
        """Fold ``n`` increments of 1 (a request log's outcomes): valid by construction, so no list of
        them is built and none is checked."""
        with self._lock:
            self._fold_locked()
            self._n += n
            self._s = _add(self._s, n)

    def collect(self, ts: float) -> Point | None:
        with self._lock:
            self._fold_locked()
            n, s = self._n, self._s
            self._n, self._s = 0, 0
            self._cn += n
            self._cs = _add(self._cs, s)
        if n <= 0:
            return None
        point = self._point(ts)
        point["count"] = n
        point["sum"] = s
        return point

    def cumulative(self) -> tuple[int, float]:
        """(count, sum) since the process started (or forked): the Prometheus view."""
        with self._lock:
            self._fold_locked()
            return self._cn + self._n, _add(self._cs, self._s)


class HistogramChild(_Child):
    """One histogram series: count, sum, min, max and the shared sketch."""

    __slots__ = ("_cn", "_cs", "_csketch", "_mn", "_mx", "_n", "_s", "_sketch")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # the interval's values: count, sum, min, max, sketch
        self._s = 0.0
        self._mn = _INF
        self._mx = -_INF
        self._sketch = Sketch()
        self._cn = 0  # shipped intervals, for the cumulative view
        self._cs = 0.0
        self._csketch = Sketch()

    def observe(self, v: float, /) -> None:
        """Record one value (finite; negatives and zeros are fine)."""
        if self._strict:
            self._check(v, _value_ok, _HISTOGRAM_REASON)
        log = self._log
        log.append(v)
        if len(log) > LOG_MAX:
            self._fold_soon()

    def time(self) -> Timer:
        return Timer(self.observe)

    def _absorb(self, entries: list[Any]) -> None:
        # sorted first, min and max its ends: the sketch then counts each bucket's run without sorting again.
        # Counted under callgrind against min() and max() first, per value: 340-370 instructions less for
        # batches of latencies and of equal sizes, 140-540 less for values spread over many buckets, 170 less
        # for ints and floats mixed (batches of 3,000 and of 256 values)
        if not entries:
            return
        try:
            s = float(sum(entries))
            ordered = sorted(entries)
            mn, mx = float(ordered[0]), float(ordered[-1])
            # a NaN or infinity among them makes s one; min and max catch huge ints whose sum cancels
            ok = -_INF < s < _INF and mn > -_INF and mx < _INF
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        bad: list[Any] = []
        if not ok:
            entries, bad = self._valid(entries, _value_ok)
            if entries:
                ordered = sorted(entries)
                s, mn, mx = float(_sum(ordered)), float(ordered[0]), float(ordered[-1])
        if entries:
            self._sketch.extend_finite(ordered, mn, mx, ordered=True)  # validated, sorted, min and max known
            self._n += len(entries)
            self._s += s
            if mn < self._mn:  # noqa: PLR1730
                self._mn = mn
            if mx > self._mx:  # noqa: PLR1730
                self._mx = mx
        self._report(bad)

    def collect(self, ts: float) -> Point | None:
        with self._lock:
            self._fold_locked()
            n, s, mn, mx, sketch = self._n, self._s, self._mn, self._mx, self._sketch
            if n <= 0:
                return None
            self._n, self._s, self._mn, self._mx, self._sketch = 0, 0.0, _INF, -_INF, Sketch()
            self._cn += n
            self._cs += s
            self._csketch.merge(sketch)
        point = self._point(ts)
        point["count"] = n
        point["sum"] = s
        point["min"] = mn
        point["max"] = mx
        point["sketch"] = sketch.to_wire()
        return point

    def cumulative(self) -> tuple[int, float, Sketch]:
        """(count, sum, sketch) since the process started (or forked): the Prometheus view."""
        with self._lock:
            self._fold_locked()
            sketch = Sketch()
            sketch.merge(self._csketch)
            sketch.merge(self._sketch)
            return self._cn + self._n, self._cs + self._s, sketch


_COUNTER_REASON = "counter increment must be finite and >= 0"
_HISTOGRAM_REASON = "histogram value must be a finite number"


def _add(a: Any, b: Any) -> Any:
    """``a + b``, or their float sum when the types do not add up together (a Decimal and a float)."""
    try:
        return a + b
    except TypeError:
        return float(a) + float(b)


def _sum(values: list[Any]) -> Any:
    """``sum``, or the float sum when the values' own types do not add up together (Decimal + float)."""
    try:
        return sum(values)
    except TypeError:
        return math.fsum(values)


class GaugeChild(_Child):
    """One gauge series: the current value plus the interval's count/sum/min/max of the values taken.

    ``set``/``inc``/``dec`` append one entry to the series' log, like every instrument's calls; a fold
    replays the entries in order: the value after every update, hence count, sum, min, max and last, are
    exactly those of the same updates made one at a time under a lock. A ``set`` is the entry ``(v,)``, an
    ``inc``/``dec`` the signed amount.
    """

    __slots__ = ("_fn", "_has", "_mn", "_mx", "_n", "_s", "_v")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._fn: Callable[[], float] | None = None
        self._reset()

    def _reset(self) -> None:
        self._v = 0.0
        self._has = False
        self._n = 0
        self._s = 0.0
        self._mn = _INF
        self._mx = -_INF

    def set(self, v: float, /) -> None:
        """Set the current value."""
        if self._strict:
            self._check(v, _value_ok, "gauge value must be a finite number")
        log = self._log
        log.append((v,))
        if len(log) > LOG_MAX:
            self._fold_soon()

    def inc(self, amount: float = 1, /) -> None:
        """Add ``amount`` (may be negative) to the current value: an up-down counter."""
        if self._strict:
            self._check(amount, _value_ok, "gauge increment must be a finite number")
        log = self._log
        log.append(amount)
        if len(log) > LOG_MAX:
            self._fold_soon()

    def dec(self, amount: float = 1, /) -> None:
        if self._strict:
            self._check(amount, _value_ok, "gauge decrement must be a finite number")
        try:
            negated = -amount
        except TypeError:  # not a number (the rare path: reported here, nothing logged)
            self._metric._invalid(amount, "gauge decrement must be a finite number")
            return
        log = self._log
        log.append(negated)
        if len(log) > LOG_MAX:
            self._fold_soon()

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value from ``fn`` at each flush (a callback gauge)."""
        self._fn = fn

    @property
    def value(self) -> float:
        with self._lock:
            self._fold_locked()
            return self._v

    def _absorb(self, entries: list[Any]) -> None:
        e = entries[0]
        bad: list[Any] = []
        if len(entries) == 1 and type(e) is tuple and type(e[0]) is float and -_INF < e[0] < _INF:
            values = [e[0]]  # one set per flush (system gauges)
            total = e[0]
        else:
            try:  # only numbers (the up-down counter case): C-speed running sum
                values = list(accumulate(entries, initial=self._v))
                del values[0]
                total = float(sum(values))
                ok = -_INF < total < _INF  # a NaN or infinity among them makes it one
            except (TypeError, ValueError, ArithmeticError):  # sets among them, or odd number types
                ok = False
            if not ok:
                values, bad = self._replay(entries)
                total = sum(values)
        if values:
            self._took(len(values), total, values[-1], min(values), max(values))
        self._report(bad)

    def _took(self, n: int, total: float, last: float, mn: float, mx: float) -> None:
        """``n`` more values taken, summing to ``total``, the last one ``last``, within ``[mn, mx]``."""
        self._v = last
        self._has = True
        self._n += n
        self._s += total
        if mn < self._mn:  # noqa: PLR1730
            self._mn = mn
        if mx > self._mx:  # noqa: PLR1730
            self._mx = mx

    def absorb_steps(self, steps: Sequence[int]) -> None:
        """Fold unit steps in order (+1 a request began, -1 one ended: a request log's in-flight gauge),
        valid by construction. From a whole current value (the gauge is the log's alone), the running
        values are taken as ints from 0 and offset once: the values, min, max and last exactly as the steps
        one by one would give them, their sum too below 2**53. Their min and max come from their set, a
        handful of distinct values (C-speed int hashing, where min() and max() would compare each value twice
        through Python's generic path). From any other value (a direct ``set(0.1)``) they are replayed in
        floats, rounded at each step as the calls are."""
        if not steps:
            return
        with self._lock:
            self._fold_locked()
            v, n = self._v, len(steps)
            if float(v).is_integer() and abs(v) < _EXACT_INT:
                running = list(accumulate(steps))
                seen = set(running)
                self._took(n, n * v + sum(running), v + running[-1], v + min(seen), v + max(seen))
            else:  # the calls' own fold: replayed in floats from the current value
                self._absorb(list(steps))

    def _replay(self, entries: list[Any]) -> tuple[list[float], list[Any]]:
        """One entry at a time, what the fast path could not take: the values, and the invalid entries."""
        v = self._v
        values: list[float] = []
        bad: list[Any] = []
        for e in entries:
            is_set = type(e) is tuple
            raw = e[0] if is_set else e
            try:
                ok = bool(-_INF < raw < _INF)  # a number, not a string float() would parse
                nxt = float(raw) if is_set else v + float(raw)
                ok = ok and -_INF < nxt < _INF
            except (TypeError, ValueError, ArithmeticError):
                ok = False
            if ok:
                v = nxt
                values.append(v)
            else:
                bad.append(raw)
        return values, bad

    def collect(self, ts: float) -> Point | None:
        if self._fn is not None:
            try:
                v = float(self._fn())
            except Exception:
                self._metric._registry.callback_failed(self._metric.name)
                return None
            if not _finite(v):
                self._metric._registry.count_invalid(self._metric.name)
                return None
            self._log.append((v,))
        with self._lock:
            self._fold_locked()
            if not self._has:
                return None
            n, s, mn, mx, v = self._n, self._s, self._mn, self._mx, self._v
            self._n, self._s, self._mn, self._mx = 0, 0.0, _INF, -_INF
        if n == 0:  # unchanged during the interval: sample the current value once
            n, s, mn, mx = 1, v, v, v
        point = self._point(ts)
        point.update(count=n, sum=s, min=mn, max=mx, last=v)
        return point


def _finite(v: Any) -> bool:
    try:
        return bool(-_INF < v < _INF)
    except TypeError:
        return False


# --------------------------------------------------------------------------------------------------
# metrics (one per name)
# --------------------------------------------------------------------------------------------------
class Metric:
    """A named metric with declared labels; resolves label sets to children (the slow path)."""

    kind = ""
    _child_type: type[_Child] = _Child

    def __init__(
        self,
        registry: InstrumentOwner,
        name: str,
        help: str = "",
        labels: tuple[str, ...] | list[str] = (),
        unit: str | None = None,
    ) -> None:
        check_metric_name(name)
        names = tuple(labels)
        check_label_names(name, names)
        if unit is not None and len(unit) > 64:
            raise ValueError(f"{name}: unit longer than 64 characters")
        self._registry = registry
        self.name = name
        self.help = (help or "")[:1024]
        self.unit = unit
        self.label_names = names
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _Child] = {}
        # fast-path cache: raw label values in declared order -> child; only str and int values (status
        # codes) are cached, so a bool or float never creates an entry (True == 1 == 1.0 as dict keys)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._key: Callable[[Mapping[str, object]], tuple[Any, ...]] = _key_function(names)
        self._overflow: _Child | None = None
        # distinct label sets beyond the cap: recently counted ones (cleaned values), and raw values known
        # to go to the overflow series that did not fit into ``_cache`` (both FIFO, OVERFLOW_MEMORY each)
        self._dropped_recent: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._overflowed: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        if not names:
            self._cache[()] = self._default = self._new_child(())
        self._specialise()

    def _specialise(self) -> None:
        """Install hot-path methods compiled for this metric's label names (see ``_compile``)."""

    def _new_child(self, values: tuple[str, ...]) -> Any:
        child = self._child_type(self, values)
        self._children[values] = child
        return child

    def _invalid(self, v: object, reason: str) -> None:
        self._registry.invalid_value(self.name, v, reason)

    def labels(self, *values: object, **labels: object) -> Any:
        """The child for one label set, to keep and reuse on hot paths (fastest call style)."""
        try:
            if not labels:
                return self._cache[values]
            if labels and len(labels) == len(self.label_names):
                return self._cache[self._key(labels)]
        except (KeyError, TypeError):
            pass
        if values:
            if labels:
                raise LabelError(f"{self.name}: pass label values either by position or by name, not both")
            if len(values) != len(self.label_names):
                raise LabelError(
                    f"{self.name}: expected {len(self.label_names)} label values "
                    f"{self.label_names!r}, got {len(values)}"
                )
            labels = dict(zip(self.label_names, values, strict=True))
        return self._resolve(labels)

    def _resolve(self, labels: Mapping[str, object]) -> Any:
        """Validate, redact, truncate, cap: only for label sets not seen at this call site yet."""
        names = self.label_names
        if len(labels) != len(names) or any(k not in labels for k in names):
            missing = [k for k in names if k not in labels]
            undeclared = [k for k in labels if k not in names]
            raise LabelError(
                f"{self.name}: labels must be exactly {names!r}"
                + (f"; missing {missing!r}" if missing else "")
                + (f"; undeclared {undeclared!r}" if undeclared else "")
            )
        raw = tuple(labels[k] for k in names)
        overflow = self._overflow
        if overflow is not None and raw in self._overflowed:
            return overflow  # a label set already turned away: no redaction, no lock
        registry = self._registry
        limit = min(registry.max_label_value_length, MAX_LABEL_VALUE)
        redact = registry.redact_cached
        clean = []
        for v in raw:
            text = redact(v if isinstance(v, str) else str(v))
            if len(text) > limit:
                text = text[:limit]
            clean.append(text)
        values = tuple(clean)
        cacheable = all(type(v) in _CACHEABLE for v in raw)
        with self._lock:
            child = self._children.get(values)
            if child is None:
                if len(self._children) - (self._overflow is not None) >= registry.max_label_sets:
                    child = self._overflow_child(values)
                    if cacheable:
                        self._remember_overflow(raw, child)
                    return child
                child = self._new_child(values)
            if cacheable and len(self._cache) < 4 * registry.max_label_sets + 16:
                self._cache[raw] = child
        return child

    def _remember_overflow(self, raw: tuple[Any, ...], overflow: _Child) -> None:
        """Remember (bounded) that ``raw`` goes to the overflow series, for good: the children never
        shrink, so a label set turned away once is turned away every time. Only str/int values (as for
        ``_cache``), and short ones, so the memory held stays small."""
        for v in raw:
            if type(v) is str and len(v) > OVERFLOW_KEY_MAX_CHARS:
                return
        if len(self._cache) < 2 * self._registry.max_label_sets + 16:
            # the fast path itself: half the cache's room, the rest stays for other spellings (200 / "200")
            self._cache[raw] = overflow
            return
        remembered = self._overflowed
        remembered[raw] = None
        if len(remembered) > OVERFLOW_MEMORY:
            remembered.popitem(last=False)

    def _overflow_child(self, values: tuple[str, ...]) -> _Child:
        """Route a label set beyond the cap to the overflow series, counting distinct dropped sets."""
        if self._overflow is None:
            self._overflow = self._new_child(tuple(OVERFLOW_VALUE for _ in self.label_names))
        recent = self._dropped_recent
        if values not in recent:
            recent[values] = None
            if len(recent) > OVERFLOW_MEMORY:  # bounded memory: forget the oldest, in constant time
                recent.popitem(last=False)
            self._registry.dropped_label_set(self.name)
        return self._overflow

    def _child(self, labels: Mapping[str, object]) -> Any:
        try:
            if len(labels) == len(self.label_names):
                return self._cache[self._key(labels)]
        except (KeyError, TypeError):
            pass
        return self._resolve(labels)

    def children(self) -> list[_Child]:
        return list(self._children.values())

    def fold(self) -> None:
        """Fold every series' log (the flush does, before it collects)."""
        for child in self.children():
            child._fold()

    def collect(self, ts: float) -> Iterator[Point]:
        for child in self.children():
            point = child.collect(ts)
            if point is not None:
                yield point

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        for child in self.children():
            child.after_fork()

    def _describe(self) -> tuple[str, tuple[str, ...], str | None]:
        return (self.kind, self.label_names, self.unit)


class Counter(Metric):
    """Monotonic counter: ``inc(**labels)`` or ``labels(...).inc(n)``; ships the delta per flush."""

    kind = "counter"
    _child_type = CounterChild

    def inc(self, amount: float = 1, /, **labels: object) -> None:
        """Add ``amount`` (>= 0) to the series of ``labels`` (replaced per instance by a compiled twin)."""
        self._child(labels).inc(amount)

    def _specialise(self) -> None:
        vars(self)["inc"] = _compile(_COUNTER_INC, self)

    def labels(self, *values: object, **labels: object) -> CounterChild:
        """The child series for one label set: keep it for the hottest paths (``child.inc()``)."""
        child: CounterChild = super().labels(*values, **labels)
        return child


class Histogram(Metric):
    """Distribution of values (durations, sizes) with the shared 1 % sketch."""

    kind = "histogram"
    _child_type = HistogramChild

    def observe(self, v: float, /, **labels: object) -> None:
        """Record ``v`` in the series of ``labels`` (replaced per instance by a compiled twin)."""
        self._child(labels).observe(v)

    def _specialise(self) -> None:
        vars(self)["observe"] = _compile(_HISTOGRAM_OBSERVE, self)

    def labels(self, *values: object, **labels: object) -> HistogramChild:
        """The child series for one label set (``child.observe(v)``, ``child.time()``)."""
        child: HistogramChild = super().labels(*values, **labels)
        return child

    def time(self, **labels: object) -> Timer:
        """Time a block (``with h.time(...)``) or every call of a function (``@h.time(...)``)."""
        child: HistogramChild = self._child(labels)
        return Timer(child.observe)


class Gauge(Metric):
    """Current value (set/inc/dec) or a callback read at each flush; also an up-down counter."""

    kind = "gauge"
    _child_type = GaugeChild

    def __init__(
        self,
        registry: InstrumentOwner,
        name: str,
        help: str = "",
        labels: tuple[str, ...] | list[str] = (),
        unit: str | None = None,
        callback: GaugeCallback | None = None,
    ) -> None:
        super().__init__(registry, name, help, labels, unit)
        self._callback = callback
        if callback is not None and not self.label_names:
            self._default.set_function(callback)

    def labels(self, *values: object, **labels: object) -> GaugeChild:
        """The child series for one label set (``set``/``inc``/``dec``/``set_function``)."""
        child: GaugeChild = super().labels(*values, **labels)
        return child

    def set(self, v: float, /, **labels: object) -> None:
        self._child(labels).set(v)

    def inc(self, amount: float = 1, /, **labels: object) -> None:
        self._child(labels).inc(amount)

    def dec(self, amount: float = 1, /, **labels: object) -> None:
        self._child(labels).dec(amount)

    def collect(self, ts: float) -> Iterator[Point]:
        if self._callback is not None and self.label_names:
            self._read_labeled_callback()
        yield from super().collect(ts)

    def _read_labeled_callback(self) -> None:
        assert self._callback is not None
        try:
            readings = self._callback()
        except Exception:
            self._registry.callback_failed(self.name)
            return
        if not isinstance(readings, Mapping):
            self._registry.callback_failed(self.name)
            return
        for values, v in readings.items():
            try:
                child = self.labels(*(values if isinstance(values, tuple) else (values,)))
                child.set(v)
            except Exception:
                self._registry.callback_failed(self.name)


class Timer:
    """Context manager and decorator that observes elapsed seconds (``perf_counter``)."""

    __slots__ = ("_observe", "_start")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = _perf()
        return self

    def __exit__(self, *exc: object) -> None:
        self._observe(_perf() - self._start)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        observe = self._observe
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                start = _perf()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    observe(_perf() - start)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = _perf()
            try:
                return fn(*args, **kwargs)
            finally:
                observe(_perf() - start)

        return wrapper


# --------------------------------------------------------------------------------------------------
# compiled hot paths
# --------------------------------------------------------------------------------------------------
# A labeled call's cost is dominated by turning ``**labels`` into a cache key. Each metric therefore gets
# its hot method compiled for its own label names (as dataclasses and namedtuple do), with the labels
# as keyword-only parameters: ``def inc(__amount=1, /, *, outcome, signature)``. The interpreter binds
# them without building a dict, the key is the tuple of the parameters, and a missing or undeclared
# label is refused by Python itself at the call (``TypeError: meshhook_webhook_requests_total.inc()
# missing 1 required keyword-only argument: 'signature'``). Label names are validated identifiers and
# internal names start with "__", which label names may not, so nothing can clash or be injected. A
# label named like a Python keyword (``class``) cannot be a parameter: such metrics get the ``**labels``
# variant, which checks the names itself and raises LabelError.

_BODY = """
    try:
        __child = __cache[KEY]
    except (KeyError, TypeError):
        __child = __resolve(LABELS)
    CHECK
    STRICT
    __log = __child._log
    __log.append(VALUE)
    if len(__log) > __LOG_MAX:
        __child._fold_soon()
"""

_COUNTER_INC = "def inc(__amount=1, /, PARAMS):" + _BODY.replace("VALUE", "__amount")

_HISTOGRAM_OBSERVE = "def observe(__v, /, PARAMS):" + _BODY.replace("VALUE", "__v")

_CHECKS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    _COUNTER_INC: ("__amount", _increment_ok, _COUNTER_REASON),
    _HISTOGRAM_OBSERVE: ("__v", _value_ok, _HISTOGRAM_REASON),
}


def _key_source(names: tuple[str, ...], mapping: str | None = None) -> str:
    """``(a, b, )`` from parameters, or ``(m['a'], m['b'], )`` from a mapping."""
    if not names:
        return "()"
    items = (f"{mapping}[{n!r}]" if mapping else n for n in names)
    return "(" + "".join(f"{item}, " for item in items) + ")"


def _key_function(names: tuple[str, ...]) -> Callable[[Mapping[str, object]], tuple[Any, ...]]:
    # names are validated identifiers (see the comment above)
    fn: Callable[[Mapping[str, object]], tuple[Any, ...]] = eval(f"lambda m: {_key_source(names, 'm')}")
    return fn


def _compile(template: str, metric: Metric) -> Callable[..., None]:
    names = metric.label_names
    for name in names:  # defence in depth: only validated identifiers reach the source
        if not name.isidentifier() or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")
    if not any(keyword.iskeyword(n) for n in names):
        params = ("*, " + ", ".join(names)) if names else ""
        labels = "{" + ", ".join(f"{n!r}: {n}" for n in names) + "}"
        source = template.replace("PARAMS", params).replace("KEY", _key_source(names))
        source = source.replace("LABELS", labels).replace("CHECK", "")
    else:
        source = template.replace("PARAMS", "**__labels").replace("KEY", _key_source(names, "__labels"))
        source = source.replace("LABELS", "__labels").replace(
            "CHECK",
            f"else:\n        if len(__labels) != {len(names)}:\n            __child = __resolve(__labels)",
        )
    source = source.replace(", /, ):", ", /):")
    value, ok, reason = _CHECKS[template]
    # strict registries check the value before logging it (raising at the call); others not at all
    source = source.replace(
        "STRICT", f"__child._check({value}, __ok, __reason)" if metric._registry.strict else ""
    )
    namespace: dict[str, Any] = {
        "__cache": metric._cache,
        "__resolve": metric._resolve,
        "__LOG_MAX": LOG_MAX,
        "__ok": ok,
        "__reason": reason,
    }
    exec(source, namespace)  # see the comment above
    name = template.split("(", 1)[0].split(maxsplit=1)[-1]
    fn: Callable[..., None] = namespace[name]
    fn.__qualname__ = f"{metric.name}.{name}"  # errors read "<metric>.inc() missing ... 'signature'"
    fn.__doc__ = getattr(type(metric), name).__doc__
    return fn
