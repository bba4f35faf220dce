"""Fusion variants of the incident search, replayed on one candidate set (issue 17, retrieval at 10k).

Builds the harder labelled set plus bench/memory.py's distractors (10,000 incidents by default),
takes for every labelled query the dense top 100 (cosine), the BM25 top 100 with and without the
failure-kind expansion and the signature matches, once; then ranks them in Python under each
variant (equal RRF, weighted RRF in Qdrant's formula and as summed weights, min-max score fusion,
the named-stack bonus) and prints recall@3 / MRR per query kind, all from the same candidates.
The production path is measured alongside (Memory.search_incidents), so the replay can be checked
against it. Latency is bench/memory.py's job.

    DSM_EMBEDDING_MODEL_PATH=.cache/embedding-model .venv/bin/python bench/memory_fusion.py [--size 10000]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.memory import embed_cached, filler_incidents  # noqa: E402
from server.memory.edge import EdgeStore  # noqa: E402
from server.memory.embedding import BM25_VERSION, DenseModel, sparse_encoder  # noqa: E402
from server.memory.fingerprint import line_signatures  # noqa: E402
from server.memory.payloads import incident_text  # noqa: E402
from server.memory.rerank import W_STACK, named_stacks  # noqa: E402
from server.memory.service import Memory  # noqa: E402
from server.memory.store import PointData, SearchSpec, Sparse, Where  # noqa: E402
from server.memory.summary import query_expansion  # noqa: E402
from tests.memory_data.helpers import hard_incidents, hard_queries, rank_of, record_all, score  # noqa: E402

DEPTH = 100
Ranked = list[tuple[str, float]]


def candidates(size: int) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    """Per query: dense, BM25 (raw and expanded) and signature lists, the production answer;
    the labelled ids (id -> key) and every candidate's stack."""
    import os

    raw = os.environ.get("DSM_EMBEDDING_MODEL_PATH")
    model = DenseModel(Path(raw) if raw else None, None, allow_download=False)
    encoder = model.get()
    if encoder is None:
        raise SystemExit(f"no embedding model ({model.detail}); run `make model`")
    labelled = hard_incidents()
    fillers = filler_incidents(size - len(labelled))
    vectors = embed_cached(encoder, [incident_text({**f, "log_templates": []}) for f in fillers])
    store = EdgeStore(Path(tempfile.mkdtemp(prefix="dsm-bench-fusion-")) / "edge", idle_s=3600.0)
    dense = DenseModel(None, None, allow_download=False)
    dense._encoder, dense._state = encoder, "ready"  # share the loaded model
    dense._done.set()
    memory = Memory(lambda: store, dense)
    ids = record_all(memory, labelled)
    sparse, now, points = sparse_encoder(), time.time(), []
    for i, item in enumerate(fillers):
        payload = {"kind": "incident", **{k: item[k] for k in ("title", "symptoms", "root_cause", "resolution",
                                                              "stack", "service", "severity", "tags")},
                   "signatures": [], "log_templates": [], "occurrences": 1, "first_seen_ts": now - i, "ts": now - i,
                   "bm25": BM25_VERSION}
        payload["text"] = incident_text(payload)
        indices, values = sparse.document(payload["text"])
        points.append(PointData(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"filler-{i}")), payload=payload,
                                sparse=Sparse(indices, values), dense=vectors[i].tolist()))
    store.upsert(points)
    where = Where(equals={"kind": "incident"})
    out, stacks = [], {}
    for q in hard_queries():
        query, vector = q["query"], encoder.embed([q["query"]])[0]
        expansion = query_expansion(query)
        specs = [SearchSpec(where=where, sparse=Sparse([], []), dense=vector, limit=DEPTH, fuse=False),
                 SearchSpec(where=where, sparse=Sparse(*sparse.query(query)), dense=None, limit=DEPTH),
                 SearchSpec(where=where, sparse=Sparse(*sparse.query(f"{query}\n{expansion}")), dense=None,
                            limit=DEPTH)]
        signatures = list(line_signatures([query]))
        if signatures:
            specs.append(SearchSpec(where=Where(equals={"kind": "incident"}, any_of={"signatures": signatures}),
                                    sparse=specs[2].sparse, dense=None, limit=DEPTH))
        answers = store.search(specs)
        lists = {name: [(h.id, h.score) for h in answers[i]] for i, name in enumerate(("dense", "bm25", "bm25x"))}
        found = {h for ranked in lists.values() for h, _ in ranked} - set(stacks)
        stacks.update({h.id: str(h.payload.get("stack") or "") for h in store.retrieve(list(found))})
        production = [h.incident_id for h in memory.search_incidents(query, limit=10).results]
        out.append({"q": q, **lists, "sig": [h.id for h in answers[3]] if signatures else [],
                    "production": production})
    memory.close()
    return out, ids, stacks


def rrf(lists: list[Ranked], weights: list[float], k: int = 2, qdrant: bool = True) -> dict[str, float]:
    """Qdrant's weighted RRF (1 / ((rank + 1) / w + k - 1)) or summed weights (w / (k + rank + 1))."""
    scores: dict[str, float] = collections.defaultdict(float)
    for ranked, w in zip(lists, weights, strict=True):
        for i, (hid, _) in enumerate(ranked[:DEPTH]):
            scores[hid] += 1 / ((i + 1) / w + k - 1) if qdrant else w / (k + i + 1)
    return scores


def minmax(ranked: Ranked) -> dict[str, float]:
    if not ranked:
        return {}
    hi, lo = ranked[0][1], ranked[-1][1]
    return {h: (s - lo) / (hi - lo) if hi > lo else 1.0 for h, s in ranked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    args = parser.parse_args()
    cands, ids, stacks = candidates(args.size)

    def ordered(c: dict[str, Any], scores: dict[str, float], bonus: float = W_STACK) -> list[str]:
        top30 = sorted(scores, key=lambda h: scores[h], reverse=True)[:30]
        named = named_stacks(c["q"]["query"], {stacks[h] for h in top30 if stacks.get(h)})
        best = max((scores[h] for h in top30), default=1.0) or 1.0
        rest = sorted(top30, key=lambda h: scores[h] / best + (bonus if stacks.get(h) in named else 0.0),
                      reverse=True)
        return [*c["sig"], *(h for h in rest if h not in c["sig"])]

    variants: dict[str, Callable[[dict[str, Any]], list[str]]] = {
        "production (Memory.search_incidents)": lambda c: c["production"],
        "dense only": lambda c: ordered(c, dict(c["dense"]), 0.0),
        "BM25 + expansion only": lambda c: ordered(c, dict(c["bm25x"]), 0.0),
        "BM25 + expansion + stack bonus": lambda c: ordered(c, dict(c["bm25x"])),
        "RRF 1:1 (no expansion) + bonus": lambda c: ordered(c, rrf([c["dense"], c["bm25"]], [1, 1])),
        "RRF 1:1 + bonus": lambda c: ordered(c, rrf([c["dense"], c["bm25x"]], [1, 1])),
    }
    for w in (2, 3, 4):
        variants[f"weighted RRF 1:{w} (Qdrant) + bonus"] = (
            lambda c, w=w: ordered(c, rrf([c["dense"], c["bm25x"]], [1, w])))
        variants[f"weighted RRF 1:{w} (summed) + bonus"] = (
            lambda c, w=w: ordered(c, rrf([c["dense"], c["bm25x"]], [1, w], qdrant=False)))
    for a in (0.3, 0.5):
        def fused(c: dict[str, Any], a: float = a) -> list[str]:
            d, s = minmax(c["dense"]), minmax(c["bm25x"])
            return ordered(c, {h: a * d.get(h, 0.0) + (1 - a) * s.get(h, 0.0) for h in set(d) | set(s)})
        variants[f"min-max score fusion, dense {a} + bonus"] = fused

    print(f"{args.size} incidents, {len(cands)} queries (harder set); recall@3 / MRR per kind")
    for label, ranker in variants.items():
        by: dict[str, list[tuple[int | None, str]]] = collections.defaultdict(list)
        for c in cands:
            rank = rank_of([ids.get(h, "?") for h in ranker(c)[:10]], c["q"]["expect"])
            for kind in ("all", c["q"]["kind"]):
                by[kind].append((rank, c["q"]["query"]))
        cells = {k: score(v) for k, v in by.items()}
        print(f"{label:<42} " + "  ".join(f"{k} {cells[k].recall_at_3:.3f}/{cells[k].mrr:.3f}"
                                           for k in ("all", "paraphrase", "why", "log")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
