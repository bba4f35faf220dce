"""Memory tools: search what happened before, record what happened now.

Thin shells over :class:`server.memory.Memory`; the blocking work (embedding, Qdrant) runs in a
worker thread. Importing this module loads neither Qdrant nor the embedding model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from server.memory.models import (
    Deleted,
    Incident,
    IncidentRecorded,
    IncidentSearch,
    MemoryStatus,
    Pattern,
    PatternOutcome,
    PatternRecorded,
    PatternSearch,
    Severity,
)
from server.runtime import Runtime
from tools._common import CHANGES_IDEMPOTENT, READ_ONLY, tool_errors

if TYPE_CHECKING:
    from server.memory.service import Memory

T = TypeVar("T")

DELETES_MEMORY = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
"""Removes a memory record for good; never touches containers. Deleting twice is harmless."""
COUNTS_IN_MEMORY = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
"""Adds to a counter in memory (a pattern's successes/failures): each call counts once more."""

Stack = Annotated[str | None, Field(description="Compose project name, e.g. 'supabase'. Omit for host-wide.")]
Service = Annotated[str | None, Field(description="Service name inside the stack, e.g. 'auth'.")]
Tags = Annotated[list[str] | None, Field(description="Short labels, e.g. ['oom', 'postgres']; at most 20.")]
Since = Annotated[str | None, Field(description="Only records seen since then: ISO 8601 ('2024-05-01', "
                                                "'2024-05-01T10:00:00Z') or a duration back from now "
                                                "('12h', '7d', '2w').")]
IncidentId = Annotated[str, Field(description="The incident_id from record_incident or search_past_incidents.")]
PatternId = Annotated[str, Field(description="The pattern_id from record_deployment_pattern or "
                                             "search_deployment_patterns.")]


def register(server: MCPServer, runtime: Runtime) -> None:
    async def run(fn: Callable[[Memory], T]) -> T:
        def call() -> T:
            return fn(runtime.memory())

        return await anyio.to_thread.run_sync(functools.partial(call))

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_past_incidents(
        query: Annotated[str, Field(description="What is going wrong, in words, and/or pasted error or log "
                                                "lines (timestamps and ids do not need removing).")],
        stack: Stack = None,
        service: Service = None,
        since: Since = None,
        tags: Tags = None,
        limit: Annotated[int, Field(ge=1, le=20, description="How many incidents to return.")] = 5,
    ) -> IncidentSearch:
        """Search the memory of past incidents before you diagnose or fix anything.

        Call this first whenever a deployment fails, a service is unhealthy or a user reports a
        problem: if the same failure happened before, its root_cause and resolution are here and
        you should not solve it twice. Pasting the failing log lines works well: lines with the
        same error signature as a past incident rank first (signature_match=true). Results are
        best first, each with `relevance` (0-1, absolute); hits under 0.25 are left out unless
        their signature matches, and `note` says "nothing similar" when that leaves none. `mode`
        says whether the search used meaning (hybrid) or only words (lexical). Next: apply or
        adapt the resolution; when you have fixed a new problem, call record_incident; when an
        old resolution was wrong or incomplete, call update_incident.
        """
        return await run(lambda m: m.search_incidents(query, stack=stack, service=service, since=since, tags=tags,
                                                      limit=limit))

    @server.tool(annotations=CHANGES_IDEMPOTENT)
    @tool_errors
    async def record_incident(
        title: Annotated[str, Field(description="One line naming the failure, e.g. 'Supabase auth crash-loops "
                                                "before Postgres is ready'.")],
        symptoms: Annotated[str, Field(description="What was observed: errors, states, what users saw.")],
        root_cause: Annotated[str | None, Field(description="Why it happened, once known.")] = None,
        resolution: Annotated[str | None, Field(description="What fixed it, concretely enough to repeat.")] = None,
        stack: Stack = None,
        service: Service = None,
        severity: Annotated[Severity | None, Field(description="critical | high | medium | low; medium when "
                                                                "omitted.")] = None,
        tags: Tags = None,
        log_lines: Annotated[list[str] | None, Field(description="The telling error/log lines, verbatim. They are "
                                                                 "fingerprinted so future pastes of the same "
                                                                 "error find this incident; secrets are masked.")
                             ] = None,
    ) -> IncidentRecorded:
        """Remember an incident so that no later session has to solve it again.

        Call after you have diagnosed (and ideally fixed) a problem, with the root cause and the
        resolution that worked. Recording the same incident again (same title, stack, service
        and symptoms, whatever the timestamps) updates it and counts another occurrence instead
        of duplicating it. Credentials in the text are masked before storing. Returns the
        incident_id; keep it to add the root cause or resolution later with update_incident.
        """
        return await run(lambda m: m.record_incident(
            title=title, symptoms=symptoms, root_cause=root_cause, resolution=resolution, stack=stack,
            service=service, severity=severity, tags=tags or (), log_lines=log_lines or ()))

    @server.tool(annotations=CHANGES_IDEMPOTENT)
    @tool_errors
    async def update_incident(
        incident_id: IncidentId,
        title: Annotated[str | None, Field(description="New title.")] = None,
        symptoms: Annotated[str | None, Field(description="New symptoms (replaces the old text).")] = None,
        root_cause: Annotated[str | None, Field(description="The root cause (replaces the old one).")] = None,
        resolution: Annotated[str | None, Field(description="The resolution (replaces the old one).")] = None,
        severity: Annotated[Severity | None, Field(description="critical | high | medium | low.")] = None,
        tags: Annotated[list[str] | None, Field(description="The full new tag list (replaces the old one).")
                        ] = None,
    ) -> Incident:
        """Correct or complete a recorded incident: add the root cause or resolution found later,
        fix a wrong resolution, change severity or tags. Only the fields you pass change; the id
        stays. Returns the incident as now stored.
        """
        return await run(lambda m: m.update_incident(
            incident_id, title=title, symptoms=symptoms, root_cause=root_cause, resolution=resolution,
            severity=severity, tags=tags))

    @server.tool(annotations=DELETES_MEMORY)
    @tool_errors
    async def delete_incident(incident_id: IncidentId) -> Deleted:
        """Delete a recorded incident for good, e.g. one recorded by mistake or holding wrong advice.
        Prefer update_incident when only part of it is wrong. Deleting an unknown id reports
        deleted=false and changes nothing.
        """
        return await run(lambda m: m.delete_incident(incident_id))

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_deployment_patterns(
        query: Annotated[str, Field(description="The operation you are about to do, e.g. 'update supabase' or "
                                                "'move n8n to a new host'.")],
        stack: Annotated[str | None, Field(description="The stack concerned; patterns for any stack are "
                                                       "included.")] = None,
        service: Service = None,
        operation: Annotated[str | None, Field(description="Only patterns for this operation: deploy, update, "
                                                           "rollback, backup, migrate, ...")] = None,
        limit: Annotated[int, Field(ge=1, le=20)] = 5,
    ) -> PatternSearch:
        """Find procedures that worked before, before you deploy, update, migrate or back up.

        Each pattern has its steps and how often it succeeded or failed (successes, failures,
        last_outcome): prefer patterns with a good record, and read the notes of failures. Next:
        follow or adapt the steps, then call record_pattern_outcome with how it went; if you
        found a better procedure, save it with record_deployment_pattern.
        """
        return await run(lambda m: m.search_patterns(query, stack=stack, service=service, operation=operation,
                                                     limit=limit))

    @server.tool(annotations=CHANGES_IDEMPOTENT)
    @tool_errors
    async def record_deployment_pattern(
        title: Annotated[str, Field(description="What the procedure does, e.g. 'Update Supabase'.")],
        steps: Annotated[list[str], Field(description="The steps in order, each one concrete, e.g. 'dump the "
                                                      "database first', 'migrate auth before rest'.")],
        stack: Annotated[str | None, Field(description="The stack it is for; omit when it applies to any.")
                         ] = None,
        service: Service = None,
        operation: Annotated[str | None, Field(description="deploy, update, rollback, backup, restore, migrate, "
                                                           "rotate-secrets, maintenance, ...")] = None,
        tags: Tags = None,
        notes: Annotated[str | None, Field(description="Caveats, prerequisites, what to check.")] = None,
    ) -> PatternRecorded:
        """Save a deployment procedure that worked, so later sessions can follow it.

        Recording a pattern with the same title and scope again updates its steps and keeps its
        success/failure counts. Returns the pattern_id; report each later use with
        record_pattern_outcome.
        """
        return await run(lambda m: m.record_pattern(title=title, steps=steps, stack=stack, service=service,
                                                    operation=operation, tags=tags or (), notes=notes))

    @server.tool(annotations=COUNTS_IN_MEMORY)
    @tool_errors
    async def record_pattern_outcome(
        pattern_id: PatternId,
        outcome: Annotated[PatternOutcome, Field(description="success or failure.")],
        notes: Annotated[str | None, Field(description="What went wrong or what to watch, for next time.")
                         ] = None,
    ) -> Pattern:
        """Count one use of a deployment pattern as a success or a failure (with notes).
        Call after following a pattern's steps. Returns the pattern with its updated counts.
        """
        return await run(lambda m: m.record_pattern_outcome(pattern_id, outcome, notes))

    @server.tool(annotations=CHANGES_IDEMPOTENT)
    @tool_errors
    async def update_deployment_pattern(
        pattern_id: PatternId,
        title: Annotated[str | None, Field(description="New title.")] = None,
        steps: Annotated[list[str] | None, Field(description="The full new list of steps.")] = None,
        operation: Annotated[str | None, Field(description="New operation label.")] = None,
        tags: Annotated[list[str] | None, Field(description="The full new tag list.")] = None,
        notes: Annotated[str | None, Field(description="New notes.")] = None,
    ) -> Pattern:
        """Improve a deployment pattern (fix a step, add a caveat). Only the fields you pass change;
        the counts stay. Returns the pattern as now stored.
        """
        return await run(lambda m: m.update_pattern(pattern_id, title=title, steps=steps, operation=operation,
                                                    tags=tags, notes=notes))

    @server.tool(annotations=DELETES_MEMORY)
    @tool_errors
    async def delete_deployment_pattern(pattern_id: PatternId) -> Deleted:
        """Delete a deployment pattern for good (wrong or obsolete procedure). Deleting an unknown
        id reports deleted=false and changes nothing.
        """
        return await run(lambda m: m.delete_pattern(pattern_id))

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def memory_status() -> MemoryStatus:
        """Where memory lives (embedded or Qdrant server), whether search is hybrid or lexical and
        why, and how many incidents, patterns and deployments it holds.
        """
        return await run(lambda m: m.status())

