"""The append-only, fsync'd operation journal: DSM_STATE_DIR/journal/journal.jsonl.

Several server processes share it (agents spawn several servers). Every append takes an
exclusive ``flock`` on ``journal.lock``, opens the file with O_APPEND, writes one JSON line,
fsyncs and closes; readers take the shared lock. Because the file is reopened for every append,
compaction can replace it atomically (write a new file, fsync, rename) under the exclusive lock
without a writer in another process appending to the old inode.

Growth is bounded: when the file passes ``max_bytes`` it is compacted to at most half of that.
Each operation is folded into one ``snapshot`` record (its begin, phases, children and end), so
an operation is always kept whole or dropped whole, never half; running operations are always
kept; finished ones go oldest first, taken from the stack with the most operations, so one busy
stack cannot push another stack's history out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.operations.models import fold_states
from server.statefiles import private_dir

log = logging.getLogger("docker_stack_mcp.journal")

MAX_RECORD_BYTES = 64 * 1024
"""A record larger than this has its ``result`` reduced to scalars (see :func:`encode`)."""


def encode(record: dict[str, Any]) -> bytes:
    """One JSON line. ``op`` and ``t`` come first so a substring pre-filter can skip parsing."""
    ordered = {"op": record["op"], "t": record["t"], **record}
    line = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(line) > MAX_RECORD_BYTES and isinstance(record.get("result"), dict):
        result = record["result"]
        small = {k: v for k, v in result.items() if isinstance(v, str | int | float | bool) or v is None}
        small = {k: (v[:2000] if isinstance(v, str) else v) for k, v in small.items()}
        small["truncated"] = f"the full result was {len(line)} bytes; only its scalar fields were journaled"
        line = json.dumps({**ordered, "result": small}, separators=(",", ":"), ensure_ascii=False, default=str)
    return (line + "\n").encode()


class Journal:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.path = directory / "journal.jsonl"
        self.lock_path = directory / "journal.lock"
        self.max_bytes = max_bytes
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        private_dir(self.directory)
        with self._thread_lock if mode == fcntl.LOCK_EX else contextlib.nullcontext():
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, mode)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (fsync) before returning; compacts when the file is too big."""
        data = encode(record)
        with self._locked(fcntl.LOCK_EX):
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)
            if size > self.max_bytes:
                try:
                    self._compact()
                except OSError as exc:
                    # The record is written and fsync'd: a compaction that cannot run (disk full, a
                    # stray temporary) must not make a durable append look failed to its caller (a
                    # begin would release its lock, an end would report a finished deploy as an
                    # error). The file stays over the cap; the next append tries again.
                    log.warning("journal compaction failed; %d bytes kept for now: %s", size, exc)

    def records(self, needle: str | None = None) -> list[dict[str, Any]]:
        """Every parseable record in order; with ``needle``, only lines containing it.

        The file is mapped and searched for ``needle`` at memchr speed, so only the matching
        lines are parsed (operation_status on a full journal costs milliseconds, not a parse of
        megabytes). A torn last line (a writer killed mid-write) is skipped, not fatal.
        """
        out: list[dict[str, Any]] = []
        with self._locked(fcntl.LOCK_SH):
            try:
                handle = self.path.open("rb")
            except FileNotFoundError:
                return out
            with handle:
                size = os.fstat(handle.fileno()).st_size
                if size == 0:
                    return out
                with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as data:
                    for line in _lines(data, needle.encode() if needle else None):
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(rec, dict):
                            out.append(rec)
        return out

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def compact(self) -> int:
        """Compact now (normally automatic); returns how many finished operations were dropped."""
        with self._locked(fcntl.LOCK_EX):
            return self._compact()

    def _compact(self) -> int:
        states = fold_states(self._read_all_unlocked())
        lines = {op: encode(state.snapshot()) for op, state in states.items()}
        finished_by_stack: dict[str, list[str]] = {}
        for op, state in states.items():  # journal order is begin order: oldest first
            if state.end is not None:
                finished_by_stack.setdefault(str(state.begin.get("stack", "")), []).append(op)
        target = self.max_bytes // 2
        total = sum(len(line) for line in lines.values())
        dropped = 0
        while total > target:
            stack = max(finished_by_stack, key=lambda s: len(finished_by_stack[s]), default=None)
            if stack is None or not finished_by_stack[stack]:
                break  # only running operations left: keep them whatever the size
            op = finished_by_stack[stack].pop(0)
            total -= len(lines.pop(op))
            dropped += 1
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                for line in lines.values():
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a half-written copy must not take the disk space the journal needs
            raise
        _fsync_dir(self.directory)
        log.info("journal compacted: %d operations kept, %d oldest finished dropped, %d bytes",
                 len(lines), dropped, total)
        return dropped

    def _read_all_unlocked(self) -> Iterator[dict[str, Any]]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec


def _lines(data: mmap.mmap, needle: bytes | None) -> Iterator[bytes]:
    """The lines of ``data`` (each without its newline) that contain ``needle`` (all when None)."""
    end = len(data)
    if needle is None:
        start = 0
        while start < end:
            stop = data.find(b"\n", start)
            stop = end if stop < 0 else stop
            yield data[start:stop]
            start = stop + 1
        return
    pos = data.find(needle)
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        stop = data.find(b"\n", pos)
        stop = end if stop < 0 else stop
        yield data[start:stop]
        pos = data.find(needle, stop + 1) if stop < end else -1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
