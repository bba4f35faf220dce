"""The fusion weights and the encoder's threading, as configured (issue 17, retrieval at 10k).

Their effect is measured by bench/memory.py and floored by tests/test_memory_retrieval.py; these
check the configuration itself reaches both backends and the ONNX session."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.memory.store import SPARSE_WEIGHT, SearchSpec, Sparse, Where
from tests.memory_data.helpers import dense_model


def spec() -> SearchSpec:
    return SearchSpec(where=Where(equals={"kind": "incident"}), sparse=Sparse([1, 2], [0.5, 0.5]),
                      dense=[0.1] * 384, limit=5)


def test_both_backends_weigh_bm25_alike(tmp_path: Path) -> None:
    from server.memory.edge import EdgeStore
    from server.memory.remote import ClientStore

    edge = EdgeStore(tmp_path / "edge")
    client = ClientStore.local(str(tmp_path / "client"))
    try:
        fused = edge._request(spec()).query
        assert list(fused.weights) == [1.0, float(SPARSE_WEIGHT)] and SPARSE_WEIGHT > 1
        remote = client._request(spec())
        assert remote.query.rrf.weights == [1.0, float(SPARSE_WEIGHT)] and len(remote.prefetch) == 2
        dense_only = SearchSpec(where=spec().where, sparse=Sparse([], []), dense=[0.1] * 384, limit=5)
        assert edge._request(dense_only).query.weights is None  # one list: nothing to weigh
    finally:
        edge.close()
        client.close()


def test_the_encoder_does_not_busy_wait() -> None:
    encoder = dense_model().get()
    if encoder is None:
        pytest.skip("no embedding model")
    options = encoder._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
