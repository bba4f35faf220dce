"""backup_stack: take, list, verify and restore a stack's backups."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from server.backups.models import BackupResult
from server.errors import DsmError
from server.runtime import Runtime
from server.safety import proposals
from server.safety.proposals import Proposal
from tools._common import (
    CHANGES_STACKS,
    ApprovalArg,
    Confirmation,
    OptionalId,
    ask_user,
    checked_id,
    on_target,
    progress,
    require_confirmation,
    runtime_of,
    tool_errors,
)
from tools._policy import asker, enforce, planned_if_asked


async def _restore_question(runtime: Runtime, stack: str, action: str, backup_id: str | None) -> str | None:
    """What the user is asked before a restore; None when there is nothing to ask (yet)."""
    if action != "restore":
        return None
    from server.backups import service

    try:
        location = service.resolve_stack(runtime, stack)
        manifest = service.pick(service.store_of(runtime), location.name, backup_id)
        return service.restore_question(manifest, await service.is_critical(runtime, location))
    except DsmError:
        return None  # the tool body raises the same error, with its advice


async def _ask_before_restore(stack: str, action: str, backup_id: str | None, ctx: Context,
                              shown: Annotated[Proposal | None, Resolve(_restore_plan)]) -> Any:
    # A Resolve(...) resolver runs before the tool body: the SDK asks the user mid-call on the
    # handshake protocols and through an InputRequiredResult on 2026-07-28. When the safety gate
    # asks (with the plan), this question is not asked too.
    if shown is not None:
        return None
    try:
        runtime = await runtime_of(ctx).for_stack(stack)
    except DsmError:
        return None  # the tool body raises the same error, with its advice
    return ask_user(ctx, await _restore_question(runtime, stack, action, backup_id))



async def _restore_plan(stack: str, ctx: Context, action: str = "list", backup_id: str | None = None,
                        approval: str | None = None) -> Proposal | None:
    """The restore a person approves, with its plan (resolver: asked on every protocol)."""
    if action != "restore":
        return None
    return await planned_if_asked(ctx, "backup_stack", stack, "restore", approval,
                                  on_target(ctx, stack, lambda rt: proposals.restore(rt, stack, backup_id)))


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def backup_stack(
        stack: Annotated[str, Field(description="Stack name or directory.")],
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_restore_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_restore_plan))],
        confirmed: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_restore)],
        action: Annotated[
            Literal["create", "list", "restore", "verify"],
            Field(description="verify: restore drill, changes nothing; restore: destructive."),
        ] = "list",
        backup_id: Annotated[OptionalId, Field(description="For verify/restore; default the newest.")] = None,
        confirm: Annotated[bool, Field(description="restore only: true once the user agreed.")] = False,
        approval: ApprovalArg = None,
    ) -> BackupResult:
        """Back up a stack, list its backups, prove one restores, or restore one.

        create: files and .env, running images (pinned as dsm-pin/ tags), named volumes (with
        checksums), database dumps (postgres, mysql/mariadb, mongo, x-dsm hooks). list: each
        backup's original image references, dump sizes and row counts. verify: restores into
        scratch volumes and databases and compares; the stack is untouched. restore: overwrites
        the stack's volumes and databases (user confirms). Files and images: rollback.
        """
        from server.backups import service
        from server.backups.store import BACKUP_ID

        # "null" or "" is not "the newest": only a JSON null (or leaving it out) means that.
        checked_id(backup_id, "backup_id", BACKUP_ID, "from backup_stack(action='list')")
        gate = None
        rt = await runtime.for_stack(stack, mutating=action != "list")  # verify makes scratch volumes
        if action in ("create", "restore"):
            gate = await enforce(runtime.settings, ctx, "backup_stack", stack, action, confirm=confirm, code=approval,
                                 shown=shown, answer=asked if shown is not None else confirmed,
                                 plan=(lambda: proposals.restore(rt, stack, backup_id)) if action == "restore"
                                 else None)
        location = service.resolve_stack(rt, stack)

        async def report(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        if action == "list":
            return service.listing(rt, location)
        if action == "create":
            return await service.create(rt, location, "backup_stack create", report)
        if action == "verify":
            return await service.verify(rt, location, backup_id, report)
        manifest = service.pick(service.store_of(rt), location.name, backup_id)
        critical = await service.is_critical(rt, location)
        if gate is None or not gate.human_approved:  # a person approved this very plan: ask once
            require_confirmation(confirmed, service.restore_question(manifest, critical), confirm)
        return await service.restore(rt, manifest, report)
