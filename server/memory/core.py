"""The contract between :class:`~server.memory.service.Memory` and its per-kind operations.

The operations on incidents, patterns and deployments are mixins of ``Memory``
(:mod:`.incidents`, :mod:`.patterns`, :mod:`.deployments`); :class:`MemoryCore` is what they may
use of it: the store, the clock, the dense encoder and the shared read/write/search plumbing.
``Memory`` implements it; nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from server.memory.models import Deleted, SearchMode
from server.memory.store import Hit, Store, Where

if TYPE_CHECKING:
    from server.memory.embedding import DenseEncoder


class Found(NamedTuple):
    """One search's answer: the hits, best first, and how they were found."""

    hits: list[Hit]
    by_signature: set[str]
    """Ids of the hits that share an error signature with the query (they rank first)."""
    mode: SearchMode
    note: str | None
    """Why the search was BM25-only, when it was."""
    relevance: dict[str, float] = {}
    """Hit id -> cosine similarity of its dense vector with the query's (absolute: the same
    meaning at 3 records and at 10,000), each hit's own from its stored vector. Empty in BM25-only
    mode."""


class MemoryCore(Protocol):
    """What the mixins use of Memory; :class:`~server.memory.service.Memory` implements it."""

    _clock: Callable[[], float]

    @property
    def store(self) -> Store: ...

    def _encoder(self, wait_s: float | None = None) -> DenseEncoder | None: ...

    def _where(self, kind: str, *, stack: str | None = None, service: str | None = None,
               since: str | float | None = None, until: str | float | None = None,
               tags: Sequence[str] | None = None) -> Where: ...

    def _search(self, query: str, where: Where, limit: int, signatures: Sequence[str],
                expansion: str = "") -> Found: ...

    def _write(self, point_id: str, payload: dict[str, Any], encoder: DenseEncoder | None) -> None: ...

    def _get(self, point_id: str, kind: str) -> Hit: ...

    def _delete(self, point_id: str, kind: str) -> Deleted: ...
