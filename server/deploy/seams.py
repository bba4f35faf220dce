"""The deploy pipeline's two seams: the journal/locks (server.operations) and backups (server.backups).

Both are real modules now; this file is the one place the pipeline gets them from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.errors import StackBusy

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.operations import Operations
    from server.runtime import Runtime


def operations(runtime: Runtime) -> Operations:
    """``Operations`` (begin/run_detached/history/recover) for this process."""
    return runtime.operations()


def backup_store(runtime: Runtime) -> BackupStore:
    """``BackupStore(settings, engine, compose)`` (``Runtime.backups``)."""
    return runtime.backups()


def stack_busy() -> type[StackBusy]:
    return StackBusy
