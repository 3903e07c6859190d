"""A request log: one entry per request, folded into several series at each flush.

A handler instrumented with five calls (count the outcome, observe the duration and the body's size, raise
and lower the in-flight gauge) runs five Python functions a request; on a busy asynchronous service that
is most of what metrics cost it (docs/architecture.md, "The client in a real service"). Here a request
costs two calls of C functions, no Python frame at all: ``start()`` (``deque.append`` of ``None``, bound with
``functools.partial``) when it begins and ``record((outcome, *values))`` (a bound ``deque.append``) when it
ends. The flush (and a Prometheus scrape) folds the log with C-speed builtins into the same series the
five calls would have fed, with the same values (float sums to rounding, summed in other batches): each
entry's ``outcome`` (the name of a counter's child) counted once, its values observed by the log's children,
and the in-flight gauge replayed in the one order of starts and ends (both go to the same deque, so its
count, sum, min, max and last are exact, as long as nothing but this log changes it: a second log is refused,
direct ``inc``/``dec``/``set`` calls are not, and would be folded before each flush's entries).

An entry names its outcome (a string) rather than holding the counter's child: a tuple of strings and numbers
is left by the garbage collector's first young collection, while one that holds an object stays tracked until
the fold and, surviving young collections meanwhile, brings on more full collections (counted: one every
~2,100 requests instead of ~2,300 in the load test's service, ~800 instructions a request).

Only flushes and scrapes fold the log: it holds the requests of one flush interval with the background
flush, and grows without bound when nothing folds it (``background=False`` without ``flush()`` calls, or
records after ``close()``); a fold that finds more than ``UNFOLDED_WARNING`` entries says so in the log. A
bare append checks nothing: a malformed entry is found by the fold, counted in
``meshhook_metrics_client_invalid_values_total{metric=<the log's name>}`` and dropped (it still ends a
request for the in-flight gauge), and an invalid value is counted against the series that would have taken
it, in every mode, strict too (where the calls raise).
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import compress, repeat, starmap
from operator import is_not
from typing import Any, Protocol

from meshhook_rt_metrics.client.instruments import CounterChild, GaugeChild, HistogramChild, Metric
from meshhook_rt_metrics.client.owner import InstrumentOwner

# the in-flight gauge's change, from an entry's "is a record": a start (``None``, 0) raises it by 1, a record
# (1) lowers it by 1 (255 as a signed byte); ``bytes.translate`` maps them all at C speed
_STEP = bytes([1, 255]) + bytes(254)
_TUPLE = {tuple}
UNFOLDED_WARNING = 100_000
"""Entries a fold finds above which it warns: the log is only folded by flushes and scrapes."""


class LogOwner(InstrumentOwner, Protocol):
    """What a request log needs of the registry that folds it (``Registry`` satisfies it)."""

    def _warn(self, key: str, msg: str, *args: Any, exc: bool = False) -> None: ...


class RequestLog:
    """``start()`` when a request begins, ``record((outcome, *values))`` in its ``finally``.

    ``outcome`` is a key of ``outcomes`` (names of counter children of the same client), counted once;
    ``values`` are observed, in order, by the ``observed`` children (histograms, or counters to add an
    amount). ``start`` is only needed for ``in_flight``; a request that is started must be recorded, or the
    gauge stays raised.
    """

    __slots__ = ("_lock", "_log", "_observed", "_outcomes", "_owner", "in_flight", "name", "record", "start")

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
        self._outcomes = {k: _child(owner, c, (CounterChild,), f"outcome {k!r}") for k, c in outcomes.items()}
        self.in_flight: GaugeChild | None = (
            None if in_flight is None else _child(owner, in_flight, (GaugeChild,), "in_flight")
        )
        self._lock = threading.Lock()
        # a deque, not a list: it grows by blocks of 64 entries (528 bytes, below the size at which glibc's
        # malloc consolidates its free lists), where a list a flush long (a few thousand entries) is
        # reallocated between the requests as it grows, in blocks large enough to make glibc consolidate, which
        # slowed the application's own small mallocs (OpenSSL's for the HMAC among them): counted, ~1,200
        # instructions a request less in the load test's service (the fold's own list of the entries still
        # grows, once a flush, on the flush's thread)
        self._log: deque[Any] = deque()
        self.record: Callable[[tuple[Any, ...]], None] = self._log.append
        self.start: Callable[[], None] = partial(self._log.append, None)

    def fold(self) -> None:
        """Fold the entries logged so far into their series (the flush and a scrape do, before they read).
        Entries appended meanwhile stay for the next fold."""
        with self._lock:
            log = self._log
            k = len(log)
            if not k:
                return
            # the k oldest, in order: each popleft is atomic, and appends go on meanwhile at the other end
            entries = list(starmap(log.popleft, repeat((), k)))
            if k > UNFOLDED_WARNING:
                self._owner._warn(
                    "unfolded:" + self.name,
                    "request log %s held %d entries: is the client flushing (background=False needs flush())?",
                    self.name,
                    k,
                )
            try:
                self._fold(entries)
            except Exception:  # a bug, or an entry no check foresaw: counted, never raised into the flush
                self._invalid(
                    sum(map(is_not, entries, repeat(None))), "folding request log %s failed", exc=True
                )

    def _fold(self, entries: list[Any]) -> None:
        """Check every entry first, then apply: a malformed one never costs the others."""
        ends = list(map(is_not, entries, repeat(None)))  # identity only: no entry's own __eq__ runs
        records = list(compress(entries, ends))
        columns = self._columns(records)
        if columns is None and records:
            records = self._well_formed(records)
            columns = self._columns(records)
            if columns is None and records:  # entries whose hash or equality changes between looks
                self._invalid(len(records), "request log %s: %d entries could not be folded", len(records))
        if self.in_flight is not None:  # every record ends a request, well-formed or not
            self.in_flight.absorb(array("b", bytes(ends).translate(_STEP)))  # type: ignore[arg-type]
        if columns is None:
            return
        outcomes = self._outcomes
        for outcome, n in Tally(columns[0]).items():
            outcomes[outcome].absorb([1] * n)
        for child, values in zip(self._observed, columns[1:], strict=True):
            child.absorb(list(values))

    def _columns(self, records: list[Any]) -> list[tuple[Any, ...]] | None:
        """The records' fields, one tuple a field; None when a record is malformed (the slow path)."""
        if not records or set(map(type, records)) != _TUPLE:
            return None
        try:
            columns = list(zip(*records, strict=True))
            named = set(columns[0])
        except Exception:  # tuples of different lengths, an unhashable (or unhashing) outcome
            return None
        if len(columns) != 1 + len(self._observed) or not named <= self._outcomes.keys():
            return None
        return columns

    def _well_formed(self, records: list[Any]) -> list[Any]:
        """The records of the right shape, one by one; the others counted and dropped."""
        width = 1 + len(self._observed)
        kept = [r for r in records if type(r) is tuple and len(r) == width and self._named(r[0])]
        if len(kept) < len(records):
            self._invalid(
                len(records) - len(kept),
                "request log %s: %d entries are not (outcome, *values) tuples with one of the log's outcomes"
                " and one value for each of %d observed series",
                len(records) - len(kept),
                len(self._observed),
            )
        return kept

    def _named(self, outcome: object) -> bool:
        try:
            return outcome in self._outcomes
        except Exception:  # unhashable, or a __hash__ that raises
            return False

    def _invalid(self, n: int, msg: str, *args: Any, exc: bool = False) -> None:
        for _ in range(n):
            self._owner.count_invalid(self.name)
        self._owner._warn("log:" + self.name, msg, self.name, *args, exc=exc)

    def same_as(self, other: RequestLog) -> bool:
        """Both fold into the very same series (asking twice for one log returns the first)."""
        return (
            len(self._observed) == len(other._observed)
            and all(a is b for a, b in zip(self._observed, other._observed, strict=True))
            and self._outcomes.keys() == other._outcomes.keys()
            and all(c is other._outcomes[k] for k, c in self._outcomes.items())
            and self.in_flight is other.in_flight
        )

    def after_fork(self) -> None:
        """In a forked child: the parent's unfolded entries are the parent's to ship. The deque is emptied
        in place, never replaced: the application holds ``record`` and ``start`` bound to it."""
        self._lock = threading.Lock()
        self._log.clear()


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
