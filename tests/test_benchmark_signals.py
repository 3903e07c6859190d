"""A benchmark stopped by SIGTERM (``kill``, a CI timeout) stops what it started: its local stack's
PostgreSQL and maintain loop, and removes its work directory; a second SIGTERM does not cut that short."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_the_benchmarks_local_stack() -> None:
    proc = subprocess.Popen(  # a real run: its own local stack, then callgrind (stopped long before)
        [sys.executable, "-m", "benchmarks.load_instructions", "--variants", "plain", "--setups", "none"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stream = proc.stderr

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen = ""
    try:
        deadline = time.monotonic() + 120
        while "maintain: started" not in seen:
            try:  # never blocks past the deadline, even on a silent hang
                seen += lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no local stack came up:\n{seen}") from None
        port = int(re.search(r"PostgreSQL listening on 127\.0\.0\.1:(\d+)", seen).group(1))  # type: ignore[union-attr]
        data = Path(re.search(r"created PostgreSQL cluster in (\S+)", seen).group(1))  # type: ignore[union-attr]
        maintain = int(re.search(r"maintain: started \(pid (\d+)", seen).group(1))  # type: ignore[union-attr]
        assert _listening(port)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # a second one (a CI cancel repeats) must not cut the clean-up short
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not _listening(port)
    assert not data.exists()
    try:
        os.kill(maintain, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the maintain loop (pid {maintain}) outlived the benchmark")
