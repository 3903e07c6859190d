"""Bounded spool of batches the backend did not take yet: on disk, oldest first, replayed in order.

Layout: ``<root>/<project_id>/<owner>/<ns-time>-<pid>-<seq>-<points>.json``, one file per batch, written
to a temporary name, ``fsync``-ed, renamed and the directory ``fsync``-ed (a reader never sees half a
batch, and a renamed batch survives a power cut); a failed write removes its temporary file and keeps
the batch in memory (counted in ``write_errors``). Each owner directory holds a
``.lock`` that its process keeps ``flock``-ed; the kernel drops the lock when the process dies, even by
``kill -9``, so another client of the same project *adopts* the orphan: it moves the files into its own
directory (names sort by creation time, so the order survives) and replays them. Resending is harmless:
batches are idempotent on ``(source, batch_id)``.

Every directory is private: created ``0700``, and refused (``UnsafeDirectoryError``) when it is not
owned by this user, is writable by group or others, or hangs below a directory another user could
rename it in (see :func:`ensure_private_dir`). Otherwise another local user could plant batches that
this process would replay with its own credentials. Replayed batches of another project are dropped
(``foreign_batches``). When the directory cannot be used, the spool degrades to memory with the same
byte cap (``disabled_reason`` says why).
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
import stat
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("meshhook_rt_metrics.client")

_NAME = re.compile(r"^(\d{20})-(\d+)-(\d{8}(?:\.[01])*)-(\d+)\.json$")
"""``<ns-time>-<pid>-<seq>[.<half>...]-<points>.json``: the halves of a split batch sort where it was."""
Batch = dict[str, Any]


class UnsafeDirectoryError(OSError):
    """A spool directory another local user could write to or swap: not used."""


def _check_dir(path: Path, *, follow: bool) -> None:
    """``path`` is a directory of this user that nobody else can write to (a symlink only if ``follow``)."""
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectoryError(f"{path} is not a directory" + ("" if follow else " (or is a symlink)"))
    if st.st_uid != os.geteuid():
        raise UnsafeDirectoryError(f"{path} is owned by uid {st.st_uid}, not by this user ({os.geteuid()})")
    if st.st_mode & 0o022:
        raise UnsafeDirectoryError(f"{path} is writable by group or others (mode {st.st_mode & 0o777:o})")


def _check_ancestor(path: Path) -> None:
    """A directory above the spool: owned by this user or root, and writable by no one else unless it
    is sticky (like /tmp), so no other user can rename the spool away and put their own in its place."""
    st = os.stat(path)
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeDirectoryError(f"{path} (above the spool) is owned by another user (uid {st.st_uid})")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeDirectoryError(
            f"{path} (above the spool) is writable by others and not sticky (mode {st.st_mode & 0o7777:o})"
        )


def ensure_private_dir(path: Path, *, follow: bool = True) -> Path:
    """Create ``path`` and its missing parents with mode 0700, then check it (see ``_check_dir``) and
    every existing ancestor (``_check_ancestor``). Raises ``UnsafeDirectoryError`` (an ``OSError``)
    instead of using a directory someone else controls; never changes an existing directory's mode."""
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for ancestor in reversed(path.parents):
        if ancestor not in missing:
            _check_ancestor(ancestor)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        if directory != path:
            _check_dir(directory, follow=False)
    _check_dir(path, follow=follow)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``path`` (new, 0600, not through a symlink) and fsync it; on failure nothing is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _owner_dir_name(source: str) -> str:
    """Readable and unique per process, even when a fixed ``source`` is reused after a restart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", source)[:80]
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    return f"{safe}-{digest}-{os.getpid()}-{secrets.token_hex(3)}"


class Spool:
    """FIFO of serialized batches with a byte cap; drops the oldest only when the cap is reached."""

    def __init__(self, root: Path | None, project_id: str, source: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.project_id = project_id
        self._lock = threading.Lock()
        self._entries: deque[tuple[str, int, int]] = deque()  # (name, bytes, points), oldest first
        self._memory: dict[str, bytes] = {}
        self._bytes = 0
        self._seq = 0
        self._last_ns = 0
        self.dropped_batches = 0
        self.dropped_points = 0
        self.foreign_batches = 0
        """Spooled batches dropped because they belong to another project (or are not batches)."""
        self.foreign_points = 0
        self.write_errors = 0
        """Batches that could not be written to disk (kept in memory instead)."""
        self.disabled_reason: str | None = None
        """Why batches are kept in memory only (None: on disk, or spooling switched off)."""
        self._lock_fd: int | None = None
        self.dir: Path | None = None
        self.project_dir: Path | None = None
        if root is not None:
            try:
                self._open_dir(root, project_id, source)
            except OSError as exc:
                self.disabled_reason = str(exc)
                log.error(
                    "metrics spool disabled: directory %s unusable (%s); unsent batches are kept in "
                    "memory only and lost at exit",
                    root,
                    exc,
                )
                self.dir = None

    # -- directory ownership ----------------------------------------------------------------------
    def _open_dir(self, root: Path, project_id: str, source: str) -> None:
        # batches are tenant data, replayed with this process's credentials: private directories only,
        # used through the resolved path so that a symlink swapped later cannot redirect the spool
        root = ensure_private_dir(Path(os.path.realpath(root)))
        project_dir = ensure_private_dir(root / project_id, follow=False)
        final = project_dir / _owner_dir_name(source)
        staging = project_dir / f".{final.name}.{os.getpid()}.init"
        staging.mkdir(mode=0o700)
        fd = os.open(staging / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
            siblings = [p for p in self.project_dir.iterdir() if not p.name.startswith(".")]
        except OSError:
            return 0
        for other in siblings:
            if other == self.dir:
                continue
            try:
                _check_dir(other, follow=False)
                fd = os.open(other / ".lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                for path in sorted(other.glob("*.json")):
                    m = _NAME.match(path.name)
                    st = path.lstat()
                    if not m or not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                        continue
                    target = self.dir / path.name
                    os.rename(path, target)
                    with self._lock:
                        self._insert(path.name, st.st_size, int(m.group(4)))
                    moved += 1
                if moved:
                    _fsync_dir(self.dir)
                for leftover in other.iterdir():  # the lock, partial .tmp files of a crashed writer
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
        with self._lock:
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
            self._seq += 1
            stem = f"{ns:020d}-{os.getpid()}-{self._seq % 10**8:08d}"
            self._store(stem, batch, at_head=False)

    def split(self, name: str, halves: list[Batch]) -> None:
        """Replace the spooled batch ``name`` by ``halves``, which take its place in the order.

        The halves are stored before the original is removed: after a crash in between, both replay
        and the halves' deterministic batch ids keep it exactly-once."""
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"not a spool entry name: {name}")
        stem = f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
        with self._lock:
            for i, half in enumerate(halves):
                self._store(f"{stem}.{i}", half, at_head=True)
        self.remove(name)

    def _store(self, stem: str, batch: Batch, *, at_head: bool) -> None:
        data = json.dumps(batch, separators=(",", ":"), allow_nan=False).encode()
        points = len(batch.get("points", ()))
        name = f"{stem}-{points}.json"
        if len(data) > self.max_bytes:  # would evict everything and still not fit
            self.dropped_batches += 1
            self.dropped_points += points
            return
        self._enforce_cap(len(data))
        if self.dir is not None:
            tmp = self.dir / f".{name}.tmp"
            try:
                _write_durably(tmp, data)  # removes its partial file on failure
                os.rename(tmp, self.dir / name)
                _fsync_dir(self.dir)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                self.write_errors += 1
                log.warning(
                    "metrics spool write failed (%s); the batch is kept in memory until sent "
                    "(not crash-safe)",
                    exc,
                )
                self._memory[name] = data
        else:
            self._memory[name] = data
        if at_head:
            self._insert(name, len(data), points)
        else:
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
        """The oldest batch (unreadable files are dropped and counted; so are batches of another
        project, in ``foreign_batches``: a client replays only its own project's data)."""
        while True:
            with self._lock:
                if not self._entries:
                    return None
                name = self._entries[0][0]
                data = self._memory.get(name)
            if data is None and self.dir is not None:
                try:
                    data = _read_own_file(self.dir / name)
                except OSError:
                    data = None
            try:
                if data is None:
                    raise ValueError("missing")
                batch = json.loads(data)
            except ValueError:
                self.remove(name, dropped=True)
                continue
            if (
                isinstance(batch, dict)
                and str(batch.get("project_id")).lower() == self.project_id.lower()
                and isinstance(batch.get("points"), list)
            ):
                return name, batch
            self.remove(name)
            points = batch.get("points") if isinstance(batch, dict) else None
            with self._lock:
                self.foreign_batches += 1
                self.foreign_points += len(points) if isinstance(points, list) else 0
            log.warning("dropped a spooled batch that does not belong to project %s", self.project_id)

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
        """Release the directory; an empty one is removed, a non-empty one becomes adoptable.

        Batches only in memory after a failed write get one more chance to reach the disk."""
        if self._lock_fd is None:
            return
        if self.dir is not None and self._memory:
            self._persist_memory()
        if self.dir is not None and not self._entries and not self._memory:
            with contextlib.suppress(OSError):
                (self.dir / ".lock").unlink()
                self.dir.rmdir()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = None

    def _persist_memory(self) -> None:
        assert self.dir is not None
        with self._lock:
            for name, data in list(self._memory.items()):
                tmp = self.dir / f".{name}.tmp"
                try:
                    _write_durably(tmp, data)
                    os.rename(tmp, self.dir / name)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    log.warning("metrics spool: %d batches could not be saved (%s)", len(self._memory), exc)
                    return
                del self._memory[name]
            with contextlib.suppress(OSError):
                _fsync_dir(self.dir)

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


def _read_own_file(path: Path) -> bytes:
    """A regular file of this user, never through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(f"{path}: not a regular file of this user")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)
