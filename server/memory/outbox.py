"""Deployment records written to the memory after the answer, through an outbox on disk.

A deploy's answer must not wait for the memory (opening the embedded shard and writing costs
0.1-0.2 s, more when another process holds it), yet its record must not be lost. So the
pipeline *posts* the record here: one small JSON file per record, written 0600 and fsync'd
(milliseconds) before the deploy answers. A worker thread of this process then writes it to the
memory and deletes the file. Nothing is lost when the write fails or the process dies: the file
stays, and the next drain (the next post, or a server's start-up) writes it then.

Writing twice is harmless: records carry the journal's ``operation_id``, from which the memory
derives the record's id, so a replayed entry updates the same record. Several server processes
may drain one outbox: each entry is claimed with ``flock`` while it is written. ``finished_at``
is fixed when posting, so a late write still says when the deployment ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.statefiles import private_dir

if TYPE_CHECKING:
    from server.memory.service import Memory

log = logging.getLogger("docker_stack_mcp.memory")

_FIELDS = frozenset({"stack", "services", "outcome", "image_digests", "duration_s", "strategy", "log_lines",
                     "notes", "incident_id", "operation_id", "finished_at"})


class MemoryOutbox:
    """``post_deployment`` (durable, fast) now; the memory write in a worker thread soon after.

    ``flush`` waits until everything posted so far was attempted; ``close`` flushes, then stops
    the worker. Entries whose write failed stay on disk for the next drain.
    """

    def __init__(self, directory: Path, memory: Callable[[], Memory], *, delay_s: float = 1.0) -> None:
        """``delay_s``: how long the worker lets a new post wait before writing it. The write is
        CPU work in this process (on a small host it competes with the answer being built and
        sent), so the answer goes first; :meth:`flush` and :meth:`close` do not wait."""
        self.directory = Path(directory)
        self._memory = memory
        self.delay_s = delay_s
        self._not_before = 0.0  # monotonic time before which a delayed round does not start
        self._urgent = 0  # the last round asked for without delay
        self._cv = threading.Condition()
        self._wanted = 0  # drain rounds asked for
        self._finished = 0  # drain rounds done
        self._closing = False
        self._worker: threading.Thread | None = None

    # -- posting ------------------------------------------------------------------------------
    def post_deployment(
        self,
        *,
        stack: str,
        services: Sequence[str],
        outcome: str,
        operation_id: str,
        image_digests: dict[str, str] | None = None,
        duration_s: float | None = None,
        strategy: str | None = None,
        log_lines: Sequence[str] = (),
        notes: str | None = None,
        incident_id: str | None = None,
    ) -> Path:
        """Write the record to the outbox (fsync'd) and wake the worker; returns the entry's path.

        ``operation_id`` is required: it makes a replayed entry update instead of duplicate.
        Raises OSError when the entry cannot be written (the caller decides what that means)."""
        if not operation_id:
            raise ValueError("an outbox record needs the operation_id (replays must not duplicate)")
        fields = {"stack": stack, "services": list(services), "outcome": outcome, "operation_id": operation_id,
                  "image_digests": dict(image_digests or {}), "duration_s": duration_s, "strategy": strategy,
                  "log_lines": list(log_lines), "notes": notes, "incident_id": incident_id,
                  "finished_at": time.time()}
        path = self._write({"kind": "deployment", "fields": fields})
        self.kick(self.delay_s)
        return path

    def _write(self, entry: dict[str, Any]) -> Path:
        private_dir(self.directory)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        tmp = self.directory / f".{name}.tmp"
        path = self.directory / f"{name}.json"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(entry).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)  # the rename itself must survive a crash
        return path

    def pending(self) -> list[Path]:
        """Entries not written to the memory yet, oldest first."""
        try:
            return sorted(self.directory.glob("*.json"))
        except OSError:
            return []

    # -- the worker -----------------------------------------------------------------------------
    def kick(self, delay_s: float = 0.0) -> int:
        """Ask for a drain round, in ``delay_s`` at the earliest (0: now, and any delayed round
        too); returns its number (for :meth:`flush`)."""
        with self._cv:
            self._wanted += 1
            if delay_s > 0:
                self._not_before = time.monotonic() + delay_s
            else:
                self._urgent = self._wanted
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="memory-outbox", daemon=True)
                self._worker.start()
            self._cv.notify_all()
            return self._wanted

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Drain now and wait until done (or ``timeout_s``); True when the round finished.
        Blocking: from async code run it in a thread."""
        round_ = self.kick()
        with self._cv:
            return self._cv.wait_for(lambda: self._finished >= round_, timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush what was posted, then stop the worker (entries that still fail stay on disk)."""
        if self._worker is None:
            return
        self.flush(timeout_s)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._worker.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    self._cv.wait_for(lambda: self._finished < self._wanted or self._closing)
                    if self._finished >= self._wanted:
                        return  # closing, nothing asked for
                    wait = self._not_before - time.monotonic()
                    if wait <= 0 or self._closing or self._urgent > self._finished:
                        break
                    self._cv.wait(wait)  # a flush (kick without delay) ends the wait early
                round_ = self._wanted
            try:
                self.drain()
            except Exception:  # the worker must survive whatever one round meets
                log.exception("memory outbox drain failed; entries stay for the next one")
            with self._cv:
                self._finished = max(self._finished, round_)
                self._cv.notify_all()

    def drain(self) -> int:
        """Write every pending entry to the memory; returns how many were written. An entry
        another process is writing is skipped; on a failure the rest wait for the next drain.
        Blocking."""
        from server.memory.errors import MemoryInputError

        written = 0
        for path in self.pending():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process wrote it meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is writing it
                try:
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        continue
                except FileNotFoundError:
                    continue  # written and removed by another process before we locked it
                try:
                    entry = json.loads(_read_all(fd))
                    self._apply(entry)
                except (ValueError, TypeError, MemoryInputError) as exc:
                    # It can never be written: keep it aside for a human, out of the way of the rest.
                    aside = path.with_suffix(".rejected")
                    log.error("memory outbox entry %s rejected (%s); kept as %s", path.name, exc, aside.name)
                    with contextlib.suppress(OSError):
                        os.replace(path, aside)
                    continue
                except Exception:
                    log.warning("memory outbox: %s not written yet; retried at the next drain", path.name,
                                exc_info=True)
                    break
                path.unlink(missing_ok=True)
                written += 1
            finally:
                os.close(fd)
        return written

    def _apply(self, entry: Any) -> None:
        fields = entry.get("fields") if isinstance(entry, dict) else None
        if not isinstance(fields, dict) or entry.get("kind") != "deployment":
            raise ValueError("not an outbox deployment entry")
        self._memory().record_deployment(**{k: v for k, v in fields.items() if k in _FIELDS})


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
