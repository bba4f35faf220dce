"""Memory: incidents, deployment patterns and deployments, over one :class:`Store`.

All methods block (embedding, Qdrant I/O); tools call them through ``anyio.to_thread``. Nothing
happens at construction: the store opens on the first call and the dense model loads on the
first call that needs it or in :meth:`Memory.warm_up`.

This module owns the :class:`Memory` facade: its life cycle (store and encoder access, warm-up,
close, dense backfill), ``status``, and the plumbing the per-kind operations share (filters,
search, write, get, delete: :class:`.core.MemoryCore`). The operations themselves are mixins:
:mod:`.incidents`, :mod:`.patterns`, :mod:`.deployments`; the stored format is
:mod:`.payloads` and the argument checks are :mod:`.inputs`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.memory.core import Found
from server.memory.deployments import DeploymentMemory
from server.memory.embedding import BM25_VERSION, DenseEncoder, DenseModel, sparse_encoder
from server.memory.errors import MemoryRecordNotFound
from server.memory.incidents import IncidentMemory
from server.memory.inputs import clean_scope, clean_tags, record_uuid, time_bound
from server.memory.models import Deleted, MemoryStatus
from server.memory.patterns import PatternMemory
from server.memory.payloads import search_mode
from server.memory.store import Hit, PointData, SearchSpec, Sparse, Store, Where

log = logging.getLogger("docker_stack_mcp.memory")

MODEL_WAIT_S = 15.0
BACKFILL_BATCH = 64
REENCODE_BATCH = 256


class Memory(IncidentMemory, PatternMemory, DeploymentMemory):
    """The memory service. Build with :func:`server.memory.open_memory`; tests build it directly."""

    def __init__(self, store_factory: Callable[[], Store], dense: DenseModel, *,
                 clock: Callable[[], float] = time.time, model_wait_s: float = MODEL_WAIT_S) -> None:
        self._store_factory = store_factory
        self._store: Store | None = None
        self._dense = dense
        self._clock = clock
        self._model_wait_s = model_wait_s
        self._lock = threading.Lock()
        self._backfilled = False
        self._reencoded = False

    # -- life cycle -----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = self._store_factory()
            return self._store

    def warm_up(self, *, delay_s: float = 0.0) -> None:
        """Load the embedding model in a daemon thread.

        Only the model: the store is left closed so that a server spawned for one unrelated call
        never takes the shard from another process. Vectors written without the model are filled
        in on the first real use.
        """

        def run() -> None:
            if delay_s:
                time.sleep(delay_s)
            try:
                self._encoder()
            except Exception:
                log.exception("memory warm-up failed")

        threading.Thread(target=run, name="dsm-memory-warmup", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> MemoryStatus:
        encoder = self._encoder(wait_s=0.0)
        store = self.store
        counts = {kind: store.count(Where(equals={"kind": kind})) for kind in ("incident", "pattern", "deployment")}
        return MemoryStatus(backend="server" if store.backend == "server" else "embedded",
                            location=store.location, mode=search_mode(encoder),
                            model_state=self._dense.state, model_detail=self._dense.detail,
                            incidents=counts["incident"], patterns=counts["pattern"],
                            deployments=counts["deployment"])

    # -- internals ------------------------------------------------------------------------

    def _encoder(self, wait_s: float | None = None) -> DenseEncoder | None:
        return self._dense.get(self._model_wait_s if wait_s is None else wait_s)

    def _note(self, encoder: DenseEncoder | None) -> str | None:
        if encoder is not None:
            return None
        return f"BM25-only search: {self._dense.detail or 'the embedding model is not loaded'}"

    def _where(self, kind: str, *, stack: str | None = None, service: str | None = None,
               since: str | float | None = None, until: str | float | None = None,
               tags: Sequence[str] | None = None) -> Where:
        where = Where(equals={"kind": kind})
        if clean_scope(stack):
            where.equals["stack"] = clean_scope(stack) or ""
        if clean_scope(service):
            where.equals["service"] = clean_scope(service) or ""
        if tags:
            where.any_of["tags"] = clean_tags(tags)
        gte = time_bound(since, self._clock())
        lte = time_bound(until, self._clock())
        if gte is not None or lte is not None:
            where = Where(equals=where.equals, any_of=where.any_of, ts_gte=gte, ts_lte=lte)
        return where

    def _search(self, query: str, where: Where, limit: int, signatures: Sequence[str], expansion: str = "") -> Found:
        encoder = self._encoder()
        self._maybe_reencode()
        self._maybe_backfill(encoder)
        # The expansion (failure-kind words, see .summary) goes to BM25 only: the dense vector is
        # the query's own, so its cosine keeps meaning what the relevance floors were set on.
        indices, values = sparse_encoder().query(f"{query}\n{expansion}" if expansion else query)
        dense = encoder.embed([query])[0] if encoder is not None else None
        sparse = Sparse(indices, values)
        prefetch = max(4 * limit, 32)
        # The hits come back with their dense vectors, whose dot product with the query's is the
        # absolute relevance (both unit length). A separate dense-only query for it cost 3-6 ms
        # of a 10k search, the hits' vectors well under 1 ms, and give every hit its own cosine.
        with_dense = dense is not None
        specs = [SearchSpec(where=where, sparse=sparse, dense=dense, limit=limit, prefetch_limit=prefetch,
                            with_dense=with_dense)]
        if signatures:
            by_signature = Where(equals=where.equals, any_of={**where.any_of, "signatures": list(signatures)},
                                 ts_gte=where.ts_gte, ts_lte=where.ts_lte)
            specs.append(SearchSpec(where=by_signature, sparse=sparse, dense=dense, limit=limit,
                                    prefetch_limit=prefetch, with_dense=with_dense))
        answers = self.store.search(specs)
        matched = answers[1] if len(answers) > 1 else []
        seen: set[str] = set()
        ordered: list[Hit] = []
        for hit in [*matched, *answers[0]]:
            if hit.id not in seen:
                seen.add(hit.id)
                ordered.append(hit)
        hits = ordered[:limit]
        relevance = _relevance(dense, hits) if dense is not None else {}
        return Found(hits=hits, by_signature={h.id for h in matched}, mode=search_mode(encoder),
                     note=self._note(encoder), relevance=relevance)

    def _write(self, point_id: str, payload: dict[str, Any], encoder: DenseEncoder | None) -> None:
        payload["bm25"] = BM25_VERSION
        indices, values = sparse_encoder().document(payload["text"])
        dense = encoder.embed([payload["text"]])[0] if encoder is not None else None
        self.store.upsert([PointData(id=point_id, payload=payload, sparse=Sparse(indices, values), dense=dense)])

    def _get(self, point_id: str, kind: str) -> Hit:
        found = self.store.retrieve([record_uuid(point_id, kind)])
        if not found or found[0].payload.get("kind") != kind:
            tool = "search_past_incidents" if kind == "incident" else "search_deployment_patterns"
            raise MemoryRecordNotFound(f"no {kind} has id {point_id}", state="nothing was changed",
                                       next_step=f"find the id with {tool}")
        return found[0]

    def _delete(self, point_id: str, kind: str) -> Deleted:
        pid = record_uuid(point_id, kind)
        with self.store.transaction():
            found = self.store.retrieve([pid])
            if found and found[0].payload.get("kind") != kind:
                raise MemoryRecordNotFound(f"{point_id} is a {found[0].payload.get('kind')}, not a {kind}",
                                           state="nothing was deleted")
            if found:
                self.store.delete([pid])
        return Deleted(id=pid, kind=kind, deleted=bool(found))  # type: ignore[arg-type]

    def _maybe_backfill(self, encoder: DenseEncoder | None) -> None:
        if encoder is not None and not self._backfilled:
            self._backfill_dense()

    def _maybe_reencode(self) -> None:
        if not self._reencoded:
            self._reencode_sparse()

    def _reencode_sparse(self, budget: int = 50_000) -> int:
        """Re-encode the BM25 vector of points written with older BM25 weights (no ``bm25``
        stamp, see embedding.BM25_VERSION): once per process, a few seconds for 10k records."""
        encoder = sparse_encoder()
        where = Where(missing_field="bm25")
        done = 0
        while done < budget:
            with self.store.transaction():
                hits = self.store.scroll(where, REENCODE_BATCH)
                if not hits:
                    break
                self.store.set_sparse({h.id: Sparse(*encoder.document(h.payload.get("text", ""))) for h in hits})
                for h in hits:
                    self.store.set_payload(h.id, {"bm25": BM25_VERSION})
            done += len(hits)
        self._reencoded = True
        if done:
            log.info("memory: re-encoded the BM25 vectors of %d records (BM25 version %d)", done, BM25_VERSION)
        return done

    def _backfill_dense(self, budget: int = 2048) -> int:
        """Give a dense vector to points written while the model was unavailable."""
        encoder = self._encoder()
        if encoder is None:
            return 0
        done = 0
        where = Where(any_of={"kind": ["incident", "pattern"]}, missing_dense=True)
        while done < budget:
            with self.store.transaction():
                hits = self.store.scroll(where, BACKFILL_BATCH)
                if not hits:
                    break
                vectors = encoder.embed([h.payload.get("text", "") for h in hits])
                self.store.set_dense({h.id: v for h, v in zip(hits, vectors, strict=True)})
            done += len(hits)
        self._backfilled = True
        if done:
            log.info("memory: added dense vectors to %d records written in BM25-only mode", done)
        return done


def _relevance(query: Sequence[float], hits: Sequence[Hit]) -> dict[str, float]:
    """Hit id -> cosine of its stored dense vector with the query vector (both unit length). A hit
    without one (written in BM25-only mode by another process since the backfill) gets the lowest
    cosine of the others: unknown, and never what lifts a hit over the floor alone."""
    import numpy as np  # loaded with the model already: there is a query vector

    with_vector = [h for h in hits if h.dense is not None]
    if not with_vector:
        return {h.id: 0.0 for h in hits}
    matrix = np.asarray([h.dense for h in with_vector], dtype=np.float32)
    cosines = matrix @ np.asarray(query, dtype=np.float32)
    out = {h.id: float(c) for h, c in zip(with_vector, cosines, strict=True)}
    floor = min(out.values())
    return {h.id: out.get(h.id, floor) for h in hits}
