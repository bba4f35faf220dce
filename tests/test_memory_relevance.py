"""An absolute relevance floor (issue 17): what memory offers as similar means the same at 3
incidents and at 10,000, and unrelated incidents are not offered.

Uses the real embedding model (DSM_EMBEDDING_MODEL_PATH), on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.memory.incidents import SEARCH_FLOOR, SIMILAR_FLOOR
from server.memory.service import Memory
from tests.memory_data.helpers import dense_model, incidents, make_memory

THREE = ("sb-db-oom", "n8n-webhook-url", "traefik-acme-ratelimit")
SOMETHING_ELSE = [
    "the quarterly sales report is due on friday",
    "vaultwarden sends no invitation emails: SMTP handshake fails with a TLS version error",
    "portainer shows the admin login page again after a restart and says the instance timed out",
]
PARAPHRASES = {  # from the labelled set (tests/memory_data/queries.json), kind "paraphrase"
    "sb-db-oom": "the main sql server of the backend got terminated by the kernel because the box ran short of RAM",
    "n8n-webhook-url": "external services can't call our workflow hooks since they advertise an internal address",
    "traefik-acme-ratelimit": "the certificate authority blocks us after too many issuance requests, sites fall "
                              "back to an untrusted cert",
}


@pytest.fixture(scope="module", params=["edge", "client"])
def three(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Memory, dict[str, str]]]:
    memory = make_memory(request.param, tmp_path_factory.mktemp(f"three-{request.param}"), dense_model())
    ids = {}
    for x in incidents():
        if x["key"] in THREE:
            ids[x["key"]] = memory.record_incident(
                title=x["title"], symptoms=x["symptoms"], root_cause=x["root_cause"], resolution=x["resolution"],
                stack=x["stack"], service=x["service"], severity=x["severity"], tags=x["tags"],
                log_lines=x["log_lines"]).incident_id
    yield memory, ids
    memory.close()


@pytest.mark.parametrize("query", SOMETHING_ELSE)
def test_nothing_is_offered_for_something_else(three: tuple[Memory, dict[str, str]], query: str) -> None:
    memory, _ = three
    similar = memory.search_incidents(query, limit=3, min_relevance=SIMILAR_FLOOR)
    assert similar.results == [], [(h.title, h.relevance) for h in similar.results]
    assert similar.note and similar.note.startswith("nothing similar"), similar.note
    off_topic = memory.search_incidents(SOMETHING_ELSE[0], limit=3)
    assert off_topic.results == [] and "nothing similar" in (off_topic.note or "")


@pytest.mark.parametrize("key", THREE)
def test_a_paraphrase_of_one_is_offered(three: tuple[Memory, dict[str, str]], key: str) -> None:
    memory, ids = three
    found = memory.search_incidents(PARAPHRASES[key], limit=3)
    assert found.results and found.results[0].incident_id == ids[key], [(h.title, h.relevance)
                                                                        for h in found.results]
    top = found.results[0]
    assert top.relevance is not None and top.relevance >= SEARCH_FLOOR


def test_a_pasted_log_line_is_offered_as_similar(three: tuple[Memory, dict[str, str]]) -> None:
    memory, ids = three
    line = ("Jun  3 22:41:09 dockerhost kernel: Memory cgroup out of memory: Killed process 9811 (postgres) "
            "total-vm:2998012kB, anon-rss:998112kB")
    similar = memory.search_incidents(line, limit=3, min_relevance=SIMILAR_FLOOR)
    assert [h.incident_id for h in similar.results][:1] == [ids["sb-db-oom"]]


def test_relevance_is_the_same_at_any_memory_size(three: tuple[Memory, dict[str, str]],
                                                  tmp_path: Path) -> None:
    """The same query and incident: the same relevance in a memory of 3 and of all 48 incidents
    (a fused rank score would change with the neighbours)."""
    small, ids = three
    big = make_memory("edge", tmp_path / "big", dense_model())
    try:
        for x in incidents():
            big.record_incident(title=x["title"], symptoms=x["symptoms"], root_cause=x["root_cause"],
                                resolution=x["resolution"], stack=x["stack"], service=x["service"],
                                severity=x["severity"], tags=x["tags"], log_lines=x["log_lines"])
        query = PARAPHRASES["n8n-webhook-url"]
        a = next(h for h in small.search_incidents(query, limit=3).results if h.incident_id == ids["n8n-webhook-url"])
        b = next(h for h in big.search_incidents(query, limit=10).results if h.incident_id == ids["n8n-webhook-url"])
        assert a.relevance == pytest.approx(b.relevance, abs=0.002)
    finally:
        big.close()


def test_a_hit_found_by_bm25_alone_has_its_own_relevance(tmp_path: Path) -> None:
    """Past the dense top candidates (120 for a search), a hit's relevance is still its own cosine,
    not the lowest cosine of the dense candidates (an upper bound that made such a hit look more
    relevant among many incidents than among few)."""
    memory = make_memory("edge", tmp_path, dense_model())
    try:
        for i in range(125):  # all closer in meaning to the query than the target
            memory.record_incident(title=f"postgres {i} killed by the kernel out of memory killer",
                                   symptoms=f"database container number {i} exited 137 OOMKilled", stack=f"s{i}")
        target = memory.record_incident(title="zxqvortex calendar sync lag", symptoms="events arrive a day late",
                                        stack="calendar").incident_id
        query = "zxqvortex postgres killed out of memory"
        found = memory.search_incidents(query, limit=10, min_relevance=0.0)
        [hit] = [h for h in found.results if h.incident_id == target]
        [stored] = memory.store.retrieve([target])
        encoder = dense_model().get()
        assert encoder is not None
        q, d = encoder.embed([query, stored.payload["text"]])
        assert hit.relevance == pytest.approx(sum(a * b for a, b in zip(q, d, strict=True)), abs=0.002)
    finally:
        memory.close()
