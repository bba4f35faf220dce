"""A state directory that cannot be written, said as such.

A full or read-only disk under DSM_STATE_DIR surfaced as a bare ``OSError`` (an "internal
error") or, where it was caught broadly, as something else entirely. These helpers turn the
errors that mean "the disk refuses writes" into a DsmError naming the path and the cause.
"""

from __future__ import annotations

import errno

from server.errors import DsmError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors of a disk that refuses writes (full, over quota, read-only, permissions)."""


class StateUnwritable(DsmError):
    """The server's state directory (journal, locks, backups) cannot be written."""


def is_disk_refusal(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def unwritable(exc: OSError, *, state: str, next_step: str = "") -> StateUnwritable:
    """``exc`` as a model-facing error: what was refused, where, and why."""
    where = f" ({exc.filename})" if exc.filename else ""
    return StateUnwritable(
        f"the state directory cannot be written: {exc.strerror or exc}{where}",
        state=state,
        next_step=next_step or "free space on (or restore write access to) the disk holding DSM_STATE_DIR, "
        "then call again",
    )
