"""A request log: bare appends while a request runs, folded into several series at each flush.

A handler instrumented with five calls (count the outcome, observe the duration and the body's size, raise
and lower the in-flight gauge) runs five Python functions a request; on a busy asynchronous service that
is most of what metrics cost it (docs/architecture.md, "The client in a real service"). Here every call is a
C function and no Python frame runs: ``start()`` when a request begins, its outcome's ``end`` callable when it
ends (both ``functools.partial`` of ``deque.append`` with a small int, the outcome's code), and one bound
``deque.append`` per observed value (``observe``). Nothing is allocated but the values themselves: no entry
tuple, so no container for the garbage collector to count, track and traverse (the first design's one tuple
a request brought on more young and full collections: counted).

The flush (and a Prometheus scrape) folds the deques at C speed into the same series the five calls would
have fed, with the same values (float sums to rounding, summed in other batches): the codes become ``bytes``,
each outcome's count is one ``bytes.count``, and the in-flight gauge is replayed in the one order of starts
and ends (both go to the codes' deque, so its count, sum, min, max and last are exact, as long as nothing but
this log changes it: a second log is refused, direct ``inc``/``dec``/``set`` calls are not, and would be folded
before each flush's starts and ends). Each observed series folds its own deque, as its ``observe`` calls would
have.

The codes can only come from the log's own callables, so they need no check; an observed value is checked as
an ``observe`` call's is at its fold (an invalid one counted in ``meshhook_metrics_client_invalid_values_total``
under its metric's name and dropped, in every mode, strict too, where the calls raise). Only flushes and scrapes
fold the log: it holds the requests of one flush interval with the background flush, and grows without bound
when nothing folds it (``background=False`` without ``flush()`` calls, or requests after ``close()``); a fold
that finds more than ``UNFOLDED_WARNING`` appends in one of its deques says so in the log.
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import repeat, starmap
from types import MappingProxyType
from typing import Any, Protocol

from meshhook_rt_metrics.client.instruments import CounterChild, GaugeChild, HistogramChild, Metric
from meshhook_rt_metrics.client.owner import InstrumentOwner

START = 255
"""A request began (an outcome's code is its index, from 0)."""
MAX_OUTCOMES = START
# the in-flight gauge's step for each code, as a signed byte: +1 for a start, -1 (255) for every end
_STEPS = bytes([255]) * START + bytes([1])
UNFOLDED_WARNING = 1_000_000
"""Appends a fold finds in one deque above which it warns: the log is only folded by flushes and scrapes
(a minute's flush interval at 8,000 requests a second stays below it; ~30 MB of numbers reach it)."""
MANY_OUTCOMES = 16
"""Outcomes above which the fold counts them in one pass (a ``Counter``) rather than one pass each."""


class LogOwner(InstrumentOwner, Protocol):
    """What a request log needs of the registry that folds it (``Registry`` satisfies it)."""

    def _warn(self, key: str, msg: str, *args: Any, exc: bool = False) -> None: ...


class RequestLog:
    """``start()`` when a request begins; ``end[outcome]()`` and each of ``observe`` when it ends.

    ``end`` maps each key of ``outcomes`` (counter series of the same client) to a callable that counts that
    outcome once; ``observe`` holds one callable per ``observed`` series (histograms, or counters to add an
    amount), in order, each taking one value. ``start`` is only needed for ``in_flight``; a request that is
    started must end, or the gauge stays raised.
    """

    __slots__ = (
        "_codes",
        "_lock",
        "_observed",
        "_outcomes",
        "_owner",
        "_values",
        "end",
        "in_flight",
        "name",
        "observe",
        "start",
    )

    def __init__(
        self,
        owner: LogOwner,
        observed: Sequence[object],
        outcomes: Mapping[Any, object],
        in_flight: object = None,
        name: str = "request_log",
    ) -> None:
        self._owner = owner
        self.name = name
        self._observed = tuple(_child(owner, o, (HistogramChild, CounterChild), "observed") for o in observed)
        if not outcomes:
            raise ValueError("request log: outcomes must name at least one counter series")
        if len(outcomes) > MAX_OUTCOMES:
            raise ValueError(f"request log: at most {MAX_OUTCOMES} outcomes, got {len(outcomes)}")
        self._outcomes = tuple(
            (k, _child(owner, c, (CounterChild,), f"outcome {k!r}")) for k, c in outcomes.items()
        )
        self.in_flight: GaugeChild | None = (
            None if in_flight is None else _child(owner, in_flight, (GaugeChild,), "in_flight")
        )
        self._lock = threading.Lock()
        # deques, not lists: they grow by blocks of 64 entries (528 bytes, below the size at which glibc's
        # malloc consolidates its free lists), where a list a flush long is reallocated between the requests
        # in blocks large enough to make glibc consolidate, which slowed the application's own small mallocs
        # (OpenSSL's for the HMAC among them): counted, without a database, ~1,200 instructions a request
        # (docs/architecture.md, "Then: the request log, shipped")
        self._codes: deque[int] = deque()
        self._values: tuple[deque[Any], ...] = tuple(deque() for _ in self._observed)
        self.start: Callable[[], None] = partial(self._codes.append, START)
        ends = _Outcomes({k: partial(self._codes.append, code) for code, (k, _) in enumerate(self._outcomes)})
        ends.log = name
        self.end: Mapping[Any, Callable[[], None]] = MappingProxyType(ends)
        self.observe: tuple[Callable[[float], None], ...] = tuple(values.append for values in self._values)

    def fold(self) -> None:
        """Fold what was logged so far into the series (the flush and a scrape do, before they read).
        What is appended meanwhile stays for the next fold."""
        with self._lock:
            codes = bytes(_take(self._codes))
            columns = [_take(values) for values in self._values]
            held = max([len(codes), *map(len, columns)])
            if held > UNFOLDED_WARNING:
                self._owner._warn(
                    "unfolded:" + self.name,
                    "request log %s held %d unfolded appends: is the client flushing (background=False needs"
                    " flush())?",
                    self.name,
                    held,
                )
            self._fold(codes, columns)

    def _fold(self, codes: bytes, columns: list[list[Any]]) -> None:
        """Each series on its own: one that fails (a bug, nothing a caller can append) loses only its
        share, counted as invalid under its own metric, and never raises into the flush. The codes need no
        check: only the log's own callables append them."""
        if self.in_flight is not None and codes:
            steps = array("b", codes.translate(_STEPS))
            self._apply(self.in_flight, len(steps), self.in_flight.absorb_steps, steps)
        counted = Tally(codes) if len(self._outcomes) > MANY_OUTCOMES else None
        for code, (_, counter) in enumerate(self._outcomes):
            n = codes.count(code) if counted is None else counted[code]
            if n:
                self._apply(counter, n, counter.absorb_ones, n)
        for child, values in zip(self._observed, columns, strict=True):
            if values:
                self._apply(child, len(values), child.absorb, values)  # checked as its own calls are

    def _apply(self, child: Any, n: int, absorb: Callable[[Any], None], what: Any) -> None:
        try:
            absorb(what)
        except Exception:
            name = child._metric.name
            self._owner._warn(
                "fold-series:" + name, "request log %s: folding into %s failed", self.name, name, exc=True
            )
            for _ in range(n):
                self._owner.count_invalid(name)

    def same_as(self, other: RequestLog) -> bool:
        """Both fold into the very same series (asking twice for one log returns the first)."""
        return (
            len(self._observed) == len(other._observed)
            and all(a is b for a, b in zip(self._observed, other._observed, strict=True))
            and len(self._outcomes) == len(other._outcomes)
            and all(dict(other._outcomes).get(k) is c for k, c in self._outcomes)  # in any order
            and self.in_flight is other.in_flight
        )

    def after_fork(self) -> None:
        """In a forked child: the parent's unfolded requests are the parent's to ship. The deques are
        emptied in place, never replaced: the application holds ``start``, ``end`` and ``observe``."""
        self._lock = threading.Lock()
        self._codes.clear()
        for values in self._values:
            values.clear()


class _Outcomes(dict[Any, Callable[[], None]]):
    """The ``end`` callables by outcome; an unknown outcome's ``KeyError`` names the log and its outcomes
    (looked up once, at start-up, a typo fails there and not in a request's ``finally``)."""

    log = ""

    def __missing__(self, key: Any) -> Callable[[], None]:
        raise KeyError(f"request log {self.log!r} has no outcome {key!r}; its outcomes: {list(self)!r}")


def _take(log: deque[Any]) -> list[Any]:
    """The entries in ``log`` now, oldest first, removed: each ``popleft`` is atomic, and appends go on
    meanwhile at the other end (``list(log)`` then ``clear()`` would lose those made in between)."""
    return list(starmap(log.popleft, repeat((), len(log))))


def _child(owner: LogOwner, target: object, kinds: tuple[type, ...], role: str) -> Any:
    """``target`` as a series of ``owner``: a child, or a metric without labels (its only series)."""
    if isinstance(target, Metric):
        if target.label_names:
            raise TypeError(
                f"request log: {role} {target.name!r} has labels {target.label_names!r}; "
                f"pass one series, e.g. {target.name}.labels(...)"
            )
        target = target.labels()
    if not isinstance(target, kinds):
        allowed = " or ".join(k.__name__.removesuffix("Child").lower() for k in kinds)
        raise TypeError(f"request log: {role} must be a {allowed} series of this client, got {target!r}")
    child: Any = target
    if child._metric._registry is not owner:
        raise ValueError(f"request log: {role} {child._metric.name!r} belongs to another client")
    return child
