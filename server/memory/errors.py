"""Memory errors: subclasses of the product's one exception tree (:mod:`server.errors`)."""

from __future__ import annotations

from server.errors import DsmError


class MemoryStoreError(DsmError):
    """Base of the memory's errors."""


class MemoryInputError(MemoryStoreError):
    """An argument is unusable (bad severity, empty title, unparseable time)."""


class MemoryRecordNotFound(MemoryStoreError):
    """No incident or pattern has the given id."""


class MemoryBusy(MemoryStoreError):
    """The embedded store stayed locked by another process past the wait limit."""


class MemoryUnavailable(MemoryStoreError):
    """The store cannot be opened or reached (disk, permissions, Qdrant server down)."""
