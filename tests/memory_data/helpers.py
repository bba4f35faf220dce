"""Shared by the memory tests and bench/memory.py: the labelled set, the model, store builders.

The labelled set (incidents.json, queries.json, patterns.json) was written for this project:
48 incidents on the reference stacks (Supabase, LibreChat, Linkwarden, Postiz, Portainer, n8n,
Vaultwarden, Netdata, the host) and 150 queries in three kinds: ``direct`` (how an operator
would describe the problem, sharing some words with the record), ``log`` (a pasted log line
of the same failure with other timestamps, ids, addresses and numbers) and ``paraphrase``
(written to avoid the record's distinctive words).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.memory.embedding import DenseModel
from server.memory.service import Memory

DATA = Path(__file__).resolve().parent


def incidents() -> list[dict[str, Any]]:
    return json.loads((DATA / "incidents.json").read_text())


def queries() -> list[dict[str, Any]]:
    return json.loads((DATA / "queries.json").read_text())


def hard_incidents() -> list[dict[str, Any]]:
    """The harder set: 42 confusable incidents (six Postgres failures on one Supabase stack, ...)."""
    return json.loads((DATA / "hard_incidents.json").read_text())


def hard_queries() -> list[dict[str, Any]]:
    """126 queries on the harder set: multi-line log pastes with fresh timestamps (``log``), an
    operator's words avoiding the record's (``paraphrase``), "why ...?" questions (``why``), and
    two ``direct`` ones for incidents that have no log line."""
    return json.loads((DATA / "hard_queries.json").read_text())


def patterns() -> dict[str, Any]:
    return json.loads((DATA / "patterns.json").read_text())


_dense: DenseModel | None = None


def dense_model() -> DenseModel:
    """One loaded dense model for the whole test session; under CI its absence is a failure."""
    global _dense
    if _dense is None:
        path = os.environ.get("DSM_EMBEDDING_MODEL_PATH")
        model = DenseModel(Path(path) if path else None, None, allow_download=False)
        if model.get() is None:
            message = f"no embedding model ({model.detail}); run `make model` or set DSM_EMBEDDING_MODEL_PATH"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        _dense = model
    return _dense


def lexical_model() -> DenseModel:
    return DenseModel(None, None, allow_download=False, enabled=False)


def make_memory(backend: str, directory: Path, dense: DenseModel, **lease: float) -> Memory:
    """A Memory on the embedded engine ('edge') or on qdrant-client local mode ('client')."""
    if backend == "edge":
        from server.memory.edge import EdgeStore

        return Memory(lambda: EdgeStore(directory, **lease), dense)
    from server.memory.remote import ClientStore

    return Memory(lambda: ClientStore.local(str(directory / "qdrant-local")), dense)


def record_all(memory: Memory, data: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Record the labelled incidents (or ``data``); returns incident_id -> key."""
    ids: dict[str, str] = {}
    for x in incidents() if data is None else data:
        result = memory.record_incident(
            title=x["title"], symptoms=x["symptoms"], root_cause=x["root_cause"], resolution=x["resolution"],
            stack=x["stack"], service=x["service"], severity=x["severity"], tags=x["tags"],
            log_lines=x["log_lines"])
        ids[result.incident_id] = x["key"]
    return ids


@dataclass
class Scores:
    n: int
    recall_at_3: float
    mrr: float
    misses: list[tuple[int | None, str]]


def rank_of(keys: list[str], expected: str) -> int | None:
    return keys.index(expected) + 1 if expected in keys else None


def score(ranks: list[tuple[int | None, str]]) -> Scores:
    n = len(ranks)
    return Scores(
        n=n,
        recall_at_3=sum(1 for r, _ in ranks if r is not None and r <= 3) / n,
        mrr=sum(1 / r for r, _ in ranks if r) / n,
        misses=[(r, q) for r, q in ranks if r != 1],
    )


def evaluate(memory: Memory, ids: dict[str, str], kinds: tuple[str, ...] = ("direct", "log", "paraphrase", "why"),
             limit: int = 10, data: list[dict[str, Any]] | None = None) -> dict[str, Scores]:
    """Recall@3 and MRR per query kind and over all (key 'all'), on ``queries()`` or ``data``."""
    per_kind: dict[str, list[tuple[int | None, str]]] = {k: [] for k in kinds}
    for q in queries() if data is None else data:
        if q["kind"] not in kinds:
            continue
        found = memory.search_incidents(q["query"], stack=q.get("stack"), service=q.get("service"), limit=limit)
        keys = [ids.get(h.incident_id, "?") for h in found.results]
        per_kind[q["kind"]].append((rank_of(keys, q["expect"]), q["query"]))
    out = {k: score(v) for k, v in per_kind.items() if v}
    out["all"] = score([r for v in per_kind.values() for r in v])
    return out
