"""scale_service: a thin wrapper over server.scale."""

from __future__ import annotations

from typing import Annotated

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from server.runtime import Runtime
from server.safety import proposals
from server.safety.proposals import Proposal
from server.scale_models import Ask, ScaleReport
from tools._common import CHANGES_STACKS, ApprovalArg, Confirmation, confirmer, on_target, progress, tool_errors
from tools._policy import asker, enforce, planned_if_asked


async def _scale_plan(ctx: Context, stack: str, service: str, replicas: int | None = None, memory: str | None = None,
                      cpus: float | None = None, reserve_memory: str | None = None,
                      reserve_cpus: float | None = None, dry_run: bool = False,
                      approval: str | None = None) -> Proposal | None:
    """The change a person is asked to approve (resolver: every protocol)."""

    if dry_run:
        return None
    change = {"replicas": replicas, "memory": memory, "cpus": cpus, "reserve_memory": reserve_memory,
              "reserve_cpus": reserve_cpus}
    return await planned_if_asked(ctx, "scale_service", stack, "deploy", approval, on_target(
        ctx, stack, lambda rt: proposals.scale(rt, stack, service, change)))


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def scale_service(
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_scale_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_scale_plan))],
        stack: Annotated[str, Field(description="Stack name or directory.")],
        service: Annotated[str, Field(description="Service to scale.")],
        replicas: Annotated[int | None, Field(ge=0, le=50)] = None,
        memory: Annotated[str | None, Field(max_length=20, description="e.g. 256m")] = None,
        cpus: Annotated[float | None, Field(gt=0, le=1024)] = None,
        reserve_memory: Annotated[str | None, Field(max_length=20)] = None,
        reserve_cpus: Annotated[float | None, Field(gt=0, le=1024)] = None,
        dry_run: Annotated[bool, Field(description="Change, host check, suggestion; nothing written.")] = False,
        confirm: Annotated[bool, Field(description="Replicas sharing a read-write volume; critical stack.")
                           ] = False,
        approval: ApprovalArg = None,
    ) -> ScaleReport:
        """Set a service's replicas and/or per-replica limits, kept in compose.dsm.yaml (deploy_stack and
        `docker compose up` keep them), applied by a deploy of the service (backup, gate, rollback).
        Refused, nothing changed, if it does not fit the host or two copies cannot run. No values or
        dry_run: `suggestion` from observed usage."""
        ask = Ask(replicas=replicas, cpus=cpus, memory=memory, reserve_cpus=reserve_cpus,
                  reserve_memory=reserve_memory)
        change = {"replicas": replicas, "memory": memory, "cpus": cpus, "reserve_memory": reserve_memory,
                  "reserve_cpus": reserve_cpus}
        rt = await runtime.for_stack(stack, mutating=not (dry_run or ask.empty))
        gate = await enforce(runtime.settings, ctx, "scale_service", stack, "deploy", confirm=confirm,
                             dry_run=dry_run or ask.empty, code=approval, shown=shown, answer=asked,
                             plan=lambda: proposals.scale(rt, stack, service, change))
        from server.scale import scale_service as scale

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        return await scale(rt, stack, service, ask, dry_run=dry_run,
                           confirm=gate.human_approved or (confirm and gate.fallback == "model"),
                           progress=tell, confirmer=confirmer(ctx))
