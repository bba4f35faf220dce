"""Retrieval quality on the labelled set (tests/memory_data), hybrid and BM25-only, both backends.

Thresholds sit a little under what was measured when they were set (edge / client):

=========================  ==========================  ==========================
queries                    hybrid recall@3 / MRR       lexical recall@3 / MRR
=========================  ==========================  ==========================
all 150                    0.993 / 0.966 - 0.972       0.947 / 0.916
paraphrase 48              0.979 / 0.903 - 0.914       0.833 / 0.746
log (pasted lines) 11      1.000 / 1.000               1.000 / 1.000
patterns 17                1.000 / 0.941               0.882 / 0.809
=========================  ==========================  ==========================

A drop below them is a regression in fingerprinting, text building, fusion or the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.memory.service import Memory
from tests.memory_data.helpers import (
    Scores,
    dense_model,
    evaluate,
    incidents,
    lexical_model,
    make_memory,
    patterns,
    queries,
    rank_of,
    record_all,
    score,
)


@pytest.fixture(scope="module", params=["edge", "client"])
def hybrid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Memory, dict[str, str]]]:
    memory = make_memory(request.param, tmp_path_factory.mktemp(f"hybrid-{request.param}"), dense_model())
    ids = record_all(memory)
    yield memory, ids
    memory.close()


@pytest.fixture(scope="module")
def lexical(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Memory, dict[str, str]]]:
    memory = make_memory("edge", tmp_path_factory.mktemp("lexical"), lexical_model())
    ids = record_all(memory)
    yield memory, ids
    memory.close()


def _report(scores: dict[str, Scores]) -> str:
    lines = [f"{k}: recall@3={v.recall_at_3:.3f} MRR={v.mrr:.3f} (n={v.n})" for k, v in scores.items()]
    misses = [f"  rank {r}: {q[:90]}" for r, q in scores["all"].misses]
    return "\n".join([*lines, "misses:", *misses])


def test_labelled_set_is_consistent() -> None:
    keys = {x["key"] for x in incidents()}
    assert len(keys) == len(incidents()) >= 45
    assert {q["expect"] for q in queries()} == keys  # every incident is asked for
    assert {q["kind"] for q in queries()} == {"direct", "log", "paraphrase"}
    assert {q["expect"] for q in queries() if q["kind"] == "paraphrase"} == keys


def test_hybrid_recall_and_mrr(hybrid: tuple[Memory, dict[str, str]]) -> None:
    memory, ids = hybrid
    scores = evaluate(memory, ids)
    report = _report(scores)
    assert scores["all"].recall_at_3 >= 0.96, report
    assert scores["all"].mrr >= 0.93, report
    assert scores["paraphrase"].recall_at_3 >= 0.93, report
    assert scores["paraphrase"].mrr >= 0.85, report
    assert scores["log"].recall_at_3 == 1.0, report


def test_lexical_mode_recall_and_mrr(lexical: tuple[Memory, dict[str, str]]) -> None:
    memory, ids = lexical
    assert memory.search_incidents("anything").mode == "lexical"
    scores = evaluate(memory, ids)
    report = _report(scores)
    assert scores["all"].recall_at_3 >= 0.92, report
    assert scores["all"].mrr >= 0.88, report
    assert scores["paraphrase"].recall_at_3 >= 0.78, report
    assert scores["log"].recall_at_3 == 1.0, report


def test_dense_vectors_earn_their_keep(hybrid: tuple[Memory, dict[str, str]],
                                       lexical: tuple[Memory, dict[str, str]]) -> None:
    """On paraphrases (few shared words) hybrid must clearly beat BM25 alone."""
    with_dense = evaluate(*hybrid, kinds=("paraphrase",))["paraphrase"]
    words_only = evaluate(*lexical, kinds=("paraphrase",))["paraphrase"]
    assert with_dense.mrr - words_only.mrr >= 0.08, (with_dense.mrr, words_only.mrr)


def test_pasted_log_lines_rank_their_incident_first_by_signature(hybrid: tuple[Memory, dict[str, str]]) -> None:
    memory, ids = hybrid
    logs = [q for q in queries() if q["kind"] == "log"]
    for q in logs:
        top = memory.search_incidents(q["query"], limit=3).results[0]
        assert ids[top.incident_id] == q["expect"], q["query"]
    matched = sum(memory.search_incidents(q["query"], limit=1).results[0].signature_match for q in logs)
    assert matched >= len(logs) - 1  # a reworded paste (the nginx line) may only match by its words


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_pattern_search(mode: str, tmp_path: Path) -> None:
    memory = make_memory("edge", tmp_path, dense_model() if mode == "hybrid" else lexical_model())
    try:
        data = patterns()
        ids = {memory.record_pattern(title=p["title"], steps=p["steps"], stack=p.get("stack"),
                                     service=p.get("service"), operation=p.get("operation"),
                                     tags=p.get("tags", [])).pattern_id: p["key"] for p in data["patterns"]}
        ranks = []
        for q in data["queries"]:
            found = memory.search_patterns(q["query"], stack=q.get("stack"), limit=10)
            ranks.append((rank_of([ids[h.pattern_id] for h in found.results], q["expect"]), q["query"]))
        result = score(ranks)
        if mode == "hybrid":
            assert result.recall_at_3 >= 0.94 and result.mrr >= 0.88, result
        else:
            assert result.recall_at_3 >= 0.82 and result.mrr >= 0.75, result
    finally:
        memory.close()
