"""Bounded spool of batches the backend did not take yet: on disk, oldest first, replayed in order.

Layout: ``<root>/<project_id>/<owner>/<ns-time>-<pid>-<seq>-<points>.json``, one file per batch, written
to a temporary name and renamed (a reader never sees half a batch). Each owner directory holds a
``.lock`` that its process keeps ``flock``-ed; the kernel drops the lock when the process dies, even by
``kill -9``, so another client of the same project *adopts* the orphan: it moves the files into its own
directory (names sort by creation time, so the order survives) and replays them. Resending is harmless:
batches are idempotent on ``(source, batch_id)``.

When the directory cannot be used, the spool degrades to memory with the same byte cap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("meshhook_rt_metrics.client")

_NAME = re.compile(r"^(\d{20})-(\d+)-(\d{8})-(\d+)\.json$")
Batch = dict[str, Any]


def _owner_dir_name(source: str) -> str:
    """Readable and unique per process, even when a fixed ``source`` is reused after a restart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", source)[:80]
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    return f"{safe}-{digest}-{os.getpid()}-{secrets.token_hex(3)}"


class Spool:
    """FIFO of serialized batches with a byte cap; drops the oldest only when the cap is reached."""

    def __init__(self, root: Path | None, project_id: str, source: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: deque[tuple[str, int, int]] = deque()  # (name, bytes, points), oldest first
        self._memory: dict[str, bytes] = {}
        self._bytes = 0
        self._seq = 0
        self._last_ns = 0
        self.dropped_batches = 0
        self.dropped_points = 0
        self._lock_fd: int | None = None
        self.dir: Path | None = None
        self.project_dir: Path | None = None
        if root is not None:
            try:
                self._open_dir(root / project_id, source)
            except OSError as exc:
                log.warning("spool directory %s unusable (%s); spooling in memory", root, exc)
                self.dir = None

    # -- directory ownership ----------------------------------------------------------------------
    def _open_dir(self, project_dir: Path, source: str) -> None:
        project_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # batches are tenant data
        final = project_dir / _owner_dir_name(source)
        staging = project_dir / f".{final.name}.{os.getpid()}.init"
        staging.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(staging / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, final)  # visible to adopters only once locked
        self._lock_fd = fd
        self.dir = final
        self.project_dir = project_dir

    def adopt_orphans(self) -> int:
        """Move the batches of dead processes of the same project into this spool; returns batches moved."""
        if self.dir is None or self.project_dir is None:
            return 0
        moved = 0
        try:
            siblings = [p for p in self.project_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return 0
        for other in siblings:
            if other == self.dir:
                continue
            try:
                fd = os.open(other / ".lock", os.O_RDWR)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                for path in sorted(other.glob("*.json")):
                    m = _NAME.match(path.name)
                    if not m:
                        continue
                    target = self.dir / path.name
                    os.rename(path, target)
                    with self._lock:
                        self._insert(path.name, target.stat().st_size, int(m.group(4)))
                    moved += 1
                for leftover in other.iterdir():
                    leftover.unlink(missing_ok=True)
                other.rmdir()
            except OSError as exc:
                log.warning("could not adopt spool %s: %s", other, exc)
            finally:
                os.close(fd)
        if moved:
            with self._lock:
                self._enforce_cap(0)
        return moved

    def _insert(self, name: str, size: int, points: int) -> None:
        """Insert keeping name (= creation time) order; adopted batches are older than ours."""
        entries = list(self._entries)
        entries.append((name, size, points))
        entries.sort(key=lambda e: e[0])
        self._entries = deque(entries)
        self._bytes += size

    # -- queue ------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def append(self, batch: Batch) -> None:
        data = json.dumps(batch, separators=(",", ":"), allow_nan=False).encode()
        points = len(batch.get("points", ()))
        with self._lock:
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
            self._seq += 1
            name = f"{ns:020d}-{os.getpid()}-{self._seq % 10**8:08d}-{points}.json"
            if len(data) > self.max_bytes:  # would evict everything and still not fit
                self.dropped_batches += 1
                self.dropped_points += points
                return
            self._enforce_cap(len(data))
            if self.dir is not None:
                try:
                    tmp = self.dir / f".{name}.tmp"
                    tmp.write_bytes(data)
                    os.rename(tmp, self.dir / name)
                except OSError as exc:
                    log.warning("spool write failed (%s); keeping the batch in memory", exc)
                    self._memory[name] = data
            else:
                self._memory[name] = data
            self._entries.append((name, len(data), points))
            self._bytes += len(data)

    def _enforce_cap(self, incoming: int) -> None:
        while self._entries and self._bytes + incoming > self.max_bytes:
            name, size, points = self._entries.popleft()
            self._discard(name)
            self._bytes -= size
            self.dropped_batches += 1
            self.dropped_points += points

    def _discard(self, name: str) -> None:
        if self._memory.pop(name, None) is None and self.dir is not None:
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    def peek(self) -> tuple[str, Batch] | None:
        """The oldest batch (unreadable files are dropped and counted)."""
        while True:
            with self._lock:
                if not self._entries:
                    return None
                name = self._entries[0][0]
                data = self._memory.get(name)
            if data is None and self.dir is not None:
                try:
                    data = (self.dir / name).read_bytes()
                except OSError:
                    data = None
            try:
                if data is None:
                    raise ValueError("missing")
                return name, json.loads(data)
            except ValueError:
                self.remove(name, dropped=True)

    def remove(self, name: str, *, dropped: bool = False) -> None:
        with self._lock:
            for i, (n, size, points) in enumerate(self._entries):
                if n == name:
                    del self._entries[i]
                    self._bytes -= size
                    self._discard(name)
                    if dropped:
                        self.dropped_batches += 1
                        self.dropped_points += points
                    return

    def names(self) -> list[str]:
        with self._lock:
            return [e[0] for e in self._entries]

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the directory; an empty one is removed, a non-empty one becomes adoptable."""
        if self._lock_fd is None:
            return
        if self.dir is not None and not self._entries and not self._memory:
            with contextlib.suppress(OSError):
                (self.dir / ".lock").unlink()
                self.dir.rmdir()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = None

    def abandon_after_fork(self) -> None:
        """In a forked child: let go of the parent's lock descriptor without touching its files."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock_fd = None
        self._entries.clear()
        self._memory.clear()
        self._bytes = 0
        self.dir = None
