"""Memory benchmark: search latency and recall, ours vs the common baseline, in one run.

Ours: the embedded Qdrant engine (qdrant-edge), hybrid dense + BM25 with RRF, through
``Memory.search_incidents`` (query embedding, BM25, signatures, one batched Qdrant query).
Baseline: what the official Qdrant MCP server does: qdrant-client's local mode
(``QdrantClient(path=...)``), dense vectors only, one ``query_points`` per search, with the
same model and the same vectors.

Stored records: the 48 labelled incidents (tests/memory_data) plus generated distractor
incidents up to 1k and 10k. Queries: the 150 labelled queries (direct, pasted log lines,
paraphrases). Latencies are end-to-end per search with the model loaded and the shard open
("warm"), p50/p95 over every query, two rounds; "retrieval only" repeats the timing with the
query vectors computed beforehand. Recall@3 and MRR are measured at each size.

    DSM_EMBEDDING_MODEL_PATH=.cache/embedding-model .venv/bin/python bench/memory.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from server.memory.edge import EdgeStore  # noqa: E402
from server.memory.embedding import BM25_VERSION, DenseEncoder, DenseModel, sparse_encoder  # noqa: E402
from server.memory.payloads import incident_text as _incident_text  # noqa: E402
from server.memory.service import Memory  # noqa: E402
from server.memory.store import PointData, SearchSpec, Sparse, Where  # noqa: E402
from tests.memory_data.helpers import (  # noqa: E402
    hard_incidents,
    hard_queries,
    incidents,
    queries,
    rank_of,
    record_all,
    score,
)

CACHE = REPO / ".cache" / "bench-memory"
ROUNDS = 2
LIMIT = 5

STACKS = {
    "supabase": ["db", "auth", "rest", "realtime", "storage", "kong", "studio", "meta", "functions", "analytics"],
    "librechat": ["api", "mongodb", "meilisearch", "rag_api", "vectordb"],
    "linkwarden": ["linkwarden", "postgres"], "postiz": ["postiz", "postgres", "redis"],
    "portainer": ["portainer", "agent"], "n8n": ["n8n", "n8n-worker", "postgres", "redis"],
    "vaultwarden": ["vaultwarden"], "netdata": ["netdata"], "immich": ["server", "machine-learning", "redis",
                                                                      "database"],
    "nextcloud": ["app", "db", "redis", "cron"], "gitea": ["gitea", "db", "runner"],
    "jellyfin": ["jellyfin"], "paperless": ["webserver", "broker", "db", "tika", "gotenberg"],
    "homeassistant": ["homeassistant", "mosquitto", "zigbee2mqtt"], "grafana": ["grafana", "prometheus", "loki"],
    "traefik": ["traefik"], "minio": ["minio"], "uptime-kuma": ["uptime-kuma"],
}
EVENTS = ["after the nightly update", "after a host reboot", "under heavy load", "after restoring a backup",
          "after changing the .env file", "after moving the volume", "since the image was re-pulled",
          "after the disk filled up", "after a power outage", "when the cron job runs", "after a proxy change",
          "after scaling to two replicas", "after upgrading the engine", "once a week", "at random times"]
SYMPTOMS = ["health check times out after {n} s", "responds with HTTP {code} to every request",
            "logs show connection reset by peer", "CPU pinned at {n}% for hours", "memory climbs to {n}% then the "
            "container restarts", "requests hang until the client gives up", "log fills with retry warnings",
            "the web UI loads without styles", "scheduled jobs silently skip", "login returns to the sign-in page",
            "queries take {n} seconds", "too many open files errors appear", "certificate verify failed in logs",
            "permission denied writing to its data directory", "exits with code {code}", "DNS lookups time out",
            "thumbnails are not generated", "websocket disconnects every minute", "emails are not sent",
            "backups are incomplete", "configuration key {key} rejected as unknown", "rate limited by the upstream",
            "clock skew warnings in the logs", "the container is marked unhealthy though it serves pages"]
CAUSES = ["a missing environment variable", "a wrong volume mount", "a too small memory limit",
          "an expired certificate", "a stale cache directory", "an incompatible plugin", "a misconfigured proxy",
          "a full disk", "a wrong file owner", "an outdated config schema", "a race at startup",
          "a broken index", "an exhausted connection pool", "a wrong timezone", "a duplicate cron entry",
          "a network that was not attached", "a DNS setting", "a healthcheck that used a missing tool"]
FIXES = ["set the variable and recreated the container", "fixed the mount path", "raised the memory limit",
         "renewed the certificate", "cleared the cache", "disabled the plugin", "fixed the proxy headers",
         "freed disk space and added an alert", "chowned the directory", "migrated the config file",
         "added a healthcheck dependency", "rebuilt the index", "raised the pool size", "set TZ",
         "removed the duplicate job", "attached the network", "set the DNS server", "rewrote the healthcheck"]
KEYS = ["LOG_LEVEL", "BASE_URL", "STORAGE_PATH", "MAX_WORKERS", "CACHE_TTL", "SMTP_HOST", "PUBLIC_URL"]


def filler_incidents(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Plausible distractor incidents on the same and other homelab stacks (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        stack = rng.choice(list(STACKS))
        service = rng.choice(STACKS[stack])
        symptom = rng.choice(SYMPTOMS).format(n=rng.randint(2, 99), code=rng.choice([1, 2, 137, 139, 500, 502, 504]),
                                              key=rng.choice(KEYS))
        other = rng.choice(SYMPTOMS).format(n=rng.randint(2, 99), code=rng.choice([1, 500, 503]), key=rng.choice(KEYS))
        event = rng.choice(EVENTS)
        cause = rng.choice(CAUSES)
        out.append({
            "title": f"{stack} {service} {symptom.split(' ')[0]} problem {event}",
            "symptoms": f"{service} {symptom} {event}; also {other}.",
            "root_cause": f"{cause} in the {service} service",
            "resolution": rng.choice(FIXES),
            "stack": stack, "service": service, "severity": rng.choice(["critical", "high", "medium", "low"]),
            "tags": [], "log_templates": [],
        })
    return out


def embed_cached(encoder: DenseEncoder, texts: list[str]) -> np.ndarray:
    key = hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"vectors-{len(texts)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    started = time.perf_counter()
    vectors = np.array(encoder.embed(texts), dtype=np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    print(f"  (embedded {len(texts)} distractors in {time.perf_counter() - started:.0f} s; cached in {path})",
          file=sys.stderr)
    return vectors


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def timed(fn: Callable[[Any], Any], items: Sequence[Any], rounds: int = ROUNDS) -> list[float]:
    for item in items[:5]:  # warm-up
        fn(item)
    samples = []
    for _ in range(rounds):
        for item in items:
            started = time.perf_counter()
            fn(item)
            samples.append(time.perf_counter() - started)
    return samples


def cpu_times(fn: Callable[[Any], Any], items: Sequence[Any], rounds: int = ROUNDS) -> list[float]:
    """CPU seconds of this process per call (every thread): what a search costs whatever else
    the host runs, where wall time on a shared 2-core host mostly measures the others' load."""
    samples = []
    for _ in range(rounds):
        for item in items:
            started = time.process_time()
            fn(item)
            samples.append(time.process_time() - started)
    return samples


def timed_pair(ours: Callable[[Any], Any], base: Callable[[Any], Any], items: Sequence[Any],
               rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    """Both systems timed query by query, alternating who goes first, so both see the same load."""
    for item in items[:5]:
        ours(item)
        base(item)
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        for i, item in enumerate(items):
            order = ((ours, a), (base, b)) if (i + r) % 2 == 0 else ((base, b), (ours, a))
            for fn, samples in order:
                started = time.perf_counter()
                fn(item)
                samples.append(time.perf_counter() - started)
    return a, b


class Baseline:
    """qdrant-client local mode, dense only: the official Qdrant MCP server's setup."""

    def __init__(self, path: Path) -> None:
        from qdrant_client import QdrantClient, models

        self.m = models
        self.path = path
        self.client = QdrantClient(path=str(path))
        self.client.create_collection("memory", vectors_config={
            "dense": models.VectorParams(size=384, distance=models.Distance.COSINE)})

    def insert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(ids), 500):
            self.client.upsert("memory", [
                self.m.PointStruct(id=ids[i], vector={"dense": vectors[i].tolist()}, payload=payloads[i])
                for i in range(start, min(start + 500, len(ids)))])

    def query(self, vector: Sequence[float], stack: str | None, limit: int = LIMIT) -> list[str]:
        flt = self.m.Filter(must=[self.m.FieldCondition(key="stack", match=self.m.MatchValue(value=stack))]) \
            if stack else None
        points = self.client.query_points("memory", query=list(vector), using="dense", limit=limit,
                                          query_filter=flt).points
        return [str(p.id) for p in points]

    def reopen_seconds(self) -> float:
        from qdrant_client import QdrantClient

        self.client.close()
        started = time.perf_counter()
        self.client = QdrantClient(path=str(self.path))
        self.client.count("memory")
        return time.perf_counter() - started


def points_with_labelled(store: EdgeStore, ids: dict[str, str], encoder: DenseEncoder) -> list[PointData]:
    """The labelled incidents as stored by Memory, re-packed as points for another store."""
    sparse = sparse_encoder()
    hits = store.retrieve(list(ids))
    vectors = encoder.embed([h.payload["text"] for h in hits])
    return [PointData(id=h.id, payload=h.payload, sparse=Sparse(*sparse.document(h.payload["text"])), dense=v)
            for h, v in zip(hits, vectors, strict=True)]


def after_pause(directory: Path, dense: DenseModel, qs: list[dict[str, Any]], pause_s: float = 2.0,
                n: int = 5) -> float:
    """What an agent sees: a search a few seconds after the previous call, the store as the
    server builds it (default lease), the shard opened once beforehand. Median ms of ``n``."""
    store = EdgeStore(directory)
    memory = Memory(lambda: store, dense)
    samples = []
    try:
        memory.search_incidents("warm", limit=1)
        for q in qs[:n]:
            time.sleep(pause_s)
            started = time.perf_counter()
            memory.search_incidents(q["query"], limit=LIMIT)
            samples.append(time.perf_counter() - started)
    finally:
        memory.close()
    return statistics.median(samples) * 1000


DATA_SETS = {"labelled": (incidents, queries), "hard": (hard_incidents, hard_queries)}


def run_size(size: int, encoder: DenseEncoder, fillers: list[dict[str, Any]], filler_vectors: np.ndarray,
             workdir: Path, data_set: str = "labelled") -> dict[str, Any]:
    labelled = DATA_SETS[data_set][0]()
    n_fill = size - len(labelled)
    directory = workdir / f"edge-{size}"
    store = EdgeStore(directory, idle_s=3600.0)
    dense = DenseModel(None, None, allow_download=False)
    dense._encoder, dense._state = encoder, "ready"  # share the loaded model
    dense._done.set()
    memory = Memory(lambda: store, dense)
    ids = record_all(memory, labelled)  # the labelled incidents go through the real write path
    sparse = sparse_encoder()
    points = []
    filler_ids = []
    now = time.time()
    for i, item in enumerate(fillers[:n_fill]):
        payload = {"kind": "incident", **{k: item[k] for k in ("title", "symptoms", "root_cause", "resolution",
                                                              "stack", "service", "severity", "tags")},
                   "signatures": [], "log_templates": [], "occurrences": 1, "first_seen_ts": now - i, "ts": now - i,
                   "bm25": BM25_VERSION}
        payload["text"] = _incident_text(payload)
        pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"filler-{i}"))
        indices, values = sparse.document(payload["text"])
        points.append(PointData(id=pid, payload=payload, sparse=Sparse(indices, values),
                                dense=filler_vectors[i].tolist()))
        filler_ids.append(pid)
    store.upsert(points)
    count = store.count(Where(equals={"kind": "incident"}))
    assert count == size, (count, size)

    # Baseline: the same records and vectors.
    labelled_hits = store.retrieve(list(ids))
    base_ids = [h.id for h in labelled_hits] + filler_ids
    base_vectors = np.vstack([np.array(encoder.embed([h.payload["text"] for h in labelled_hits]), dtype=np.float32),
                              filler_vectors[:n_fill]])
    base_payloads = [{"stack": h.payload.get("stack"), "text": h.payload["text"]} for h in labelled_hits] + [
        {"stack": p.payload["stack"], "text": p.payload["text"]} for p in points]
    baseline = Baseline(workdir / f"local-{size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline.insert(base_ids, base_vectors, base_payloads)

    qs = DATA_SETS[data_set][1]()
    stack_of = {x["key"]: x["stack"] for x in labelled}
    qvecs = {q["query"]: encoder.embed([q["query"]])[0] for q in qs}

    # Recall on the labelled queries, as written (a few carry stack/service filters).
    lexical = Memory(lambda: store, DenseModel(None, None, allow_download=False, enabled=False))
    ours_ranks, lex_ranks, base_ranks = [], [], []
    for q in qs:
        hits = memory.search_incidents(q["query"], stack=q.get("stack"), service=q.get("service"), limit=10)
        ours_ranks.append((rank_of([ids.get(h.incident_id, "?") for h in hits.results], q["expect"]), q["query"]))
        lhits = lexical.search_incidents(q["query"], stack=q.get("stack"), service=q.get("service"), limit=10)
        lex_ranks.append((rank_of([ids.get(h.incident_id, "?") for h in lhits.results], q["expect"]), q["query"]))
        got = baseline.query(qvecs[q["query"]], q.get("stack"), limit=10)
        base_ranks.append((rank_of([ids.get(i, "?") for i in got], q["expect"]), q["query"]))

    # Latency, end to end (query embedding included) and retrieval only (vectors precomputed).
    def ours_e2e(q: dict[str, Any]) -> Any:
        return memory.search_incidents(q["query"], stack=q.get("stack"), limit=LIMIT)

    def base_e2e(q: dict[str, Any]) -> Any:
        return baseline.query(encoder.embed([q["query"]])[0], q.get("stack"))

    def ours_retrieval(q: dict[str, Any]) -> Any:
        where = Where(equals={"kind": "incident", **({"stack": q["stack"]} if q.get("stack") else {})})
        indices, values = sparse.query(q["query"])
        return store.search([SearchSpec(where=where, sparse=Sparse(indices, values), dense=qvecs[q["query"]],
                                        limit=LIMIT)])

    def base_retrieval(q: dict[str, Any]) -> Any:
        return baseline.query(qvecs[q["query"]], q.get("stack"))

    # Equal work: the very same hybrid query (prefetch dense + BM25, RRF) on qdrant-client local mode.
    from server.memory.remote import ClientStore

    hybrid_local = ClientStore.local(str(workdir / f"local-hybrid-{size}"))
    hybrid_local.upsert([*points_with_labelled(store, ids, encoder), *points])

    def local_hybrid_retrieval(q: dict[str, Any]) -> Any:
        where = Where(equals={"kind": "incident", **({"stack": q["stack"]} if q.get("stack") else {})})
        indices, values = sparse.query(q["query"])
        return hybrid_local.search([SearchSpec(where=where, sparse=Sparse(indices, values),
                                               dense=qvecs[q["query"]], limit=LIMIT)])

    filtered = [{**q, "stack": stack_of[q["expect"]]} for q in qs if stack_of[q["expect"]]]
    latency = {
        "e2e": timed_pair(ours_e2e, base_e2e, qs),
        "e2e_stack_filter": timed_pair(ours_e2e, base_e2e, filtered[:60], rounds=1),
        "retrieval": timed_pair(ours_retrieval, base_retrieval, qs),
        "hybrid_equal_work": timed_pair(ours_retrieval, local_hybrid_retrieval, qs[:30], rounds=1),
        "embed_only": (timed(lambda q: encoder.embed([q["query"]]), qs), []),
        "e2e_cpu": (cpu_times(ours_e2e, qs), cpu_times(base_e2e, qs)),
    }
    hybrid_local.close()
    # Shard-open cost: let the lease go, then time the next open (median of 5).
    opens = []
    for _ in range(5):
        store.lease.release()
        memory.search_incidents("warm", limit=1)
        opens.append(store.lease.last_open_s)
    base_open = baseline.reopen_seconds()
    memory.close()
    paused = after_pause(directory, dense, qs)
    baseline.client.close()
    kind_of = {q["query"]: q["kind"] for q in qs}
    kinds = sorted(set(kind_of.values()))

    def per_kind(ranks: list[tuple[int | None, str]]) -> dict[str, Any]:
        return {k: score([r for r in ranks if kind_of[r[1]] == k]) for k in kinds}

    return {"size": size, "ours": score(ours_ranks), "lexical": score(lex_ranks), "baseline": score(base_ranks),
            "ours_kind": per_kind(ours_ranks), "lexical_kind": per_kind(lex_ranks),
            "baseline_kind": per_kind(base_ranks), "n_queries": len(qs), "kind_n": {
                k: sum(1 for v in kind_of.values() if v == k) for k in kinds},
            "latency": latency, "open_ms": statistics.median(opens) * 1000, "base_open_ms": base_open * 1000,
            "paused_ms": paused}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--set", choices=sorted(DATA_SETS), default="labelled", dest="data_set",
                        help="labelled: 48 incidents / 150 queries; hard: 42 confusable incidents / 126 queries "
                             "(multi-line log pastes, paraphrases, why-questions)")
    args = parser.parse_args()
    raw = os.environ.get("DSM_EMBEDDING_MODEL_PATH")
    model = DenseModel(Path(raw) if raw else None, None, allow_download=False)
    encoder = model.get()
    if encoder is None:
        print(f"bench/memory.py: no embedding model ({model.detail}); run `make model`", file=sys.stderr)
        return 2
    print(f"model: {model.detail}", file=sys.stderr)
    largest = max(args.sizes)
    fillers = filler_incidents(largest - len(DATA_SETS[args.data_set][0]()))
    texts = [_incident_text({**f, "log_templates": []}) for f in fillers]
    vectors = embed_cached(encoder, texts)
    workdir = Path(tempfile.mkdtemp(prefix="dsm-bench-memory-"))
    results = []
    try:
        for size in args.sizes:
            print(f"  running {size} records ...", file=sys.stderr)
            results.append(run_size(size, encoder, fillers, vectors, workdir, args.data_set))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n== memory search: ours (embedded Qdrant, hybrid dense+BM25 RRF) vs baseline "
          "(qdrant-client local mode, dense only) ==")
    print(f"set {args.data_set}: {results[0]['n_queries']} queries ({', '.join(results[0]['kind_n'])}) "
          f"x {ROUNDS} rounds; "
          f"limit {LIMIT}; machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    header = f"{'records':>8} {'what':<38} {'ours p50':>9} {'p95':>8} {'base p50':>9} {'p95':>8} {'ratio p50':>10}"
    print(header)
    for r in results:
        for key, label in (("e2e", "search, end to end (embed + query)"),
                           ("e2e_stack_filter", "search filtered by stack (60 q), e2e"),
                           ("retrieval", "retrieval only (vectors given)"),
                           ("hybrid_equal_work", "same hybrid query in local mode (30 q)")):
            ours, base = r["latency"][key]
            o50, o95 = percentiles(ours)
            b50, b95 = percentiles(base)
            print(f"{r['size']:>8} {label:<38} {o50:>7.2f}ms {o95:>6.2f}ms {b50:>7.2f}ms {b95:>6.2f}ms "
                  f"{b50 / o50:>9.1f}x")
        e50, e95 = percentiles(r["latency"]["embed_only"][0])
        print(f"{r['size']:>8} {'of which query embedding (both pay it)':<38} {e50:>7.2f}ms {e95:>6.2f}ms")
        (c50, c95), (d50, d95) = (percentiles(x) for x in r["latency"]["e2e_cpu"])
        print(f"{r['size']:>8} {'search e2e, CPU time (load-independent)':<38} {c50:>7.2f}ms {c95:>6.2f}ms "
              f"{d50:>7.2f}ms {d95:>6.2f}ms {d50 / c50:>9.1f}x")
    print()
    print(f"{'records':>8} {'recall@3 / MRR':<20} {'ours hybrid':>14} {'ours BM25-only':>16} {'baseline dense':>16}")
    for r in results:
        cells = [f"{s.recall_at_3:.3f} / {s.mrr:.3f}" for s in (r["ours"], r["lexical"], r["baseline"])]
        print(f"{r['size']:>8} {'all ' + str(r['n_queries']) + ' queries':<20} {cells[0]:>14} {cells[1]:>16} "
              f"{cells[2]:>16}")
        for kind, n in r["kind_n"].items():
            row = [f"{s.recall_at_3:.3f} / {s.mrr:.3f}" for s in (r["ours_kind"][kind], r["lexical_kind"][kind],
                                                                 r["baseline_kind"][kind])]
            print(f"{r['size']:>8} {f'{n} {kind}':<20} {row[0]:>14} {row[1]:>16} {row[2]:>16}")
    print()
    for r in results:
        print(f"shard open (embedded, {r['size']} records): {r['open_ms']:.0f} ms median of 5 "
              f"(baseline local-mode open: {r['base_open_ms']:.0f} ms); a search 2 s after the previous "
              f"call, default lease: {r['paused_ms']:.1f} ms median of 5")
    big = results[-1]
    o50 = percentiles(big["latency"]["e2e"][0])[0]
    b50 = percentiles(big["latency"]["e2e"][1])[0]
    print()
    print(f"targets at {big['size']} records: warm search p50 {o50:.1f} ms (<= 20 ms: "
          f"{'met' if o50 <= 20 else 'NOT met'}); end-to-end speed-up vs baseline {b50 / o50:.1f}x "
          f"(>= 10x: {'met' if b50 / o50 >= 10 else 'NOT met'}); recall@3 {big['ours'].recall_at_3:.3f} "
          f"(>= 0.9: {'met' if big['ours'].recall_at_3 >= 0.9 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
