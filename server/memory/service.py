"""Memory: incidents, deployment patterns and deployments, over one :class:`Store`.

All methods block (embedding, Qdrant I/O); tools call them through ``anyio.to_thread``. Nothing
happens at construction: the store opens on the first call and the dense model loads on the
first call that needs it or in :meth:`Memory.warm_up`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from server.memory.embedding import DenseEncoder, DenseModel, sparse_encoder
from server.memory.errors import MemoryInputError, MemoryRecordNotFound
from server.memory.fingerprint import line_signatures, strip_placeholders, text_signature
from server.memory.models import (
    DEPLOYMENT_OUTCOMES,
    SEVERITIES,
    Deleted,
    Deployment,
    DeploymentList,
    Incident,
    IncidentHit,
    IncidentRecorded,
    IncidentSearch,
    MemoryStatus,
    Pattern,
    PatternHit,
    PatternRecorded,
    PatternSearch,
    SearchMode,
)
from server.memory.store import Hit, PointData, SearchSpec, Sparse, Store, Where
from server.memory.timespec import iso, parse_since
from server.redact import Scrubber

log = logging.getLogger("docker_stack_mcp.memory")

_NS = uuid.UUID("6f1c7e0a-3d7b-4c2e-9a51-5d0c2f3b8e41")
ANY_SCOPE = "*"
"""Stored as a pattern's stack/service when it applies to every stack/service."""
MAX_TITLE = 300
MAX_TEXT = 20_000
MAX_QUERY = 10_000
MAX_LOG_LINES_IN = 500
MAX_LOG_LINES_KEPT = 50
MAX_LOG_LINE = 1000
MAX_TAGS = 20
MAX_STEPS = 50
MAX_SIGNATURES = 200
MAX_HISTORY = 10
OUT_TEXT = 1500
"""Long fields are cut to this in search results, to keep tool output bounded."""
MODEL_WAIT_S = 15.0
BACKFILL_BATCH = 64
_TAG = re.compile(r"^[\w.:/+-]{1,64}$")

_SCRUB = Scrubber()
"""Everything stored in memory is searched by later sessions: credentials are masked first."""


def _clean_scope(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value or None


def _clip(text: str | None, limit: int = OUT_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _norm_title(title: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\d+", "#", title.strip().lower()))


class Memory:
    """The memory service. Build with :func:`server.memory.open_memory`; tests build it directly."""

    def __init__(self, store_factory: Callable[[], Store], dense: DenseModel, *,
                 clock: Callable[[], float] = time.time, model_wait_s: float = MODEL_WAIT_S) -> None:
        self._store_factory = store_factory
        self._store: Store | None = None
        self._dense = dense
        self._clock = clock
        self._model_wait_s = model_wait_s
        self._lock = threading.Lock()
        self._backfilled = False

    # -- life cycle -----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = self._store_factory()
            return self._store

    def warm_up(self, *, delay_s: float = 0.0) -> None:
        """Load the embedding model in a daemon thread.

        Only the model: the store is left closed so that a server spawned for one unrelated call
        never takes the shard from another process. Vectors written without the model are filled
        in on the first real use.
        """

        def run() -> None:
            if delay_s:
                time.sleep(delay_s)
            try:
                self._encoder()
            except Exception:
                log.exception("memory warm-up failed")

        threading.Thread(target=run, name="dsm-memory-warmup", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- incidents ------------------------------------------------------------------------

    def record_incident(
        self,
        *,
        title: str,
        symptoms: str,
        root_cause: str | None = None,
        resolution: str | None = None,
        stack: str | None = None,
        service: str | None = None,
        severity: str | None = None,
        tags: Sequence[str] = (),
        log_lines: Sequence[str] = (),
        source: str = "agent",
        deployment_id: str | None = None,
        image_digests: dict[str, str] | None = None,
        time_to_recover_s: float | None = None,
        outcome: str | None = None,
        occurred_at: float | None = None,
    ) -> IncidentRecorded:
        """Store an incident; the same title + scope + symptoms' signature updates the existing one."""
        title = _required(_SCRUB(title), "title", MAX_TITLE)
        symptoms = _required(_SCRUB(symptoms), "symptoms", MAX_TEXT)
        root_cause = _optional(root_cause, "root_cause")
        resolution = _optional(resolution, "resolution")
        stack, service = _clean_scope(stack), _clean_scope(service)
        if severity is not None and severity not in SEVERITIES:
            raise MemoryInputError(f"severity={severity!r} is not one of {', '.join(SEVERITIES)}",
                                   next_step="pass critical, high, medium or low")
        tags = _tags(tags)
        lines = _log_lines(log_lines)
        signatures = line_signatures([*lines, symptoms])
        incident_id = str(uuid.uuid5(_NS, "\n".join(
            ["incident", _norm_title(title), stack or "", service or "", text_signature(symptoms)])))
        now = self._clock() if occurred_at is None else occurred_at
        encoder = self._encoder()
        with self.store.transaction():
            existing = self.store.retrieve([incident_id])
            old = existing[0].payload if existing else {}
            payload: dict[str, Any] = {
                "kind": "incident",
                "title": title,
                "symptoms": symptoms,
                "root_cause": root_cause if root_cause is not None else old.get("root_cause"),
                "resolution": resolution if resolution is not None else old.get("resolution"),
                "stack": stack,
                "service": service,
                "severity": severity or old.get("severity") or "medium",
                "tags": sorted(set(old.get("tags", [])) | set(tags))[:MAX_TAGS],
                "log_lines": _merge_lines(old.get("log_lines", []), lines),
                "signatures": list(dict.fromkeys([*old.get("signatures", []), *signatures]))[:MAX_SIGNATURES],
                "log_templates": list(dict.fromkeys([*old.get("log_templates", []),
                                                     *signatures.values()]))[:MAX_SIGNATURES],
                "occurrences": int(old.get("occurrences", 0)) + 1,
                "first_seen_ts": min(float(old.get("first_seen_ts", now)), now),
                "ts": max(float(old.get("ts", now)), now),
                "updated_ts": self._clock(),
                "source": source if source != "agent" or not old else old.get("source", source),
                "deployment_id": deployment_id or old.get("deployment_id"),
                "image_digests": image_digests or old.get("image_digests") or {},
                "time_to_recover_s": time_to_recover_s if time_to_recover_s is not None
                else old.get("time_to_recover_s"),
                "outcome": outcome or old.get("outcome"),
            }
            payload["text"] = _incident_text(payload)
            self._write(incident_id, payload, encoder)
        return IncidentRecorded(incident_id=incident_id, created=not existing, occurrences=payload["occurrences"],
                                signatures=payload["signatures"], mode=_mode(encoder))

    def get_incident(self, incident_id: str) -> Incident:
        return _incident(self._get(incident_id, "incident"))

    def update_incident(
        self,
        incident_id: str,
        *,
        title: str | None = None,
        symptoms: str | None = None,
        root_cause: str | None = None,
        resolution: str | None = None,
        severity: str | None = None,
        tags: Sequence[str] | None = None,
        stack: str | None = None,
        service: str | None = None,
    ) -> Incident:
        """Change the given fields of an incident (its id stays); returns the incident as stored."""
        if severity is not None and severity not in SEVERITIES:
            raise MemoryInputError(f"severity={severity!r} is not one of {', '.join(SEVERITIES)}")
        encoder = self._encoder()
        with self.store.transaction():
            hit = self._get(incident_id, "incident")
            payload = dict(hit.payload)
            if title is not None:
                payload["title"] = _required(_SCRUB(title), "title", MAX_TITLE)
            if symptoms is not None:
                payload["symptoms"] = _required(_SCRUB(symptoms), "symptoms", MAX_TEXT)
                sigs = line_signatures([payload["symptoms"], *payload.get("log_lines", [])])
                payload["signatures"] = list(sigs)[:MAX_SIGNATURES]
                payload["log_templates"] = list(sigs.values())[:MAX_SIGNATURES]
            for key, value in (("root_cause", root_cause), ("resolution", resolution)):
                if value is not None:
                    payload[key] = _optional(value, key) or None
            if severity is not None:
                payload["severity"] = severity
            if tags is not None:
                payload["tags"] = _tags(tags)
            if stack is not None:
                payload["stack"] = _clean_scope(stack)
            if service is not None:
                payload["service"] = _clean_scope(service)
            payload["updated_ts"] = self._clock()
            payload["text"] = _incident_text(payload)
            self._write(incident_id, payload, encoder)
        return _incident(Hit(id=incident_id, score=0.0, payload=payload))

    def delete_incident(self, incident_id: str) -> Deleted:
        return self._delete(incident_id, "incident")

    def search_incidents(
        self,
        query: str,
        *,
        stack: str | None = None,
        service: str | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        tags: Sequence[str] | None = None,
        severity: str | None = None,
        limit: int = 5,
    ) -> IncidentSearch:
        """Hybrid search over incidents; lines of the query that match stored error signatures rank first."""
        query = _required(query, "query", MAX_QUERY)
        limit = _limit(limit)
        where = self._where("incident", stack=stack, service=service, since=since, until=until, tags=tags)
        if severity is not None:
            if severity not in SEVERITIES:
                raise MemoryInputError(f"severity={severity!r} is not one of {', '.join(SEVERITIES)}")
            where.equals["severity"] = severity
        signatures = list(line_signatures([query]))
        encoder = self._encoder()
        self._maybe_backfill(encoder)
        hits, matched = self._search(query, where, limit, encoder, signatures)
        results = [
            IncidentHit(
                incident_id=h.id,
                title=h.payload.get("title", ""),
                score=round(h.score, 6),
                stack=h.payload.get("stack"),
                service=h.payload.get("service"),
                severity=h.payload.get("severity", "medium"),
                symptoms=_clip(h.payload.get("symptoms", "")) or "",
                root_cause=_clip(h.payload.get("root_cause")),
                resolution=_clip(h.payload.get("resolution")),
                time=iso(float(h.payload.get("ts", 0))),
                first_seen=iso(float(h.payload.get("first_seen_ts", h.payload.get("ts", 0)))),
                occurrences=int(h.payload.get("occurrences", 1)),
                tags=list(h.payload.get("tags", [])),
                signature_match=h.id in matched,
            )
            for h in hits
        ]
        return IncidentSearch(results=results, mode=_mode(encoder), note=self._note(encoder))

    # -- deployment patterns --------------------------------------------------------------

    def record_pattern(
        self,
        *,
        title: str,
        steps: Sequence[str],
        stack: str | None = None,
        service: str | None = None,
        operation: str | None = None,
        tags: Sequence[str] = (),
        notes: str | None = None,
    ) -> PatternRecorded:
        """Store a procedure that worked; the same title + scope updates the existing pattern."""
        title = _required(_SCRUB(title), "title", MAX_TITLE)
        clean_steps = _steps(steps)
        stack, service = _clean_scope(stack), _clean_scope(service)
        pattern_id = str(uuid.uuid5(_NS, "\n".join(["pattern", _norm_title(title), stack or "", service or ""])))
        encoder = self._encoder()
        with self.store.transaction():
            existing = self.store.retrieve([pattern_id])
            old = existing[0].payload if existing else {}
            now = self._clock()
            payload: dict[str, Any] = {
                "kind": "pattern",
                "title": title,
                "steps": clean_steps,
                "stack": stack or ANY_SCOPE,
                "service": service or ANY_SCOPE,
                "operation": _clean_scope(operation) or old.get("operation"),
                "tags": sorted(set(old.get("tags", [])) | set(_tags(tags)))[:MAX_TAGS],
                "notes": _optional(notes, "notes") if notes is not None else old.get("notes"),
                "successes": int(old.get("successes", 0)),
                "failures": int(old.get("failures", 0)),
                "last_outcome": old.get("last_outcome"),
                "last_used_ts": old.get("last_used_ts"),
                "history": old.get("history", []),
                "created_ts": old.get("created_ts", now),
                "ts": now,
            }
            payload["text"] = _pattern_text(payload)
            self._write(pattern_id, payload, encoder)
        return PatternRecorded(pattern_id=pattern_id, created=not existing, successes=payload["successes"],
                               failures=payload["failures"])

    def get_pattern(self, pattern_id: str) -> Pattern:
        return _pattern(self._get(pattern_id, "pattern"))

    def update_pattern(
        self,
        pattern_id: str,
        *,
        title: str | None = None,
        steps: Sequence[str] | None = None,
        operation: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
    ) -> Pattern:
        encoder = self._encoder()
        with self.store.transaction():
            payload = dict(self._get(pattern_id, "pattern").payload)
            if title is not None:
                payload["title"] = _required(_SCRUB(title), "title", MAX_TITLE)
            if steps is not None:
                payload["steps"] = _steps(steps)
            if operation is not None:
                payload["operation"] = _clean_scope(operation)
            if tags is not None:
                payload["tags"] = _tags(tags)
            if notes is not None:
                payload["notes"] = _optional(notes, "notes") or None
            payload["ts"] = self._clock()
            payload["text"] = _pattern_text(payload)
            self._write(pattern_id, payload, encoder)
        return _pattern(Hit(id=pattern_id, score=0.0, payload=payload))

    def record_pattern_outcome(self, pattern_id: str, outcome: str, notes: str | None = None) -> Pattern:
        """Count one more success or failure of a pattern (no re-embedding)."""
        if outcome not in ("success", "failure"):
            raise MemoryInputError(f"outcome={outcome!r} is not success or failure")
        with self.store.transaction():
            payload = dict(self._get(pattern_id, "pattern").payload)
            now = self._clock()
            key = "successes" if outcome == "success" else "failures"
            entry = {"time": iso(now), "outcome": outcome, "notes": _clip(_optional(notes, "notes"), 500) or ""}
            update = {
                key: int(payload.get(key, 0)) + 1,
                "last_outcome": outcome,
                "last_used_ts": now,
                "history": [*payload.get("history", []), entry][-MAX_HISTORY:],
            }
            self.store.set_payload(pattern_id, update)
            payload.update(update)
        return _pattern(Hit(id=pattern_id, score=0.0, payload=payload))

    def delete_pattern(self, pattern_id: str) -> Deleted:
        return self._delete(pattern_id, "pattern")

    def search_patterns(
        self,
        query: str,
        *,
        stack: str | None = None,
        service: str | None = None,
        operation: str | None = None,
        limit: int = 5,
    ) -> PatternSearch:
        """Patterns for the query; with a stack (service), patterns for any stack (service) come too."""
        query = _required(query, "query", MAX_QUERY)
        limit = _limit(limit)
        where = Where(equals={"kind": "pattern"})
        if _clean_scope(stack):
            where.any_of["stack"] = [_clean_scope(stack) or "", ANY_SCOPE]
        if _clean_scope(service):
            where.any_of["service"] = [_clean_scope(service) or "", ANY_SCOPE]
        if _clean_scope(operation):
            where.equals["operation"] = _clean_scope(operation) or ""
        encoder = self._encoder()
        self._maybe_backfill(encoder)
        hits, _ = self._search(query, where, limit, encoder, [])
        results = [
            PatternHit(pattern_id=h.id, score=round(h.score, 6), **_pattern_fields(h.payload, clip=True))
            for h in hits
        ]
        return PatternSearch(results=results, mode=_mode(encoder), note=self._note(encoder))

    # -- deployments (automatic capture) --------------------------------------------------

    def record_deployment(
        self,
        *,
        stack: str,
        services: Sequence[str],
        outcome: str,
        image_digests: dict[str, str] | None = None,
        duration_s: float | None = None,
        strategy: str | None = None,
        log_lines: Sequence[str] = (),
        notes: str | None = None,
        pattern_id: str | None = None,
        incident_id: str | None = None,
        operation_id: str | None = None,
        finished_at: float | None = None,
    ) -> str:
        """Store one deployment (no dense vector: deployments are listed by filters, not meaning).

        With ``operation_id`` the id is derived from it, so a retried call does not duplicate.
        """
        stack_name = _clean_scope(stack)
        if not stack_name:
            raise MemoryInputError("stack is empty", next_step="pass the stack (Compose project) name")
        if outcome not in DEPLOYMENT_OUTCOMES:
            raise MemoryInputError(f"outcome={outcome!r} is not one of {', '.join(DEPLOYMENT_OUTCOMES)}")
        names = sorted({s for s in (_clean_scope(x) for x in services) if s})
        signatures = line_signatures(_log_lines(log_lines))
        now = self._clock() if finished_at is None else finished_at
        deployment_id = str(uuid.uuid5(_NS, f"deployment\n{operation_id}")) if operation_id else str(uuid.uuid4())
        payload: dict[str, Any] = {
            "kind": "deployment",
            "stack": stack_name,
            "service": names,
            "image_digests": {str(k): str(v) for k, v in (image_digests or {}).items()},
            "outcome": outcome,
            "duration_s": None if duration_s is None else round(float(duration_s), 3),
            "strategy": _clean_scope(strategy),
            "error_signatures": list(signatures)[:MAX_SIGNATURES],
            "log_templates": list(signatures.values())[:MAX_SIGNATURES],
            "notes": _optional(notes, "notes"),
            "pattern_id": pattern_id,
            "incident_id": incident_id,
            "operation_id": operation_id,
            "ts": now,
        }
        payload["text"] = " ".join(
            [stack_name, *names, outcome, payload["strategy"] or "", payload["notes"] or "",
             *(strip_placeholders(t) for t in payload["log_templates"])])
        indices, values = sparse_encoder().document(payload["text"])
        self.store.upsert([PointData(id=deployment_id, payload=payload, sparse=Sparse(indices, values))])
        return deployment_id

    def list_deployments(
        self,
        *,
        stack: str | None = None,
        service: str | None = None,
        outcome: str | None = None,
        since: str | float | None = None,
        limit: int = 10,
    ) -> DeploymentList:
        """Recorded deployments, newest first."""
        where = self._where("deployment", stack=stack, service=service, since=since)
        if outcome is not None:
            if outcome not in DEPLOYMENT_OUTCOMES:
                raise MemoryInputError(f"outcome={outcome!r} is not one of {', '.join(DEPLOYMENT_OUTCOMES)}")
            where.equals["outcome"] = outcome
        hits = self.store.scroll(where, max(1, min(int(limit), 100)))
        return DeploymentList(deployments=[_deployment(h) for h in hits])

    # -- status ---------------------------------------------------------------------------

    def status(self) -> MemoryStatus:
        encoder = self._encoder(wait_s=0.0)
        store = self.store
        counts = {kind: store.count(Where(equals={"kind": kind})) for kind in ("incident", "pattern", "deployment")}
        return MemoryStatus(backend="server" if store.backend == "server" else "embedded",
                            location=store.location, mode=_mode(encoder),
                            model_state=self._dense.state, model_detail=self._dense.detail,
                            incidents=counts["incident"], patterns=counts["pattern"],
                            deployments=counts["deployment"])

    # -- internals ------------------------------------------------------------------------

    def _encoder(self, wait_s: float | None = None) -> DenseEncoder | None:
        return self._dense.get(self._model_wait_s if wait_s is None else wait_s)

    def _note(self, encoder: DenseEncoder | None) -> str | None:
        if encoder is not None:
            return None
        return f"BM25-only search: {self._dense.detail or 'the embedding model is not loaded'}"

    def _where(self, kind: str, *, stack: str | None = None, service: str | None = None,
               since: str | float | None = None, until: str | float | None = None,
               tags: Sequence[str] | None = None) -> Where:
        where = Where(equals={"kind": kind})
        if _clean_scope(stack):
            where.equals["stack"] = _clean_scope(stack) or ""
        if _clean_scope(service):
            where.equals["service"] = _clean_scope(service) or ""
        if tags:
            where.any_of["tags"] = _tags(tags)
        gte = _time(since, self._clock())
        lte = _time(until, self._clock())
        if gte is not None or lte is not None:
            where = Where(equals=where.equals, any_of=where.any_of, ts_gte=gte, ts_lte=lte)
        return where

    def _search(self, query: str, where: Where, limit: int, encoder: DenseEncoder | None,
                signatures: Sequence[str]) -> tuple[list[Hit], set[str]]:
        indices, values = sparse_encoder().query(query)
        dense = encoder.embed([query])[0] if encoder is not None else None
        sparse = Sparse(indices, values)
        prefetch = max(4 * limit, 32)
        specs = [SearchSpec(where=where, sparse=sparse, dense=dense, limit=limit, prefetch_limit=prefetch)]
        if signatures:
            by_signature = Where(equals=where.equals, any_of={**where.any_of, "signatures": list(signatures)},
                                 ts_gte=where.ts_gte, ts_lte=where.ts_lte)
            specs.append(SearchSpec(where=by_signature, sparse=sparse, dense=dense, limit=limit,
                                    prefetch_limit=prefetch))
        answers = self.store.search(specs)
        matched = answers[1] if len(answers) > 1 else []
        seen: set[str] = set()
        ordered: list[Hit] = []
        for hit in [*matched, *answers[0]]:
            if hit.id not in seen:
                seen.add(hit.id)
                ordered.append(hit)
        return ordered[:limit], {h.id for h in matched}

    def _write(self, point_id: str, payload: dict[str, Any], encoder: DenseEncoder | None) -> None:
        indices, values = sparse_encoder().document(payload["text"])
        dense = encoder.embed([payload["text"]])[0] if encoder is not None else None
        self.store.upsert([PointData(id=point_id, payload=payload, sparse=Sparse(indices, values), dense=dense)])

    def _get(self, point_id: str, kind: str) -> Hit:
        found = self.store.retrieve([_uuid(point_id, kind)])
        if not found or found[0].payload.get("kind") != kind:
            tool = "search_past_incidents" if kind == "incident" else "search_deployment_patterns"
            raise MemoryRecordNotFound(f"no {kind} has id {point_id}", state="nothing was changed",
                                       next_step=f"find the id with {tool}")
        return found[0]

    def _delete(self, point_id: str, kind: str) -> Deleted:
        pid = _uuid(point_id, kind)
        with self.store.transaction():
            found = self.store.retrieve([pid])
            if found and found[0].payload.get("kind") != kind:
                raise MemoryRecordNotFound(f"{point_id} is a {found[0].payload.get('kind')}, not a {kind}",
                                           state="nothing was deleted")
            if found:
                self.store.delete([pid])
        return Deleted(id=pid, kind=kind, deleted=bool(found))  # type: ignore[arg-type]

    def _maybe_backfill(self, encoder: DenseEncoder | None) -> None:
        if encoder is not None and not self._backfilled:
            self._backfill_dense()

    def _backfill_dense(self, budget: int = 2048) -> int:
        """Give a dense vector to points written while the model was unavailable."""
        encoder = self._encoder()
        if encoder is None:
            return 0
        done = 0
        where = Where(any_of={"kind": ["incident", "pattern"]}, missing_dense=True)
        while done < budget:
            with self.store.transaction():
                hits = self.store.scroll(where, BACKFILL_BATCH)
                if not hits:
                    break
                vectors = encoder.embed([h.payload.get("text", "") for h in hits])
                self.store.set_dense({h.id: v for h, v in zip(hits, vectors, strict=True)})
            done += len(hits)
        self._backfilled = True
        if done:
            log.info("memory: added dense vectors to %d records written in BM25-only mode", done)
        return done


# -- payload <-> models ---------------------------------------------------------------------


def _mode(encoder: DenseEncoder | None) -> SearchMode:
    return "hybrid" if encoder is not None else "lexical"


def _incident_text(p: dict[str, Any]) -> str:
    parts = [p["title"], p["symptoms"], p.get("root_cause") or "", p.get("resolution") or "",
             " ".join(strip_placeholders(t) for t in p.get("log_templates", [])[:20]),
             " ".join(x for x in (p.get("stack"), p.get("service")) if x), " ".join(p.get("tags", []))]
    return "\n".join(part for part in parts if part)


def _pattern_text(p: dict[str, Any]) -> str:
    scope = " ".join(x for x in (p.get("stack"), p.get("service"), p.get("operation")) if x and x != ANY_SCOPE)
    parts = [p["title"], scope, "\n".join(p.get("steps", [])), p.get("notes") or "", " ".join(p.get("tags", []))]
    return "\n".join(part for part in parts if part)


def _incident(hit: Hit) -> Incident:
    p = hit.payload
    return Incident(
        incident_id=hit.id, title=p.get("title", ""), symptoms=p.get("symptoms", ""),
        root_cause=p.get("root_cause"), resolution=p.get("resolution"), stack=p.get("stack"),
        service=p.get("service"), severity=p.get("severity", "medium"), tags=list(p.get("tags", [])),
        log_lines=list(p.get("log_lines", [])), signatures=list(p.get("signatures", [])),
        first_seen=iso(float(p.get("first_seen_ts", p.get("ts", 0)))), last_seen=iso(float(p.get("ts", 0))),
        occurrences=int(p.get("occurrences", 1)), source=p.get("source", "agent"),
        deployment_id=p.get("deployment_id"), image_digests=dict(p.get("image_digests") or {}),
        time_to_recover_s=p.get("time_to_recover_s"), outcome=p.get("outcome"),
    )


def _pattern_fields(p: dict[str, Any], *, clip: bool = False) -> dict[str, Any]:
    def scope(value: Any) -> str | None:
        return None if value in (None, ANY_SCOPE) else str(value)

    last_used = p.get("last_used_ts")
    return {
        "title": p.get("title", ""),
        "steps": [(_clip(s, 500) or "") if clip else s for s in p.get("steps", [])],
        "stack": scope(p.get("stack")),
        "service": scope(p.get("service")),
        "operation": p.get("operation"),
        "successes": int(p.get("successes", 0)),
        "failures": int(p.get("failures", 0)),
        "last_outcome": p.get("last_outcome"),
        "last_used": iso(float(last_used)) if last_used else None,
        "tags": list(p.get("tags", [])),
        "notes": _clip(p.get("notes")) if clip else p.get("notes"),
    }


def _pattern(hit: Hit) -> Pattern:
    return Pattern(pattern_id=hit.id, history=list(hit.payload.get("history", [])), **_pattern_fields(hit.payload))


def _deployment(hit: Hit) -> Deployment:
    p = hit.payload
    return Deployment(
        deployment_id=hit.id, stack=p.get("stack", ""), services=list(p.get("service") or []),
        image_digests=dict(p.get("image_digests") or {}), outcome=p.get("outcome", "success"),
        duration_s=p.get("duration_s"), time=iso(float(p.get("ts", 0))), strategy=p.get("strategy"),
        error_signatures=list(p.get("error_signatures", [])), notes=p.get("notes"),
        pattern_id=p.get("pattern_id"), incident_id=p.get("incident_id"), operation_id=p.get("operation_id"),
    )


# -- input checks ---------------------------------------------------------------------------


def _required(value: str | None, name: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise MemoryInputError(f"{name} is empty", next_step=f"pass a non-empty {name}")
    if len(text) > limit:
        raise MemoryInputError(f"{name} has {len(text)} characters, more than {limit}",
                               next_step=f"shorten {name}; put long logs in log_lines")
    return text


def _optional(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    text = _SCRUB(value.strip())
    if len(text) > MAX_TEXT:
        raise MemoryInputError(f"{name} has {len(text)} characters, more than {MAX_TEXT}")
    return text or None


def _tags(tags: Iterable[str]) -> list[str]:
    out = sorted({t.strip().lower() for t in tags if t and t.strip()})
    bad = [t for t in out if not _TAG.match(t)]
    if bad:
        raise MemoryInputError(f"tags {bad} are not simple words (letters, digits, . : / + - _; at most 64)")
    if len(out) > MAX_TAGS:
        raise MemoryInputError(f"{len(out)} tags given, at most {MAX_TAGS} are kept per record")
    return out


def _steps(steps: Sequence[str]) -> list[str]:
    if isinstance(steps, str):
        steps = [s for s in steps.splitlines()]
    clean = [_SCRUB(s.strip()) for s in steps if s and s.strip()]
    if not clean:
        raise MemoryInputError("steps is empty", next_step="pass the procedure as a list of steps")
    if len(clean) > MAX_STEPS or any(len(s) > 2000 for s in clean):
        raise MemoryInputError(f"steps: at most {MAX_STEPS} steps of at most 2000 characters each")
    return clean


def _log_lines(lines: Sequence[str]) -> list[str]:
    if isinstance(lines, str):
        lines = lines.splitlines()
    if len(lines) > MAX_LOG_LINES_IN:
        lines = list(lines)[-MAX_LOG_LINES_IN:]
    out: list[str] = []
    for raw in lines:
        for line in str(raw).splitlines():
            line = _SCRUB(line.rstrip())[:MAX_LOG_LINE]
            if line.strip():
                out.append(line)
    return out


def _merge_lines(old: Sequence[str], new: Sequence[str]) -> list[str]:
    merged = list(dict.fromkeys([*old, *new]))
    return merged[-MAX_LOG_LINES_KEPT:]


def _limit(limit: int) -> int:
    if not 1 <= int(limit) <= 20:
        raise MemoryInputError(f"limit={limit} is outside 1..20")
    return int(limit)


def _time(value: str | float | None, now: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return parse_since(value, now=now)


def _uuid(value: str, kind: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise MemoryRecordNotFound(f"{value!r} is not a {kind} id (ids are UUIDs)",
                                   next_step=f"use the {kind}_id returned by a search") from None
