"""Running stacks: stack_status, stack_logs, diagnose_stack (read-only), stack_control, and the
live resources ``stack://{stack}/status`` and ``stack://{stack}/events``."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from server.monitor.models import ControlResult, Diagnosis, LogsPage, StatusReport
from server.runtime import Runtime
from server.safety import proposals
from server.safety.proposals import Proposal
from tools._common import CHANGES_STACKS, READ_ONLY, ApprovalArg, Confirmation, OptionalId, runtime_of, tool_errors
from tools._policy import asker, enforce, planned_if_asked

StackArg = Annotated[str, Field(description="Stack name or directory.")]


async def _control_plan(ctx: Context, stack: str, action: str, services: list[str] | None = None,
                        approval: str | None = None) -> Proposal | None:
    """What a person approves before stop/remove of a critical stack (resolver: every protocol)."""

    async def plan() -> Proposal:
        return await proposals.control(await runtime_of(ctx).for_stack(stack), stack, action, services)

    return await planned_if_asked(ctx, "stack_control", stack, action, approval, plan)


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def stack_status(
        stack: Annotated[str | None, Field(description="Stack name or directory; omit for all.")]
        = None,
        with_stats: Annotated[bool, Field(description="Also sample CPU % and memory (about 0.3 s more).")] = False,
    ) -> StatusReport:
        """Live state of each service of one stack or of every Compose stack on the host: state,
        health, restarts, exit_code, oom_killed, ports, networks, image, memory limit (CPU and
        memory with with_stats), maintenance, what the watcher saw and did, and drift (changes by
        hand since our last deployment). `managed: false`: outside the stacks root (observe only)."""
        if runtime.targets().several:
            from server.multiengine import status_every_engine

            return await status_every_engine(runtime, stack, with_stats)
        from server.monitor.status import stack_status as run

        return await run(runtime, stack, with_stats)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def stack_logs(
        stack: StackArg,
        service: Annotated[str | None, Field(description="One service; omit for all.")] = None,
        since: Annotated[OptionalId, Field(description="'15m', '2h', '1d' or an ISO time.")] = None,
        grep: Annotated[str | None, Field(description="Case-insensitive substring lines must contain.")] = None,
        regex: Annotated[bool, Field(description="grep is a regular expression (time-bounded).")] = False,
        limit: Annotated[int, Field(ge=1, le=2000, description="Most lines returned (newest).")] = 200,
        until: Annotated[OptionalId, Field(description="Page back: pass the previous page's next_until.")] = None,
    ) -> LogsPage:
        """Recent container log lines of a stack, oldest first, credentials redacted; `truncated` with
        `next_until` when older lines exist, `cut` when lines or the page were shortened."""
        from server.monitor.logs import stack_logs as run

        return await run(await runtime.for_stack(stack), stack, service, since, grep, limit, until, regex)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def diagnose_stack(
        stack: StackArg,
        service: Annotated[str | None, Field(description="Limit to one service.")] = None,
    ) -> Diagnosis:
        """Troubleshoot a running stack: findings (rule, severity, evidence, fix, likely_cause) on
        exits, OOM kills, restart loops, healthchecks, log errors, connectivity to each
        dependency, resource pressure, port conflicts, drift from the files (the fix names the
        call) and changes since the last deployment; similar past incidents, next_steps.
        `healthy`: no error finding. Takes a few seconds."""
        from server.monitor.diagnose import diagnose_stack as run

        rt = await runtime.for_stack(stack)
        found = await run(rt, stack, service)
        return found.model_copy(update={"engine": rt.target.name}) if runtime.targets().several else found

    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def stack_control(
        stack: StackArg,
        action: Literal["start", "stop", "restart", "remove", "maintenance_on", "maintenance_off"],
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_control_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_control_plan))],
        services: Annotated[list[str] | None, Field(description="Only these services (default: all).")] = None,
        until: Annotated[str | None, Field(description="maintenance_on: end, '2h' from now or ISO time.")] = None,
        reason: Annotated[str | None, Field(description="Why; kept in the journal.")] = None,
        confirm: Annotated[bool, Field(description="Required for stop/remove of a critical stack.")] = False,
        approval: ApprovalArg = None,
    ) -> ControlResult:
        """Start, stop, restart or remove a stack's containers (volumes are never removed), or put
        it in maintenance (the watcher leaves it alone and alerts are muted until `until`).
        Journaled and locked like a deploy: a busy stack is refused naming the operation.
        start/restart then wait up to 60 s on the health gate and report `health`."""
        rt = await runtime.for_stack(stack, mutating=True)
        gate = await enforce(runtime.settings, ctx, "stack_control", stack, action, confirm=confirm, code=approval,
                             shown=shown, answer=asked,
                             plan=lambda: proposals.control(rt, stack, action, services))
        from server.monitor.control import stack_control as run
        from tools._common import confirm_destructive

        async def ask(question: str) -> None:
            if not gate.human_approved:  # a person approved this very plan: ask once
                await confirm_destructive(ctx, question, confirm)

        return await run(rt, stack, action, services=services, until=until, reason=reason, confirm=ask)

    @server.resource("stack://{stack}/status", mime_type="application/json",
                     description="Live status of a stack (as stack_status).")
    async def stack_status_resource(stack: str) -> str:
        from server.monitor.status import stack_status as run

        return (await run(await runtime.for_stack(stack), stack, False)).model_dump_json()

    @server.resource("stack://{stack}/events", mime_type="application/json",
                     description="Engine events of a stack's containers in the last hour, and the watcher's actions.")
    async def stack_events_resource(stack: str) -> str:
        from server.monitor.events import recent_events

        return await recent_events(await runtime.for_stack(stack), stack)
