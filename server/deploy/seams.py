"""The deploy pipeline's two seams: the journal/locks (server.operations) and backups (server.backups).

Both packages are built alongside this one (SPEC-deploy.md gives their signatures). Until they
are on this branch, ``server.deploy._interim`` stands in with the same signatures; the real
module wins as soon as it is importable, so switching is this file alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.runtime import Runtime


def operations(runtime: Runtime) -> Any:
    """``Operations`` (begin/run_detached/history/recover) for this process."""
    getter = getattr(runtime, "operations", None)
    if getter is not None:
        return getter()
    from server.deploy._interim import shared_operations

    return shared_operations(runtime.settings)


def backup_store(runtime: Runtime) -> Any:
    """``BackupStore(settings, engine, compose)``."""
    try:
        from server.backups import BackupStore  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        from server.deploy._interim import BackupStore
    return BackupStore(runtime.settings, runtime.engine(), runtime.compose())


def stack_busy() -> type[Exception]:
    try:
        from server.operations import StackBusy  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from server.deploy._interim import StackBusy
    return StackBusy  # type: ignore[no-any-return,unused-ignore]
