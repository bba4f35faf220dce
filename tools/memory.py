"""Memory tools: search what happened before, record what happened now.

Thin shells over :class:`server.memory.Memory`; the blocking work (embedding, Qdrant) runs in a
worker thread. Importing this module loads neither Qdrant nor the embedding model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from server.memory.errors import MemoryInputError
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

ALIASES = {
    "update_incident": "record_incident(incident_id=...)",
    "delete_incident": "forget(kind='incident', id=...)",
    "record_pattern_outcome": "record_deployment_pattern(pattern_id=..., outcome=...)",
    "update_deployment_pattern": "record_deployment_pattern(pattern_id=...)",
    "delete_deployment_pattern": "forget(kind='pattern', id=...)",
}
"""Names published before the memory's ten tools were folded into six: callable, not listed."""

DELETES_MEMORY = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
"""Removes a memory record for good; never touches containers. Deleting twice is harmless."""
COUNTS_IN_MEMORY = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
"""Adds to a counter in memory (a pattern's successes/failures): each call counts once more."""

Stack = Annotated[str | None, Field(description="Compose project; omit for host-wide.")]
Service = Annotated[str | None, Field(description="Service in the stack.")]
Tags = Annotated[list[str] | None, Field(description="Labels, e.g. ['oom'] (at most 20).")]
Since = Annotated[str | None, Field(description="Seen since: ISO time or '12h', '7d'.")]
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
        query: Annotated[str, Field(description="What goes wrong, in words and/or pasted log lines.")],
        stack: Stack = None,
        service: Service = None,
        since: Since = None,
        tags: Tags = None,
        limit: Annotated[int, Field(ge=1, le=20)] = 5,
    ) -> IncidentSearch:
        """Search past incidents before you diagnose or fix anything: a failure seen before has its
        root_cause and resolution here.

        Pasted log lines with a past incident's error signature rank first (signature_match).
        `relevance` is absolute (0-1): hits under 0.25 are left out unless their signature
        matches, and `note` says "nothing similar" when none is left. After fixing a new
        problem: record_incident.
        """
        return await run(lambda m: m.search_incidents(query, stack=stack, service=service, since=since, tags=tags,
                                                      limit=limit))

    @server.tool(annotations=CHANGES_IDEMPOTENT)
    @tool_errors
    async def record_incident(
        title: Annotated[str | None, Field(description="One line naming the failure.")] = None,
        symptoms: Annotated[str | None, Field(description="What was observed.")] = None,
        root_cause: Annotated[str | None, Field(description="Why it happened, once known.")] = None,
        resolution: Annotated[str | None, Field(description="What fixed it, concretely.")] = None,
        stack: Stack = None,
        service: Service = None,
        severity: Annotated[Severity | None, Field(description="Default medium.")] = None,
        tags: Tags = None,
        log_lines: Annotated[list[str] | None, Field(description="Telling error lines, verbatim (fingerprinted).")
                             ] = None,
        incident_id: Annotated[str | None, Field(description="Update this one: the fields you pass.")] = None,
    ) -> IncidentRecorded:
        """Remember an incident (title and symptoms) after you diagnosed or fixed it, with the
        root cause and the resolution that worked; with incident_id, correct or complete one.
        Recorded again: one more occurrence. Credentials are masked before storing.
        """
        if incident_id is not None:
            if log_lines:
                raise MemoryInputError("log_lines are kept only when an incident is recorded, not on an update",
                                       state="nothing was changed", next_step="call again without log_lines")
            return await run(lambda m: m.update_incident_recorded(
                incident_id, title=title, symptoms=symptoms, root_cause=root_cause, resolution=resolution,
                severity=severity, tags=tags, stack=stack, service=service))
        if title is None or symptoms is None:
            raise MemoryInputError("a new incident needs a title and symptoms", state="nothing was recorded",
                                   next_step="pass title and symptoms, or incident_id to update one")
        return await run(lambda m: m.record_incident(
            title=title, symptoms=symptoms, root_cause=root_cause, resolution=resolution, stack=stack,
            service=service, severity=severity, tags=tags or (), log_lines=log_lines or ()))

    @server.tool(annotations=DELETES_MEMORY)
    @tool_errors
    async def forget(
        kind: Annotated[Literal["incident", "pattern"], Field(description="What the id names.")],
        id: Annotated[str, Field(description="incident_id or pattern_id.")],
    ) -> Deleted:
        """Delete a stored incident or deployment pattern for good (a mistake, wrong or obsolete
        advice); to fix part of one, record it again with its id. An unknown id: deleted=false."""
        return await run(lambda m: m.delete_incident(id) if kind == "incident" else m.delete_pattern(id))

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def search_deployment_patterns(
        query: Annotated[str, Field(description="What you are about to do, e.g. 'update supabase'.")],
        stack: Annotated[str | None, Field(description="Also patterns for any stack.")] = None,
        service: Service = None,
        operation: Annotated[str | None, Field(description="deploy, update, rollback, backup, migrate, ...")] = None,
        limit: Annotated[int, Field(ge=1, le=20)] = 5,
    ) -> PatternSearch:
        """Find procedures that worked before, before you deploy, update, migrate or back up.

        Each has its steps and record (successes, failures, last_outcome): prefer a good record,
        read the notes of failures. Then report how it went: record_deployment_pattern(pattern_id,
        outcome).
        """
        return await run(lambda m: m.search_patterns(query, stack=stack, service=service, operation=operation,
                                                     limit=limit))

    @server.tool(annotations=COUNTS_IN_MEMORY)
    @tool_errors
    async def record_deployment_pattern(
        title: Annotated[str | None, Field(description="What it does, e.g. 'Update Supabase'.")] = None,
        steps: Annotated[list[str] | None, Field(description="The steps in order, each concrete.")] = None,
        stack: Annotated[str | None, Field(description="Omit when it applies to any stack.")] = None,
        service: Service = None,
        operation: Annotated[str | None, Field(description="deploy, update, rollback, backup, migrate, ...")
                             ] = None,
        tags: Tags = None,
        notes: Annotated[str | None, Field(description="Caveats; with outcome: what happened.")] = None,
        pattern_id: Annotated[str | None, Field(description="Update this one and/or count an outcome.")] = None,
        outcome: Annotated[PatternOutcome | None, Field(description="Count one use as success or failure.")
                           ] = None,
    ) -> PatternRecorded:
        """Save a deployment procedure that worked (title and steps) for later sessions; with
        pattern_id, improve one or count one more use (outcome, notes). The same title and
        scope again updates the steps and keeps the counts.
        """
        if pattern_id is None:
            if title is None or steps is None:
                raise MemoryInputError("a new pattern needs a title and steps", state="nothing was recorded",
                                       next_step="pass title and steps, or pattern_id to update one")
            recorded = await run(lambda m: m.record_pattern(title=title, steps=steps, stack=stack, service=service,
                                                            operation=operation, tags=tags or (), notes=notes))
            if outcome is None:
                return recorded
            pattern_id = recorded.pattern_id
        pid = pattern_id

        def change(m: Memory) -> PatternRecorded:
            if stack is not None or service is not None:
                raise MemoryInputError("a pattern's stack and service are part of its identity",
                                       state="nothing was changed",
                                       next_step="record a new pattern for the other scope")
            pattern = m.get_pattern(pid)
            if any(v is not None for v in (title, steps, operation, tags)) or (notes is not None and outcome is None):
                pattern = m.update_pattern(pid, title=title, steps=steps, operation=operation, tags=tags,
                                           notes=notes if outcome is None else None)
            if outcome is not None:
                pattern = m.record_pattern_outcome(pid, outcome, notes)
            return PatternRecorded(pattern_id=pattern.pattern_id, created=False, successes=pattern.successes,
                                   failures=pattern.failures)

        return await run(change)

    # -- aliases: the names published before the memory tools were folded (issue 17). They stay
    # callable for one release, unlisted (DockerStackServer.hide), and then go.

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
        """Deprecated alias: record_incident(incident_id=...). Changes the fields you pass."""
        return await run(lambda m: m.update_incident(
            incident_id, title=title, symptoms=symptoms, root_cause=root_cause, resolution=resolution,
            severity=severity, tags=tags))

    @server.tool(annotations=DELETES_MEMORY)
    @tool_errors
    async def delete_incident(incident_id: IncidentId) -> Deleted:
        """Deprecated alias: forget(kind='incident', id=...). Deletes an incident for good."""
        return await run(lambda m: m.delete_incident(incident_id))

    @server.tool(annotations=COUNTS_IN_MEMORY)
    @tool_errors
    async def record_pattern_outcome(
        pattern_id: PatternId,
        outcome: Annotated[PatternOutcome, Field(description="success or failure.")],
        notes: Annotated[str | None, Field(description="What went wrong or what to watch, for next time.")
                         ] = None,
    ) -> Pattern:
        """Deprecated alias: record_deployment_pattern(pattern_id=..., outcome=...). Counts one use."""
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
        """Deprecated alias: record_deployment_pattern(pattern_id=...). Changes the fields you pass."""
        return await run(lambda m: m.update_pattern(pattern_id, title=title, steps=steps, operation=operation,
                                                    tags=tags, notes=notes))

    @server.tool(annotations=DELETES_MEMORY)
    @tool_errors
    async def delete_deployment_pattern(pattern_id: PatternId) -> Deleted:
        """Deprecated alias: forget(kind='pattern', id=...). Deletes a pattern for good."""
        return await run(lambda m: m.delete_pattern(pattern_id))

    hide = getattr(server, "hide", None)
    if hide is not None:
        hide(*ALIASES)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def memory_status() -> MemoryStatus:
        """Where memory lives (embedded or Qdrant server), whether search is hybrid or lexical and
        why, and how many incidents, patterns and deployments it holds.
        """
        return await run(lambda m: m.status())

