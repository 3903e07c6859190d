"""A per-caller rate limit of the query endpoints (GET /api/metrics, /api/metrics/series, /metrics).

A query can cost the shared database seconds of CPU; one token bucket per caller (the user id of a user
token, the role for a key without one, e.g. the service key) keeps a dashboard left open in many tabs or a
script in a loop from taking it all. In process: each service process has its own buckets, so N processes
allow N times the rate. Scrape tokens are not limited here (Prometheus scrapes at its own interval).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from meshhook_rt_metrics.api.auth import Caller
from meshhook_rt_metrics.api.deps import CallerDep
from meshhook_rt_metrics.api.errors import ApiError

MAX_CALLERS = 100_000
"""Buckets kept; beyond, the least recently seen caller's is dropped (it comes back full: more lenient)."""


class RateLimiter:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; ``rate`` 0 turns the limit off."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_CALLERS,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token of ``key``'s bucket: 0.0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return wait


def caller_key(who: Caller) -> str:
    """Whose bucket: the user (``sub``) of a user token, else the role (the service key, a key without sub)."""
    sub = who.claims.get("sub")
    if who.role == "authenticated" and isinstance(sub, str) and sub:
        return "user:" + sub
    return "role:" + who.role


def check_rate(request: Request, who: Caller) -> None:
    """429 ``rate_limited`` with Retry-After (whole seconds) when the caller's bucket is empty."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    if not isinstance(limiter, RateLimiter):
        return
    wait = limiter.acquire(caller_key(who))
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many queries: at most {limiter.rate:g} per second (bursts of {limiter.burst})",
            hint="retry after the number of seconds in Retry-After",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def _rate_limited(request: Request, who: CallerDep) -> Caller:
    check_rate(request, who)
    return who


RateLimitedCallerDep = Annotated[Caller, Depends(_rate_limited)]
"""The verified caller (as ``CallerDep``), after taking one request of its rate limit."""
