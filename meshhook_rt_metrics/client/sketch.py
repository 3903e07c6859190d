"""The shared logarithmic sketch (DDSketch-style, 1 % relative accuracy).

The SQL side computes bucket keys with the very same formula and the literal ``repr(MULTIPLIER)``,
so a key computed here and a key computed in PostgreSQL are identical: sketches from many workers and
many minutes then merge exactly by adding bucket counts. Do not "simplify" the formulas below (for
instance to ``log2``): a different rounding path moves values that sit on a bucket boundary.
"""

from __future__ import annotations

import math
import re
import struct
import sys
from bisect import bisect_right
from collections import Counter as _Counter
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import mul as _mul
from typing import Any

ALPHA = 0.01
"""Relative accuracy: every value is represented within 1 % by its bucket."""
GAMMA = (1 + ALPHA) / (1 - ALPHA)
MULTIPLIER = 1 / math.log1p(2 * ALPHA / (1 - ALPHA))
"""1 / ln(GAMMA); the SQL side embeds ``repr(MULTIPLIER)`` as a literal."""
ZERO_THRESHOLD = 1e-9
"""Values with ``abs(v) < ZERO_THRESHOLD`` are counted in the zero bucket ``z``."""

_LOG_VALUE_FACTOR = math.log(2 / (1 + GAMMA))
"""ln of the bucket midpoint factor, added in the exponent so the top bucket stays finite (same in SQL)."""
_log = math.log
_ceil = math.ceil
_INF = math.inf


def key(value: float) -> int:
    """Bucket key of a positive value (callers route zeros and negatives themselves)."""
    return _ceil(_log(value) * MULTIPLIER)


_FLOAT_MAX = sys.float_info.max
_BUCKET_RUN_COST = 3
"""Counting a bucket's run costs about what 3 values cost one at a time (Python work per bucket, against
C-speed work per value; callgrind): a batch whose keys, from its min to its max, span at most a third as many
buckets as it has values is sorted (the span, not the buckets occupied: known before any work)."""
_UPPER: dict[int, float] = {}
_UPPER_MAX = 4096
_BITS = struct.Struct("<q")
_FLOAT = struct.Struct("<d")


def _bits(v: float) -> int:
    """The float's bit pattern as an integer: for positive floats, ordered as the floats are."""
    bits: int = _BITS.unpack(_FLOAT.pack(v))[0]
    return bits


def _float(bits: int) -> float:
    v: float = _FLOAT.unpack(_BITS.pack(bits))[0]
    return v


def _upper(bucket_key: int) -> float:
    """The largest float in bucket ``bucket_key``: a bisection over the positive floats' bit patterns,
    judged by ``key`` itself (so a run ends exactly where ``key`` starts the next bucket, whatever the
    rounding of ``exp``). Remembered for the next batches; the memory starts afresh past ``_UPPER_MAX``."""
    u = _UPPER.get(bucket_key)
    if u is not None:
        return u
    if key(_FLOAT_MAX) <= bucket_key:
        u = _FLOAT_MAX
    else:
        lo, hi = _bits(5e-324), _bits(_FLOAT_MAX)  # key(lo) <= bucket_key < key(hi), kept so
        # exp(guess) +- a relative 1e-12 brackets the end for every key in range: ~14 steps, not ~60
        guess = bucket_key / MULTIPLIER
        near_lo = _bits(max(math.exp(guess - 1e-12), 5e-324))
        near_hi = _bits(min(math.exp(guess + 1e-12), _FLOAT_MAX))
        if key(_float(near_lo)) <= bucket_key < key(_float(near_hi)):
            lo, hi = near_lo, near_hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if key(_float(mid)) <= bucket_key:
                lo = mid
            else:
                hi = mid
        u = _float(lo)
    if len(_UPPER) >= _UPPER_MAX:
        _UPPER.clear()
    _UPPER[bucket_key] = u
    return u


def value(bucket_key: int) -> float:
    """Representative value of a bucket: within ALPHA of every value that maps to it."""
    return math.exp(bucket_key / MULTIPLIER + _LOG_VALUE_FACTOR)


class Sketch:
    """A mergeable quantile sketch: zero count plus positive and negative bucket stores."""

    __slots__ = ("neg", "pos", "zero")

    def __init__(self) -> None:
        self.zero = 0
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}

    @property
    def count(self) -> int:
        return self.zero + sum(self.pos.values()) + sum(self.neg.values())

    def add(self, v: float, n: int = 1) -> None:
        if v >= ZERO_THRESHOLD:
            k = _ceil(_log(v) * MULTIPLIER)
            self.pos[k] = self.pos.get(k, 0) + n
        elif v <= -ZERO_THRESHOLD:
            k = _ceil(_log(-v) * MULTIPLIER)
            self.neg[k] = self.neg.get(k, 0) + n
        else:
            self.zero += n

    def extend(self, values: Iterable[float]) -> None:
        """Add many values, bucketed by the same rule as ``add`` (the client folds its instruments' logs
        here). A positive batch is counted at C speed, value by value; when its values fall into few
        buckets (sizes of one kind of message, counts, a steady latency) it is sorted and each bucket's
        run counted at once instead, several times cheaper. Anything else goes one value at a time."""
        values = values if isinstance(values, list) else list(values)
        if not values:
            return
        try:
            lowest, highest = min(values), max(values)
            finite = sum(values) < _INF  # a NaN, which min() and max() may pass over, makes the sum NaN
        except (TypeError, ValueError, ArithmeticError):  # odd types, a NaN min() or max() met first
            finite = False
        if finite:
            self.extend_finite(values, lowest, highest)
        else:
            for v in values:
                self.add(v)

    def extend_finite(
        self, values: list[float], lowest: float, highest: float, *, ordered: bool = False
    ) -> None:
        """``extend`` for a non-empty list of finite numbers (no NaN) whose min and max the caller already
        has, so they are not scanned for twice; ``ordered`` when they are sorted already (a histogram's fold
        sorts its batch to validate it), so each bucket's run is counted without sorting them again."""
        try:
            positive = lowest >= ZERO_THRESHOLD and highest <= _FLOAT_MAX
            few = positive and (key(highest) - key(lowest) + 1) * _BUCKET_RUN_COST <= len(values)
        except (TypeError, ValueError, ArithmeticError):
            positive = few = False
        if few:
            self._extend_runs(values if ordered else sorted(values))
        elif not (positive and self._extend_each(values)):
            for v in values:
                self.add(v)

    def _extend_each(self, values: list[float]) -> bool:
        """Each value's key at C speed; False (nothing added) for a NaN that ``min()`` passed over."""
        try:
            counted = _Counter(map(_ceil, map(_mul, repeat(MULTIPLIER), map(_log, values))))
        except ValueError:
            return False
        pos = self.pos
        for k, n in counted.items():
            pos[k] = pos.get(k, 0) + n
        return True

    def _extend_runs(self, ordered: list[float]) -> None:
        """Sorted positive values: one key and one bisection per bucket (keys grow with the value)."""
        pos, upper, log, ceil, m = self.pos, _UPPER.get, _log, _ceil, MULTIPLIER
        i, n = 0, len(ordered)
        while i < n:
            k = ceil(log(ordered[i]) * m)
            j = bisect_right(ordered, upper(k) or _upper(k), i)
            if j <= i:  # a number above the bucket's largest float that rounds down onto it (an int, a
                j = i + 1  # Decimal) sorts after that float: its key is the same, taken one at a time
            pos[k] = pos.get(k, 0) + j - i
            i = j

    def merge(self, other: Sketch) -> None:
        """Exact merge: bucket counts add up (the reason the mapping is shared with SQL)."""
        self.zero += other.zero
        for k, c in other.pos.items():
            self.pos[k] = self.pos.get(k, 0) + c
        for k, c in other.neg.items():
            self.neg[k] = self.neg.get(k, 0) + c

    def quantile(self, q: float, lo: float | None = None, hi: float | None = None) -> float | None:
        """Value at quantile ``q`` (rank ``q*(count-1)``), clamped into ``[lo, hi]`` when given."""
        return quantile_of(self.zero, self.pos, self.neg, q, lo, hi)

    def to_wire(self) -> dict[str, Any]:
        return {
            "z": self.zero,
            "p": {str(k): c for k, c in self.pos.items() if c},
            "n": {str(k): c for k, c in self.neg.items() if c},
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Sketch:
        """Decodes the wire form; ValueError for anything ``metrics.sketch_problem`` rejects (counts aside)."""
        if not isinstance(wire, Mapping) or not set(wire) <= {"z", "p", "n"}:
            raise ValueError("a sketch is an object of z, p and n")
        sketch = cls()
        sketch.zero = _wire_count(wire.get("z", 0), 0)
        sketch.pos = _wire_store(wire.get("p", {}))
        sketch.neg = _wire_store(wire.get("n", {}))
        return sketch


_WIRE_KEY = re.compile(r"0|-?[1-9][0-9]{0,4}")


def _wire_count(count: Any, least: int) -> int:
    """A count as the wire writes it: an integer (or an integral float), >= least, at most 18 digits."""
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or not least <= count < 10**18:
        raise ValueError(f"sketch counts are integers >= {least} of at most 18 digits, not {count!r}")
    return count


def _wire_store(store: Any) -> dict[int, int]:
    """A bucket store: canonical integer keys in [-1036, 35488] -> counts >= 1."""
    if not isinstance(store, Mapping):
        raise ValueError("sketch stores p and n are objects of key: count")
    decoded = {}
    for k, c in store.items():
        if not isinstance(k, str) or not _WIRE_KEY.fullmatch(k) or not -1036 <= int(k) <= 35488:
            raise ValueError(f"sketch bucket keys are integers in [-1036, 35488], not {k!r}")
        decoded[int(k)] = _wire_count(c, 1)
    return decoded


def quantile_of(
    zero: int,
    pos: Mapping[int, int],
    neg: Mapping[int, int],
    q: float,
    lo: float | None = None,
    hi: float | None = None,
) -> float | None:
    """Quantile over raw stores; negatives first (largest key = most negative), then zeros, then positives."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    total = zero + sum(pos.values()) + sum(neg.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    result: float | None = None
    for k in sorted(neg, reverse=True):
        seen += neg[k]
        if seen > rank:
            result = -value(k)
            break
    if result is None:
        seen += zero
        if seen > rank:
            result = 0.0
    if result is None:
        for k in sorted(pos):
            seen += pos[k]
            if seen > rank:
                result = value(k)
                break
    if result is None:  # only reachable through float rounding of rank at q == 1
        result = value(max(pos)) if pos else (0.0 if zero else -value(min(neg)))
    if lo is not None and result < lo:
        result = lo
    if hi is not None and result > hi:
        result = hi
    return result
