"""Keeps a local stack service running: restarts it when it dies (``python -m ...supervise -- argv``).

The stack's processes are detached, so nothing else would notice a crash. SIGTERM to the supervisor stops the
child and then the supervisor; any other exit of the child is restarted after a backoff (1 s, doubling, at
most 30 s; back to 1 s after a minute of uptime).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0


def supervise(argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping:
            return 0
        backoff = 1.0 if time.monotonic() - started > HEALTHY_AFTER else backoff
        print(
            f"supervise: {argv[-1] if argv else '?'} exited with {code}; restarting in {backoff:.0f} s",
            flush=True,
        )
        deadline = time.monotonic() + backoff
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0
        backoff = min(BACKOFF_MAX, backoff * 2)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m meshhook_rt_metrics.localstack.supervise -- command [args...]")
    sys.exit(supervise(args))
