"""check_updates and update_stack: thin wrappers over server/updates/."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from mcp.types import ToolAnnotations
from pydantic import Field

from server.deploy.report import DeployReport
from server.runtime import Runtime
from server.safety import proposals
from server.safety.proposals import Proposal
from server.updates.check import UpdatesReport
from tools._common import (
    CHANGES_STACKS,
    PLAN_ID,
    ApprovalArg,
    Confirmation,
    OptionalId,
    checked_id,
    confirmer,
    on_target,
    progress,
    tool_errors,
)
from tools._policy import asker, enforce, planned_if_asked

READS_REGISTRIES = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                   open_world_hint=True)
"""Observes only, but asks the images' registries (outside this host)."""


async def _update_plan(ctx: Context, stack: str, services: list[str] | None = None,
                       images: dict[str, str] | None = None, to: str = "digest", strategy: str = "auto",
                       dry_run: bool = False, approval: str | None = None) -> Proposal | None:
    """The update a person is asked to approve: its own dry run (resolver: every protocol)."""

    if dry_run:
        return None
    return await planned_if_asked(ctx, "update_stack", stack, "deploy", approval, on_target(
        ctx, stack, lambda rt: proposals.update(rt, stack, services, images, to, strategy)))


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=READS_REGISTRIES)
    @tool_errors
    async def check_updates(
        stack: Annotated[str | None, Field(description="Stack name; default: every stack.")] = None,
        min_age_days: Annotated[float | None, Field(ge=0, le=3650, description="Offer only tags at least "
                                                    "this old.")] = None,
    ) -> UpdatesReport:
        """Newer images for a stack's services, from their registries (nothing is pulled).

        Per image: status current | digest_moved (same tag, new content) | unknown; `newer`: the
        newest tag of the same shape per level (patch/minor/major); `note`: this image's registry
        error or rate limit. Apply with update_stack."""
        from server.updates.check import check_stacks

        rt = await runtime.for_stack(stack) if stack is not None else runtime  # its engine's running digests
        return await check_stacks(rt, stack, min_age_days=min_age_days)

    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def update_stack(
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_update_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_update_plan))],
        stack: Annotated[str, Field(description="Stack name or directory.")],
        services: Annotated[list[str] | None, Field(description="Only these services.")] = None,
        images: Annotated[dict[str, str] | None, Field(description="service -> new image reference.")] = None,
        to: Annotated[Literal["digest", "patch", "minor", "major"], Field(
            description="digest: same tags, newer content; else the newest tag up to that level.")] = "digest",
        strategy: Annotated[Literal["auto", "rolling", "blue_green", "planned_downtime", "recreate"],
                            Field(description="How services are replaced.")] = "auto",
        dry_run: Annotated[bool, Field(description="Return the plan and its plan_id; write nothing.")] = False,
        plan_id: Annotated[OptionalId, Field(description="Apply exactly this dry-run plan, or refuse.")] = None,
        confirm: Annotated[bool, Field(description="Critical stack, or retry an image that failed before.")] = False,
        maintenance_message: Annotated[str | None, Field(max_length=500, description="Announced before the "
                                                         "update.")] = None,
        approval: ApprovalArg = None,
    ) -> DeployReport:
        """Update a stack's images as one deploy_stack transaction (backup, pull, health gate,
        automatic rollback); same report. New tags are written where they are kept (.env
        variable, else the compose file), comments intact; unused old images are removed after."""
        checked_id(plan_id, "plan_id", PLAN_ID, "from update_stack(dry_run=true)")
        rt = await runtime.for_stack(stack, mutating=not dry_run)
        gate = await enforce(runtime.settings, ctx, "update_stack", stack, "deploy", confirm=confirm, dry_run=dry_run,
                             plan=lambda: proposals.update(rt, stack, services, images, to, strategy),
                             code=approval, shown=shown, answer=asked)
        # A person said yes to exactly this plan: ask once, and the update refuses if the plan moved.
        confirm = gate.human_approved or (confirm and gate.fallback == "model")
        plan_id = plan_id or gate.plan_id
        from server.deploy.pipeline import Deployer
        from server.updates.apply import update_stack as run_update

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        report = await run_update(
            rt, Deployer(rt, tell, confirmer(ctx)).deploy, stack, services=services, images=images, to=to,
            strategy=strategy, dry_run=dry_run, plan_id=plan_id, confirm=confirm,
            maintenance_message=maintenance_message, prune=_may_prune(stack))
        if report.status not in ("planned", "busy", "blocked") and report.operation_id:
            from server.monitor.alerts import announce_outcome

            await announce_outcome(runtime.settings, stack=report.stack, kind="update", status=report.status,
                                   operation_id=report.operation_id, what_to_do=" ".join(report.next_steps[:2]))
        return report.for_the_caller()

    def _may_prune(stack: str) -> bool:
        """Removing the replaced images is a prune to the policy: refused (non_destructive) or in need
        of its own approval, it is left out rather than asked for."""
        from server.safety.gate import PolicyRefused, check

        try:
            return check(runtime.settings, "update_stack", stack, "prune").approval is None
        except PolicyRefused:
            return False
