"""deploy and rollback: one transaction each.

deploy: preflight (nothing changed when blocked) -> plan -> lock (busy: answered at once) ->
backup -> pull -> healthchecks re-checked on the now-local images -> ``up -d`` -> health gate ->
smoke -> verification window -> record. Any failure after the backup rolls back automatically:
the files of the last successful deployment, the images that ran before pinned in
``compose.dsm.yaml``, database dumps restored where the failed deployment touched the database,
the old version verified healthy, an incident recorded with the evidence. The transaction runs
through ``Operations.run_detached``, so a client that gives up does not stop it halfway; if the
server itself is shut down, the rollback runs in a shielded scope.

Never ``down -v``; a named volume is never removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from server.compose import ComposeRunner, services_argv
from server.deploy import override, snapshots
from server.deploy.health import GateResult, Watched, run_gate
from server.deploy.plan import IMAGE_LABEL, compute_plan
from server.deploy.project import compose_project, fresh_project
from server.deploy.report import DeployPlan, DeployReport, Phase, RollbackInfo, ServiceState
from server.deploy.seams import backup_store, operations, stack_busy
from server.deploy.smoke import run_smoke
from server.deploy.timeouts import deploy_up_timeout_s
from server.deploy.verify import verify_window
from server.engine import Engine, image_attrs_digest, tag_image
from server.errors import DsmError
from server.models import Finding
from server.redact import Scrubber
from server.roles import original_from_tags
from server.runtime import Runtime
from server.stackmodel import LoadedStack
from server.statedisk import is_disk_refusal, unwritable

log = logging.getLogger("docker_stack_mcp.deploy")

Progress = Callable[[float, float, str], Awaitable[None]]
Confirm = Callable[[str], Awaitable[bool]]
PHASES = ("preflight", "plan", "backup", "pull", "up", "health", "smoke", "verify", "record")
DEFAULT_WAIT_S = 180.0
DEFAULT_VERIFY_S = 30.0


class StepFailed(Exception):
    """A phase after the backup failed; carries what the incident and the report need."""

    def __init__(self, phase: str, why: str, service: str | None = None, evidence: list[str] | None = None) -> None:
        self.phase, self.why, self.service, self.evidence = phase, why, service, evidence or []
        super().__init__(why)


class Blocked(Exception):
    def __init__(self, phase: str, why: str, findings: list[Finding]) -> None:
        self.phase, self.why, self.findings = phase, why, findings
        super().__init__(why)


@dataclass
class Run:
    """What one deploy or rollback call has done so far (becomes the report)."""

    stack: LoadedStack
    op: Any = None
    phases: list[Phase] = field(default_factory=list)
    backup: Any = None
    findings: list[Finding] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    image_ids: dict[str, str] = field(default_factory=dict)

    def phase(self, name: str, status: str, started: float, detail: str = "") -> None:
        duration = round(time.monotonic() - started, 2)
        self.phases.append(Phase(name=name, status=status, duration_s=duration, detail=detail[:500]))  # type: ignore[arg-type]
        if self.op is not None:
            try:
                self.op.phase(name, status, detail[:500], duration)
            except Exception:  # the journal must not break the transaction it records
                log.exception("journal phase write failed")


class Deployer:
    def __init__(self, runtime: Runtime, progress: Progress | None = None, confirm: Confirm | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._progress = progress
        self._confirm = confirm
        self._step = 0

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
    ) -> DeployReport:
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
                                                      scrub=Scrubber(stack.secret_values)))[0]
            except Exception as exc:  # raised below, once the pre-flight has had its say
                planned["error"] = exc
            planned["took"] = time.monotonic() - began

        async with anyio.create_task_group() as planning:
            planning.start_soon(plan_now)
            report = await validate_loaded(self.settings, stack, self.engine, env=env)
            run.findings = [f for f in report.findings if f.severity != "info"]
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
                  "the pre-flight: " + ", ".join(f"{s.service} {s.action}" for s in changes)[:400])
        if plan_id is not None and plan_id != plan.plan_id:
            run.findings.append(Finding(
                rule="plan-changed", severity="error", category="deploy",
                message="the files, env or running state changed since this plan_id was computed",
                evidence=[f"asked {plan_id}, now {plan.plan_id}"]))
            return self._report(run, "blocked", plan=plan, next_steps=[
                "review the new plan (dry_run=true) and deploy with its plan_id; nothing was changed"])
        run.findings.extend(plan.findings)  # data moves: a database's volume renamed, replaced or dropped
        if dry_run:
            return self._report(run, "planned", plan=plan, next_steps=[
                f"deploy_stack(path, plan_id='{plan.plan_id}') applies exactly this plan"])
        critical = stack.settings.critical or any(stack.service_settings_for(s).critical for s in stack.services)
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
                "verify_s": verify_s, "env": env}, secrets=stack.secret_values)
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
        window = verify_s if verify_s is not None else _verify_default(stack, services)

        async def work() -> DeployReport:
            result: DeployReport | None = None
            previous = _maintenance(ops, stack.name, wait_s + window + 600, f"deploy {op.id}")
            try:
                result = await self._transaction(run, plan, env, services, wait_s, window)
                return result
            finally:
                _end(run, result)
                _maintenance_back(ops, stack.name, previous)

        return await ops.run_detached(op, work)  # type: ignore[no-any-return,unused-ignore]

    async def _transaction(self, run: Run, plan: DeployPlan, env: dict[str, str], services: list[str] | None,
                           wait_s: float, window: float) -> DeployReport:
        stack = run.stack
        assert stack.directory is not None
        if not plan.changes and await self._all_ready(stack, services):
            run.phase("health", "ok", time.monotonic(), "already running healthy")
            return self._report(run, "unchanged", plan=plan, services=await self._states(stack, run),
                                next_steps=["nothing to do: the stack already runs this configuration healthy"])
        t = time.monotonic()
        await self.tell("backup: files, pinned images, data")
        store = backup_store(self.runtime)
        try:
            run.backup = await store.create(stack, env=env, reason=f"before deploy {run.op.id}")
        except Exception as exc:
            run.phase("backup", "failed", t, _brief(exc))
            return self._report(run, "failed", plan=plan, next_steps=[
                "the backup failed, so nothing was changed: fix the cause (see detail) and deploy again"])
        run.phase("backup", "ok", t, f"backup {run.backup.backup_id}: {len(run.backup.images)} image(s) pinned, "
                  f"{len(run.backup.volumes)} volume(s), {len(run.backup.dumps)} dump(s)")
        started = time.monotonic()
        try:
            await self._apply(run, plan, env, services, wait_s, window)
        except Blocked as blocked:
            run.findings.extend(blocked.findings)
            run.phase(blocked.phase, "blocked", time.monotonic(), blocked.why)
            return self._report(run, "blocked", plan=plan, next_steps=[
                "nothing was changed: fix the findings and deploy again"])
        except StepFailed as failed:
            return await self._auto_rollback(run, plan, env, failed, started, wait_s)
        except BaseException as exc:
            # Server shutdown (cancellation) or a bug mid-deploy: roll back, shielded, then re-raise.
            interrupted = StepFailed("deploy", f"interrupted: {type(exc).__name__}: {_brief(exc)}")
            with anyio.CancelScope(shield=True):
                report = await self._auto_rollback(run, plan, env, interrupted, started, wait_s)
                _end(run, report)
            raise
        return await self._success(run, plan, started)

    async def _apply(self, run: Run, plan: DeployPlan, env: dict[str, str], services: list[str] | None,
                     wait_s: float, window: float) -> None:
        stack = run.stack
        assert stack.directory is not None
        scrub = Scrubber(stack.secret_values)
        pulls = sorted({s.service for s in plan.services if s.pull})
        t = time.monotonic()
        await self.tell(f"pull: {', '.join(pulls) or 'nothing missing'}")
        if pulls:
            try:
                await self.compose.run_project(compose_project(stack, with_override=False),
                                               ["pull", "--quiet", *services_argv(pulls)], scrub=scrub,
                                               what="docker compose pull")
            except DsmError as exc:
                raise Blocked("pull", _brief(exc), [Finding(
                    rule="image-unavailable", severity="error", category="images", message=_brief(exc))]) from None
            missing = await self._missing_healthchecks(stack, pulls)
            if missing:
                raise Blocked("pull", "a service still has no healthcheck now that its image is local", missing)
        run.phase("pull", "ok" if pulls else "skipped", t, f"pulled {', '.join(pulls)}" if pulls else "all local")

        t = time.monotonic()
        await self.tell("up: creating networks and volumes, starting containers")
        override.clear_pins(stack.directory)  # a deploy states its own images; a failure restores the pins
        argv = ["up", "-d", "--remove-orphans", *services_argv(services)]
        try:
            await self.compose.run_project(compose_project(stack), argv, scrub=scrub, what="docker compose up",
                                           timeout_s=deploy_up_timeout_s(stack, plan, wait_s),
                                           **_on_start(self.compose, run.op))
        except DsmError as exc:
            run.phase("up", "failed", t, _brief(exc))
            stderr = [ln for ln in getattr(exc, "stderr", "").splitlines()[-8:] if ln.strip()]
            culprit = await self._diagnose(stack, _watched(stack, plan, services))
            raise StepFailed("up", f"docker compose up failed: {_brief(exc)}" + (
                f" ({culprit.service} {culprit.why})" if culprit else ""),
                culprit.service if culprit else None, [*(culprit.evidence if culprit else []), *stderr]) from None
        run.phase("up", "ok", t, ", ".join(f"{s.service} {s.action}" for s in plan.changes)[:400])

        watched = _watched(stack, plan, services)
        t = time.monotonic()
        await self.tell(f"health gate: waiting up to {wait_s:.0f}s")
        gate = await run_gate(self.engine, stack.name, watched, timeout_s=wait_s,
                              on_wait=lambda m: self.tell(m, advance=False))
        if not gate.ok:
            run.phase("health", "failed", t, gate.failure)
            raise StepFailed("health", gate.failure, gate.failed_service, gate.evidence)
        run.phase("health", "ok", t, f"{len(watched)} service(s) ready")

        t = time.monotonic()
        await self.tell("smoke tests")
        smoke_services = [w.service for w in watched if stack.service_settings_for(w.service).smoke]
        if smoke_services:
            results = await run_smoke(self.engine, stack, smoke_services, await self._container_ids(stack))
            bad = [r for r in results if not r.ok]
            detail = "; ".join(f"{r.service}: {r.detail}" for r in results)
            if bad:
                run.phase("smoke", "failed", t, detail)
                raise StepFailed("smoke", f"smoke check failed: {bad[0].service}: {bad[0].detail}", bad[0].service,
                                 [f"{r.service}: {r.detail}" for r in bad])
            run.phase("smoke", "ok", t, detail)
        else:
            run.phase("smoke", "skipped", t, "no x-dsm smoke checks")

        t = time.monotonic()
        await self.tell(f"verification window: {window:.0f}s")
        changed = {s.service for s in plan.changes}
        verdict = await verify_window(self.engine, stack.name, watched, changed, window_s=window,
                                      dependencies=frozenset(stack.services),
                                      tell=lambda m: self.tell(m, advance=False))
        if not verdict.ok:
            run.phase("verify", "failed", t, verdict.failure)
            raise StepFailed("verify", verdict.failure, verdict.failed_service, verdict.evidence)
        run.phase("verify", "ok" if window > 0 else "skipped", t, verdict.summary)

    async def _success(self, run: Run, plan: DeployPlan, started: float) -> DeployReport:
        stack = run.stack
        assert stack.directory is not None
        t = time.monotonic()
        await self.tell("recording the deployment")
        states = await self._states(stack, run)
        kept = _save_files(self.settings, stack.name, run.op.id, stack.directory)
        digests = {s.name: s.image_digest or "" for s in states if s.image_digest}
        memory = await self._record_deployment(
            stack=stack.name, services=[s.name for s in states], outcome="success", image_digests=digests,
            duration_s=round(time.monotonic() - started, 1),
            strategy=",".join(sorted({s.strategy for s in plan.changes})) or None, operation_id=run.op.id)
        run.phase("record", "ok", t, f"journal; {memory}" + ("" if kept else f"; {_FILES_NOT_KEPT}"))
        return self._report(run, "deployed", plan=plan, services=states, next_steps=[
            "done; stack_history shows it, rollback returns to the previous deployment if needed"])

    # -- rollback -----------------------------------------------------------------------------------
    async def _auto_rollback(self, run: Run, plan: DeployPlan, env: dict[str, str], failed: StepFailed,
                             started: float, wait_s: float) -> DeployReport:
        stack = run.stack
        assert stack.directory is not None
        t = time.monotonic()
        await self.tell(f"rolling back: {failed.why}")
        evidence = list(failed.evidence)
        target = self._last_success(stack.name, exclude=run.op.id)
        notes: list[str] = []
        result: Literal["restored", "failed"] = "failed"
        try:
            try:  # a nicety: a full or read-only state disk must not stop the rollback itself
                snapshots.keep_failed(self.settings, stack.name, run.backup.backup_id, stack.directory)
            except OSError as exc:
                notes.append(f"the failed files could not be kept ({exc.strerror or exc})")
            if target and snapshots.exists(self.settings, stack.name, target):
                snapshots.restore(self.settings, stack.name, target, stack.directory)
                notes.append(f"files of deployment {target} restored")
            else:
                await backup_store(self.runtime).restore_files(run.backup, stack.directory)
                notes.append("files as they were before this deploy restored (no earlier deployment recorded)")
            pins = {img.service: img.pinned_ref for img in run.backup.images}
            if pins:
                override.write_pins(stack.directory, pins,
                                    originals={i.service: i.reference for i in run.backup.images})
                notes.append(f"images pinned in compose.dsm.yaml: {', '.join(sorted(pins))}")
                await self.compose.run_project(
                    fresh_project(self.settings, stack.directory, stack.name, env), ["up", "-d", "--remove-orphans"],
                    scrub=Scrubber(stack.secret_values), what="docker compose up (rollback)",
                    timeout_s=max(wait_s, 120), **_on_start(self.compose, run.op))
            else:
                # Nothing ran before this deploy: back where it started is no containers (volumes kept).
                await self.compose.run_project(
                    fresh_project(self.settings, stack.directory, stack.name, env), ["down", "--remove-orphans"],
                    what="docker compose down (rollback)", **_on_start(self.compose, run.op))
                notes.append("nothing ran before: the new containers were removed, volumes kept")
            restored = await self._restore_dumps(stack, plan, run.backup)
            notes.extend(restored)
            result = "restored"
            if pins:
                watched = [Watched(s, stack.service_settings_for(s).is_one_shot) for s in sorted(pins)]
                gate = await run_gate(self.engine, stack.name, watched, timeout_s=wait_s,
                                      on_wait=lambda m: self.tell(m, advance=False))
                if not gate.ok:
                    result = "failed"
                    notes.append(f"the previous version is not healthy either: {gate.failure}")
                else:
                    notes.append("previous version healthy")
        except Exception as exc:
            log.exception("rollback failed")
            result = "failed"
            notes.append(f"rollback step failed: {_brief(exc)}")
        run.phase("rollback", "ok" if result == "restored" else "failed", t, "; ".join(notes))
        from server.memory.recorder import MemoryRecorder

        recorder = MemoryRecorder(self.runtime.memory)
        states = await self._states(stack, run)
        ttr = round(time.monotonic() - started, 1)
        deployment_id = await recorder.record_deployment(
            stack=stack.name, services=[s.service for s in plan.changes],
            outcome="rolled_back" if result == "restored" else "rollback_failed",
            duration_s=ttr, log_lines=evidence[-20:], operation_id=run.op.id,
            notes=f"{failed.phase} failed: {failed.why}")
        incident_id = await recorder.record_incident(
            title=f"deploy of {stack.name} failed at {failed.phase}: {failed.why}"[:200],
            symptoms=f"{failed.why}. Evidence: " + " | ".join(evidence[:8]),
            stack=stack.name, service=failed.service, severity="high", log_lines=evidence[-30:],
            resolution="automatic rollback: " + "; ".join(notes), deployment_id=deployment_id,
            time_to_recover_s=ttr, outcome="rolled_back" if result == "restored" else "unresolved", source="deploy")
        if result == "restored":
            _save_files(self.settings, stack.name, run.op.id + "-rollback", stack.directory)
        status = "rolled_back" if result == "restored" else "failed"
        steps = [f"read the evidence: {failed.why}", "fix the new version (the failed files are kept with backup "
                 f"{run.backup.backup_id}) and deploy again"] if result == "restored" else [
            "the stack is NOT healthy: inspect_stack and the container logs, then rollback or backup_stack restore"]
        report = self._report(
            run, status, plan=plan, services=states, incident_id=incident_id,
            rollback=RollbackInfo(why=f"{failed.phase}: {failed.why}"[:500], to_deployment=target, result=result),
            next_steps=steps)
        return report.model_copy(update={"findings": [*report.findings, Finding(
            rule="deploy-failed", severity="error", category="deploy", service=failed.service,
            message=failed.why[:500], evidence=[Scrubber(stack.secret_values)(e)[:300] for e in evidence[:15]])]})

    async def _restore_dumps(self, stack: LoadedStack, plan: DeployPlan, backup: Any) -> list[str]:
        """Dumps back for databases the failed deployment touched: recreated, or written by a
        one-shot (a migration) that depends on them. x-dsm backup.restore_on_rollback: false opts out."""
        dumped = {d.service for d in getattr(backup, "dumps", [])}
        touched: set[str] = set()
        changed = {s.service for s in plan.changes}
        for name in dumped:
            if not stack.service_settings_for(name).backup.restore_on_rollback:
                continue
            if name in changed:
                touched.add(name)
            for other, body in stack.services.items():
                deps = body.get("depends_on") or {}
                if other in changed and name in deps and stack.service_settings_for(other).is_one_shot:
                    touched.add(name)
        if not touched:
            return []
        # The database must be up before its dump goes back in.
        gate = await run_gate(self.engine, stack.name, [Watched(s) for s in sorted(touched)], timeout_s=120)
        if not gate.ok:
            return [f"database not healthy for the restore: {gate.failure}"]
        done = await backup_store(self.runtime).restore_data(backup, services=sorted(touched), volumes=False,
                                                             dumps=True)
        return [f"database restored from backup {backup.backup_id}: {', '.join(sorted(touched))}", *map(str, done)]

    async def rollback(self, stack_arg: str, *, to_deployment: str | None = None, restore_data: bool = False,
                       confirm: bool = False, wait_timeout_s: float | None = None,
                       reason: str | None = None) -> DeployReport:
        """Explicit rollback to a previous successful deployment (default: the one before the current).
        ``reason`` (who asked and why, e.g. the watcher) is journaled and becomes the report's rollback.why."""
        from server.stackload import load_stack
        from server.stacks import resolve_stack

        location = resolve_stack(self.settings, stack_arg)
        ops = operations(self.runtime)
        history = ops.history(location.name, limit=200)
        current, target = _targets(history, to_deployment)
        if target is None:
            raise DsmError(f"no earlier successful deployment of {location.name!r} to roll back to"
                           + (f" (asked for {to_deployment})" if to_deployment else ""),
                           state="nothing was changed", next_step="call stack_history for the deployment ids")
        if not snapshots.exists(self.settings, location.name, target.operation_id):
            raise DsmError(f"the files of deployment {target.operation_id} were not kept", state="nothing was changed",
                           next_step="pick another deployment from stack_history, or restore with backup_stack")
        stack = await load_stack(self.settings, self.compose, path=str(location.directory))
        critical = stack.settings.critical or any(s.critical for s in stack.service_settings.values())
        if (restore_data or critical) and not confirm and not await self._ask(
                f"Roll back {stack.name!r} to {target.operation_id}"
                + (" and overwrite its data with the backup" if restore_data else "") + "?"):
            raise DsmError("rolling back " + ("with restore_data " if restore_data else "a critical stack ")
                           + "overwrites state and needs confirmation", state="nothing was changed",
                           next_step="call rollback again with confirm=true once the user agreed")
        run = Run(stack)
        try:
            run.op = ops.begin(stack.name, "rollback", params={"to_deployment": target.operation_id,
                                                                "restore_data": restore_data, "reason": reason},
                               secrets=stack.secret_values)
        except OSError as exc:
            if not is_disk_refusal(exc):
                raise
            raise unwritable(exc, state="nothing was changed: the deploy did not start") from None
        except stack_busy() as busy:
            return DeployReport(status="busy", stack=stack.name, operation_id=getattr(busy, "operation_id", None),
                                next_steps=[f"poll operation_status('{getattr(busy, 'operation_id', '')}')"])
        wait_s = wait_timeout_s if wait_timeout_s is not None else DEFAULT_WAIT_S

        async def work() -> DeployReport:
            result: DeployReport | None = None
            previous = _maintenance(ops, stack.name, 2 * wait_s + 600, f"rollback {run.op.id}")
            try:
                result = await self._explicit(run, target, current, restore_data, wait_s, history, reason)
                return result
            finally:
                _end(run, result)
                _maintenance_back(ops, stack.name, previous)

        return await ops.run_detached(run.op, work)  # type: ignore[no-any-return,unused-ignore]

    async def _explicit(self, run: Run, target: Any, current: Any, restore_data: bool, wait_s: float,
                        history: list[Any], reason: str | None = None) -> DeployReport:
        stack = run.stack
        assert stack.directory is not None
        store = backup_store(self.runtime)
        t = time.monotonic()
        run.backup = await store.create(stack, reason=f"before rollback {run.op.id}")
        run.phase("backup", "ok", t, f"backup {run.backup.backup_id} of the state being left")
        t = time.monotonic()
        snapshots.restore(self.settings, stack.name, target.operation_id, stack.directory)
        pins: dict[str, str] = {}
        originals: dict[str, str] = {}
        for service, image_id in ((target.result or {}).get("image_ids") or {}).items():
            if image_id and (attrs := await self.engine.image_attrs(image_id)):
                ref = f"dsm-pin/{stack.name}-{service}:{target.operation_id}".lower()
                await tag_image(self.engine, image_id, ref)
                pins[service] = ref
                originals[service] = original_from_tags(attrs) or ""
        if pins:
            override.write_pins(stack.directory, pins, originals=originals)
        await self.compose.run_project(
            fresh_project(self.settings, stack.directory, stack.name), ["up", "-d", "--remove-orphans"],
            what="docker compose up (rollback)", timeout_s=max(wait_s, 120), scrub=Scrubber(stack.secret_values),
            **_on_start(self.compose, run.op))
        run.phase("up", "ok", t, f"files of {target.operation_id} restored, {len(pins)} image(s) pinned")
        notes = []
        if restore_data:
            t = time.monotonic()
            data_backup = _backup_after(history, target)
            if data_backup is None:
                run.phase("restore_data", "failed", t, "no backup taken right after that deployment")
            else:
                manifest = store.get(stack.name, data_backup)
                gate = await run_gate(self.engine, stack.name, [Watched(d.service) for d in manifest.dumps],
                                      timeout_s=wait_s)
                done = await store.restore_data(manifest, volumes=True, dumps=True) if gate.ok else []
                notes.append(f"data restored from backup {data_backup}")
                run.phase("restore_data", "ok" if gate.ok else "failed", t, "; ".join(map(str, done)) or gate.failure)
        t = time.monotonic()
        watched = [Watched(s, stack.service_settings_for(s).is_one_shot) for s in stack.services
                   if s in {c.service for c in await self.engine.compose_containers(stack.name)}]
        gate = await run_gate(self.engine, stack.name, watched, timeout_s=wait_s,
                              on_wait=lambda m: self.tell(m, advance=False))
        run.phase("health", "ok" if gate.ok else "failed", t, gate.failure or f"{len(watched)} service(s) ready")
        states = await self._states(stack, run)
        if gate.ok:
            snapshots.save(self.settings, stack.name, run.op.id, stack.directory)
        await self._record_deployment(
            stack=stack.name, services=[s.name for s in states], outcome="rolled_back" if gate.ok else
            "rollback_failed", image_digests={s.name: s.image_digest or "" for s in states if s.image_digest},
            operation_id=run.op.id, notes=f"explicit rollback to {target.operation_id}")
        return self._report(
            run, "rolled_back" if gate.ok else "failed", services=states,
            rollback=RollbackInfo(why=(reason or "asked for")[:500], to_deployment=target.operation_id,
                                  result="restored" if gate.ok else "failed"),
            next_steps=["done; the previous version runs (pinned in compose.dsm.yaml until the next deploy)"]
            if gate.ok else ["the restored version is not healthy: inspect_stack and its logs"])

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
            log.warning("memory outbox unavailable (%s); writing the deployment record directly", _brief(exc))
        from server.memory.recorder import MemoryRecorder

        written = await MemoryRecorder(self.runtime.memory).record_deployment(**fields)
        return "memory record written" if written else "memory record FAILED (see the server log)"

    async def _missing_healthchecks(self, stack: LoadedStack, pulled: list[str]) -> list[Finding]:
        """Services whose healthcheck was unknown before the pull and, the image now local, has none."""
        from server.policy import finding
        from server.policy.waivers import apply_policy
        from server.stackview import has_healthcheck

        raw = []
        for name in pulled:
            body = stack.services.get(name, {})
            if has_healthcheck(body) or stack.service_settings_for(name).is_one_shot or _completed_dep(stack, name):
                continue
            attrs = await self.engine.image_attrs(str(body.get("image") or ""))
            if attrs and not ((attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test"):
                raw.append(finding(
                    "missing-healthcheck", f"service {name!r} has no healthcheck: none in the compose file and "
                    "none in the image just pulled; the deploy stops before up", service=name,
                    line=stack.line_of(name), evidence=["the image was not local at the pre-flight"]))
        return [f for f in apply_policy(stack, raw) if f.severity == "error" and f.rule == "missing-healthcheck"]

    async def _ask(self, question: str) -> bool:
        return bool(self._confirm and await self._confirm(question))

    def _last_success(self, stack: str, exclude: str) -> str | None:
        try:
            history = operations(self.runtime).history(stack, limit=200)
        except Exception:
            return None
        current, _ = _targets(history, None)
        if current is not None and current.operation_id != exclude:
            return str(current.operation_id)
        return None

    async def _all_ready(self, stack: LoadedStack, services: list[str] | None) -> bool:
        from server.deploy.health import assess
        from server.engine import inspect_container

        containers = await self.engine.compose_containers(stack.name)
        wanted = set(services or stack.services)
        seen = set()
        for c in containers:
            if c.service not in wanted:
                continue
            info = await inspect_container(self.engine, c.id)
            if info is None:
                return False
            a = assess(info, Watched(c.service or "", stack.service_settings_for(c.service or "").is_one_shot),
                       baseline_restarts=int(info.get("RestartCount") or 0), now=time.time())
            if a.verdict != "ready":
                return False
            seen.add(c.service)
        return bool(seen)

    async def _diagnose(self, stack: LoadedStack, watched: list[Watched]) -> Any:
        """After a failed ``up``: the first container that the gate would fail, with its evidence."""
        from server.deploy.health import assess, log_tail
        from server.engine import inspect_container

        by_service = {w.service: w for w in watched}
        for c in await self.engine.compose_containers(stack.name):
            if c.service not in by_service:
                continue
            info = await inspect_container(self.engine, c.id)
            if info is None:
                continue
            a = assess(info, by_service[c.service or ""], baseline_restarts=0, now=time.time(), grace_s=0)
            if a.verdict == "failed":
                a.evidence.extend(await log_tail(self.engine, c.id))
                return a
        return None

    async def _container_ids(self, stack: LoadedStack) -> dict[str, str]:
        return {c.service or "": c.id for c in await self.engine.compose_containers(stack.name) if c.running}

    async def _states(self, stack: LoadedStack, run: Run | None = None) -> list[ServiceState]:
        states = []
        for c in sorted(await self.engine.compose_containers(stack.name), key=lambda c: c.name):
            image_id = c.labels.get(IMAGE_LABEL)
            if run is not None and image_id and c.service and c.running:
                run.image_ids[c.service] = image_id
            states.append(ServiceState(name=c.service or c.name, state=c.state, health=c.health, image=c.image,
                                       image_digest=await image_attrs_digest(self.engine, image_id)
                                       if image_id else None))
        return states

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


def _watched(stack: LoadedStack, plan: DeployPlan, services: list[str] | None = None) -> list[Watched]:
    """The services the gate waits for: all of the plan, or the ones asked for and what they
    depend on (``up SERVICE`` starts its dependencies too)."""
    wanted = {s.service for s in plan.services if s.action != "remove"}
    if services:
        todo, wanted = list(services), set()
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(str(d) for d in (stack.services.get(name, {}).get("depends_on") or {}))
    return [Watched(s.service, stack.service_settings_for(s.service).is_one_shot or _completed_dep(stack, s.service))
            for s in plan.services if s.action != "remove" and s.service in wanted]


def _completed_dep(stack: LoadedStack, service: str) -> bool:
    for body in stack.services.values():
        cfg = (body.get("depends_on") or {}).get(service)
        if isinstance(cfg, dict) and cfg.get("condition") == "service_completed_successfully":
            return True
    return False


def _verify_default(stack: LoadedStack, services: list[str] | None) -> float:
    value = stack.settings.verify_s
    per_service = [stack.service_settings_for(s).verify_s for s in (services or stack.services)]
    values = [v for v in per_service if v is not None]
    if values:
        return float(max(values))
    return float(value) if value is not None else DEFAULT_VERIFY_S


def _targets(history: list[Any], to_deployment: str | None) -> tuple[Any, Any]:
    """(current deployment, target): the running one and the one before it (or the one asked for)."""
    ok = [h for h in history if h.status in ("deployed", "rolled_back") and h.result]
    current = None
    if ok:
        newest = ok[0]
        current_id = (newest.result or {}).get("current_deployment") or newest.operation_id
        current = next((h for h in history if h.operation_id == current_id), newest)
    deployed = [h for h in history if h.status == "deployed" and h.kind == "deploy"]
    if to_deployment:
        return current, next((h for h in deployed if h.operation_id == to_deployment), None)
    if current is None:
        return None, None
    earlier = [h for h in deployed if h.started_at < current.started_at and h.operation_id != current.operation_id]
    return current, earlier[0] if earlier else None


def _backup_after(history: list[Any], target: Any) -> str | None:
    later = [h for h in history if h.started_at > target.started_at and (h.result or {}).get("backup_id")]
    later.sort(key=lambda h: h.started_at)
    return str(later[0].result["backup_id"]) if later else None


_FILES_NOT_KEPT = ("the deployment's files could not be kept (state directory not writable): a rollback to it "
                   "falls back to the files of the backup taken before the next deploy")


def _save_files(settings: Any, stack: str, deployment_id: str, directory: Any) -> bool:
    """Keep a deployment's files for later rollbacks; False (logged) when the state disk refuses:
    the containers already run, so the deploy or rollback itself still ends as it went."""
    try:
        snapshots.save(settings, stack, deployment_id, directory)
    except OSError as exc:
        log.warning("could not keep the files of deployment %s of %s: %s", deployment_id, stack, exc)
        return False
    return True


def _end(run: Run, report: DeployReport | None) -> None:
    op = run.op
    if op is None or getattr(op, "ended", False):
        return
    try:
        if report is None:
            op.end("failed", None)
            return
        result = report.model_dump(mode="json", exclude={"plan"})
        if report.status == "deployed":
            result["current_deployment"] = op.id
        elif report.status == "rolled_back" and report.rollback:
            result["current_deployment"] = report.rollback.to_deployment
        result["image_ids"] = dict(run.image_ids)
        op.end(report.status, result)
    except Exception:
        log.exception("journal end write failed")


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


def _maintenance(ops: Any, stack: str, seconds: float, reason: str) -> Any:
    """Open a maintenance window for the operation (the health watcher stays out of its way);
    returns the user's window open before, to put back afterwards."""
    from datetime import UTC, datetime, timedelta

    until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    try:
        return ops.set_maintenance(stack, until, reason) or {}
    except Exception:  # a window is a courtesy to the watcher, never a reason to fail a deploy
        log.warning("could not open a maintenance window for %s", stack, exc_info=True)
        return None


def _maintenance_back(ops: Any, stack: str, previous: Any) -> None:
    if previous is None:
        return
    try:
        from datetime import UTC, datetime

        until = previous.get("until")
        if until and datetime.fromisoformat(str(until).replace("Z", "+00:00")) > datetime.now(UTC):
            ops.set_maintenance(stack, until, previous.get("reason") or "")
        else:
            ops.set_maintenance(stack, None, "")
    except Exception:
        log.warning("could not restore the maintenance window of %s", stack, exc_info=True)


def _on_start(compose: ComposeRunner, op: Any) -> dict[str, Any]:
    """Pass the journal's child recorder when ComposeRunner.run supports it (journal branch)."""
    import inspect

    if op is not None and "on_start" in inspect.signature(compose.run).parameters:
        return {"on_start": op.child}
    return {}


def _brief(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:400]


__all__ = ["DEFAULT_VERIFY_S", "Deployer", "GateResult"]
