"""The server backend: a Qdrant server or cluster through ``qdrant-client``.

Selected by ``QDRANT_URL`` (with ``QDRANT_API_KEY``), the names the Qdrant ecosystem uses. The
collection is created on first use with the same vectors as the embedded shard. The server
handles concurrency, so :meth:`ClientStore.transaction` only serialises this process's calls;
two processes updating the same record at the same instant may lose one occurrence count,
never a record. ``QdrantClient(path=...)`` (local mode) stands in for a server in tests.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from server.memory.errors import MemoryUnavailable
from server.memory.store import (
    COLLECTION,
    DENSE,
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    RRF_K,
    SPARSE,
    SPARSE_WEIGHT,
    Hit,
    PointData,
    SearchSpec,
    Sparse,
    Where,
    chunks,
)

_UPSERT_BATCH = 128
TIMEOUT_S = 10


class ClientStore:
    backend = "server"

    def __init__(self, client_factory: Callable[[], Any], *, location: str, collection: str = COLLECTION) -> None:
        from qdrant_client import models

        self._m = models
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.RLock()
        self.collection = collection
        self.location = location

    @classmethod
    def connect(cls, url: str, api_key: str | None, *, collection: str = COLLECTION) -> ClientStore:
        def factory() -> Any:
            from qdrant_client import QdrantClient

            # No version probe at connect (one round trip less, no stderr warning when it fails);
            # the calls used here need a Qdrant server >= 1.10, and errors name the server.
            return QdrantClient(url=url, api_key=api_key, timeout=TIMEOUT_S, check_compatibility=False)

        return cls(factory, location=url.split("@")[-1], collection=collection)

    @classmethod
    def local(cls, path: str, *, collection: str = COLLECTION) -> ClientStore:
        """qdrant-client's local mode on ``path``: the test stand-in for a server."""

        def factory() -> Any:
            from qdrant_client import QdrantClient

            return QdrantClient(path=path)

        return cls(factory, location=f"local:{path}", collection=collection)

    def _c(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    client = self._factory()
                    self._ensure_collection(client)
                except MemoryUnavailable:
                    raise
                except Exception as exc:
                    raise MemoryUnavailable(
                        f"the Qdrant server at {self.location} could not be used ({type(exc).__name__}: {exc})",
                        state="memory is unusable until Qdrant answers; deployments are unaffected",
                        next_step="check QDRANT_URL / QDRANT_API_KEY and that the server is up, then retry",
                    ) from exc
                self._client = client
            return self._client

    def _ensure_collection(self, client: Any) -> None:
        m = self._m
        if not client.collection_exists(self.collection):
            client.create_collection(
                self.collection,
                vectors_config={DENSE: m.VectorParams(size=384, distance=m.Distance.COSINE)},
                sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            )
        # Indexes on every filtered field: faster, and required by servers in strict mode.
        present = set(client.get_collection(self.collection).payload_schema or {})
        wanted = [(n, m.PayloadSchemaType.KEYWORD) for n in KEYWORD_FIELDS] + [
            (n, m.PayloadSchemaType.FLOAT) for n in FLOAT_FIELDS]
        with warnings.catch_warnings():  # local mode warns that indexes have no effect there
            warnings.simplefilter("ignore")
            for name, schema in wanted:
                if name not in present:
                    client.create_payload_index(self.collection, name, schema)

    @contextmanager
    def _call(self) -> Iterator[Any]:
        with self._lock:
            client = self._c()
            try:
                yield client
            except MemoryUnavailable:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith(("qdrant_client", "httpx", "httpcore", "grpc")):
                    raise MemoryUnavailable(
                        f"the Qdrant server at {self.location} failed the request ({type(exc).__name__}: {exc})",
                        state="the memory operation did not complete",
                        next_step="check that the Qdrant server is up, then retry",
                    ) from exc
                raise

    # -- Store ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            yield

    def upsert(self, points: Sequence[PointData]) -> None:
        with self._call() as client:
            for batch in chunks(points, _UPSERT_BATCH):
                client.upsert(self.collection, [self._point(p) for p in batch], wait=True)

    def _point(self, point: PointData) -> Any:
        m = self._m
        vector: dict[str, Any] = {}
        if point.sparse:
            vector[SPARSE] = m.SparseVector(indices=list(point.sparse.indices), values=list(point.sparse.values))
        if point.dense is not None:
            vector[DENSE] = list(point.dense)
        return m.PointStruct(id=point.id, vector=vector, payload=point.payload)

    def retrieve(self, ids: Sequence[str]) -> list[Hit]:
        if not ids:
            return []
        with self._call() as client:
            records = client.retrieve(self.collection, list(ids), with_payload=True, with_vectors=False)
        return [Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records]

    def set_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        with self._call() as client:
            client.set_payload(self.collection, payload=payload, points=[point_id], wait=True)

    def set_dense(self, vectors: dict[str, Sequence[float]]) -> None:
        self._update_vectors({pid: {DENSE: list(vec)} for pid, vec in vectors.items()})

    def set_sparse(self, vectors: dict[str, Sparse]) -> None:
        m = self._m
        self._update_vectors({pid: {SPARSE: m.SparseVector(indices=list(v.indices), values=list(v.values))}
                              for pid, v in vectors.items()})

    def _update_vectors(self, named: dict[str, dict[str, Any]]) -> None:
        """Replace the named vectors of existing points (point id -> {vector name: client vector})."""
        if not named:
            return
        with self._call() as client:
            client.update_vectors(self.collection, [self._m.PointVectors(id=pid, vector=v) for pid, v in named.items()],
                                  wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._call() as client:
                client.delete(self.collection, points_selector=self._m.PointIdsList(points=list(ids)), wait=True)

    def search(self, specs: Sequence[SearchSpec]) -> list[list[Hit]]:
        requests = [self._request(spec) for spec in specs]
        runnable = [r for r in requests if r is not None]
        if not runnable:
            return [[] for _ in specs]
        with self._call() as client:
            answers = client.query_batch_points(self.collection, runnable)
        it = iter(answers)
        out: list[list[Hit]] = []
        for spec, request in zip(specs, requests, strict=True):
            points = next(it).points if request is not None else []
            out.append([Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}),
                            dense=_dense_of(p.vector) if spec.with_dense else None) for p in points])
        return out

    def _request(self, spec: SearchSpec) -> Any:
        m = self._m
        flt = self._filter(spec.where)
        if not spec.fuse and spec.dense is not None:
            return m.QueryRequest(query=list(spec.dense), using=DENSE, filter=flt, limit=spec.limit,
                                  with_payload=False)
        sparse = m.SparseVector(indices=list(spec.sparse.indices), values=list(spec.sparse.values)) if spec.sparse \
            else None
        if spec.dense is None:
            if sparse is None:
                return None
            return m.QueryRequest(query=sparse, using=SPARSE, filter=flt, limit=spec.limit, with_payload=True)
        prefetch = [m.Prefetch(query=list(spec.dense), using=DENSE, filter=flt, limit=spec.prefetch_limit)]
        if sparse is None:
            # RRF_K is Qdrant's default, so the plain fusion query works on servers older than the
            # parameterised RrfQuery (1.16) and fuses identically.
            fusion: Any = m.FusionQuery(fusion=m.Fusion.RRF) if RRF_K == 2 else m.RrfQuery(rrf=m.Rrf(k=RRF_K))
        else:
            # BM25 weighted as in the embedded engine (store.SPARSE_WEIGHT): a server without RRF
            # weights refuses this query, and the search says so (MemoryUnavailable).
            prefetch.append(m.Prefetch(query=sparse, using=SPARSE, filter=flt, limit=spec.prefetch_limit))
            fusion = m.RrfQuery(rrf=m.Rrf(k=RRF_K, weights=[1.0, float(SPARSE_WEIGHT)]))
        return m.QueryRequest(prefetch=prefetch, query=fusion, filter=flt, limit=spec.limit, with_payload=True,
                              with_vector=[DENSE] if spec.with_dense else None)

    def scroll(self, where: Where, limit: int, *, newest_first: bool = True) -> list[Hit]:
        m = self._m
        order = m.OrderBy(key="ts", direction=m.Direction.DESC if newest_first else m.Direction.ASC)
        with self._call() as client:
            records, _next = client.scroll(self.collection, scroll_filter=self._filter(where), limit=limit,
                                           order_by=order, with_payload=True, with_vectors=False)
        return [Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records]

    def count(self, where: Where) -> int:
        with self._call() as client:
            return int(client.count(self.collection, count_filter=self._filter(where), exact=True).count)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _filter(self, where: Where) -> Any:
        m = self._m
        must: list[Any] = [m.FieldCondition(key=k, match=m.MatchValue(value=v)) for k, v in where.equals.items()]
        must += [m.FieldCondition(key=k, match=m.MatchAny(any=list(v))) for k, v in where.any_of.items()]
        if where.ts_gte is not None or where.ts_lte is not None:
            must.append(m.FieldCondition(key="ts", range=m.Range(gte=where.ts_gte, lte=where.ts_lte)))
        if where.missing_field:
            must.append(m.IsEmptyCondition(is_empty=m.PayloadField(key=where.missing_field)))
        must_not = [m.HasVectorCondition(has_vector=DENSE)] if where.missing_dense else None
        if not must and not must_not:
            return None
        return m.Filter(must=must or None, must_not=must_not)


def _dense_of(vector: Any) -> list[float] | None:
    """The named dense vector of a returned point (qdrant-client gives a dict of named vectors)."""
    value = vector.get(DENSE) if isinstance(vector, dict) else None
    return list(value) if value is not None else None
