"""Instruments and their in-process aggregation.

Hot path design (counters and histograms): every (series, thread) pair owns a *cell* that only its
thread writes, holding cumulative totals (count, sum, sketch buckets). The flush thread only reads
cells and keeps the previously read totals next to them, so a delta is ``current - previous``: no lock,
no lost update, whatever the thread interleaving, and no reliance on ``+=`` being atomic. The
interval's min/max are reset by the flush thread; under an exact race they may move to the adjacent
interval, totals never do. Gauges hold one shared value that ``inc``/``dec`` update, which the GIL
alone cannot make atomic: their updates go into an ordered log (``list.append`` is atomic) that the
reader replays under a lock only readers take (see ``GaugeChild``).
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Any, ParamSpec, TypeVar

from meshhook_rt_metrics.client.labels import (
    MAX_LABEL_VALUE,
    OVERFLOW_VALUE,
    check_label_names,
    check_metric_name,
)
from meshhook_rt_metrics.client.owner import InstrumentOwner
from meshhook_rt_metrics.client.sketch import MULTIPLIER, ZERO_THRESHOLD, Sketch, value

_INF = math.inf
_log = math.log
_ceil = math.ceil
_perf = time.perf_counter
_current_thread = threading.current_thread

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
# cells: written by one thread only
# --------------------------------------------------------------------------------------------------
class _CounterCell:
    __slots__ = ("n", "owner", "pn", "ps", "s")

    def __init__(self) -> None:
        self.n = 0  # cumulative number of increments (owner writes)
        self.s: float = 0  # cumulative increment, int while increments are ints (owner writes)
        self.pn = 0  # totals already shipped (flush thread writes)
        self.ps: float = 0
        self.owner = _current_thread()


class _HistogramCell:
    __slots__ = ("mn", "mx", "n", "neg", "owner", "pn", "pneg", "pos", "ppos", "ps", "pz", "s", "z")

    def __init__(self) -> None:
        self.n = 0
        self.s = 0.0
        self.z = 0
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.mn = _INF  # interval min/max: reset by the flush thread
        self.mx = -_INF
        self.pn = 0
        self.ps = 0.0
        self.pz = 0
        self.ppos: dict[int, int] = {}
        self.pneg: dict[int, int] = {}
        self.owner = _current_thread()


def _bucket_delta(now: dict[int, int], before: dict[int, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, c in now.items():
        d = c - before.get(k, 0)
        if d:
            out[str(k)] = d
    return out


# --------------------------------------------------------------------------------------------------
# children (one per label set)
# --------------------------------------------------------------------------------------------------
class _Child:
    __slots__ = ("__weakref__", "_metric", "label_values", "labels", "meta_at")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        self._metric = metric
        self.label_values = label_values
        self.labels = dict(zip(metric.label_names, label_values, strict=True))
        self.meta_at = -_INF

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

    def collect(self, ts: float) -> Point | None:
        raise NotImplementedError

    def after_fork(self) -> None:
        raise NotImplementedError


class CounterChild(_Child):
    """One counter series; ``inc`` is the hot path."""

    __slots__ = ("_cells", "_rn", "_rs", "_tl")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._tl = threading.local()
        self._cells: list[_CounterCell] = []
        self._rn = 0  # totals of retired cells (threads that ended), for the cumulative view
        self._rs: float = 0

    def _cell(self) -> _CounterCell:
        cell = _CounterCell()
        self._tl.c = cell
        self._cells.append(cell)  # list.append is atomic under the GIL
        return cell

    def inc(self, amount: float = 1, /) -> None:
        """Add ``amount`` (>= 0, finite)."""
        try:
            c = self._tl.c
        except AttributeError:
            c = self._cell()
        try:
            ok = 0 <= amount < _INF
        except TypeError:
            ok = False
        if ok:
            c.n += 1
            c.s += amount
        else:
            self._metric._invalid(amount, "counter increment must be finite and >= 0")

    def collect(self, ts: float) -> Point | None:
        n = 0
        s: float = 0
        retired = []
        for c in list(self._cells):
            alive = c.owner.is_alive()
            cn, cs = c.n, c.s
            n += cn - c.pn
            s += cs - c.ps
            c.pn, c.ps = cn, cs
            if not alive:
                retired.append(c)
        for c in retired:
            # its thread is gone, so its totals are final and were just read: fold and forget the cell
            self._rn += c.n
            self._rs += c.s
            self._cells.remove(c)
        if n <= 0:
            return None
        point = self._point(ts)
        point["count"] = n
        point["sum"] = s
        return point

    def cumulative(self) -> tuple[int, float]:
        """(count, sum) since the process started (or forked): the Prometheus view."""
        n, s = self._rn, self._rs
        for c in list(self._cells):
            n += c.n
            s += c.s
        return n, s

    def after_fork(self) -> None:
        # only the forking thread exists now and it is running this hook: nothing writes the cells, so
        # they can simply be dropped; what they held is the parent's to ship
        self._cells = []
        self._tl = threading.local()
        self._rn, self._rs = 0, 0


class HistogramChild(_Child):
    """One histogram series: count, sum, min, max and the shared sketch."""

    __slots__ = ("_cells", "_retired", "_tl")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._tl = threading.local()
        self._cells: list[_HistogramCell] = []
        self._retired = _HistogramCell()  # totals of cells whose thread ended

    def _cell(self) -> _HistogramCell:
        cell = _HistogramCell()
        self._tl.c = cell
        self._cells.append(cell)
        return cell

    def observe(self, v: float, /) -> None:
        """Record one value (finite; negatives and zeros are fine)."""
        try:
            c = self._tl.c
        except AttributeError:
            c = self._cell()
        try:
            ok = -_INF < v < _INF
        except TypeError:
            ok = False
        if not ok:
            self._metric._invalid(v, "histogram value must be a finite number")
            return
        # bucket first (calls), then the plain updates, so the flush thread rarely sees half an update
        if v >= ZERO_THRESHOLD:
            k = _ceil(_log(v) * MULTIPLIER)
            p = c.pos
            try:
                p[k] += 1
            except KeyError:
                p[k] = 1
        elif v <= -ZERO_THRESHOLD:
            k = _ceil(_log(-v) * MULTIPLIER)
            p = c.neg
            try:
                p[k] += 1
            except KeyError:
                p[k] = 1
        else:
            c.z += 1
        c.n += 1
        c.s += v
        if v < c.mn:  # noqa: PLR1730 - a plain compare is cheaper than min() on the hot path
            c.mn = v
        if v > c.mx:  # noqa: PLR1730
            c.mx = v

    def time(self) -> Timer:
        return Timer(self.observe)

    def collect(self, ts: float) -> Point | None:
        n = z = 0
        s = 0.0
        mn, mx = _INF, -_INF
        pos: dict[str, int] = {}
        neg: dict[str, int] = {}
        retired = []
        for c in list(self._cells):
            alive = c.owner.is_alive()
            cmn, cmx = c.mn, c.mx
            c.mn, c.mx = _INF, -_INF
            cn, cs, cz = c.n, c.s, c.z
            cpos, cneg = c.pos.copy(), c.neg.copy()  # dict.copy is atomic under the GIL
            if cn != c.pn:
                n += cn - c.pn
                s += cs - c.ps
                z += cz - c.pz
                for k, d in _bucket_delta(cpos, c.ppos).items():
                    pos[k] = pos.get(k, 0) + d
                for k, d in _bucket_delta(cneg, c.pneg).items():
                    neg[k] = neg.get(k, 0) + d
                c.pn, c.ps, c.pz, c.ppos, c.pneg = cn, cs, cz, cpos, cneg
            mn = min(mn, cmn)
            mx = max(mx, cmx)
            if not alive:
                retired.append(c)
        for c in retired:
            r = self._retired
            r.n += c.n
            r.s += c.s
            r.z += c.z
            for bk, cnt in c.pos.items():
                r.pos[bk] = r.pos.get(bk, 0) + cnt
            for bk, cnt in c.neg.items():
                r.neg[bk] = r.neg.get(bk, 0) + cnt
            self._cells.remove(c)
        if n <= 0:
            return None
        # the buckets are the ground truth: keep count == z + sum(buckets) even mid-race
        n = z + sum(pos.values()) + sum(neg.values())
        if n <= 0:
            return None
        if mn > mx:  # min/max update raced with the flush: bound them from the buckets instead
            mn, mx = _bounds_from_buckets(z, pos, neg)
        point = self._point(ts)
        point["count"] = n
        point["sum"] = s
        point["min"] = mn
        point["max"] = mx
        point["sketch"] = {"z": z, "p": pos, "n": neg}
        return point

    def cumulative(self) -> tuple[int, float, Sketch]:
        """(count, sum, sketch) since the process started (or forked): the Prometheus view."""
        r = self._retired
        n, s = r.n, r.s
        sketch = Sketch()
        sketch.zero, sketch.pos, sketch.neg = r.z, dict(r.pos), dict(r.neg)
        for c in list(self._cells):
            n += c.n
            s += c.s
            sketch.zero += c.z
            for k, cnt in c.pos.copy().items():
                sketch.pos[k] = sketch.pos.get(k, 0) + cnt
            for k, cnt in c.neg.copy().items():
                sketch.neg[k] = sketch.neg.get(k, 0) + cnt
        return n, s, sketch

    def after_fork(self) -> None:
        # as for counters: the forking thread is the only one, dropping the cells is safe
        self._cells = []
        self._tl = threading.local()
        self._retired = _HistogramCell()


def _bounds_from_buckets(z: int, pos: dict[str, int], neg: dict[str, int]) -> tuple[float, float]:
    values = [value(int(k)) for k in pos] + [-value(int(k)) for k in neg] + ([0.0] if z else [])
    return min(values), max(values)


GAUGE_LOG_MAX = 256
"""Updates a gauge buffers before the writing thread folds them itself (bounds memory per series)."""


class GaugeChild(_Child):
    """One gauge series: the current value plus the interval's count/sum/min/max of the values taken.

    ``set``/``inc``/``dec`` take no lock: each appends one entry to an ordered log (``list.append`` is
    atomic under the GIL, so the log is the one global order of all threads' updates). Whoever needs the
    value (the flush, ``value``, or a writer whose log reached ``GAUGE_LOG_MAX`` entries) folds the log
    under a lock that only folders take, replaying it in order: the value after every update, hence
    count, sum, min, max and last, are exactly those of the same updates made one at a time under a lock.
    A ``set`` is the entry ``(v,)``, an ``inc``/``dec`` the signed amount.
    """

    __slots__ = ("_fn", "_has", "_lock", "_log", "_mn", "_mx", "_n", "_s", "_v")

    def __init__(self, metric: Metric, label_values: tuple[str, ...]) -> None:
        super().__init__(metric, label_values)
        self._lock = threading.Lock()  # folders only, never the writers' fast path
        self._log: list[Any] = []
        self._v = 0.0
        self._has = False
        self._n = 0
        self._s = 0.0
        self._mn = _INF
        self._mx = -_INF
        self._fn: Callable[[], float] | None = None

    def set(self, v: float, /) -> None:
        """Set the current value."""
        try:
            ok = -_INF < v < _INF
        except TypeError:
            ok = False
        if ok:
            log = self._log
            log.append((v,))
            if len(log) > GAUGE_LOG_MAX:
                self._fold()
        else:
            self._metric._invalid(v, "gauge value must be a finite number")

    def inc(self, amount: float = 1, /) -> None:
        """Add ``amount`` (may be negative) to the current value: an up-down counter."""
        try:
            ok = -_INF < amount < _INF
        except TypeError:
            ok = False
        if ok:
            log = self._log
            log.append(amount)
            if len(log) > GAUGE_LOG_MAX:
                self._fold()
        else:
            self._metric._invalid(amount, "gauge increment must be a finite number")

    def dec(self, amount: float = 1, /) -> None:
        try:
            ok = -_INF < amount < _INF
        except TypeError:
            ok = False
        if ok:
            log = self._log
            log.append(-amount)
            if len(log) > GAUGE_LOG_MAX:
                self._fold()
        else:
            self._metric._invalid(amount, "gauge decrement must be a finite number")

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value from ``fn`` at each flush (a callback gauge)."""
        self._fn = fn

    @property
    def value(self) -> float:
        with self._lock:
            self._fold_locked()
            return self._v

    def _fold(self) -> None:
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        """Replay the entries logged so far (caller holds ``_lock``). Entries appended meanwhile stay
        for the next fold: they come after these in the one order of updates."""
        log = self._log
        k = len(log)
        if not k:
            return
        entries = log[:k]  # slicing and deleting are single, atomic operations under the GIL
        del log[:k]
        e = entries[0]
        if k == 1 and type(e) is tuple and type(e[0]) is float:  # one set per flush (system gauges)
            values = [e[0]]
        else:
            try:  # only numbers (the up-down counter case): C-speed running sum
                values = list(accumulate(entries, initial=self._v))
            except TypeError:  # sets among them (float + tuple), or odd number types
                values = self._replay(entries)
            else:
                del values[0]
        if not values:
            return
        self._v = values[-1]
        self._has = True
        self._n += len(values)
        self._s += sum(values)
        mn, mx = min(values), max(values)
        if mn < self._mn:  # noqa: PLR1730
            self._mn = mn
        if mx > self._mx:  # noqa: PLR1730
            self._mx = mx

    def _replay(self, entries: list[Any]) -> list[float]:
        v = self._v
        values: list[float] = []
        for e in entries:
            try:
                v = float(e[0]) if type(e) is tuple else v + float(e)
            except (TypeError, ValueError, ArithmeticError):  # finite-comparable but not a float
                self._metric._registry.count_invalid(self._metric.name)
                continue
            values.append(v)
        return values

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

    def after_fork(self) -> None:
        # the forking thread is the only one now: the log (the parent's unfolded updates) is reset with
        # the rest, as before; the fresh lock replaces one a vanished thread may have held
        self._lock = threading.Lock()
        self._log = []
        self._v, self._has, self._n, self._s, self._mn, self._mx = 0.0, False, 0, 0.0, _INF, -_INF


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
    try:
        __c = __child._tl.c
    except AttributeError:
        __c = __child._cell()
"""

_COUNTER_INC = (
    "def inc(__amount=1, /, PARAMS):"
    + _BODY
    + """
    try:
        __ok = 0 <= __amount < __INF
    except TypeError:
        __ok = False
    if __ok:
        __c.n += 1
        __c.s += __amount
    else:
        __invalid(__amount, "counter increment must be finite and >= 0")
"""
)

_HISTOGRAM_OBSERVE = (
    "def observe(__v, /, PARAMS):"
    + _BODY
    + """
    try:
        __ok = -__INF < __v < __INF
    except TypeError:
        __ok = False
    if not __ok:
        __invalid(__v, "histogram value must be a finite number")
        return
    if __v >= __ZT:
        __k = __ceil(__log(__v) * __MULT)
        __p = __c.pos
        try:
            __p[__k] += 1
        except KeyError:
            __p[__k] = 1
    elif __v <= -__ZT:
        __k = __ceil(__log(-__v) * __MULT)
        __p = __c.neg
        try:
            __p[__k] += 1
        except KeyError:
            __p[__k] = 1
    else:
        __c.z += 1
    __c.n += 1
    __c.s += __v
    if __v < __c.mn:
        __c.mn = __v
    if __v > __c.mx:
        __c.mx = __v
"""
)


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
    namespace: dict[str, Any] = {
        "__cache": metric._cache,
        "__resolve": metric._resolve,
        "__invalid": metric._invalid,
        "__INF": _INF,
        "__ZT": ZERO_THRESHOLD,
        "__MULT": MULTIPLIER,
        "__log": _log,
        "__ceil": _ceil,
    }
    exec(source, namespace)  # see the comment above
    name = template.split("(", 1)[0].split(maxsplit=1)[-1]
    fn: Callable[..., None] = namespace[name]
    fn.__qualname__ = f"{metric.name}.{name}"  # errors read "<metric>.inc() missing ... 'signature'"
    fn.__doc__ = getattr(type(metric), name).__doc__
    return fn
