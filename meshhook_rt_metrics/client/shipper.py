"""The sink in a process of its own: the service hands each batch over a pipe to a *shipper* process, which
holds the database driver, its connection and the known-series cache (``shipper="process"``).

Why: the service's process then never imports psycopg (or httpx), so each of its full garbage collections
walks ~11,000 fewer objects, and the send's work (the arrays, the statement, the driver) runs outside the
service's GIL, on another core (docs/architecture.md, "Then: the send in a process of its own").

The contract is the sink's: ``send`` returns once the shipper's sink returned (the batch committed) and raises
the errors that sink raised, so the client's spool, retries and exactly-once stay as they are. A shipper that
exits, stops answering, answers out of turn, or whose send is interrupted (even by ``KeyboardInterrupt``) is
killed and the batch reported as a ``SinkError``: the client spools and resends it, and the ledger answers
``duplicate`` if it was stored. The next send starts a new shipper. The shipper leaves when its stdin closes
(the client closed, or the service exited or was killed); it ignores SIGINT and SIGTERM, which a terminal or a
service manager sends the whole group, so the service's final flush still finds it.

Requests go to the shipper's stdin, answers come back on a pipe of their own (its stdout goes to /dev/null, so
nothing printed at start-up can pass for an answer). Frames: a 4-byte big-endian length, then ``marshal`` data
(batches are plain dicts, lists, strings and numbers; both ends are the same interpreter). The first frame is the
sink's spec, credentials included, which is why they never appear on the shipper's command line; the shipper
answers it with a hello. Every request carries a sequence number its answer repeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import time
import weakref
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

HELLO = ("meshhook-metrics-shipper", 2)
"""The shipper's first answer (name, protocol; then its CPU seconds so far): proof that ``sys.executable`` started
one. Every answer ends with the shipper's CPU seconds, so the service can report what its sends cost there."""
MAX_REQUEST = 1 << 30
"""A larger batch is reported as too large (the client splits it), never sent."""
MAX_ANSWER = 1 << 20
MAX_HELLO = 64
MAX_MESSAGE = 64 * 1024
"""An error's text is cut to this length in its answer (a long one must not turn into an unanswered send)."""
_LENGTH = struct.Struct(">I")
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (SinkError, ServerError, BatchTooLargeError, NotAuthorisedError, InvalidBatchError)
}
"""The errors a sink raises, by name: the shipper answers with one of these names and the service raises it."""
_BOOT = """\
import importlib.util, os, sys
root = {root!r}
found = importlib.util.find_spec("meshhook_rt_metrics")
if found is None or not found.origin or os.path.realpath(os.path.dirname(os.path.dirname(found.origin))) != root:
    sys.path.insert(0, root)
from meshhook_rt_metrics.client.shipper import main
raise SystemExit(main({replies}))
"""
"""The shipper's ``-c`` program (with ``-P``: the service's working directory, which the shipper keeps for the
relative paths of a connection string, is not on its path).
The package's directory goes first only when the interpreter would find another copy or none (a source tree);
an installed package keeps the interpreter's order, standard library first."""


def startup_timeout(send_timeout: float) -> float:
    """How long a new shipper may take to start and say hello (imports on a busy machine)."""
    return 10.0 + send_timeout


def answer_timeout(send_timeout: float) -> float:
    """How long the service waits for an answer: the longest a healthy send takes (a connect, then up to two
    statements under the statement timeout ``PostgresSink`` sets), plus a margin; then the shipper is hung."""
    return 2 * send_timeout + 2 * max(30.0, 6 * send_timeout) + 5.0


class UnansweredError(Exception):
    """The shipper exited, closed its pipe, did not answer in time or answered out of turn."""


class ShipperSink:
    """A sink that sends through a shipper process (see the module's docstring)."""

    def __init__(self, spec: SinkSpec, *, answer_timeout: float, hello_timeout: float | None = None) -> None:
        sink_for(spec)  # a spec the shipper could not build fails here, in the service, with its message
        if getattr(sys, "frozen", False) or not sys.executable:
            raise ValueError(
                "shipper='process' needs sys.executable to be a Python interpreter that can import this package "
                f"(got {sys.executable!r}{', a frozen application' if getattr(sys, 'frozen', False) else ''}); "
                "use shipper='thread'"
            )
        self._spec = spec
        self._answer_timeout = answer_timeout
        self._hello_timeout = min(answer_timeout, hello_timeout or startup_timeout(float(spec["timeout"])))
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: int | None = None  # the read end of the answers' pipe
        self._handing_over: int | None = None  # its write end, until the shipper holds it
        self._owner = os.getpid()
        self._seq = 0
        self._cpu_seen = 0.0  # the current shipper's CPU seconds at its last answer
        self.cpu_seconds = 0.0
        """CPU seconds the shipper processes this sink started have used (start-up included), as they reported."""
        _SINKS.add(self)

    def __repr__(self) -> str:
        return f"ShipperSink({self._spec['kind']}, {redact_url(str(self._spec['url']))!r})"

    @property
    def pid(self) -> int | None:
        """The running shipper's process id (None before the first send or after a failure)."""
        return self._proc.pid if self._proc is not None else None

    def send(self, batch: Batch) -> dict[str, Any]:
        self._seq += 1
        request = marshal.dumps((self._seq, batch))
        if len(request) > MAX_REQUEST:
            raise BatchTooLargeError(f"a batch of {len(request)} bytes is over the shipper's {MAX_REQUEST}")
        proc, replies = self._running()
        try:
            deadline = time.monotonic() + self._answer_timeout
            _write_frame(_fd(proc.stdin), request, deadline)
            reply = marshal.loads(_read_frame(replies, deadline, MAX_ANSWER))
            if not (isinstance(reply, tuple) and len(reply) >= 4 and reply[0] == self._seq):
                raise UnansweredError(f"an answer out of turn ({type(reply).__name__})")
            self._count_cpu(reply[-1])
        except BaseException as exc:  # whatever interrupted the exchange, its answer must never be read later
            self._stop(kill=True)
            if isinstance(exc, Exception):
                raise SinkError(f"metrics shipper failed ({exc}); a new one starts at the next send") from exc
            raise
        if reply[1] == "ok":
            result: dict[str, Any] = reply[2]
            return result
        raise _ERRORS.get(str(reply[2]), ServerError)(reply[3])

    def _count_cpu(self, reported: object) -> None:
        if isinstance(reported, float) and reported >= self._cpu_seen:
            self.cpu_seconds += reported - self._cpu_seen
            self._cpu_seen = reported

    def _running(self) -> tuple[subprocess.Popen[bytes], int]:
        if self._owner != os.getpid():  # a fork the at-fork hooks did not see (a C fork()): never share
            self.after_fork()
        if self._proc is not None and self._replies is not None and self._proc.poll() is None:
            return self._proc, self._replies
        self._stop(kill=True)
        try:
            proc, replies = self._start()
            deadline = time.monotonic() + self._hello_timeout
            _write_frame(_fd(proc.stdin), marshal.dumps(self._spec), deadline)
            hello = marshal.loads(_read_frame(replies, deadline, MAX_HELLO))
            if not (
                isinstance(hello, tuple) and len(hello) == 3 and hello[:2] == HELLO
            ):  # never shown: the spec?
                raise UnansweredError("its first answer was not a shipper's hello")
            self._cpu_seen = 0.0
            self._count_cpu(hello[2])
        except BaseException as exc:
            self._stop(kill=True)
            if isinstance(exc, Exception):
                raise SinkError(f"{sys.executable} did not start a metrics shipper ({exc})") from exc
            raise
        return proc, replies

    def _start(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start a shipper with the service's interpreter flags; its answers come on a pipe of their own."""
        root = os.path.realpath(Path(__file__).parents[2])
        read, write = _above_stdio(os.pipe())  # the child's stdin, stdout and stderr take 0-2
        self._handing_over = write
        try:
            self._replies, self._owner = read, os.getpid()
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                    "-P",
                    "-c",
                    _BOOT.format(root=root, replies=write),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                pass_fds=(write,),
                process_group=0,  # a terminal's signals to the service's group do not reach it
                bufsize=0,
            )
        finally:
            self._close_handed_over()
        os.set_blocking(read, False)  # a deadline holds only if no write or read can block
        os.set_blocking(_fd(self._proc.stdin), False)
        return self._proc, read

    def _stop(self, *, kill: bool, timeout: float = 5.0) -> None:
        """Close the pipes (the shipper leaves at EOF); kill it if asked or if it outlives ``timeout``. Never
        waits longer than twice ``timeout``: a process that will not die is left to the system."""
        proc, self._proc = self._proc, None
        self._close_replies()
        if proc is None:
            return
        if kill:
            proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("metrics shipper %d did not exit after SIGKILL; left to the system", proc.pid)

    def _close_replies(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None:
            os.close(replies)

    def _close_handed_over(self) -> None:
        write, self._handing_over = self._handing_over, None
        if write is not None:
            os.close(write)

    def close(self) -> None:
        """Close the pipe: the shipper has nothing in flight (the flush that used it has returned) and leaves at
        once; one that does not within two seconds is killed, so a close stays within about four."""
        self._stop(kill=False, timeout=2.0)

    def after_fork(self) -> None:
        """A forked child drops its copies of the pipes (so the parent's shipper still sees EOF when the parent
        closes) and starts a shipper of its own at its first send; it never waits for the parent's."""
        proc, self._proc = self._proc, None
        self._close_replies()
        self._close_handed_over()  # forked by another thread while this one started a shipper
        self._owner = os.getpid()
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.returncode = 0  # not our child: Popen must never wait for or signal it


_SINKS: weakref.WeakSet[ShipperSink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Every sink drops its copies of the pipes at the fork, before the child's code can run (or outlive its
    parent): a shipper sees EOF when its own service closes or dies, whatever that service forked."""
    for sink in list(_SINKS):
        with contextlib.suppress(Exception):
            sink.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _above_stdio(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's ends moved to descriptors above 2 (a service started with stdin, stdout or stderr closed gets
    them there), close-on-exec; ``pass_fds`` makes the write end the shipper's."""
    moved = []
    for fd in fds:
        if fd > 2:
            moved.append(fd)
            continue
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
        os.close(fd)
    return moved[0], moved[1]


def _fd(pipe: Any) -> int:
    if pipe is None:
        raise UnansweredError("no pipe")
    fd: int = pipe.fileno()
    return fd


def _write_frame(fd: int, payload: bytes, deadline: float) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        _wait(fd, deadline, select.POLLOUT)
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            continue
        except BrokenPipeError as exc:
            raise UnansweredError("it exited") from exc


def _read_frame(fd: int, deadline: float, limit: int) -> bytes:
    (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
    if length > limit:
        raise UnansweredError(f"a frame of {length} bytes, over {limit}")
    return _read_exact(fd, length, deadline)


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while n:
        _wait(fd, deadline, select.POLLIN)
        try:
            chunk = os.read(fd, min(n, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise UnansweredError("it exited")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _wait(fd: int, deadline: float, event: int) -> None:
    """Until ``fd`` is ready (or hung up: the read or write then says how) or the deadline passes. ``poll``,
    not ``select``: a busy service's descriptors are often above ``select``'s 1,024."""
    if deadline == float("inf"):
        return  # the shipper's own blocking pipes
    poller = select.poll()
    poller.register(fd, event)
    if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        raise UnansweredError("no answer in time")


# -- the shipper process ------------------------------------------------------------------------------------
def _error_name(exc: BaseException) -> str:
    """The nearest of the sink's errors in the exception's classes (a subclass keeps its meaning)."""
    return next((c.__name__ for c in type(exc).__mro__ if _ERRORS.get(c.__name__) is c), "ServerError")


def _answer(sink: Any, seq: int, batch: Batch) -> tuple[Any, ...]:
    """``(seq, "ok", result, cpu)`` or ``(seq, "error", name, message, cpu)``."""
    try:
        answer: tuple[Any, ...] = (seq, "ok", sink.send(batch))
    except tuple(_ERRORS.values()) as exc:
        answer = (seq, "error", _error_name(exc), str(exc)[:MAX_MESSAGE])
    except Exception as exc:  # a bug in the sink: reported as a server error, retried by the service
        detail = f"{type(exc).__name__}: {redact_url(str(exc))}"[:MAX_MESSAGE]
        log.warning("metrics shipper: the send failed unexpectedly: %s", detail)
        answer = (seq, "error", "ServerError", detail)
    return (*answer, time.process_time())


def _read_request(fd: int) -> bytes | None:
    """The next frame, or None at EOF (the service closed the pipe or is gone)."""
    try:
        return _read_frame(fd, float("inf"), MAX_REQUEST)
    except UnansweredError:
        return None


def main(replies: int) -> int:
    """Serve one service: read its sink's spec, say hello, then answer batch after batch until stdin closes."""
    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGTTOU):  # SIGTTOU: a warning to the terminal from
        signal.signal(
            ignored, signal.SIG_IGN
        )  # a background group (``stty tostop``) must not stop the shipper
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s meshhook-metrics shipper: %(message)s")
    first = _read_request(0)
    if first is None:
        return 0
    sink = sink_for(marshal.loads(first))
    try:
        _write_frame(replies, marshal.dumps((*HELLO, time.process_time())), float("inf"))
        while (frame := _read_request(0)) is not None:
            seq, batch = marshal.loads(frame)
            _write_frame(replies, marshal.dumps(_answer(sink, seq, batch)), float("inf"))
    except BrokenPipeError:
        pass  # the service left while we answered
    finally:
        with contextlib.suppress(Exception):
            sink.close()
    return 0
