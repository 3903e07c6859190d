"""Keeps a local stack service running: restarts it when it dies.

``python -m meshhook_rt_metrics.localstack.supervise [--name N --log PATH --status PATH --max-bytes B --keep K]
-- argv...``

The stack's processes are detached, so nothing else would notice a crash. SIGTERM (or SIGINT) to the supervisor
stops the child and then the supervisor; any other exit of the child is restarted after a backoff (1 s,
doubling, at most 30 s; back to 1 s after a minute of uptime).

With ``--log`` the child's stdout and stderr go through the supervisor into ``PATH``, which is rotated at
``--max-bytes`` keeping ``--keep`` old files (``PATH.1`` is the newest), so a service that logs in a loop
cannot fill the disk; every line is redacted (``meshhook_rt_metrics.logs``) on the way, behind the services'
own redaction. With ``--status`` the supervisor keeps a JSON file with the child's pid, state, restart count
and last error (its exit code and last output line), which ``meshhook-metrics status`` shows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from meshhook_rt_metrics.logs import redact

BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
MAX_LINE = 64 * 1024
"""A line longer than this is written in pieces (the pipe is read in bounded chunks)."""
LAST_ERROR_CHARS = 500


class RotatingLog:
    """An append-only log file rotated at ``max_bytes``, keeping ``keep`` old files; stdout without a path."""

    def __init__(
        self, path: Path | None, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
    ) -> None:
        self.path = path
        self.max_bytes = max(1024, max_bytes)
        self.keep = max(1, keep)
        self._lock = threading.Lock()
        self._out: IO[bytes] = open(path, "ab") if path else sys.stdout.buffer  # noqa: SIM115

    def write(self, data: bytes) -> None:
        with self._lock:
            self._out.write(data)
            self._out.flush()
            if self.path is not None and self._out.tell() >= self.max_bytes:
                self._rotate()

    def line(self, text: str) -> None:
        self.write((text.rstrip("\n") + "\n").encode("utf-8", "replace"))

    def _rotate(self) -> None:
        assert self.path is not None
        self._out.close()
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if index == self.keep:
                older.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._out = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            if self.path is not None:
                self._out.close()


class Pump(threading.Thread):
    """Copies a child's output, line by line and redacted, into the log; remembers its last lines."""

    def __init__(self, source: IO[bytes], log: RotatingLog) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.log = log
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)

    def run(self) -> None:
        pending = b""
        fd = self.source.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._emit(line)
        if pending:
            self._emit(pending)
        with contextlib.suppress(OSError):
            self.source.close()

    def _emit(self, raw: bytes) -> None:
        text = redact(raw.decode("utf-8", "replace"))
        if text.strip():
            self.last_lines.append(text.strip())
        self.log.line(text)

    def last_line(self) -> str | None:
        return self.last_lines[-1] if self.last_lines else None


class Status:
    """The supervisor's state file, rewritten atomically on every change."""

    def __init__(self, path: Path | None, name: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "name": name,
            "supervisor_pid": os.getpid(),
            "child_pid": None,
            "state": "starting",
            "restarts": 0,
            "started_at": None,
            "last_exit": None,
            "last_error": None,
            "last_error_at": None,
        }

    def update(self, **changes: Any) -> None:
        self.data.update(changes)
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with code {code}"


def supervise(
    argv: list[str],
    *,
    name: str | None = None,
    log_path: Path | None = None,
    status_path: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep: int = DEFAULT_KEEP,
) -> int:
    label = name or (argv[-1] if argv else "?")
    log = RotatingLog(log_path, max_bytes, keep)
    status = Status(status_path, label)
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = BACKOFF_MIN
    try:
        while not stopping.is_set():
            started = time.monotonic()
            last: str | None
            try:
                child = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            except OSError as exc:  # the program is missing: count it as a failed run
                code, last = 127, str(exc)
            else:
                assert child.stdout is not None
                pump = Pump(child.stdout, log)
                pump.start()
                status.update(child_pid=child.pid, state="running", started_at=_now())
                code = child.wait()
                pump.join(timeout=2.0)  # a grandchild may still hold the pipe: it keeps pumping meanwhile
                last = pump.last_line()
            if stopping.is_set():
                break
            if time.monotonic() - started > HEALTHY_AFTER:
                backoff = BACKOFF_MIN
            error = describe_exit(code) + (f": {last}" if last else "")
            status.update(
                child_pid=None,
                state="backoff",
                last_exit=code,
                last_error=error[:LAST_ERROR_CHARS],
                last_error_at=_now(),
            )
            log.line(f"{_now()} supervise: {label} {describe_exit(code)}; restarting in {backoff:.0f} s")
            if stopping.wait(backoff):
                break
            backoff = min(BACKOFF_MAX, backoff * 2)
            status.update(restarts=status.data["restarts"] + 1)
    finally:
        status.update(child_pid=None, state="stopped")
        log.close()
    return 0


def main(args: list[str]) -> int:
    if "--" in args:
        split = args.index("--")
        options, command = args[:split], args[split + 1 :]
    else:
        options, command = [], args
    if not command:
        print(
            "usage: python -m meshhook_rt_metrics.localstack.supervise [options] -- command [args...]",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="supervise")
    parser.add_argument("--name")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--status", type=Path)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    parsed = parser.parse_args(options)
    return supervise(
        command,
        name=parsed.name,
        log_path=parsed.log,
        status_path=parsed.status,
        max_bytes=parsed.max_bytes,
        keep=parsed.keep,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
