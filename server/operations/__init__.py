"""Operations on stacks: the crash-safe journal, the per-stack lock, recovery, maintenance windows.

One module reused by the deploy pipeline, backups, stack control and the health watcher. State
layout under DSM_STATE_DIR: ``journal/journal.jsonl`` (+ ``journal.lock``), ``locks/<stack>.lock``,
``maintenance/<stack>.json``. See :mod:`server.operations.operations` for the API.

Names resolve lazily: the tool modules import the result models at start-up, and that must not
load the journal machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.errors import StackBusy
    from server.operations.models import OperationKind, OperationRecord, OperationStatus
    from server.operations.operations import Operation, Operations

__all__ = ["Operation", "OperationKind", "OperationRecord", "OperationStatus", "Operations", "StackBusy"]


def __getattr__(name: str) -> Any:
    if name in ("Operation", "Operations"):
        from server.operations import operations

        return getattr(operations, name)
    if name in ("OperationKind", "OperationRecord", "OperationStatus"):
        from server.operations import models

        return getattr(models, name)
    if name == "StackBusy":
        from server.errors import StackBusy

        return StackBusy
    raise AttributeError(name)
