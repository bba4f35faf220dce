"""The one storage interface of memory, with two backends behind it.

* :class:`server.memory.edge.EdgeStore`: Qdrant's engine embedded in this process
  (``qdrant-edge-py``), a shard under ``$DSM_STATE_DIR/memory`` shared by every server process
  through a lease (see :mod:`server.memory.lease`). The default; no server to run.
* :class:`server.memory.remote.ClientStore`: a Qdrant server or cluster through
  ``qdrant-client`` (``QDRANT_URL`` / ``QDRANT_API_KEY``); ``QdrantClient(path=...)`` stands in
  for a server in tests.

Both hold one collection of points with a named dense vector ``dense`` (384-d, cosine, may be
absent for points written in BM25-only mode), a sparse vector ``bm25`` with the IDF modifier, and
a payload whose ``kind`` says incident, pattern or deployment. Hybrid search is Qdrant's own:
two prefetches (dense, sparse) fused with RRF, the filter applied inside each prefetch. The
contract tests (tests/test_memory_store.py) run the same assertions against both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

DENSE = "dense"
SPARSE = "bm25"
COLLECTION = "docker_stack_mcp_memory"
RRF_K = 2
"""Qdrant's default RRF constant; set explicitly so both backends fuse alike."""
SPARSE_WEIGHT = 3
"""Weight of the BM25 list against the dense one (1) in the fusion (Qdrant's weighted RRF, both
backends). Among 10,000 incidents the dense vector of a whole incident (all-MiniLM-L6-v2) ranks
the right one around 50th for an operator's paraphrase where BM25 with the failure-kind expansion
ranks it in the top 5; with equal weights the dense list's near misses crowd it out.
`bench/memory.py --set hard --sizes 10000` (126 queries, recall@3 / MRR), equal weights -> 3:
all 0.897 / 0.834 -> 0.913 / 0.867, paraphrase 0.738 / 0.696 -> 0.786 / 0.737, why 0.952 / 0.821
-> 0.952 / 0.877, pasted logs 1.000 / 0.983 -> 1.000 / 0.988. Weights 2 and 4 measured alike in
a replay of the same candidates. Without distractors the dense side weighs less than before:
harder set alone all 0.976 / 0.949 -> 0.976 / 0.938, labelled paraphrases 0.979 / 0.959 ->
0.979 / 0.946 (tests/test_memory_retrieval.py floors hold). Those figures predate BM25 without
length normalisation (embedding.BM25_B); re-checked with it on the choosing half of the harder
set, weights 2, 4 and 6 changed recall@3 by nothing or for the worse, so 3 stays."""
KEYWORD_FIELDS = ("kind", "stack", "service", "tags", "signatures", "outcome", "operation", "severity")
FLOAT_FIELDS = ("ts",)


@dataclass(frozen=True)
class Sparse:
    indices: Sequence[int]
    values: Sequence[float]

    def __bool__(self) -> bool:
        return bool(self.indices)


@dataclass(frozen=True)
class PointData:
    """One point to write. ``dense`` is None when written without the model (BM25-only)."""

    id: str
    payload: dict[str, Any]
    sparse: Sparse
    dense: Sequence[float] | None = None


@dataclass(frozen=True)
class Where:
    """A backend-neutral filter; every given condition must hold.

    ``equals``: field == value (a list field matches when it contains the value);
    ``any_of``: field holds at least one of the values; ``ts_*``: range on the ``ts`` field.
    """

    equals: dict[str, str | int | bool] = field(default_factory=dict)
    any_of: dict[str, Sequence[str]] = field(default_factory=dict)
    ts_gte: float | None = None
    ts_lte: float | None = None
    missing_dense: bool = False
    missing_field: str | None = None
    """Only points whose payload lacks this key (or holds null/empty there)."""


@dataclass(frozen=True)
class SearchSpec:
    """One hybrid (or sparse-only, when ``dense`` is None) query."""

    where: Where
    sparse: Sparse
    dense: Sequence[float] | None
    limit: int
    prefetch_limit: int = 32
    fuse: bool = True
    """False: the dense vector alone, scored by cosine similarity (an absolute relevance, where a
    fused rank score only orders one result list); ``sparse`` is ignored and no payload returned."""
    with_dense: bool = False
    """Return each hit's stored dense vector (unit length: the collection is cosine), from which
    the caller computes the absolute relevance of just the hits it shows."""


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: Sequence[float] | None = None
    """The stored dense vector, when the search asked for it (``SearchSpec.with_dense``) and the
    point has one."""


class Store(Protocol):
    """What :class:`server.memory.service.Memory` needs from a backend. All calls are blocking."""

    backend: str
    """'embedded' or 'server'."""
    location: str
    """The shard directory or the server URL (no credentials)."""

    def transaction(self) -> AbstractContextManager[None]:
        """Hold the store across several calls (read-modify-write). Re-entrant."""
        ...

    def upsert(self, points: Sequence[PointData]) -> None: ...

    def retrieve(self, ids: Sequence[str]) -> list[Hit]: ...

    def set_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        """Merge ``payload`` into the point's payload (vectors untouched)."""
        ...

    def set_dense(self, vectors: dict[str, Sequence[float]]) -> None:
        """Add or replace the dense vector of existing points (sparse vectors untouched)."""
        ...

    def set_sparse(self, vectors: dict[str, Sparse]) -> None:
        """Replace the BM25 vector of existing points (dense vectors untouched)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def search(self, specs: Sequence[SearchSpec]) -> list[list[Hit]]:
        """Run the queries as one batch; one ranked list per spec."""
        ...

    def scroll(self, where: Where, limit: int, *, newest_first: bool = True) -> list[Hit]:
        """Points matching ``where`` ordered by ``ts`` (score 0)."""
        ...

    def count(self, where: Where) -> int: ...

    def close(self) -> None: ...


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
