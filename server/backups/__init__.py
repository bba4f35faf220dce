"""Backups of a stack: config, pinned images, volume archives and database dumps.

See :mod:`server.backups.store` for the layout and :class:`BackupStore` for the operations.
The store is imported lazily: the tool module imports only the result models at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.backups.models import (
    BackupManifest,
    BackupVerification,
    DatabaseDump,
    DataCheck,
    PinnedImage,
    RestoreStep,
    VerifyCheck,
    VolumeArchive,
)
from server.errors import BackupFailed, BackupNotFound

if TYPE_CHECKING:
    from server.backups.store import BackupStore

__all__ = [
    "BackupFailed",
    "BackupManifest",
    "BackupNotFound",
    "BackupStore",
    "BackupVerification",
    "DataCheck",
    "DatabaseDump",
    "PinnedImage",
    "RestoreStep",
    "VerifyCheck",
    "VolumeArchive",
]


def __getattr__(name: str) -> Any:
    if name == "BackupStore":
        from server.backups.store import BackupStore

        return BackupStore
    raise AttributeError(name)
