"""The deploy pipeline's two seams: the journal/locks (server.operations) and backups (server.backups).

The journal is merged. Backups are built alongside this one (SPEC-deploy.md gives the signature):
until that branch is merged, ``server.deploy._interim.BackupStore`` stands in with the same
signature; the real module wins as soon as it is importable, so switching is this file alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.errors import StackBusy

if TYPE_CHECKING:
    from server.operations import Operations
    from server.runtime import Runtime


def operations(runtime: Runtime) -> Operations:
    """``Operations`` (begin/run_detached/history/recover) for this process."""
    return runtime.operations()


def backup_store(runtime: Runtime) -> Any:
    """``BackupStore(settings, engine, compose)``."""
    try:
        from server.backups import BackupStore  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        from server.deploy._interim import BackupStore
    return BackupStore(runtime.settings, runtime.engine(), runtime.compose())


def stack_busy() -> type[StackBusy]:
    return StackBusy
