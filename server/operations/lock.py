"""One operation per stack at a time, across processes: DSM_STATE_DIR/locks/<stack>.lock.

A stack directory is locked too (``locks/dir-<hash of its path>.lock``): the project name alone
let ``deploy_stack(path=X, env={COMPOSE_PROJECT_NAME: other})`` run a second copy of X beside a
deploy of X. :class:`HeldLocks` holds both and releases them together.

``flock`` belongs to the open file description, so it conflicts between two server processes
and between two attempts in the same process alike, and the kernel releases it when the holder
dies (even by SIGKILL): a lock is never left stale. The descriptor is close-on-exec, so child
processes (Compose) do not inherit it. The holder writes who it is into the file so a refused
caller can name the running operation without reading the whole journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from server.statefiles import private_dir


class StackLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False when someone holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path.name} is already held by this object")
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def write_holder(self, info: dict[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("write_holder without the lock")
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a refused caller must not read a finished holder
        os.close(fd)  # releases the flock

    def __del__(self) -> None:  # a dropped holder must not keep the stack locked for the process's life
        with contextlib.suppress(Exception):
            self.release()


class HeldLocks:
    """Several held locks used as one: the holder is written to each, released last-taken first."""

    def __init__(self, *locks: StackLock) -> None:
        self._locks = list(locks)

    @property
    def held(self) -> bool:
        return any(lock.held for lock in self._locks)

    def write_holder(self, info: dict[str, Any]) -> None:
        for lock in self._locks:
            lock.write_holder(info)

    def release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()


def directory_lock_name(directory: Path) -> str:
    """The lock file name of a stack directory (its resolved path, hashed: any characters, fixed length)."""
    import hashlib

    return "dir-" + hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:24] + ".lock"


def read_holder(path: Path) -> dict[str, Any] | None:
    """Who the lock file says holds it (may be empty right after acquire or right before release)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
