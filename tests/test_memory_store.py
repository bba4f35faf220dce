"""One contract, two backends: the embedded engine (qdrant-edge) and qdrant-client.

qdrant-client's local mode (``QdrantClient(path=...)``) stands in for a Qdrant server: the
same client code paths (collection creation, query_batch_points with prefetch + RRF, filters,
order_by scroll) as against a server or cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.memory.embedding import sparse_encoder
from server.memory.errors import MemoryInputError, MemoryRecordNotFound
from server.memory.service import Memory
from server.memory.store import Hit, PointData, SearchSpec, Sparse, Store, Where
from tests.memory_data.helpers import dense_model, lexical_model, make_memory

BACKENDS = ["edge", "client"]


def _store(backend: str, directory: Path) -> Store:
    if backend == "edge":
        from server.memory.edge import EdgeStore

        return EdgeStore(directory)
    from server.memory.remote import ClientStore

    return ClientStore.local(str(directory / "qdrant-local"))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = _store(request.param, tmp_path)
    yield s
    s.close()


def _point(text: str, *, dense: bool = True, **payload: object) -> PointData:
    indices, values = sparse_encoder().document(text)
    vector = dense_model().get().embed([text])[0] if dense else None  # type: ignore[union-attr]
    return PointData(id=str(uuid.uuid4()), payload={"text": text, **payload}, sparse=Sparse(indices, values),
                     dense=vector)


def _query(text: str, where: Where, *, dense: bool = True, limit: int = 5) -> SearchSpec:
    indices, values = sparse_encoder().query(text)
    vector = dense_model().get().embed([text])[0] if dense else None  # type: ignore[union-attr]
    return SearchSpec(where=where, sparse=Sparse(indices, values), dense=vector, limit=limit)


DOCS = [
    ("postgres was killed by the kernel out of memory killer", {"kind": "incident", "stack": "supabase",
                                                                "service": "db", "tags": ["oom"], "ts": 100.0}),
    ("redis connection refused from the worker container", {"kind": "incident", "stack": "n8n",
                                                            "service": "worker", "tags": ["redis"], "ts": 200.0}),
    ("letsencrypt rate limit after redeploying traefik", {"kind": "incident", "stack": "proxy",
                                                          "service": "traefik", "tags": ["tls"], "ts": 300.0}),
    ("update supabase: dump the database first", {"kind": "pattern", "stack": "supabase", "service": "*",
                                                  "tags": [], "ts": 400.0}),
    ("database ran out of memory during vacuum", {"kind": "incident", "stack": "linkwarden",
                                                  "service": "postgres", "tags": ["oom", "postgres"], "ts": 500.0}),
]


def _fill(store: Store) -> list[PointData]:
    points = [_point(text, **payload) for text, payload in DOCS]  # type: ignore[arg-type]
    store.upsert(points)
    return points


def _texts(hits: list[Hit]) -> list[str]:
    return [h.payload["text"] for h in hits]


def test_roundtrip_count_and_delete(store: Store) -> None:
    points = _fill(store)
    assert store.count(Where()) == 5
    assert store.count(Where(equals={"kind": "incident"})) == 4
    got = store.retrieve([points[1].id, str(uuid.uuid4())])
    assert [h.id for h in got] == [points[1].id]
    assert got[0].payload["tags"] == ["redis"] and got[0].payload["ts"] == 200.0
    store.delete([points[1].id])
    assert store.retrieve([points[1].id]) == []
    assert store.count(Where()) == 4


def test_hybrid_search_ranks_by_meaning_and_words(store: Store) -> None:
    _fill(store)
    [hits] = store.search([_query("the db process was OOM killed", Where(equals={"kind": "incident"}))])
    assert _texts(hits)[0] == DOCS[0][0]
    assert len(hits) == 4 and all(h.payload["kind"] == "incident" for h in hits)
    assert hits[0].score >= hits[-1].score


def test_sparse_only_search(store: Store) -> None:
    _fill(store)
    [hits] = store.search([_query("traefik rate limit", Where(), dense=False)])
    assert _texts(hits)[0] == DOCS[2][0]
    assert all("traefik" in t or "rate" in t or "limit" in t for t in _texts(hits))


def test_filters_apply_inside_the_query(store: Store) -> None:
    """The best match outside the filter must not crowd out matches inside it."""
    _fill(store)
    query = "postgres out of memory"
    [by_stack, by_tag, by_range, by_service] = store.search([
        _query(query, Where(equals={"kind": "incident", "stack": "n8n"})),
        _query(query, Where(any_of={"tags": ["tls", "redis"]})),
        _query(query, Where(equals={"kind": "incident"}, ts_gte=150.0, ts_lte=350.0)),
        _query(query, Where(equals={"service": "postgres"})),
    ])
    assert _texts(by_stack) == [DOCS[1][0]]
    assert sorted(_texts(by_tag)) == sorted([DOCS[1][0], DOCS[2][0]])
    assert {h.payload["ts"] for h in by_range} == {200.0, 300.0}
    assert _texts(by_service) == [DOCS[4][0]]


def test_list_fields_match_any_element(store: Store) -> None:
    _fill(store)
    [hits] = store.search([_query("memory", Where(equals={"tags": "postgres"}))])
    assert _texts(hits) == [DOCS[4][0]]
    [patterns] = store.search([_query("update", Where(any_of={"service": ["db", "*"]}))])
    assert set(_texts(patterns)) == {DOCS[0][0], DOCS[3][0]}


def test_scroll_orders_by_time(store: Store) -> None:
    _fill(store)
    newest = store.scroll(Where(equals={"kind": "incident"}), 3)
    assert [h.payload["ts"] for h in newest] == [500.0, 300.0, 200.0]
    oldest = store.scroll(Where(equals={"kind": "incident"}), 2, newest_first=False)
    assert [h.payload["ts"] for h in oldest] == [100.0, 200.0]


def test_set_payload_merges_and_keeps_vectors(store: Store) -> None:
    points = _fill(store)
    store.set_payload(points[0].id, {"occurrences": 3, "stack": "other"})
    [hit] = store.retrieve([points[0].id])
    assert hit.payload["occurrences"] == 3 and hit.payload["stack"] == "other" and hit.payload["tags"] == ["oom"]
    [hits] = store.search([_query("kernel out of memory killer", Where(equals={"stack": "other"}))])
    assert _texts(hits) == [DOCS[0][0]]


def test_points_without_dense_vector_are_found_and_backfilled(store: Store) -> None:
    with_dense = _point("vaultwarden websocket notifications fail behind the proxy", kind="incident", ts=1.0)
    without = _point("vaultwarden smtp emails never delivered", dense=False, kind="incident", ts=2.0)
    store.upsert([with_dense, without])
    missing = store.scroll(Where(missing_dense=True), 10)
    assert [h.id for h in missing] == [without.id]
    [hits] = store.search([_query("smtp email delivery", Where())])
    assert without.id in [h.id for h in hits]  # the sparse prefetch still finds it in hybrid mode
    store.set_dense({without.id: dense_model().get().embed([without.payload["text"]])[0]})  # type: ignore[union-attr]
    assert store.scroll(Where(missing_dense=True), 10) == []
    [sparse_hits] = store.search([_query("smtp", Where(), dense=False)])
    assert [h.id for h in sparse_hits] == [without.id]  # the sparse vector survived the dense update


def test_sparse_vectors_are_replaced_and_unstamped_points_found(store: Store) -> None:
    old = _point("gitea runner jobs stuck in the queue", kind="incident", ts=1.0)
    stamped = _point("gitea mirror sync fails", kind="incident", ts=2.0, bm25=2)
    store.upsert([old, stamped])
    assert [h.id for h in store.scroll(Where(missing_field="bm25"), 10)] == [old.id]
    store.set_sparse({old.id: Sparse(*sparse_encoder().document("nextcloud cron never runs"))})
    [hits] = store.search([_query("nextcloud cron", Where(), dense=False)])
    assert [h.id for h in hits] == [old.id]
    [hybrid] = store.search([SearchSpec(where=Where(), sparse=Sparse(*sparse_encoder().query("gitea runner")),
                                        dense=old.dense, limit=5, with_dense=True)])
    [kept] = [h for h in hybrid if h.id == old.id]
    assert kept.dense is not None  # the dense vector survived the sparse update
    assert sum(a * b for a, b in zip(kept.dense, old.dense or [], strict=True)) > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_persists_after_close(backend: str, tmp_path: Path) -> None:
    first = _store(backend, tmp_path)
    points = _fill(first)
    first.close()
    second = _store(backend, tmp_path)
    try:
        assert second.count(Where()) == 5
        [hits] = second.search([_query("traefik certificates", Where())])
        assert hits[0].id == points[2].id
    finally:
        second.close()


# -- the Memory service on both backends ----------------------------------------------------

@pytest.fixture(params=BACKENDS)
def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Memory]:
    m = make_memory(request.param, tmp_path, dense_model())
    yield m
    m.close()


def _incident(memory: Memory, **overrides: object) -> str:
    args: dict[str, object] = {
        "title": "Supabase auth crash-loops before Postgres is ready",
        "symptoms": "auth restarts every 10s right after compose up",
        "stack": "supabase", "service": "auth", "severity": "high", "tags": ["startup"],
        "log_lines": ["2024-05-01T10:22:03Z supabase-auth-1 | error: dial tcp 172.18.0.4:5432: connect: "
                      "connection refused", "POSTGRES_PASSWORD=hunter22hunter"],
        "root_cause": "depends_on without service_healthy", "resolution": "add a pg_isready healthcheck",
    }
    args.update(overrides)
    return memory.record_incident(**args).incident_id  # type: ignore[arg-type]


def test_recording_the_same_incident_updates_it(memory: Memory) -> None:
    first = _incident(memory)
    again = memory.record_incident(title="supabase AUTH crash-loops before Postgres is ready",
                                   symptoms="auth restarts every 12s right after compose up",
                                   stack="Supabase", service="auth", log_lines=["another line of the log here"])
    assert again.incident_id == first and not again.created and again.occurrences == 2
    incident = memory.get_incident(first)
    assert incident.root_cause == "depends_on without service_healthy"  # kept, not blanked
    assert incident.severity == "high" and incident.occurrences == 2
    assert "another line of the log here" in incident.log_lines
    assert "POSTGRES_PASSWORD=***" in incident.log_lines and not any("hunter22" in x for x in incident.log_lines)
    other = _incident(memory, symptoms="auth exits with code 1 during migrations")
    assert other != first


def test_search_filters_and_fields(memory: Memory) -> None:
    now = 1_700_000_000.0
    old = _incident(memory, occurred_at=now - 30 * 86400)
    recent = _incident(memory, title="n8n workers cannot reach redis", symptoms="executions stay waiting",
                       stack="n8n", service="worker", tags=["redis"], log_lines=[], occurred_at=now - 3600)
    memory._clock = lambda: now
    # The filters, not the relevance floor: these terse queries score under it for the n8n record
    # (test_memory_relevance.py covers the floor).
    everything = memory.search_incidents("service cannot connect, keeps restarting", min_relevance=0.0)
    assert {r.incident_id for r in everything.results} == {old, recent}
    assert everything.mode == "hybrid" and everything.note is None

    def ids(query: str, **where: Any) -> list[str]:
        return [r.incident_id for r in memory.search_incidents(query, min_relevance=0.0, **where).results]

    assert ids("connection problem", stack="n8n") == [recent]
    assert ids("connection", service="auth") == [old]
    assert ids("connection", since="7d") == [recent]
    assert ids("connection", since="2020-01-01", tags=["startup"]) == [old]
    hit = memory.search_incidents("auth crash loop", stack="supabase").results[0]
    assert hit.root_cause and hit.resolution and hit.severity == "high" and hit.time.endswith("Z")
    with pytest.raises(MemoryInputError):
        memory.search_incidents("x", since="yesterday-ish")
    with pytest.raises(MemoryInputError):
        memory.search_incidents("x", limit=0)


def test_pasted_log_line_finds_the_incident_by_signature(memory: Memory) -> None:
    target = _incident(memory)
    _incident(memory, title="Postiz cannot reach redis", symptoms="posts are never published", stack="postiz",
              service="postiz", log_lines=["Error: connect ECONNREFUSED 127.0.0.1:6379"])
    found = memory.search_incidents(
        "supabase-auth-1  | 2025-02-03T04:05:06.789Z error: dial tcp 10.9.8.7:5432: connect: connection refused")
    assert found.results[0].incident_id == target and found.results[0].signature_match
    assert not any(r.signature_match for r in found.results[1:])


def test_update_and_delete_incident(memory: Memory) -> None:
    incident_id = _incident(memory, root_cause=None, resolution=None)
    updated = memory.update_incident(incident_id, root_cause="auth raced the database",
                                     resolution="token=abcdef123456 then restart", severity="critical",
                                     tags=["startup", "race"])
    assert updated.root_cause == "auth raced the database" and updated.severity == "critical"
    assert updated.resolution == "token=*** then restart"
    assert memory.get_incident(incident_id).tags == ["race", "startup"]
    assert memory.search_incidents("database race at boot").results[0].resolution == "token=*** then restart"
    with pytest.raises(MemoryRecordNotFound):
        memory.update_incident(str(uuid.uuid4()), root_cause="x")
    with pytest.raises(MemoryRecordNotFound, match="ids are UUIDs"):
        memory.update_incident("not-an-id", root_cause="x")
    assert memory.delete_incident(incident_id).deleted
    assert not memory.delete_incident(incident_id).deleted
    assert memory.search_incidents("auth crash").results == []


def test_patterns_record_search_outcomes_update_delete(memory: Memory) -> None:
    update = memory.record_pattern(title="Update Supabase", steps=["dump the database first",
                                                                   "migrate auth before rest"],
                                   stack="supabase", operation="update")
    generic = memory.record_pattern(title="Zero-downtime update of a stateless web service",
                                    steps=["scale to two", "wait healthy", "retire the old one"], operation="update")
    memory.record_pattern(title="Back up Vaultwarden", steps=["sqlite3 .backup"], stack="vaultwarden",
                          operation="backup")
    assert update.created and memory.record_pattern(title="update supabase", steps=["dump first", "then auth"],
                                                    stack="supabase").pattern_id == update.pattern_id
    found = memory.search_patterns("how to upgrade supabase safely", stack="supabase")
    assert found.results[0].pattern_id == update.pattern_id
    assert found.results[0].steps == ["dump first", "then auth"]
    assert {r.pattern_id for r in found.results} == {update.pattern_id, generic.pattern_id}  # not vaultwarden's
    memory.record_pattern_outcome(update.pattern_id, "success")
    after = memory.record_pattern_outcome(update.pattern_id, "failure", notes="auth migration timed out")
    assert (after.successes, after.failures, after.last_outcome) == (1, 1, "failure")
    assert after.history[-1]["notes"] == "auth migration timed out"
    changed = memory.update_pattern(update.pattern_id, notes="raise the auth migration timeout")
    assert changed.successes == 1 and changed.notes == "raise the auth migration timeout"
    assert memory.search_patterns("backup", operation="backup").results[0].title == "Back up Vaultwarden"
    with pytest.raises(MemoryRecordNotFound, match="is a pattern"):
        memory.delete_incident(update.pattern_id)
    assert memory.delete_pattern(update.pattern_id).deleted
    assert update.pattern_id not in {r.pattern_id for r in memory.search_patterns("update supabase").results}


def test_deployments_are_listed_newest_first(memory: Memory) -> None:
    ids = [memory.record_deployment(stack="supabase", services=["db", "auth"], outcome=outcome,
                                    image_digests={"auth": f"sha256:{i:064x}"}, duration_s=10 + i,
                                    log_lines=["error: dial tcp 1.2.3.4:5432: connect: connection refused"]
                                    if outcome != "success" else [], finished_at=1000.0 + i)
           for i, outcome in enumerate(["success", "rolled_back", "success"])]
    memory.record_deployment(stack="n8n", services=["n8n"], outcome="success", finished_at=2000.0)
    listed = memory.list_deployments(stack="supabase").deployments
    assert [d.deployment_id for d in listed] == ids[::-1]
    assert listed[1].outcome == "rolled_back" and listed[1].error_signatures
    assert listed[0].image_digests == {"auth": f"sha256:{2:064x}"} and listed[0].services == ["auth", "db"]
    assert [d.deployment_id for d in memory.list_deployments(outcome="rolled_back").deployments] == [ids[1]]
    assert len(memory.list_deployments(service="auth").deployments) == 3
    retried = memory.record_deployment(stack="n8n", services=["n8n"], outcome="success", operation_id="op-1")
    assert memory.record_deployment(stack="n8n", services=["n8n"], outcome="failure", operation_id="op-1") == retried
    status = memory.status()
    assert (status.deployments, status.incidents) == (5, 0)


def test_lexical_mode_says_so_and_backfills_later(tmp_path: Path) -> None:
    from server.memory.edge import EdgeStore

    lexical = Memory(lambda: EdgeStore(tmp_path), lexical_model())
    recorded = lexical.record_incident(title="Vaultwarden emails never arrive", symptoms="SMTP connection refused",
                                       stack="vaultwarden")
    assert recorded.mode == "lexical"
    found = lexical.search_incidents("smtp refused")
    assert found.mode == "lexical" and found.note and "BM25-only" in found.note
    assert found.results[0].incident_id == recorded.incident_id
    assert lexical.status().mode == "lexical"
    lexical.close()
    hybrid = Memory(lambda: EdgeStore(tmp_path), dense_model())
    try:
        # Meaning only, no shared words: found once the record got its dense vector.
        found = hybrid.search_incidents("password manager mail delivery broken")
        assert found.mode == "hybrid" and found.results[0].incident_id == recorded.incident_id
        assert hybrid.store.scroll(Where(missing_dense=True), 10) == []
    finally:
        hybrid.close()


def test_records_with_former_bm25_weights_are_reencoded_once(tmp_path: Path) -> None:
    """A shard written before embedding.BM25_VERSION (length normalisation 0.75, no stamp) gets
    its BM25 vectors re-encoded on the first search, and answers as a fresh one."""
    import qdrant_edge

    from server.memory.edge import EdgeStore
    from server.memory.payloads import incident_text

    store = EdgeStore(tmp_path)
    memory = Memory(lambda: store, lexical_model())
    try:
        memory.record_incident(title="Gitea runner offline", symptoms="jobs queue forever", stack="gitea")
        payload = {"kind": "incident", "title": "Nextcloud cron never runs", "symptoms": "background jobs stale",
                   "stack": "nextcloud", "ts": 5.0, "tags": [], "log_templates": []}
        payload["text"] = incident_text(payload)
        former = qdrant_edge.Bm25().embed_document(payload["text"])  # Qdrant's defaults: b = 0.75
        store.upsert([PointData(id=str(uuid.uuid4()), payload=payload,
                                sparse=Sparse(list(former.indices), list(former.values)))])
        assert len(store.scroll(Where(missing_field="bm25"), 10)) == 1
        found = memory.search_incidents("nextcloud cron jobs")
        assert found.results[0].title == "Nextcloud cron never runs"
        assert store.scroll(Where(missing_field="bm25"), 10) == []
        assert memory._reencode_sparse() == 0  # nothing left to do
    finally:
        memory.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_unreachable_qdrant_server_is_a_clear_error(tmp_path: Path) -> None:
    import time
    from dataclasses import replace

    from server.memory import open_memory
    from server.memory.errors import MemoryUnavailable
    from server.settings import Settings

    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    memory = open_memory(replace(settings, qdrant_url="http://127.0.0.1:9", qdrant_api_key="k3y-not-shown",
                                 embedding_model_path=None))
    memory._dense = lexical_model()
    started = time.monotonic()
    try:
        with pytest.raises(MemoryUnavailable) as err:
            memory.search_incidents("anything")
        assert time.monotonic() - started < 15
        assert "127.0.0.1:9" in str(err.value) and "QDRANT_URL" in str(err.value)
        assert "k3y-not-shown" not in str(err.value)
        assert not (tmp_path / "state" / "memory").exists()  # the embedded store was not used
    finally:
        memory.close()


def test_warm_up_loads_only_the_model_and_first_use_backfills(tmp_path: Path) -> None:
    import os
    import time

    from server.memory.edge import EdgeStore
    from server.memory.embedding import DenseModel

    dense_model()  # fails under CI when there is no model at all
    lexical = Memory(lambda: EdgeStore(tmp_path), lexical_model())
    lexical.record_incident(title="Immich thumbnails missing", symptoms="machine-learning container idle")
    lexical.close()
    raw = os.environ.get("DSM_EMBEDDING_MODEL_PATH")
    fresh = DenseModel(Path(raw) if raw else None, None, allow_download=False)
    memory = Memory(lambda: EdgeStore(tmp_path), fresh)
    try:
        assert fresh.state == "not_loaded"
        memory.warm_up()  # returns at once
        deadline = time.monotonic() + 30
        while fresh.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fresh.state == "ready"
        # Warming never takes the shard: another process may be using it.
        assert len(memory.store.scroll(Where(missing_dense=True), 10)) == 1
        memory.search_incidents("thumbnails")  # the first real use fills in the missing vector
        assert memory.store.scroll(Where(missing_dense=True), 10) == []
    finally:
        memory.close()
