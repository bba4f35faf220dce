"""The embedded backend: Qdrant's engine in this process (``qdrant-edge-py``).

The shard lives in ``<dir>/shard`` and is opened under a :class:`~server.memory.lease.ShardLease`
(``<dir>/shard.lock``), so several server processes share it without lock errors and without
losing writes. Every method takes the lease for its duration; :meth:`EdgeStore.transaction`
keeps it across a read-modify-write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server.memory.errors import MemoryUnavailable
from server.memory.lease import OpenContended, ShardLease
from server.memory.store import (
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
from server.statefiles import private_dir, tighten

log = logging.getLogger("docker_stack_mcp.memory")
_UPSERT_BATCH = 256
KEEP_OPEN_S = 30.0
"""How long an idle process keeps the shard open while no other process asks for it (a waiter
is noticed within 50 ms and served at once). Opening a 10k-incident shard costs 130-180 ms, more
than a whole warm search (embedding included): with the former 1.5 s an agent's search after a
pause paid it every time. Writes are still flushed 1.5 s after the last call."""


class EdgeStore:
    backend = "embedded"

    def __init__(self, directory: Path, *, idle_s: float = KEEP_OPEN_S, wait_s: float = 60.0) -> None:
        import qdrant_edge

        self._qe = qdrant_edge
        self.directory = directory
        self.shard_dir = directory / "shard"
        self.location = str(self.shard_dir)
        self.lease: ShardLease[Any] = ShardLease(directory, self._open, self._close_shard,
                                                 flusher=self._flush, idle_s=idle_s, wait_s=wait_s)

    # -- lease callbacks -------------------------------------------------------------------

    def _config(self) -> Any:
        qe = self._qe
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=384, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def _open(self) -> Any:
        qe = self._qe
        try:
            if (self.shard_dir / "edge_config.json").is_file():
                shard = qe.EdgeShard.load(str(self.shard_dir))
            else:
                private_dir(self.shard_dir.parent)
                shard = qe.EdgeShard.create(str(self.shard_dir), self._config())
            tighten(self.shard_dir)  # the library writes its files 0644: memory is state (0600)
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise OpenContended(str(exc)) from exc
            raise MemoryUnavailable(
                f"the memory shard at {self.shard_dir} could not be opened ({exc})",
                state="memory is unusable until the shard opens; deployments are unaffected",
                next_step="check the directory's permissions and free disk space",
            ) from exc
        try:
            self._ensure_indexes(shard)
        except Exception:
            shard.close()
            raise
        return shard

    def _ensure_indexes(self, shard: Any) -> None:
        qe = self._qe
        present = set(shard.info().payload_schema)
        for name in KEYWORD_FIELDS:
            if name not in present:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in FLOAT_FIELDS:
            if name not in present:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Float))

    def _flush(self, shard: Any) -> None:
        shard.flush()
        tighten(self.shard_dir)  # new WAL segments and pages are created 0644

    def _close_shard(self, shard: Any) -> None:
        try:
            shard.flush()
        finally:
            shard.close()
            tighten(self.shard_dir)

    # -- Store ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lease.hold():
            yield

    def upsert(self, points: Sequence[PointData]) -> None:
        qe = self._qe
        with self.lease.hold() as shard:
            self.lease.mark_written()
            for batch in chunks(points, _UPSERT_BATCH):
                shard.update(qe.UpdateOperation.upsert_points([self._point(p) for p in batch]))

    def _point(self, point: PointData) -> Any:
        qe = self._qe
        vector: dict[str, Any] = {}
        if point.sparse:
            vector[SPARSE] = qe.SparseVector(list(point.sparse.indices), list(point.sparse.values))
        if point.dense is not None:
            vector[DENSE] = list(point.dense)
        return qe.Point(point.id, vector, point.payload)

    def retrieve(self, ids: Sequence[str]) -> list[Hit]:
        if not ids:
            return []
        with self.lease.hold() as shard:
            records = shard.retrieve(list(ids), with_payload=True, with_vector=False)
        return [Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records]

    def set_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        with self.lease.hold() as shard:
            self.lease.mark_written()
            shard.update(self._qe.UpdateOperation.set_payload([point_id], payload))

    def set_dense(self, vectors: dict[str, Sequence[float]]) -> None:
        self._update_vectors({pid: {DENSE: list(vec)} for pid, vec in vectors.items()})

    def set_sparse(self, vectors: dict[str, Sparse]) -> None:
        qe = self._qe
        self._update_vectors({pid: {SPARSE: qe.SparseVector(list(vec.indices), list(vec.values))}
                              for pid, vec in vectors.items()})

    def _update_vectors(self, named: dict[str, dict[str, Any]]) -> None:
        """Replace the named vectors of existing points (point id -> {vector name: engine vector})."""
        if not named:
            return
        qe = self._qe
        with self.lease.hold() as shard:
            self.lease.mark_written()
            shard.update(qe.UpdateOperation.update_vectors([qe.PointVectors(pid, v) for pid, v in named.items()]))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self.lease.hold() as shard:
                self.lease.mark_written()
                shard.update(self._qe.UpdateOperation.delete_points(list(ids)))

    def search(self, specs: Sequence[SearchSpec]) -> list[list[Hit]]:
        qe = self._qe
        requests = [self._request(spec) for spec in specs]
        runnable = [r for r in requests if r is not None]
        if not runnable:
            return [[] for _ in specs]
        with self.lease.hold() as shard:
            answers = shard.query_batch(qe.QueryBatchRequest(runnable)) if len(runnable) > 1 else [
                shard.query(runnable[0])]
        results: list[list[Hit]] = []
        it = iter(answers)
        for spec, request in zip(specs, requests, strict=True):
            points = next(it) if request is not None else []
            results.append([Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}),
                                dense=(p.vector or {}).get(DENSE) if spec.with_dense else None) for p in points])
        return results

    def _request(self, spec: SearchSpec) -> Any:
        qe = self._qe
        flt = self._filter(spec.where)
        if not spec.fuse and spec.dense is not None:
            return qe.QueryRequest(limit=spec.limit, query=qe.Query.Nearest(list(spec.dense), using=DENSE),
                                   filter=flt, with_payload=False)
        sparse_query = qe.Query.Nearest(qe.SparseVector(list(spec.sparse.indices), list(spec.sparse.values)),
                                        using=SPARSE) if spec.sparse else None
        if spec.dense is None:
            if sparse_query is None:
                return None
            return qe.QueryRequest(limit=spec.limit, query=sparse_query, filter=flt, with_payload=True)
        prefetches = [qe.Prefetch(limit=spec.prefetch_limit, query=qe.Query.Nearest(list(spec.dense), using=DENSE),
                                  filter=flt)]
        if sparse_query is not None:
            prefetches.append(qe.Prefetch(limit=spec.prefetch_limit, query=sparse_query, filter=flt))
        weights = [1.0, float(SPARSE_WEIGHT)] if sparse_query is not None else None
        return qe.QueryRequest(limit=spec.limit, prefetches=prefetches, query=qe.Fusion.Rrf(k=RRF_K, weights=weights),
                               filter=flt, with_payload=True, with_vector=[DENSE] if spec.with_dense else None)

    def scroll(self, where: Where, limit: int, *, newest_first: bool = True) -> list[Hit]:
        qe = self._qe
        order = qe.OrderBy("ts", direction=qe.Direction.Desc if newest_first else qe.Direction.Asc)
        with self.lease.hold() as shard:
            records, _next = shard.scroll(qe.ScrollRequest(limit=limit, filter=self._filter(where),
                                                           with_payload=True, order_by=order))
        return [Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records]

    def count(self, where: Where) -> int:
        with self.lease.hold() as shard:
            return int(shard.count(self._qe.CountRequest(filter=self._filter(where), exact=True)))

    def close(self) -> None:
        self.lease.close()

    def _filter(self, where: Where) -> Any:
        qe = self._qe
        must: list[Any] = [qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in where.equals.items()]
        must += [qe.FieldCondition(key, match=qe.MatchAny(list(values))) for key, values in where.any_of.items()]
        if where.ts_gte is not None or where.ts_lte is not None:
            must.append(qe.FieldCondition("ts", range=qe.RangeFloat(gte=where.ts_gte, lte=where.ts_lte)))
        if where.missing_field:
            must.append(qe.IsEmptyCondition(where.missing_field))
        must_not = [qe.HasVectorCondition(DENSE)] if where.missing_dense else None
        if not must and not must_not:
            return None
        return qe.Filter(must=must or None, must_not=must_not)
