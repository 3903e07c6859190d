"""SIGTERM handled as Ctrl-C by the benchmarks that start processes of their own.

Their clean-up (a local stack's PostgreSQL and maintain loop, servers, temporary directories) runs in
``finally`` blocks and context managers, which Python skips when SIGTERM ends it the default way: a
benchmark stopped by ``kill`` or a CI timeout left its stack running for hours.
"""

from __future__ import annotations

import signal
from types import FrameType


def stop_on_sigterm() -> None:
    """From now on, SIGTERM raises ``KeyboardInterrupt`` in the main thread, so everything unwinds. Call it
    where the orchestration starts (not in a benchmark's child or served modes)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # once: a second SIGTERM (or a Ctrl-C) must not interrupt the clean-up the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
