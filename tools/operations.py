"""Reading the operation journal: operation_status and stack_history (read-only)."""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver import MCPServer
from pydantic import Field

from server.operations.views import OperationView, StackHistory
from server.runtime import Runtime
from tools._common import READ_ONLY, tool_errors


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def operation_status(
        operation_id: Annotated[str, Field(description="From a deploy, rollback, backup or busy answer.")],
    ) -> OperationView:
        """Progress and result of a stack operation (journal shared by all server processes).

        Poll this when a call timed out or answered `busy` instead of retrying: the operation
        runs to its end anyway. `running` until then, `phases` show progress, `result` holds the
        final report; `interrupted`: its server died, deploy or roll back again.
        """
        from server.errors import OperationNotFound

        record = None
        for rt in runtime.targets().all():  # each engine keeps its own journal (server.targets)
            record = await anyio.to_thread.run_sync(rt.operations().get, operation_id.strip())
            if record is not None:
                break
        if record is None:
            raise OperationNotFound(
                f"no operation {operation_id!r} in the journal",
                state="nothing was read or changed",
                next_step="call stack_history(stack) for the stack's recent operation ids",
            )
        return OperationView.of(record)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def stack_history(
        stack: Annotated[str, Field(description="Stack name or directory.")],
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> StackHistory:
        """A stack's deployments and rollbacks, newest first: status, times, image and digest per
        service, the backup taken, and `changes` against the one before: services recreated or
        removed, images changed, env keys changed (names only), one-shots run. Use it to find the
        deployment to roll back to, or what changed recently.
        """
        rt = await runtime.for_stack(stack)  # the journal of the engine the stack runs on
        name = await anyio.to_thread.run_sync(_stack_name, rt, stack)
        return await anyio.to_thread.run_sync(_history, rt, name, limit)


def _history(runtime: Runtime, name: str, limit: int) -> StackHistory:
    from server.operations.changes import changes_of
    from server.operations.views import DeploymentEntry

    # A few older records too: the oldest entry shown is compared with the deployment before it.
    records = runtime.operations().history(name, limit=limit + 10)
    changes = changes_of(runtime.settings, records)
    return StackHistory(stack=name, deployments=[DeploymentEntry.of(r, changes[r.operation_id])
                                                 for r in records[:limit]])


def _stack_name(runtime: Runtime, stack: str) -> str:
    """The project name for ``stack`` (name or directory); a stack gone from disk still has history."""
    from server.errors import StackNotFound
    from server.operations.models import STACK_NAME
    from server.stacks import check_argument, resolve_stack

    try:
        return resolve_stack(runtime.settings, stack).name
    except StackNotFound:
        value = check_argument(stack, "stack").strip()
        if STACK_NAME.match(value) and runtime.operations().history(value, limit=1):
            return value
        raise
