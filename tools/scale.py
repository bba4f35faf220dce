"""scale_service: a thin wrapper over server.scale."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from server.runtime import Runtime
from server.scale_rules import Ask, ScaleReport
from tools._common import CHANGES_STACKS, progress, tool_errors
from tools._policy import enforce

_SIZE = r"^[0-9]+(\.[0-9]+)?\s*([bkmgBKMG]|[kmgKMG]i?[bB])?$"


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def scale_service(
        ctx: Context,
        stack: Annotated[str, Field(description="Stack name or directory.")],
        service: Annotated[str, Field(description="Service to scale.")],
        replicas: Annotated[int | None, Field(ge=0, le=50)] = None,
        memory: Annotated[str | None, Field(pattern=_SIZE, description="Memory limit per replica, e.g. 256m.")] = None,
        cpus: Annotated[float | None, Field(gt=0, le=1024, description="CPU limit per replica.")] = None,
        reserve_memory: Annotated[str | None, Field(pattern=_SIZE)] = None,
        reserve_cpus: Annotated[float | None, Field(gt=0, le=1024)] = None,
        dry_run: Annotated[bool, Field(description="The change, host check and suggestion; nothing written.")
                           ] = False,
        confirm: Annotated[bool, Field(description="Replicas sharing a read-write volume; critical stacks.")
                           ] = False,
    ) -> ScaleReport:
        """Set a service's replicas and/or limits; kept in compose.dsm.yaml (the next deploy_stack and
        `docker compose up` keep them) and applied by a deploy of that service (backup, gate, rollback).
        Refused, nothing changed, when it does not fit the host or two copies cannot run (container_name,
        fixed host port). No values, or dry_run: `suggestion` sizes limits from observed usage.
        `deploy` is deploy_stack's report."""
        ask = Ask(replicas=replicas, cpus=cpus, memory=memory, reserve_cpus=reserve_cpus,
                  reserve_memory=reserve_memory)
        gate = await enforce(runtime.settings, ctx, "scale_service", stack, "deploy", confirm=confirm,
                             dry_run=dry_run or ask.empty)
        from server.errors import ConfirmationRequired
        from server.scale import scale_service as scale
        from tools._common import confirm_destructive

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        async def ask_user(question: str) -> bool:
            try:
                await confirm_destructive(ctx, question, False)
            except ConfirmationRequired:
                return False
            return True

        return await scale(runtime, stack, service, ask, dry_run=dry_run, confirm=confirm or gate.human_approved,
                           progress=tell, confirmer=ask_user)
