"""Deployment patterns: record, get, update, count outcomes of, delete and search procedures that worked.

A mixin of :class:`~server.memory.service.Memory`, written against :class:`.core.MemoryCore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.memory.core import MemoryCore
from server.memory.errors import MemoryInputError
from server.memory.inputs import (
    MAX_HISTORY,
    MAX_QUERY,
    MAX_TAGS,
    MAX_TITLE,
    clean_scope,
    clean_steps,
    clean_tags,
    optional_text,
    required_text,
    scrubbed_text,
    search_limit,
)
from server.memory.models import Deleted, Pattern, PatternHit, PatternRecorded, PatternSearch
from server.memory.payloads import (
    ANY_SCOPE,
    clip_text,
    derived_id,
    norm_title,
    pattern_fields,
    pattern_text,
    to_pattern,
)
from server.memory.store import Hit, Where
from server.memory.timespec import iso


class PatternMemory(MemoryCore):
    """The deployment-pattern operations of :class:`~server.memory.service.Memory`."""

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
        title = scrubbed_text(title, "title", MAX_TITLE)
        clean = clean_steps(steps)
        stack, service = clean_scope(stack), clean_scope(service)
        pattern_id = derived_id("pattern", norm_title(title), stack or "", service or "")
        encoder = self._encoder()
        with self.store.transaction():
            existing = self.store.retrieve([pattern_id])
            old = existing[0].payload if existing else {}
            now = self._clock()
            payload: dict[str, Any] = {
                "kind": "pattern",
                "title": title,
                "steps": clean,
                "stack": stack or ANY_SCOPE,
                "service": service or ANY_SCOPE,
                "operation": clean_scope(operation) or old.get("operation"),
                "tags": sorted(set(old.get("tags", [])) | set(clean_tags(tags)))[:MAX_TAGS],
                "notes": optional_text(notes, "notes") if notes is not None else old.get("notes"),
                "successes": int(old.get("successes", 0)),
                "failures": int(old.get("failures", 0)),
                "last_outcome": old.get("last_outcome"),
                "last_used_ts": old.get("last_used_ts"),
                "history": old.get("history", []),
                "created_ts": old.get("created_ts", now),
                "ts": now,
            }
            payload["text"] = pattern_text(payload)
            self._write(pattern_id, payload, encoder)
        return PatternRecorded(pattern_id=pattern_id, created=not existing, successes=payload["successes"],
                               failures=payload["failures"])

    def get_pattern(self, pattern_id: str) -> Pattern:
        return to_pattern(self._get(pattern_id, "pattern"))

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
                payload["title"] = scrubbed_text(title, "title", MAX_TITLE)
            if steps is not None:
                payload["steps"] = clean_steps(steps)
            if operation is not None:
                payload["operation"] = clean_scope(operation)
            if tags is not None:
                payload["tags"] = clean_tags(tags)
            if notes is not None:
                payload["notes"] = optional_text(notes, "notes") or None
            payload["ts"] = self._clock()
            payload["text"] = pattern_text(payload)
            self._write(pattern_id, payload, encoder)
        return to_pattern(Hit(id=pattern_id, score=0.0, payload=payload))

    def record_pattern_outcome(self, pattern_id: str, outcome: str, notes: str | None = None) -> Pattern:
        """Count one more success or failure of a pattern (no re-embedding)."""
        if outcome not in ("success", "failure"):
            raise MemoryInputError(f"outcome={outcome!r} is not success or failure")
        with self.store.transaction():
            payload = dict(self._get(pattern_id, "pattern").payload)
            now = self._clock()
            key = "successes" if outcome == "success" else "failures"
            entry = {"time": iso(now), "outcome": outcome,
                     "notes": clip_text(optional_text(notes, "notes"), 500) or ""}
            update = {
                key: int(payload.get(key, 0)) + 1,
                "last_outcome": outcome,
                "last_used_ts": now,
                "history": [*payload.get("history", []), entry][-MAX_HISTORY:],
            }
            self.store.set_payload(pattern_id, update)
            payload.update(update)
        return to_pattern(Hit(id=pattern_id, score=0.0, payload=payload))

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
        query = required_text(query, "query", MAX_QUERY)
        limit = search_limit(limit)
        where = Where(equals={"kind": "pattern"})
        if clean_scope(stack):
            where.any_of["stack"] = [clean_scope(stack) or "", ANY_SCOPE]
        if clean_scope(service):
            where.any_of["service"] = [clean_scope(service) or "", ANY_SCOPE]
        if clean_scope(operation):
            where.equals["operation"] = clean_scope(operation) or ""
        found = self._search(query, where, limit, [])
        results = [
            PatternHit(pattern_id=h.id, score=round(h.score, 6), **pattern_fields(h.payload, clip=True))
            for h in found.hits
        ]
        return PatternSearch(results=results, mode=found.mode, note=found.note)
