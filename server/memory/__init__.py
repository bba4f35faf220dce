"""Incident and deployment memory on Qdrant: record, search, learn.

Public interface (importing this package is cheap: Qdrant, ONNX Runtime, numpy and the
tokenizer load on first use):

* :func:`open_memory` ``(settings) -> Memory``: the embedded engine under
  ``$DSM_STATE_DIR/memory`` by default, a Qdrant server when ``QDRANT_URL`` is set.
* :class:`Memory`: ``record_incident``, ``search_incidents``, ``get_incident``,
  ``update_incident``, ``delete_incident``; ``record_pattern``, ``search_patterns``,
  ``get_pattern``, ``update_pattern``, ``record_pattern_outcome``, ``delete_pattern``;
  ``record_deployment``, ``list_deployments``; ``status``, ``warm_up``, ``close``. Blocking:
  call from a worker thread.
* :class:`MemoryRecorder`: the automatic-capture interface for the deploy, rollback and
  recovery pipelines (async, never raises)::

      recorder = MemoryRecorder(runtime.memory)
      dep = await recorder.record_deployment(stack=..., services=[...], outcome="rolled_back",
                                             image_digests={...}, duration_s=..., log_lines=[...])
      await recorder.record_incident(title=..., symptoms=..., stack=..., service=...,
                                     log_lines=[...], deployment_id=dep, time_to_recover_s=...)

Retrieval is hybrid by default (all-MiniLM-L6-v2 dense + BM25 with IDF, fused with RRF, filters
inside the query) and BM25-only when no model is available (results say ``mode: lexical``).
Error lines are fingerprinted (:mod:`server.memory.fingerprint`) so a pasted log line finds
incidents with the same signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.memory.recorder import MemoryRecorder
    from server.memory.service import Memory
    from server.settings import Settings

__all__ = ["Memory", "MemoryRecorder", "open_memory"]


def __getattr__(name: str) -> Any:
    # Lazy re-exports: the tool layer imports the result models at start-up, and importing this
    # package must not drag the service (and its imports) onto the start-up path.
    if name == "Memory":
        from server.memory.service import Memory

        return Memory
    if name == "MemoryRecorder":
        from server.memory.recorder import MemoryRecorder

        return MemoryRecorder
    raise AttributeError(f"module 'server.memory' has no attribute {name!r}")


def open_memory(settings: Settings, *, warm_up: bool = False) -> Memory:
    """The memory for these settings. Cheap: nothing is opened or loaded until first use.

    ``warm_up=True`` starts loading the embedding model in a background thread after a short
    delay (so the MCP handshake is not slowed down).
    """
    from server.memory.embedding import DenseModel, downloads_allowed
    from server.memory.service import Memory
    from server.memory.store import Store

    def store_factory() -> Store:
        if settings.qdrant_url:
            from server.memory.remote import ClientStore

            return ClientStore.connect(settings.qdrant_url, settings.qdrant_api_key)
        from server.memory.edge import EdgeStore

        return EdgeStore(settings.state_dir / "memory")

    dense = DenseModel(settings.embedding_model_path, settings.state_dir, allow_download=downloads_allowed())
    memory = Memory(store_factory, dense)
    if warm_up:
        memory.warm_up(delay_s=1.0)
    return memory
