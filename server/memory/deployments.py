"""Deployments (automatic capture): record one deployment's outcome, list them newest first.

A mixin of :class:`~server.memory.service.Memory`, written against :class:`.core.MemoryCore`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from server.memory.core import MemoryCore
from server.memory.embedding import BM25_VERSION, sparse_encoder
from server.memory.errors import MemoryInputError
from server.memory.fingerprint import line_signatures
from server.memory.inputs import MAX_SIGNATURES, clean_log_lines, clean_scope, one_of, optional_text
from server.memory.models import DEPLOYMENT_OUTCOMES, DeploymentList
from server.memory.payloads import deployment_text, derived_id, to_deployment
from server.memory.store import PointData, Sparse


class DeploymentMemory(MemoryCore):
    """The deployment operations of :class:`~server.memory.service.Memory`."""

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
        stack_name = clean_scope(stack)
        if not stack_name:
            raise MemoryInputError("stack is empty", next_step="pass the stack (Compose project) name")
        one_of(outcome, "outcome", DEPLOYMENT_OUTCOMES)
        names = sorted({s for s in (clean_scope(x) for x in services) if s})
        signatures = line_signatures(clean_log_lines(log_lines))
        now = self._clock() if finished_at is None else finished_at
        deployment_id = derived_id("deployment", operation_id) if operation_id else str(uuid.uuid4())
        payload: dict[str, Any] = {
            "kind": "deployment",
            "stack": stack_name,
            "service": names,
            "image_digests": {str(k): str(v) for k, v in (image_digests or {}).items()},
            "outcome": outcome,
            "duration_s": None if duration_s is None else round(float(duration_s), 3),
            "strategy": clean_scope(strategy),
            "error_signatures": list(signatures)[:MAX_SIGNATURES],
            "log_templates": list(signatures.values())[:MAX_SIGNATURES],
            "notes": optional_text(notes, "notes"),
            "pattern_id": pattern_id,
            "incident_id": incident_id,
            "operation_id": operation_id,
            "ts": now,
        }
        payload["text"] = deployment_text(payload)
        payload["bm25"] = BM25_VERSION
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
            one_of(outcome, "outcome", DEPLOYMENT_OUTCOMES)
            where.equals["outcome"] = outcome
        hits = self.store.scroll(where, max(1, min(int(limit), 100)))
        return DeploymentList(deployments=[to_deployment(h) for h in hits])
