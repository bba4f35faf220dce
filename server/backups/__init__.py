"""Backups of a stack: config, pinned images, volume archives and database dumps.

See :mod:`server.backups.store` for the layout and :class:`BackupStore` for the operations.
"""

from server.backups.models import (
    BackupManifest,
    BackupVerification,
    DatabaseDump,
    PinnedImage,
    VerifyCheck,
    VolumeArchive,
)
from server.backups.store import BackupStore
from server.errors import BackupFailed, BackupNotFound

__all__ = [
    "BackupFailed",
    "BackupManifest",
    "BackupNotFound",
    "BackupStore",
    "BackupVerification",
    "DatabaseDump",
    "PinnedImage",
    "VerifyCheck",
    "VolumeArchive",
]
