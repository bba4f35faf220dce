"""deploy_stack and rollback: thin wrappers over server.deploy.pipeline."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from server.deploy.report import DeployReport
from server.runtime import Runtime
from server.safety import proposals
from server.safety.proposals import Proposal
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


async def _deploy_plan(ctx: Context, path: str, env: dict[str, str] | None = None,
                       services: list[str] | None = None, dry_run: bool = False,
                       approval: str | None = None) -> Proposal | None:
    """The plan a person is asked to approve (resolver: before the body, on every protocol)."""
    if dry_run:
        return None
    return await planned_if_asked(ctx, "deploy_stack", path, "deploy", approval,
                                  on_target(ctx, path, lambda rt: proposals.deploy(rt, path, env, services)))


async def _rollback_plan(ctx: Context, stack: str, to_deployment: str | None = None, restore_data: bool = False,
                         approval: str | None = None) -> Proposal | None:
    return await planned_if_asked(ctx, "rollback", stack, "rollback_data" if restore_data else "rollback", approval,
                                  on_target(ctx, stack, lambda rt: proposals.rollback(rt, stack, to_deployment,
                                                                                      restore_data)))


def register(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def deploy_stack(
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_deploy_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_deploy_plan))],
        path: Annotated[str, Field(description="Stack directory (or compose file) under the stacks root.")],
        env: Annotated[dict[str, str] | None, Field(description="Interpolation values; never echoed.")] = None,
        services: Annotated[list[str] | None, Field(description="Deploy only these services.")] = None,
        dry_run: Annotated[bool, Field(description="Return the plan and its plan_id; change nothing.")] = False,
        plan_id: Annotated[OptionalId, Field(description="Apply exactly this dry-run plan, or refuse.")] = None,
        wait_timeout_s: Annotated[float | None, Field(ge=5, le=3600, description="Health gate timeout (180).")] = None,
        verify_s: Annotated[float | None, Field(ge=0, le=3600, description="Verification window (x-dsm or 30; "
                                                "0 none).")] = None,
        confirm: Annotated[bool, Field(description="Confirms a deploy to a critical stack.")] = False,
        detail: Annotated[Literal["summary", "full"], Field(description="full: also info findings and unchanged "
                                                            "services.")] = "summary",
        approval: ApprovalArg = None,
    ) -> DeployReport:
        """Deploy a stack as one transaction: ends healthy, or rolled back to where it started.

        Pre-flight (blocked = nothing changed) -> backup (files, pinned images, volumes, dumps)
        -> pull -> up -> health gate -> x-dsm smoke checks -> verification window (health,
        critical log lines, sustained >95% of limits). A failure after the backup rolls back
        (files, images, dumps where the database was touched) and records an incident.

        `busy` names the running operation_id: poll operation_status, do not retry. A dry run's
        `needs_confirm` names the confirmation the real call needs; `omitted` counts what was
        left out.
        """
        checked_id(plan_id, "plan_id", PLAN_ID, "from deploy_stack(dry_run=true)")
        rt = await runtime.for_stack(path, mutating=not dry_run)  # the engine it runs on (server.targets)
        gate = await enforce(runtime.settings, ctx, "deploy_stack", path, "deploy", confirm=confirm, dry_run=dry_run,
                             plan=lambda: proposals.deploy(rt, path, env, services), code=approval,
                             shown=shown, answer=asked)
        # A person already said yes to this call: ask once. Under a fallback other than `model` the
        # model's confirm stands for no one: the pipeline's own questions (a database starting on an
        # empty volume) are then asked, or refused.
        confirm = gate.human_approved or (confirm and gate.fallback == "model")
        plan_id = plan_id or gate.plan_id  # ...to exactly the plan they saw: the pipeline refuses if it moved
        from server.deploy.pipeline import Deployer

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        report = await Deployer(rt, tell, confirmer(ctx)).deploy(
            path, env=env, services=services, dry_run=dry_run, plan_id=plan_id, wait_timeout_s=wait_timeout_s,
            verify_s=verify_s, confirm=confirm)
        await _announce(report, "deploy")
        return report.for_the_caller(detail)

    @server.tool(annotations=CHANGES_STACKS)
    @tool_errors
    async def rollback(
        ctx: Context,
        shown: Annotated[Proposal | None, Resolve(_rollback_plan)],
        asked: Annotated[ElicitationResult[Confirmation], Resolve(asker(_rollback_plan))],
        stack: Annotated[str, Field(description="Stack name or directory.")],
        to_deployment: Annotated[OptionalId, Field(description="From stack_history; default: the one before "
                                                   "the current (after an interrupted deploy: the last good).")] = None,
        restore_data: Annotated[bool, Field(description="Also restore volumes and databases from the backup "
                                            "taken when leaving it (overwrites).")] = False,
        confirm: Annotated[bool, Field(description="Required for restore_data and for critical stacks.")] = False,
        approval: ApprovalArg = None,
    ) -> DeployReport:
        """Roll a stack back to a previous good deployment: its data first (restore_data), then its files
        and images (pinned in compose.dsm.yaml), then the deploy's checks; `failed` if they do not pass.
        Same report as deploy_stack."""
        from server.operations.models import OPERATION_ID

        checked_id(to_deployment, "to_deployment", OPERATION_ID, "from stack_history")
        rt = await runtime.for_stack(stack, mutating=True)
        gate = await enforce(runtime.settings, ctx, "rollback", stack, "rollback_data" if restore_data else "rollback",
                             confirm=confirm, code=approval, shown=shown, answer=asked,
                             plan=lambda: proposals.rollback(rt, stack, to_deployment, restore_data))
        confirm = confirm or gate.human_approved  # a person already said yes to this call: ask once
        from server.deploy.pipeline import Deployer

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        report = await Deployer(rt, tell, confirmer(ctx)).rollback(
            stack, to_deployment=to_deployment, restore_data=restore_data, confirm=confirm)
        await _announce(report, "rollback")
        return report.for_the_caller()

    async def _announce(report: DeployReport, kind: str) -> None:
        """Deployments and rollbacks announce their outcome through the alert path (DSM_ALERT_URLS).
        A plan, a busy answer or a blocked pre-flight changed nothing: nothing to announce."""
        if report.status in ("planned", "busy", "blocked") or not report.operation_id:
            return
        from server.monitor.alerts import announce_outcome

        await announce_outcome(runtime.settings, stack=report.stack, kind=kind, status=report.status,
                               operation_id=report.operation_id, what_to_do=" ".join(report.next_steps[:2]))
