"""The sink in a process of its own: the service hands each batch over a pipe to a *shipper* process, which
holds the database driver, its connection and the known-series cache (``shipper="process"``).

Why: the service's process then never imports psycopg (or httpx), so each of its full garbage collections
walks ~11,000 fewer objects, and the send's work (the arrays, the statement, the driver) runs outside the
service's GIL, on another core (docs/architecture.md, "Then: the send in a process of its own").

The contract is the sink's: ``send`` returns once the shipper's sink returned (the batch committed) and raises
the errors that sink raised, so the client's spool, retries and exactly-once stay as they are. A shipper that
exits or stops answering is killed and its batch reported as a ``SinkError``: the client spools and resends it,
and the ledger answers ``duplicate`` if it had been stored. The next send starts a new shipper. The shipper
leaves when its stdin closes (the client closed, or the service exited or was killed); it ignores SIGINT and
SIGTERM, which a terminal or a service manager sends the whole group, so the service's final flush still finds it.

Frames on both pipes: a 4-byte big-endian length, then ``marshal`` data (batches are plain dicts, lists,
strings and numbers; both ends are the same interpreter). The first frame is the sink's spec, credentials
included, which is why they never appear on the shipper's command line.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meshhook_rt_metrics.client.sinks import (
    Batch,
    BatchTooLargeError,
    InvalidBatchError,
    NotAuthorisedError,
    ServerError,
    SinkError,
    SinkSpec,
    redact_url,
    sink_for,
)

log = logging.getLogger("meshhook_rt_metrics.client")

_LENGTH = struct.Struct(">I")
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (SinkError, ServerError, BatchTooLargeError, NotAuthorisedError, InvalidBatchError)
}
"""The errors a sink raises, by name: the shipper answers with one of these names and the service raises it."""


def answer_timeout(send_timeout: float) -> float:
    """How long the service waits for the shipper's answer: the longest a healthy send can take (connect, then
    the statement timeout ``PostgresSink`` sets), plus a margin; after it the shipper counts as hung."""
    return 2 * send_timeout + max(30.0, 6 * send_timeout) + 5.0


class UnansweredError(Exception):
    """The shipper exited, closed its pipe or did not answer in time."""


class ShipperSink:
    """A sink that sends through a shipper process (see the module's docstring)."""

    def __init__(self, spec: SinkSpec, *, answer_timeout: float) -> None:
        sink_for(spec)  # a spec the shipper could not build fails here, in the service, with its message
        self._spec = spec
        self._answer_timeout = answer_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ShipperSink({self._spec['kind']}, {redact_url(str(self._spec['url']))!r})"

    @property
    def pid(self) -> int | None:
        """The running shipper's process id (None before the first send or after a failure)."""
        return self._proc.pid if self._proc is not None else None

    def send(self, batch: Batch) -> dict[str, Any]:
        payload = marshal.dumps(batch)
        proc = self._running()
        deadline = time.monotonic() + self._answer_timeout
        try:
            _write_frame(_fd(proc.stdin), payload, deadline)
            reply = marshal.loads(_read_frame(_fd(proc.stdout), deadline))
        except (OSError, EOFError, ValueError, UnansweredError) as exc:
            self._stop(kill=True)
            raise SinkError(f"metrics shipper failed ({exc}); a new one starts at the next send") from exc
        if reply[0] == "ok":
            result: dict[str, Any] = reply[1]
            return result
        raise _ERRORS.get(reply[1], ServerError)(reply[2])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop(kill=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from meshhook_rt_metrics.client.shipper import main; raise SystemExit(main())",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=_child_env(),
        )
        self._proc = proc
        try:
            _write_frame(_fd(proc.stdin), marshal.dumps(self._spec), time.monotonic() + self._answer_timeout)
        except (OSError, UnansweredError) as exc:
            self._stop(kill=True)
            raise SinkError(f"metrics shipper did not start ({exc})") from exc
        return proc

    def _stop(self, *, kill: bool, timeout: float = 5.0) -> None:
        """Close the pipes (the shipper leaves at EOF); kill it if asked or if it outlives ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self._stop(kill=False)

    def after_fork(self) -> None:
        """A forked child drops its copies of the pipes (so the parent's shipper still sees EOF when the parent
        closes) and starts a shipper of its own at its first send; it never waits for the parent's."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            proc.returncode = 0  # not our child: Popen must never wait for or signal it


def _fd(pipe: Any) -> int:
    if pipe is None:
        raise UnansweredError("no pipe")
    fd: int = pipe.fileno()
    return fd


def _child_env() -> dict[str, str]:
    """The service's environment, with this package's directory first on ``PYTHONPATH`` so that ``-m`` finds
    the same code a service run from a source tree imported (``-c``, not ``-m``: the package imports this module)."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _write_frame(fd: int, payload: bytes, deadline: float) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        _wait(fd, deadline, write=True)
        data = data[os.write(fd, data) :]


def _read_frame(fd: int, deadline: float) -> bytes:
    (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
    return _read_exact(fd, length, deadline)


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while n:
        _wait(fd, deadline, write=False)
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise UnansweredError("it exited")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    left = None if deadline == float("inf") else max(deadline - time.monotonic(), 0.0)
    ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    if not (ready[1] if write else ready[0]):
        raise UnansweredError("no answer in time")


# -- the shipper process ------------------------------------------------------------------------------------
def _answer(sink: Any, batch: Batch) -> tuple[Any, ...]:
    try:
        return ("ok", sink.send(batch))
    except tuple(_ERRORS.values()) as exc:
        return ("error", type(exc).__name__, str(exc))
    except Exception as exc:  # a bug in the sink: reported as a server error, retried by the service
        log.warning("metrics shipper: the send failed unexpectedly", exc_info=True)
        return ("error", "ServerError", f"{type(exc).__name__}: {redact_url(str(exc))}")


def _read_request(fd: int) -> bytes | None:
    """The next frame, or None at EOF (the service closed the pipe or is gone)."""
    try:
        return _read_frame(fd, float("inf"))
    except UnansweredError:
        return None


def main() -> int:
    """Serve one service: read its sink's spec, then answer batch after batch until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s meshhook-metrics shipper: %(message)s")
    first = _read_request(0)
    if first is None:
        return 0
    sink = sink_for(marshal.loads(first))
    try:
        while (frame := _read_request(0)) is not None:
            _write_frame(replies, marshal.dumps(_answer(sink, marshal.loads(frame))), float("inf"))
    except BrokenPipeError:
        pass  # the service left while we answered
    finally:
        sink.close()
    return 0
