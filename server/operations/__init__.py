"""Operations on stacks: the crash-safe journal, the per-stack lock, recovery, maintenance windows.

One module reused by the deploy pipeline, backups, stack control and the health watcher. State
layout under DSM_STATE_DIR: ``journal/journal.jsonl`` (+ ``journal.lock``), ``locks/<stack>.lock``,
``maintenance/<stack>.json``. See :mod:`server.operations.operations` for the API.
"""

from server.errors import StackBusy
from server.operations.models import OperationKind, OperationRecord, OperationStatus
from server.operations.operations import Operation, Operations

__all__ = ["Operation", "OperationKind", "OperationRecord", "OperationStatus", "Operations", "StackBusy"]
