"""Sharing one embedded shard between server processes: a lease over a file lock.

An embedded Qdrant shard can be open in one process at a time (its WAL is locked by the
opener), and agents start many server processes. Opening costs 40-120 ms, too much per call,
and keeping it open forever locks every other process out (the known failure of other Qdrant
MCP servers, whose local mode holds the lock for the client's lifetime). So:

* a process takes ``shard.lock`` (``flock``), opens the shard and keeps it while it is busy;
* it lets go after ``idle_s`` without a call (a reaper thread watches), or as soon as it is idle
  and another process is waiting, or after any call when it has held the shard for
  ``max_hold_s`` and someone waits (waiters announce themselves with a shared lock on
  ``waiters.lock``, which the reaper checks every ``poll_s``);
* since a waiter is noticed within ``poll_s`` anyway, ``idle_s`` can be long (the embedded store
  keeps an idle shard 30 s: an agent's next search then skips the 130-180 ms open of a 10k
  shard); what was written is flushed after ``flush_s`` without a call, as a close would;
* a waiting process polls for ``wait_s`` at most and otherwise never fails; a process that just
  yielded pauses ``courtesy_s`` before taking the lock again so the waiter gets its turn.

Writes are flushed ``flush_s`` after the last call and before the lock is released (the shard is
flushed and closed), and the kernel drops the lock of a process that dies, whose WAL the next
opener replays.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from server.memory.errors import MemoryBusy, MemoryUnavailable
from server.statefiles import private_dir

log = logging.getLogger("docker_stack_mcp.memory")

T = TypeVar("T")


MIN_FREE_BYTES = 64 * 1024 * 1024
"""Below this much free space on its disk the shard is not touched. The embedded store writes
through memory-mapped sparse files (32 MiB WAL segments and pages): on a full disk a write to a
page not yet backed faults with SIGBUS, which kills the whole server, not just the call."""


def _check_free_space(directory: Path) -> None:
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return  # cannot tell: let the open say what is wrong
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise MemoryUnavailable(
            f"the memory is not opened: the disk holding {directory} has {free // (1024 * 1024)} MiB free, "
            f"under the {MIN_FREE_BYTES // (1024 * 1024)} MiB the embedded store needs to write safely",
            state="nothing was read or written in the memory; deployments and the stacks are unaffected",
            next_step="free space on the disk holding DSM_STATE_DIR",
        )


class OpenContended(Exception):
    """Raised by an opener when the resource is still locked by someone outside our lock."""


class ShardLease(Generic[T]):
    def __init__(
        self,
        directory: Path,
        opener: Callable[[], T],
        closer: Callable[[T], None],
        *,
        flusher: Callable[[T], None] | None = None,
        flush_s: float = 1.5,
        idle_s: float = 1.5,
        max_hold_s: float = 0.5,
        wait_s: float = 60.0,
        courtesy_s: float = 0.05,
        poll_s: float = 0.05,
    ) -> None:
        self._dir = directory
        self._opener = opener
        self._closer = closer
        self._flusher = flusher
        self.flush_s = flush_s
        self._dirty = False
        self.idle_s = idle_s
        self.max_hold_s = max_hold_s
        self.wait_s = wait_s
        self.courtesy_s = courtesy_s
        self._poll_s = poll_s
        self._lock = threading.RLock()
        self._resource: T | None = None
        self._fd: int | None = None
        self._waiters_fd: int | None = None
        self._depth = 0
        self._acquired_at = 0.0
        self._last_used = 0.0
        self._yielded_at = 0.0
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.opens = 0
        """How many times this process opened the resource (tests and the benchmark read it)."""
        self.last_open_s = 0.0

    @property
    def held(self) -> bool:
        return self._resource is not None

    @contextmanager
    def hold(self) -> Iterator[T]:
        """The open resource, held for the duration of the block (re-entrant)."""
        with self._lock:
            if self._closed:
                raise MemoryBusy("the memory store was closed", next_step="restart the server")
            _check_free_space(self._dir)
            if self._resource is None:
                self._acquire()
            self._depth += 1
            try:
                assert self._resource is not None
                yield self._resource
            finally:
                self._depth -= 1
                now = time.monotonic()
                self._last_used = now
                if self._depth == 0 and now - self._acquired_at >= self.max_hold_s and self._someone_waits():
                    self._release(yielded=True)

    def mark_written(self) -> None:
        """Called inside :meth:`hold` by a write: the reaper flushes it once the shard is idle."""
        self._dirty = True

    def release(self) -> None:
        """Let go now if idle (no call in progress)."""
        with self._lock:
            if self._depth == 0:
                self._release(yielded=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._release(yielded=False)
            if self._waiters_fd is not None:
                os.close(self._waiters_fd)
                self._waiters_fd = None

    # -- internals -------------------------------------------------------------------------

    def _lock_fd(self, name: str) -> int:
        private_dir(self._dir)
        return os.open(self._dir / name, os.O_RDWR | os.O_CREAT, 0o600)

    def _someone_waits(self) -> bool:
        if self._waiters_fd is None:
            self._waiters_fd = self._lock_fd("waiters.lock")
        try:
            fcntl.flock(self._waiters_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._waiters_fd, fcntl.LOCK_UN)
        return False

    def _acquire(self) -> None:
        pause = self._yielded_at + self.courtesy_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        started = time.monotonic()
        deadline = started + self.wait_s
        fd = self._lock_fd("shard.lock")
        try:
            self._take_lock(fd, deadline)
            self._fd = fd
            self._resource = self._open(deadline)
        except BaseException:
            self._fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        now = time.monotonic()
        self.opens += 1
        self.last_open_s = now - started
        self._acquired_at = self._last_used = now
        self._start_reaper()

    def _take_lock(self, fd: int, deadline: float) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waiters = self._lock_fd("waiters.lock")
        try:
            fcntl.flock(waiters, fcntl.LOCK_SH)
            delay = 0.002
            while True:
                time.sleep(delay)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
                if time.monotonic() >= deadline:
                    raise MemoryBusy(
                        f"the memory store at {self._dir} stayed locked by another process for {self.wait_s:.0f} s",
                        state="nothing was read or written",
                        next_step="retry in a moment; if it persists, look for a hung docker-stack-mcp process",
                    )
                delay = min(delay * 2, 0.01)
        finally:
            fcntl.flock(waiters, fcntl.LOCK_UN)
            os.close(waiters)

    def _open(self, deadline: float) -> T:
        delay = 0.01
        while True:
            try:
                return self._opener()
            except OpenContended:
                # Someone opened the shard without our lock (an older version, a tool): wait too.
                if time.monotonic() >= deadline:
                    raise MemoryBusy(
                        f"the memory shard at {self._dir} is held open by a process outside the lease",
                        state="nothing was read or written",
                        next_step="stop the other program using the shard, then retry",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _release(self, *, yielded: bool) -> None:
        resource, self._resource = self._resource, None
        fd, self._fd = self._fd, None
        self._dirty = False  # the closer flushes
        try:
            if resource is not None:
                self._closer(resource)
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        if yielded:
            self._yielded_at = time.monotonic()

    def _start_reaper(self) -> None:
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(target=self._reap, name="dsm-memory-lease", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(self._poll_s)
            if not self._lock.acquire(blocking=False):
                continue  # a call is running or starting; it keeps the lease fresh
            try:
                if self._resource is None:
                    return
                if self._depth:
                    continue
                idle = time.monotonic() - self._last_used
                if idle >= self.idle_s:
                    self._release(yielded=False)
                    return
                if self._someone_waits():
                    self._release(yielded=True)
                    return
                if self._dirty and idle >= self.flush_s and self._flusher is not None:
                    self._dirty = False
                    try:
                        self._flusher(self._resource)
                    except Exception as exc:  # the close flushes again; keep watching for waiters
                        log.warning("memory shard flush failed: %s", exc)
            except Exception:
                log.exception("memory lease reaper failed")
                return
            finally:
                self._lock.release()
