"""The points of settled steps of recent queries, kept so that a repeated query reads only what is new.

A dashboard asks for "the last 24 hours" every few seconds. Almost all of that day is settled: its windows
are rolled up and any later point for them is late, marked, and recomputed by the next maintenance run,
which moves the project's rollup revision (migration ``20261127000800``). So the service keeps, per query
(project, metric, matchers, aggregation, grouping, step), the points of the whole settled steps it has
answered, and asks ``metrics.query_series`` only for the rest: the partial first step (itself kept for a
minute) and the steps after the cached ones. A revision that moved drops the entry; while a late mark is
pending, no cached step from the marked window on is used. The horizon and the reads run in one snapshot
(the caller's transaction is repeatable read), so an answer describes one moment.

What is shared between callers is only data, never a decision about who may see it: every request still
runs ``visible_project`` and ``metrics.query_horizon`` as the caller, in PostgreSQL, before any cached
point is used, and the data of a project is the same for everyone who may see it (its policies are per
project). Points are kept as the JSON text PostgreSQL wrote (``epoch,value``), so a response is joined, not
re-encoded.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

# bytes a cached point costs beyond its text (the str object and its list slot), for the size budget
POINT_OVERHEAD = 56
ENTRY_OVERHEAD = 512  # and an entry beyond its points (an empty one still says "nothing there")
STEP_LIMITS = (60.0, 31 * 86400.0)  # the steps query_series accepts; the cache takes whole minutes only
RANGE_LIMIT = 400 * 86400.0

HORIZON_SQL = """
select h.revision, pg_catalog.date_part('epoch', h.settled_until), pg_catalog.date_part('epoch', h.minutes_from),
  pg_catalog.date_part('epoch', h.step)
from metrics.query_horizon(%s, %s, %s, %s) as h
"""
# each piece [from, to) through query_series, label sets in its order; points as PostgreSQL's JSON text
PIECES_SQL = """
select p.n, s.labels::text, pg_catalog.array_to_json(s.points)::text
from rows from (pg_catalog.unnest(%s::timestamptz[]), pg_catalog.unnest(%s::timestamptz[]))
  with ordinality as p (from_ts, to_ts, n)
cross join lateral metrics.query_series(%s, %s, p.from_ts, p.to_ts, %s::jsonb, %s, %s, %s)
  with ordinality as s (labels, points, k)
order by p.n, s.k
"""
# the whole range in one call, exactly as asked, as the response's JSON (no cache, or not cacheable)
WHOLE_SQL = """
select coalesce(json_agg(json_build_object('labels', s.labels, 'points', array_to_json(s.points)) order by s.n),
  '[]')::text, coalesce(sum(pg_catalog.array_length(s.points, 1)), 0)
from metrics.query_series(%s, %s, %s, %s, %s::jsonb, %s, %s, %s) with ordinality as s (labels, points, n)
"""
# label sets in the order query_series returns them (jsonb order)
ORDER_SQL = "select x.l::text from pg_catalog.unnest(%s::jsonb[]) as x (l) order by x.l"


@dataclass(frozen=True)
class SeriesQuery:
    """A query but for its range and step; with the step (seconds), the key of a cache entry."""

    project_id: UUID
    metric: str
    matchers: str  # JSON
    agg: str
    by: tuple[str, ...] | None

    @property
    def args(self) -> tuple[Any, ...]:
        return (
            self.project_id,
            self.metric,
            self.matchers,
            self.agg,
            list(self.by) if self.by is not None else None,
        )


Key = tuple[SeriesQuery, float]


@dataclass(frozen=True)
class Head:
    """The partial first step of a range that starts inside a step, when settled. Rollup buckets start on
    whole minutes, so its points depend only on the first whole minute of the range (``minute``) and on the
    step: a dashboard refreshing every few seconds asks for the same one for a minute."""

    minute: float
    first: float  # the end of the partial step, the first whole step of the range
    points: dict[str, list[str]]

    @property
    def key(self) -> tuple[float, float]:
        return (self.minute, self.first)


@dataclass(frozen=True)
class Entry:
    """Points of the settled steps in [since, until) of one query, as of a rollup revision, and the partial
    step before them that was asked last."""

    revision: int
    since: float
    until: float
    span: float  # the longest range asked of it: how far back it keeps steps
    order: tuple[str, ...]  # label sets (jsonb text) in query_series' order
    points: dict[str, list[str]]  # label set -> "epoch,value" texts, by epoch
    size: int
    head: Head | None = None


@dataclass(frozen=True)
class Answer:
    """A query's series as a JSON array text, how the cache took part (hit, miss, bypass, off), and how
    many points the series hold in all."""

    series: str
    cache: str
    points: int


def epoch_of(point: str) -> float:
    return float(point[: point.index(",")])


def split_points(points_json: str) -> list[str]:
    """``[[e,v],[e,v]]`` -> ``["e,v", "e,v"]``: numbers and nulls only, so ``],[`` separates points."""
    inner = points_json[2:-2]
    return inner.split("],[") if inner else []


def between(points: list[str], lo: float, hi: float) -> list[str]:
    """The points with epochs in [lo, hi) (points sorted by epoch)."""
    start = bisect_left(points, lo, key=epoch_of)
    end = bisect_left(points, hi, lo=start, key=epoch_of)
    return points[start:end]


def series_json(order: Sequence[str], points: dict[str, list[str]]) -> str:
    """The response's ``series``: label sets without points are left out, as query_series leaves them."""
    return (
        "["
        + ",".join(
            '{"labels": ' + labels + ', "points": [[' + "],[".join(points[labels]) + "]]}"
            for labels in order
            if points.get(labels)
        )
        + "]"
    )


def count_of(order: Sequence[str], points: dict[str, list[str]]) -> int:
    """The points :func:`series_json` writes for ``order``."""
    return sum(len(points.get(labels, ())) for labels in order)


def size_of(points: dict[str, list[str]]) -> int:
    return sum(len(labels) + sum(len(p) + POINT_OVERHEAD for p in pts) for labels, pts in points.items())


class QueryCache:
    """Entries by (:class:`SeriesQuery`, step seconds), least recently used dropped first beyond ``max_bytes`` (0: off)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Key, entry: Entry | None) -> None:
        """Store (or with None, drop) an entry; one larger than the whole budget is not kept."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old.size
            if entry is None or entry.size > self.max_bytes:
                return
            self._entries[key] = entry
            self._size += entry.size
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= dropped.size

    def answer(
        self,
        conn: psycopg.Connection[Any],
        query: SeriesQuery,
        start: datetime,
        end: datetime,
        step: timedelta | None,
    ) -> Answer:
        """The series of ``query`` over [start, end), reading from the database only what is not cached."""
        if self.max_bytes <= 0:
            return whole_answer(conn, query, start, end, step, "off")
        row = conn.execute(HORIZON_SQL, (query.project_id, start, end, step)).fetchone()
        if row is None:
            return whole_answer(conn, query, start, end, step, "bypass")
        revision, settled, minutes_from, seconds = int(row[0]), float(row[1]), float(row[2]), float(row[3])
        f, t = start.timestamp(), end.timestamp()
        if not (cacheable(f, t, seconds, minutes_from) and math.isfinite(settled)):
            return whole_answer(conn, query, start, end, step, "bypass")
        key = (query, seconds)
        settled_step = math.floor(settled / seconds) * seconds  # the end of the last settled step
        span = Span(
            f, t, math.ceil(f / seconds) * seconds, min(settled_step, math.floor(t / seconds) * seconds)
        )
        entry = self.get(key)
        if entry is not None and entry.revision != revision:
            entry = None
        if entry is None or max(span.first, entry.since) >= min(span.settled, entry.until):
            (series, count, fresh), status = self._miss(conn, query, seconds, span, revision), "miss"
        else:
            (series, count, fresh), status = self._hit(conn, query, seconds, span, entry), "hit"
        if fresh is not None:
            self.put(key, trimmed(fresh, minutes_from, seconds))
        elif entry is None:
            self.put(key, None)
        return Answer(series, status, count)

    @staticmethod
    def _miss(
        conn: psycopg.Connection[Any], query: SeriesQuery, step: float, span: Span, revision: int
    ) -> tuple[str, int, Entry | None]:
        """Everything read; the whole settled steps among it make a new entry."""
        ((order, points),) = pieces(conn, query, step, [(span.start, span.end)])
        fresh = None
        if span.first < span.settled:
            kept = {labels: between(pts, span.first, span.settled) for labels, pts in points.items()}
            head = span.head_of(points)
            fresh = entry_of(revision, span.first, span.settled, span.end - span.start, order, kept, head)
        return series_json(order, points), count_of(order, points), fresh

    @staticmethod
    def _hit(
        conn: psycopg.Connection[Any], query: SeriesQuery, step: float, span: Span, entry: Entry
    ) -> tuple[str, int, Entry | None]:
        """The cached steps inside the range, and from the database the steps before and after them."""
        lo, hi = max(span.first, entry.since), min(span.settled, entry.until)
        known = entry.head
        reused = known if known is not None and lo == span.first and known.key == span.head_key else None
        wanted = [(span.start, lo)] if span.start < lo and reused is None else []
        wanted += [(hi, span.end)] if hi < span.end else []
        fetched = pieces(conn, query, step, wanted)
        new_head: Head | None = reused
        if reused is not None:
            head = reused.points
        else:
            head = fetched[0][1] if span.start < lo else {}
            new_head = span.head_of(head) or known
        tail = fetched[-1][1] if hi < span.end else {}
        labels = set(entry.order) | set(head) | set(tail)
        order = entry.order if labels.issubset(entry.order) else sort_labels(conn, labels)
        answer = {
            labels: head.get(labels, [])
            + between(entry.points.get(labels, []), lo, hi)
            + tail.get(labels, [])
            for labels in order
        }
        since, until = min(entry.since, span.first), max(entry.until, span.settled)
        longest = max(entry.span, span.end - span.start)
        if (since, until, longest) == (entry.since, entry.until, entry.span) and new_head is known:
            # most refreshes: nothing newly settled to keep
            return series_json(order, answer), count_of(order, answer), None
        # the entry grows by the whole settled steps just read: before it from the head, after it from the tail
        grown = {
            labels: between(head.get(labels, []), span.first, entry.since)
            + entry.points.get(labels, [])
            + between(tail.get(labels, []), entry.until, span.settled)
            for labels in order
        }
        return (
            series_json(order, answer),
            count_of(order, answer),
            entry_of(entry.revision, since, until, longest, order, grown, new_head),
        )


@dataclass(frozen=True)
class Span:
    """A request's range [start, end) in epoch seconds, its first whole step, and the end of its last whole
    settled step (``settled <= first``: none)."""

    start: float
    end: float
    first: float
    settled: float

    @property
    def minute(self) -> float:
        return math.ceil(self.start / 60) * 60

    @property
    def head_key(self) -> tuple[float, float]:
        return (self.minute, self.first)

    def head_of(self, points: dict[str, list[str]]) -> Head | None:
        """The partial first step among ``points`` (read from ``start`` on), if the range has one and it is
        settled."""
        if not self.start < self.first <= self.settled:
            return None
        partial = {labels: between(pts, -math.inf, self.first) for labels, pts in points.items()}
        return Head(self.minute, self.first, {labels: pts for labels, pts in partial.items() if pts})


def entry_of(
    revision: int,
    since: float,
    until: float,
    span: float,
    order: Sequence[str],
    points: dict[str, list[str]],
    head: Head | None = None,
) -> Entry:
    kept = {labels: pts for labels, pts in points.items() if pts}
    heads = head.points if head is not None else {}
    size = ENTRY_OVERHEAD + size_of(kept) + size_of(heads)
    return Entry(
        revision, since, until, span, tuple(o for o in order if o in kept or o in heads), kept, size, head
    )


def cacheable(f: float, t: float, step: float, minutes_from: float) -> bool:
    """Ranges query_series reads tier by tier from minute retention on, at steps of whole minutes (not one
    point over a range off the step's bins: query_series does not bin that one from the epoch)."""
    low, high = STEP_LIMITS
    off_bins = step > 0 and t - f == step and f % step != 0
    return (
        f < t and t - f <= RANGE_LIMIT and f >= minutes_from and low <= step <= high and step % 60 == 0
    ) and not off_bins


def trimmed(entry: Entry, minutes_from: float, step: float) -> Entry:
    """Steps kept no further back than minute retention and the longest range asked of the entry."""
    since = max(entry.since, math.ceil(max(minutes_from, entry.until - entry.span) / step) * step)
    if since <= entry.since:
        return entry
    points = {labels: between(pts, since, entry.until) for labels, pts in entry.points.items()}
    return entry_of(entry.revision, since, entry.until, entry.span, entry.order, points, entry.head)


def stamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def pieces(
    conn: psycopg.Connection[Any],
    query: SeriesQuery,
    step: float,
    ranges: list[tuple[float, float]],
) -> list[tuple[list[str], dict[str, list[str]]]]:
    """query_series over each [from, to) at ``step`` seconds, in one statement: (label order, points) each."""
    if not ranges:
        return []
    project_id, metric, matchers, agg, by = query.args
    rows = conn.execute(
        PIECES_SQL,
        (
            [stamp(a) for a, _ in ranges],
            [stamp(b) for _, b in ranges],
            project_id,
            metric,
            matchers,
            timedelta(seconds=step),
            agg,
            by,
        ),
    ).fetchall()
    found: list[tuple[list[str], dict[str, list[str]]]] = [([], {}) for _ in ranges]
    for n, labels, points in rows:
        order, by_labels = found[n - 1]
        order.append(labels)
        by_labels[labels] = split_points(points)
    return found


def whole(
    conn: psycopg.Connection[Any],
    query: SeriesQuery,
    start: datetime,
    end: datetime,
    step: timedelta | None,
) -> tuple[str, int]:
    """One query_series call over the whole range, exactly as asked (its errors are the caller's): the
    series as JSON and their number of points."""
    project_id, metric, matchers, agg, by = query.args
    row = conn.execute(WHOLE_SQL, (project_id, metric, start, end, matchers, step, agg, by)).fetchone()
    return (str(row[0]), int(row[1])) if row else ("[]", 0)


def whole_answer(
    conn: psycopg.Connection[Any],
    query: SeriesQuery,
    start: datetime,
    end: datetime,
    step: timedelta | None,
    cache: str,
) -> Answer:
    series, points = whole(conn, query, start, end, step)
    return Answer(series, cache, points)


def sort_labels(conn: psycopg.Connection[Any], labels: set[str]) -> tuple[str, ...]:
    return tuple(str(r[0]) for r in conn.execute(ORDER_SQL, (sorted(labels),)).fetchall())
