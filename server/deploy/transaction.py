"""deploy: one transaction, which knows only the Executor protocol (server/deploy/executor.py).

preflight (nothing changed when blocked) -> plan -> lock (busy: answered at once) -> backup
(adopting what ran, the first time) -> pull -> healthchecks re-checked on the now-local images
-> ``up -d`` -> health gate -> smoke -> verification window -> record. Any failure after the
backup rolls back automatically through the one rollback path (server/deploy/rollback.py: data
first, then code, then the same checks). The transaction runs through
``Operations.run_detached``, so a client that gives up does not stop it halfway; if the server
itself is shut down, the rollback runs in a shielded scope.

Never ``down -v``; a named volume is never removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from server.compose import ComposeRunner
from server.deploy import rollback, snapshots
from server.deploy.executor import Change, Executor
from server.deploy.health import GateResult
from server.deploy.plan import compute_plan
from server.deploy.report import DeployPlan, DeployReport, Phase, needs_confirm
from server.deploy.seams import backup_store, operations, stack_busy
from server.deploy.steps import (
    DEFAULT_VERIFY_S,
    Blocked,
    Run,
    StepFailed,
    StepLog,
    brief,
    end_journal,
    maintenance,
    maintenance_back,
    run_checks,
    states,
    verify_default,
    watched,
)
from server.deploy.targets import adopt_if_new
from server.engine import Engine
from server.errors import DsmError
from server.models import Finding
from server.monitor import baseline  # what this deployment left running: drift is measured from it
from server.redact import Scrubber
from server.runtime import Runtime
from server.stackmodel import LoadedStack
from server.statedisk import is_disk_refusal, unwritable

log = logging.getLogger("docker_stack_mcp.deploy")

Progress = Callable[[float, float, str], Awaitable[None]]
Confirm = Callable[[str], Awaitable[bool]]
PHASES = ("preflight", "plan", "backup", "pull", "up", "health", "smoke", "verify", "record")
DEFAULT_WAIT_S = 180.0


class Transaction:
    """``deploy`` and ``rollback`` of one stack through ``executor``; server/deploy/pipeline.py's
    Deployer is this with the Compose executor."""

    def __init__(self, runtime: Runtime, executor: Executor, progress: Progress | None = None,
                 confirm: Confirm | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._progress = progress
        self._confirm = confirm
        self._step = 0
        self.executor = executor

    @property
    def compose(self) -> ComposeRunner:
        return self.runtime.compose()

    @property
    def engine(self) -> Engine:
        return self.runtime.engine()

    async def tell(self, message: str, advance: bool = True) -> None:
        if advance:
            self._step += 1
        if self._progress is not None:
            from server.redact import scrub_seen

            try:  # scrubbed like the journal: a smoke exec's output may carry api_token=...
                await self._progress(min(self._step, len(PHASES)), len(PHASES), scrub_seen(message))
            except Exception:
                log.debug("progress not delivered", exc_info=True)

    def steps(self, run: Run) -> StepLog:
        return StepLog(run, lambda m, a: self.tell(m, advance=a))

    # ---------------------------------------------------------------------------------------------
    async def deploy(
        self,
        path: str,
        *,
        env: Mapping[str, str] | None = None,
        services: list[str] | None = None,
        dry_run: bool = False,
        plan_id: str | None = None,
        wait_timeout_s: float | None = None,
        verify_s: float | None = None,
        confirm: bool = False,
        strategy: str = "auto",
    ) -> DeployReport:
        """``strategy``: auto (per service: server/deploy/strategies/select.py) | rolling | blue_green |
        planned_downtime | recreate for every changed service; one its rules forbid blocks the plan."""
        from server.preflight.validation import validate_loaded
        from server.stackload import StackRenderFailed, load_stack

        env = dict(env or {})
        t = time.monotonic()
        await self.tell("pre-flight: rendering and checking the stack")
        try:
            stack = await load_stack(self.settings, self.compose, path=path, env=env, dsm_override=False)
        except StackRenderFailed as exc:
            return DeployReport(status="blocked", stack=exc.name, findings=exc.findings,
                                phases=[Phase(name="preflight", status="blocked", duration_s=0, detail=exc.what)],
                                next_steps=["fix the findings and deploy again; nothing was changed"])
        if stack.directory is None:
            raise DsmError("deploy_stack needs a stack directory", state="nothing was changed")
        from server.deploy.swarm import executor_for

        self.executor = executor_for(self.runtime, stack, self.executor)  # x-dsm mode: swarm -> SwarmExecutor
        run = Run(stack)
        conflict = _name_taken(self.settings, stack)
        if conflict is not None:
            run.findings = [conflict]
            run.phase("preflight", "blocked", t, conflict.message)
            return self._report(run, "blocked", next_steps=[
                "deploy each stack under its own project name; nothing was changed"])
        unknown = sorted(set(services or []) - set(stack.services))
        if unknown:
            raise DsmError(f"unknown service(s) {', '.join(unknown)} in stack {stack.name!r}",
                           state="nothing was changed", next_step="call inspect_stack for the service names")
        # The plan only reads (``config --hash``, containers, images, volume and network names), so it
        # is computed alongside the host checks instead of after them; a blocked pre-flight drops it.
        planned: dict[str, Any] = {}

        async def plan_now() -> None:
            began = time.monotonic()
            try:
                planned["plan"] = (await compute_plan(self.compose, self.engine, stack, env=env, services=services,
                                                      scrub=Scrubber(stack.secret_values), strategy=strategy))[0]
            except Exception as exc:  # raised below, once the pre-flight has had its say
                planned["error"] = exc
            planned["took"] = time.monotonic() - began

        async with anyio.create_task_group() as planning:
            planning.start_soon(plan_now)
            report = await validate_loaded(self.settings, stack, self.engine, env=env, memory=self.runtime.memory)
            # Info findings too: the tools' answer leaves them out and counts them (for_the_caller).
            run.findings = list(report.findings)
            # A healthcheck unknown before the pull (healthcheck-unverified: the image's config could not
            # be read locally or from its registry) is checked again once the image is local.
            deferred = [f for f in run.findings if f.rule == "healthcheck-unverified"]
            blocking = [f for f in run.findings if f.severity == "error"]
            if not report.valid or blocking:
                planning.cancel_scope.cancel()
                run.phase("preflight", "blocked", t, report.summary)
                return self._report(run, "blocked", next_steps=[
                    "fix the error findings (see fix), validate_compose, then deploy again; nothing was changed"])
            run.phase("preflight", "ok", t, report.summary + (
                f" {len(deferred)} healthcheck(s) checked again after the pull." if deferred else ""))
            await self.tell("planning: comparing config hashes and images with what runs")
        if "error" in planned:
            raise planned["error"]
        plan: DeployPlan = planned["plan"]
        changes = plan.changes
        run.phase("plan", "ok", time.monotonic() - planned["took"], f"{len(changes)} change(s), computed alongside "
                  "the pre-flight" + ("" if dry_run or not changes else ": " + ", ".join(f"{s.service} {s.action}"
                                                                                        for s in changes)[:400]))
        if plan_id is not None and plan_id != plan.plan_id:
            from server.deploy.planids import mismatch

            other = mismatch(self.settings, stack.name, plan_id)  # another stack's plan is not "changed"
            run.findings.append(Finding(
                rule="plan-other-stack" if other else "plan-changed", severity="error", category="deploy",
                message=other or "the files, env or running state changed since this plan_id was computed",
                evidence=[f"asked {plan_id}, now {plan.plan_id}"]))
            return self._report(run, "blocked", plan=plan, next_steps=[
                "review the new plan (dry_run=true) and deploy with its plan_id; nothing was changed"])
        if plan.blocked:
            run.findings.extend(plan.blocked)
            run.phase("plan", "blocked", time.monotonic(), "; ".join(f.message for f in plan.blocked))
            return self._report(run, "blocked", plan=plan, next_steps=[
                "the strategy asked for cannot run for these services (see findings): deploy with strategy "
                "'auto' or one the plan allows; nothing was changed"])
        run.findings.extend(plan.findings)  # data moves: a database's volume renamed, replaced or dropped
        critical = stack.settings.critical or any(stack.service_settings_for(s).critical for s in stack.services)
        if dry_run:
            from server.deploy import planids

            planids.remember(self.settings, stack.name, plan.plan_id, "deploy_stack")
            return self._report(run, "planned", plan=plan, next_steps=[
                f"deploy_stack(path, plan_id='{plan.plan_id}') applies exactly this plan"],
                needs_confirm=needs_confirm(stack.name, critical=bool(critical and changes),
                                            data_moves=sorted({f.service or "" for f in plan.findings})))
        if critical and changes and not confirm and not await self._ask(
                f"Deploy {len(changes)} change(s) to critical stack {stack.name!r}?"):
            return self._report(run, "blocked", plan=plan, next_steps=[
                "this stack is critical: confirm (confirm=true) to deploy; nothing was changed"])
        if plan.findings and not confirm and not await self._ask(
                f"Start {', '.join(sorted({f.service or '' for f in plan.findings}))} on a new, empty data volume?"):
            return self._report(run, "blocked", plan=plan, next_steps=[
                "a database's data volume moved (see findings): mount the old volume again, or deploy with "
                "confirm=true to start it empty (the old volume keeps the data); nothing was changed"])
        run.findings = [f.model_copy(update={"severity": "warning"}) if f in plan.findings else f for f in run.findings]

        ops = operations(self.runtime)
        try:
            op = ops.begin(stack.name, "deploy", params={
                "path": path, "services": services, "plan_id": plan.plan_id, "wait_timeout_s": wait_timeout_s,
                "verify_s": verify_s, "env": env}, secrets=stack.secret_values, directory=stack.directory)
        except OSError as exc:
            if not is_disk_refusal(exc):
                raise
            raise unwritable(exc, state="nothing was changed: the deploy did not start") from None
        except stack_busy() as busy:
            return DeployReport(status="busy", stack=stack.name, operation_id=getattr(busy, "operation_id", None),
                                phases=run.phases, next_steps=[
                                    f"another {getattr(busy, 'kind', 'operation')} runs on this stack: poll "
                                    f"operation_status('{getattr(busy, 'operation_id', '')}') instead of retrying"])
        run.op = op
        from server.stacksecrets import remember

        remember(self.settings, stack.name, stack.secret_values)  # known secrets: masked in its logs from now on
        wait_s = wait_timeout_s if wait_timeout_s is not None else DEFAULT_WAIT_S
        window = verify_s if verify_s is not None else verify_default(stack, services)

        async def work() -> DeployReport:
            result: DeployReport | None = None
            previous = maintenance(ops, stack.name, wait_s + window + 600, f"deploy {op.id}")
            try:
                result = await self.execute(run, plan, env, services, wait_s, window)
                return result
            finally:
                end_journal(run, result)
                maintenance_back(ops, stack.name, previous)

        return await ops.run_detached(op, work)  # type: ignore[no-any-return,unused-ignore]

    async def execute(self, run: Run, plan: DeployPlan, env: dict[str, str], services: list[str] | None,
                      wait_s: float, window: float) -> DeployReport:
        """Everything after the lock (``run.op``): backup, the executor's apply, gate, smoke, verify,
        record; on a failure after the backup, the one rollback (server/deploy/rollback.py)."""
        stack = run.stack
        assert stack.directory is not None
        if not plan.changes and (await self.executor.observe(stack, services)).ready:
            run.phase("health", "ok", time.monotonic(), "already running healthy")
            # What runs is what these files ask for: the baseline drift is measured from (a change by
            # hand that the files now describe is no longer drift).
            await baseline.record(self.settings, self.engine, stack.name, stack.directory, run.op.id, "deploy",
                                  services)
            return self._report(run, "unchanged", plan=plan, services=await states(self.engine, stack, run),
                                next_steps=["nothing to do: the stack already runs this configuration healthy"])
        store = backup_store(self.runtime)
        try:
            async with self.steps(run).phase("backup", "backup: files, pinned images, data") as step:
                try:
                    run.backup = await store.create(stack, env=env, reason=f"before deploy {run.op.id}")
                except Exception as exc:
                    raise StepFailed("backup", brief(exc)) from None
                step.detail = (f"backup {run.backup.backup_id}: {len(run.backup.images)} image(s) pinned, "
                               f"{len(run.backup.volumes)} volume(s), {len(run.backup.dumps)} dump(s)")
        except StepFailed:
            return self._report(run, "failed", plan=plan, next_steps=[
                "the backup failed, so nothing was changed: fix the cause (see detail) and deploy again"])
        # From here the stack may have changed: an error raised by any step below (even one whose
        # own State says "nothing was changed") must not tell the caller that nothing was.
        try:
            # The first change to a stack we have no deployment for: what runs becomes a deployment.
            adopt_if_new(self.runtime, stack, run.backup, before=getattr(run.op, "started_at", None))
            started = time.monotonic()
            try:
                await self._apply(run, plan, env, services, wait_s, window)
            except Blocked as blocked:
                run.findings.extend(blocked.findings)
                run.phase(blocked.phase, "blocked", time.monotonic(), blocked.why)
                return self._report(run, "blocked", plan=plan, next_steps=[
                    "nothing was changed: fix the findings and deploy again"])
            except StepFailed as failed:
                if getattr(failed, "pause", False):  # update_config.failure_action: pause: no rollback
                    run.findings.append(Finding(rule="rollout-paused", severity="error", category="deploy",
                                                service=failed.service, message=failed.why, evidence=failed.evidence))
                    return self._report(run, "failed", plan=plan, next_steps=[
                        "the rolling update paused as update_config.failure_action asks: the stack runs old and "
                        "new containers side by side; fix and deploy again, or call rollback"])
                return await rollback.automatic(self, run, plan, env, failed, started, wait_s, window)
            except BaseException as exc:
                # Server shutdown (cancellation) or a bug mid-deploy: roll back, shielded, then re-raise.
                interrupted = StepFailed("deploy", f"interrupted: {type(exc).__name__}: {brief(exc)}")
                with anyio.CancelScope(shield=True):
                    report = await rollback.automatic(self, run, plan, env, interrupted, started, wait_s, window)
                    end_journal(run, report)
                raise
            return await self._success(run, plan, started, services)
        except DsmError as exc:
            op_id = run.op.id if run.op is not None else "?"
            raise exc.restate(
                f"unknown: deploy {op_id} raised after its backup (the stack may have changed)",
                "check stack_status and stack_history before anything else") from None

    async def _apply(self, run: Run, plan: DeployPlan, env: dict[str, str], services: list[str] | None,
                     wait_s: float, window: float) -> None:
        stack = run.stack
        steps = self.steps(run)
        await self.executor.apply(Change(stack, plan, services, wait_s, run.op), steps)
        await run_checks(steps, self.engine, stack, watched(stack, plan, services), {s.service for s in plan.changes},
                         wait_s=wait_s, window=window, gate=self.executor.gate)

    async def _success(self, run: Run, plan: DeployPlan, started: float,
                       services: list[str] | None = None) -> DeployReport:
        stack = run.stack
        assert stack.directory is not None
        async with self.steps(run).phase("record", "recording the deployment") as step:
            now = await states(self.engine, stack, run)
            kept = snapshots.save_kept(self.settings, stack.name, run.op.id, stack.directory)
            await baseline.record(self.settings, self.engine, stack.name, stack.directory, run.op.id, "deploy",
                                  services)
            digests = {s.name: s.image_digest or "" for s in now if s.image_digest}
            memory = await self._record_deployment(
                stack=stack.name, services=[s.name for s in now], outcome="success", image_digests=digests,
                duration_s=round(time.monotonic() - started, 1),
                strategy=",".join(sorted({s.strategy for s in plan.changes})) or None, operation_id=run.op.id)
            step.detail = f"journal; {memory}" + ("" if kept else f"; {snapshots.FILES_NOT_KEPT}")
        return self._report(run, "deployed", plan=plan, services=now, next_steps=[
            "done; stack_history shows it, rollback returns to the previous deployment if needed"])

    # -- rollback: server/deploy/rollback.py --------------------------------------------------------
    async def rollback(self, stack_arg: str, *, to_deployment: str | None = None, restore_data: bool = False,
                       confirm: bool = False, wait_timeout_s: float | None = None,
                       reason: str | None = None) -> DeployReport:
        """Explicit rollback to a previous good deployment (default: see server.deploy.targets).
        ``reason`` (who asked and why, e.g. the watcher) is journaled and becomes the report's rollback.why."""
        return await rollback.explicit(self, stack_arg, to_deployment=to_deployment, restore_data=restore_data,
                                       confirm=confirm, reason=reason,
                                       wait_s=wait_timeout_s if wait_timeout_s is not None else DEFAULT_WAIT_S)

    # -- helpers ------------------------------------------------------------------------------------
    async def _record_deployment(self, **fields: Any) -> str:
        """The deployment's memory record, off the answer's path: posted to the memory outbox
        (fsync'd, milliseconds) and written by its worker after the answer; never lost (a failed
        or interrupted write is retried at the next drain or start-up). When even the outbox
        cannot be written, the record goes to the memory directly, as before. Returns a note."""
        try:
            outbox = self.runtime.memory_outbox()
            await anyio.to_thread.run_sync(lambda: outbox.post_deployment(**fields))
            return "memory record queued"
        except Exception as exc:  # OSError (disk) most likely: write it now instead
            log.warning("memory outbox unavailable (%s); writing the deployment record directly", brief(exc))
        from server.memory.recorder import MemoryRecorder

        written = await MemoryRecorder(self.runtime.memory).record_deployment(**fields)
        return "memory record written" if written else "memory record FAILED (see the server log)"

    async def _ask(self, question: str) -> bool:
        return bool(self._confirm and await self._confirm(question))

    def _report(self, run: Run, status: str, **extra: Any) -> DeployReport:
        scrub = Scrubber(run.stack.secret_values)  # as the journal: assignments too
        if extra.get("next_steps"):
            extra["next_steps"] = [scrub(step) for step in extra["next_steps"]]
        if extra.get("rollback") is not None:
            extra["rollback"] = extra["rollback"].model_copy(update={"why": scrub(extra["rollback"].why)})
        return DeployReport(
            status=status,  # type: ignore[arg-type]
            stack=run.stack.name,
            deployment_id=run.op.id if run.op is not None else None,
            operation_id=run.op.id if run.op is not None else None,
            phases=[p.model_copy(update={"detail": scrub(p.detail)}) for p in run.phases],
            findings=run.findings,
            backup_id=run.backup.backup_id if run.backup is not None else None,
            **extra,
        )


def _name_taken(settings: Any, stack: LoadedStack) -> Finding | None:
    """Another stack directory renders the same project name (a given COMPOSE_PROJECT_NAME, a
    copied ``name:``): ``up --remove-orphans`` under it would remove that stack's containers."""
    from server.stacks import discover

    assert stack.directory is not None
    here = stack.directory.resolve()
    others = sorted(s.directory.name for s in discover(settings)[0]
                    if s.name == stack.name and s.directory.resolve() != here)
    if not others:
        return None
    return Finding(
        rule="project-name-conflict", severity="error", category="deploy",
        message=f"project name {stack.name!r} is also the project of stack {', '.join(others)}: deploying "
                f"{stack.directory.name} under it would replace and remove that stack's containers",
        fix="drop COMPOSE_PROJECT_NAME from env, or give one of the stacks a distinct top-level name:",
        evidence=[f"{name}: project {stack.name}" for name in others])


__all__ = ["DEFAULT_VERIFY_S", "GateResult", "Transaction"]
