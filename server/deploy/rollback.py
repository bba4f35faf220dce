"""The one rollback path, for a deploy that failed after its backup and for the ``rollback`` tool.

Data first, then code, then the same checks as a deploy:

1. stop the services that use the data being restored (every running service that is not one
   of the stack's databases: apps reach a database with or without ``depends_on``, and one-shots
   would migrate it again);
2. put back the files of the target deployment, with the images it ran pinned in
   ``compose.dsm.yaml`` (only for services those files define);
3. start ONLY the database services of the old version, restore the dumps (or, where no dump
   exists, the volume archives the backup took) of every database the failed change touched
   (explicit rollback: with ``restore_data``), and check tables and row counts against those
   recorded when the dump was taken;
4. start the rest of the old version;
5. health gate, x-dsm smoke checks and verification window, exactly as a deploy runs them.

Anything that does not pass ends ``failed`` (never ``rolled_back``): the report says what state
the stack is in, with the evidence and what a person should do. When the data could not be put
back (or its check fails), the services that use it are left stopped: old code on the failed
version's data is how a "healthy" rollback answers 500.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from server.deploy import snapshots
from server.deploy.datacheck import data_check
from server.deploy.executor import RollbackHost, Snapshot, Start
from server.deploy.health import Watched, run_gate
from server.deploy.report import DeployPlan, DeployReport, RollbackInfo
from server.deploy.seams import backup_store, operations, stack_busy
from server.deploy.steps import (
    Run,
    StepFailed,
    brief,
    end_journal,
    maintenance,
    maintenance_back,
    run_checks,
    states,
    verify_default,
    watched_all,
)
from server.deploy.targets import backup_after, targets
from server.deploy.timeouts import rollback_up_timeout_s
from server.engine import stop_container, tag_image
from server.errors import DsmError
from server.models import Finding
from server.monitor import baseline  # what this rollback left running: drift is measured from it
from server.redact import Scrubber
from server.roles import original_from_tags
from server.stackmodel import LoadedStack

log = logging.getLogger("docker_stack_mcp.deploy")


@dataclass
class Spec:
    """Where one rollback goes and what it puts back."""

    target: str | None
    """Deployment id returned to (None: nothing recorded, the backup's files go back)."""
    pins: dict[str, str]
    """service -> local image ref to pin (already tagged)."""
    originals: dict[str, str] = field(default_factory=dict)
    """service -> the reference each pin stands for (what the service IS: server.roles)."""
    data: Any = None
    """The backup whose data goes back (None: no data)."""
    databases: list[str] | None = field(default_factory=list)
    """Services whose data goes back; None: everything the backup holds (explicit restore_data)."""
    env: dict[str, str] = field(default_factory=dict)
    window: float | None = None
    window_cap: float | None = None
    """The verification window is at most this (the failed deploy's own window)."""
    notes: list[str] = field(default_factory=list)
    """What the caller already has to say (e.g. the failed files could not be kept)."""
    """Verification window; None: the old version's own (x-dsm verify_s, else the default), not
    the one asked for the failed version (a shutdown's shielded rollback must not wait 2 min)."""
    nothing_ran: bool = False
    """Nothing ran before the failed deploy: going back means removing its containers."""


@dataclass
class Outcome:
    result: Literal["restored", "failed"] = "failed"
    notes: list[str] = field(default_factory=list)
    data_check: str | None = None
    failure: StepFailed | None = None
    kept_stopped: list[str] = field(default_factory=list)


def databases_of(stack: LoadedStack, backup: Any) -> set[str]:
    """Which services are databases: the one place this rollback decides it. A service the backup
    dumped, or a database by server.roles (x-dsm role, the original image of a pin, what it runs)."""
    from server.roles import pin_originals, role_of_service

    found = {d.service for d in getattr(backup, "dumps", []) or []}
    originals = pin_originals(stack)
    found |= {s for s in stack.services if role_of_service(stack, s, originals=originals).is_database}
    return found


def touched_databases(stack: LoadedStack, plan: DeployPlan, backup: Any) -> list[str]:
    """Databases the failed deployment touched: recreated, or written by a one-shot (a migration)
    that changed and depends on them. x-dsm backup.restore_on_rollback: false opts out. Only those
    the backup holds data for (a dump, or a volume archive) can go back."""
    held = {d.service for d in getattr(backup, "dumps", []) or []}
    held |= {v.service for v in getattr(backup, "volumes", []) or [] if v.service}
    changed = {s.service for s in plan.changes}
    touched: set[str] = set()
    for name in databases_of(stack, backup) & held:
        if not stack.service_settings_for(name).backup.restore_on_rollback:
            continue
        if name in changed:
            touched.add(name)
        for other, body in stack.services.items():
            one_shot = stack.service_settings_for(other).is_one_shot
            if other in changed and name in (body.get("depends_on") or {}) and one_shot:
                touched.add(name)
    return sorted(touched)


async def restore_version(d: RollbackHost, run: Run, spec: Spec, wait_s: float) -> Outcome:
    """Steps 1-5 of the module's docstring. Never raises for a failed step: the outcome says."""
    stack = run.stack
    assert stack.directory is not None
    out = Outcome(notes=list(spec.notes))
    t = time.monotonic()
    stage, mark = "rollback", 0
    try:
        if not stack.directory.is_dir():  # deleted by someone meanwhile: never resurrect it, say so
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(stack.directory))
        dbs = databases_of(stack, spec.data) if spec.data is not None else set()
        restoring = spec.data is not None and (spec.databases is None or bool(spec.databases))
        if restoring:
            stopped = await _stop_users(d, stack.name, dbs)
            out.notes.append(f"stopped {', '.join(stopped)} (they use the data)" if stopped else
                             "no running service uses the data")
        restored = await d.executor.restore(Snapshot(
            stack, spec.env, spec.target, run.backup, pins=spec.pins, originals=spec.originals,
            nothing_ran=spec.nothing_ran, op=run.op), d.steps(run))
        out.notes.extend(restored.notes)
        if restored.stack is None:  # nothing ran before: its containers are gone, nothing to start
            out.result = "restored"
            run.phase("rollback", "ok", t, "; ".join(out.notes))
            return out
        old, pins = restored.stack, restored.pins
        if restoring:
            run.phase("rollback", "ok", t, "; ".join(out.notes))
            t, stage, mark = time.monotonic(), "restore_data", len(out.notes)
            ok = await _restore_data(d, run, spec, old, sorted(dbs & set(old.services)), wait_s, out)
            run.phase("restore_data", "ok" if ok else "failed", t, "; ".join(out.notes[mark:]))
            if not ok:
                out.kept_stopped = sorted(set(old.services) - dbs)
                return out
            t, stage, mark = time.monotonic(), "rollback_up", len(out.notes)
        await d.executor.start(Start(old, spec.env, None, rollback_up_timeout_s(old, wait_s),
                                     "docker compose up (rollback)", run.op))
        out.notes.append("old version started" + (" after its data" if restoring else ""))
        run.phase(stage, "ok", t, "; ".join(out.notes[mark:]))  # each phase says its own part
        stage = ""
        running = {c.service or "" for c in await d.engine.compose_containers(stack.name)}
        checked = _with_pins(old, pins)
        await run_checks(d.steps(run), d.engine, checked, watched_all(checked, running), set(checked.services),
                         wait_s=wait_s, window=_window(spec, old),
                         prefix="rollback_")
        out.notes.append("previous version healthy: health gate, smoke checks and verification passed")
        out.result = "restored"
    except StepFailed as failed:
        out.failure = failed
        out.notes.append(f"the previous version does not pass the checks: {failed.why}")
    except Exception as exc:
        log.exception("rollback failed")
        out.notes.append(f"rollback step failed: {brief(exc)}")
        if stage:
            run.phase(stage, "failed", t, "; ".join(out.notes))
    return out


async def _stop_users(d: RollbackHost, project: str, databases: set[str]) -> list[str]:
    stopped = []
    for c in await d.engine.compose_containers(project):
        if c.running and c.service not in databases:
            await stop_container(d.engine, c.id)
            stopped.append(c.service or c.name)
    return sorted(set(stopped))


async def _restore_data(d: RollbackHost, run: Run, spec: Spec, old: LoadedStack, dbs: list[str], wait_s: float,
                        out: Outcome) -> bool:
    """Start the databases alone, put their data back, check it. False: the data is not back."""
    store = backup_store(d.runtime)
    if dbs:
        await d.tell(f"rollback: starting the databases alone ({', '.join(dbs)})")
        await d.executor.start(Start(old, spec.env, dbs, rollback_up_timeout_s(old, wait_s),
                                     "docker compose up (rollback: databases first)", run.op))
        gate = await run_gate(d.engine, run.stack.name, [Watched(s) for s in dbs], timeout_s=wait_s)
        if not gate.ok:  # the restore may still bring it back (a volume archive, a fresh data directory)
            out.notes.append(f"database not healthy before the restore: {gate.failure}")
    try:
        done = await store.restore_data(spec.data, services=spec.databases, volumes=True, dumps=True)
    except Exception as exc:
        out.notes.append(f"data NOT restored from backup {spec.data.backup_id}: {brief(exc)}")
        return False
    out.notes.append(f"data restored from backup {spec.data.backup_id}: {', '.join(map(str, done)) or 'nothing'}")
    ok, out.data_check = await data_check(d.engine, backup_store(d.runtime), run.stack.name, spec.data,
                                         spec.databases)
    out.notes.append(f"data check: {out.data_check}")
    return ok


def _with_pins(stack: LoadedStack, pins: dict[str, str]) -> LoadedStack:
    """The old stack as it runs: its images are our pins (smoke probes use a service's image)."""
    services = {n: ({**body, "image": pins[n]} if n in pins else body) for n, body in stack.services.items()}
    return replace(stack, rendered={**stack.rendered, "services": services})


# -- the two callers --------------------------------------------------------------------------------
async def automatic(d: RollbackHost, run: Run, plan: DeployPlan, env: dict[str, str], failed: StepFailed,
                    started: float, wait_s: float, window: float | None = None) -> DeployReport:
    """A deploy failed after its backup: back to the last good deployment, with the images that ran
    before it (the backup's pins) and the data of every database the failed change touched.
    ``window``: the failed deploy's verification window; the old version is verified for its own
    window or this one, whichever is shorter (a caller who asked for 5 s does not wait 30)."""
    from server.memory.recorder import MemoryRecorder
    from server.preflight.history import failed_images as failed_digests

    stack = run.stack
    assert stack.directory is not None
    await d.tell(f"rolling back: {failed.why}")
    evidence = list(failed.evidence)
    target = _last_good(d, stack.name, exclude=run.op.id)
    first: list[str] = []
    try:  # a nicety: a full or read-only state disk must not stop the rollback itself
        snapshots.keep_failed(d.settings, stack.name, run.backup.backup_id, stack.directory)
    except OSError as exc:
        log.warning("could not keep the failed files of %s", stack.name, exc_info=True)
        first.append(f"the failed files could not be kept ({exc.strerror or exc})")
    # The images that failed: the failing service's when the failure names one among the changes
    # (a one-shot that ran fine beside it is not a bad image), else every changed service's.
    blamed = [s.service for s in plan.changes if s.service == failed.service] or [s.service for s in plan.changes]
    touched = touched_databases(stack, plan, run.backup)
    spec = Spec(target=target, pins={p.service: p.pinned_ref for p in run.backup.images},
                originals={p.service: p.reference for p in run.backup.images},
                data=run.backup if touched else None, databases=touched, env=env,
                nothing_ran=not run.backup.images, notes=first, window_cap=window)
    out = await restore_version(d, run, spec, wait_s)
    ttr = round(time.monotonic() - started, 1)
    recorder = MemoryRecorder(d.runtime.memory)
    now = await states(d.engine, stack, run)
    ok = out.result == "restored"
    deployment_id = await recorder.record_deployment(
        stack=stack.name, services=[s.service for s in plan.changes], outcome="rolled_back" if ok else
        "rollback_failed", duration_s=ttr, log_lines=evidence[-20:], operation_id=run.op.id,
        notes=f"{failed.phase} failed: {failed.why}")
    incident_id = await recorder.record_incident(
        title=f"deploy of {stack.name} failed at {failed.phase}: {failed.why}"[:200],
        symptoms=f"{failed.why}. Evidence: " + " | ".join(evidence[:8]),
        stack=stack.name, service=failed.service, severity="high", log_lines=evidence[-30:],
        resolution="automatic rollback: " + "; ".join(out.notes), deployment_id=deployment_id,
        image_digests=await failed_digests(d.engine, stack, blamed),
        time_to_recover_s=ttr, outcome="rolled_back" if ok else "unresolved", source="deploy")
    if ok:
        snapshots.save_kept(d.settings, stack.name, run.op.id + "-rollback", stack.directory)
        await baseline.record(d.settings, d.engine, stack.name, stack.directory, run.op.id, "rollback")
    steps = [f"read the evidence: {failed.why}", "fix the new version (the failed files are kept with backup "
             f"{run.backup.backup_id}) and deploy again"] if ok else _failed_steps(out, target, run.backup.backup_id)
    failed_images = {s.service: s.image_to for s in plan.changes if s.image_to and s.service in blamed}
    report = d._report(run, "rolled_back" if ok else "failed", plan=plan, services=now, incident_id=incident_id,
                       rollback=_info(f"{failed.phase}: {failed.why}", target, out, ttr, failed_images),
                       next_steps=steps)
    return report.model_copy(update={"findings": [*report.findings, Finding(
        rule="deploy-failed", severity="error", category="deploy", service=failed.service,
        message=failed.why[:500], evidence=[Scrubber(stack.secret_values)(e)[:300] for e in evidence[:15]])]})


async def explicit(d: RollbackHost, stack_arg: str, *, to_deployment: str | None, restore_data: bool, confirm: bool,
                   wait_s: float, reason: str | None) -> DeployReport:
    """The ``rollback`` tool: to ``to_deployment`` or the last good deployment (see targets)."""
    from server.stackload import load_stack
    from server.stacks import resolve_stack

    location = resolve_stack(d.settings, stack_arg)
    from server.ownership import require_ours  # a project of this name started elsewhere is not ours

    await require_ours(d.engine, location.name, location.directory, "rollback")
    ops = operations(d.runtime)
    history = ops.history(location.name, limit=200)
    _, target = targets(history, to_deployment)
    if target is None:
        raise DsmError(f"no earlier successful deployment of {location.name!r} to roll back to"
                       + (f" (asked for {to_deployment})" if to_deployment else ""),
                       state="nothing was changed", next_step="call stack_history for the deployment ids")
    if not snapshots.exists(d.settings, location.name, target.operation_id):
        raise DsmError(f"the files of deployment {target.operation_id} were not kept", state="nothing was changed",
                       next_step="pick another deployment from stack_history, or restore with backup_stack")
    stack = await load_stack(d.settings, d.compose, path=str(location.directory))
    from server.deploy.swarm import executor_for

    d.executor = executor_for(d.runtime, stack, d.executor)  # x-dsm mode: swarm -> SwarmExecutor
    critical = stack.settings.critical or any(s.critical for s in stack.service_settings.values())
    if (restore_data or critical) and not confirm and not await d._ask(
            f"Roll back {stack.name!r} to {target.operation_id}"
            + (" and overwrite its data with the backup" if restore_data else "") + "?"):
        raise DsmError("rolling back " + ("with restore_data " if restore_data else "a critical stack ")
                       + "overwrites state and needs confirmation", state="nothing was changed",
                       next_step="call rollback again with confirm=true once the user agreed")
    run = Run(stack)
    try:
        run.op = ops.begin(stack.name, "rollback", params={"to_deployment": target.operation_id,
                                                            "restore_data": restore_data, "reason": reason},
                           secrets=stack.secret_values, directory=stack.directory)
    except OSError as exc:
        from server.statedisk import is_disk_refusal, unwritable

        if not is_disk_refusal(exc):
            raise
        raise unwritable(exc, state="nothing was changed: the rollback did not start") from None
    except stack_busy() as busy:
        return DeployReport(status="busy", stack=stack.name, operation_id=getattr(busy, "operation_id", None),
                            next_steps=[f"poll operation_status('{getattr(busy, 'operation_id', '')}')"])

    async def work() -> DeployReport:
        result: DeployReport | None = None
        previous = maintenance(ops, stack.name, 2 * wait_s + 600, f"rollback {run.op.id}")
        try:
            result = await _explicit(d, run, target, restore_data, wait_s, history, reason)
            return result
        finally:
            end_journal(run, result)
            maintenance_back(ops, stack.name, previous)

    return await ops.run_detached(run.op, work)  # type: ignore[no-any-return,unused-ignore]


async def _explicit(d: RollbackHost, run: Run, target: Any, restore_data: bool, wait_s: float, history: list[Any],
                    reason: str | None) -> DeployReport:
    stack = run.stack
    store = backup_store(d.runtime)
    started = time.monotonic()
    t = time.monotonic()
    run.backup = await store.create(stack, reason=f"before rollback {run.op.id}")
    run.phase("backup", "ok", t, f"backup {run.backup.backup_id} of the state being left")
    pins: dict[str, str] = {}
    originals: dict[str, str] = {}
    from server.operations.views import images_of
    from server.roles import is_pin

    # What each pin stands for: the reference the target's files named (its report), never just any
    # other tag of the same image id (a test or another stack may tag the same image elsewhere).
    named = {i.service: i.image for i in images_of(target.result or {}) if i.image and not is_pin(i.image)}
    for service, image_id in ((target.result or {}).get("image_ids") or {}).items():
        if image_id and (attrs := await d.engine.image_attrs(image_id)):
            ref = f"dsm-pin/{stack.name}-{service}:{target.operation_id}".lower()
            await tag_image(d.engine, image_id, ref)
            pins[service] = ref
            originals[service] = named.get(service) or original_from_tags(attrs) or ""
    data = None
    if restore_data:
        data_id = backup_after(history, target)
        if data_id is None:
            run.phase("restore_data", "failed", time.monotonic(), "no backup taken when that deployment was left")
            return _explicit_report(d, run, target, Outcome(notes=["no backup of that deployment's data"]),
                                    reason, started)
        data = store.get(stack.name, data_id)
    spec = Spec(target=target.operation_id, pins=pins, originals=originals, data=data, databases=None, env={})
    out = await restore_version(d, run, spec, wait_s)
    if out.result == "restored":
        assert stack.directory is not None
        snapshots.save_kept(d.settings, stack.name, run.op.id, stack.directory)
        await baseline.record(d.settings, d.engine, stack.name, stack.directory, run.op.id, "rollback")
    return await _explicit_record(d, run, target, out, reason, started)


async def _explicit_record(d: RollbackHost, run: Run, target: Any, out: Outcome, reason: str | None,
                           started: float) -> DeployReport:
    now = await states(d.engine, run.stack, run)
    ok = out.result == "restored"
    await d._record_deployment(
        stack=run.stack.name, services=[s.name for s in now], outcome="rolled_back" if ok else "rollback_failed",
        image_digests={s.name: s.image_digest or "" for s in now if s.image_digest},
        operation_id=run.op.id, notes=f"explicit rollback to {target.operation_id}")
    return _explicit_report(d, run, target, out, reason, started, services=now)


def _explicit_report(d: RollbackHost, run: Run, target: Any, out: Outcome, reason: str | None, started: float,
                     services: Any = None) -> DeployReport:
    ok = out.result == "restored"
    steps = ["done; the previous version runs (pinned in compose.dsm.yaml until the next deploy)",
             *_data_kept(d, run, target, out)] if ok else \
        _failed_steps(out, target.operation_id, _data_backup_of(d, run.stack.name, target),
                      left=getattr(run.backup, "backup_id", None))
    return d._report(run, "rolled_back" if ok else "failed", services=services or [],
                     rollback=_info(reason or "asked for", target.operation_id, out,
                                    round(time.monotonic() - started, 1), None), next_steps=steps)


def _info(why: str, target: str | None, out: Outcome, ttr: float, failed_images: dict[str, str] | None
          ) -> RollbackInfo:
    return RollbackInfo(why=why[:500], to_deployment=target, result=out.result, time_to_recover_s=ttr,
                        data_check=out.data_check, failed_images=failed_images or None)


def _failed_steps(out: Outcome, target: str | None, good: str | None, left: str | None = None) -> list[str]:
    """``good``: the backup holding the data of before the change (an automatic rollback: the deploy's
    own backup; an explicit one: the backup taken right after the target deployment), None when none
    is known. ``left``: an explicit rollback's backup of the state being left, the broken one: it is
    named as that, never offered as the data to go back to."""
    evidence = out.failure.evidence[:3] if out.failure else []
    where = f"deployment {target}" if target else "the files and images from before the deploy"
    if out.kept_stopped:
        state = (f"the stack is on {where} but its data was NOT restored or does not match the backup: "
                 f"its databases run, {', '.join(out.kept_stopped)} are left stopped so they do not serve on "
                 "the wrong data")
    else:
        state = f"the stack is on {where} but NOT healthy: {out.notes[-1] if out.notes else 'see phases'}"
    data = (f"backup_stack(action='restore', backup_id='{good}') puts back the data as {where} had it"
            if good else f"no backup holding the data of {where} is known")
    if left:
        data += f" (backup {left} holds the state just left, the broken one: not the data to go back to)"
    return [state + (f" (evidence: {' | '.join(evidence)})" if evidence else ""),
            "a person should read the evidence (inspect_stack, the logs of the failing service), then: "
            f"{data}; deploy_stack with fixed files, or rollback(to_deployment=...) to another "
            "deployment from stack_history"]


def _data_kept(d: RollbackHost, run: Run, target: Any, out: Outcome) -> list[str]:
    """A rollback without restore_data of a stack that holds data: the code went back, the data did
    not (what the newer version wrote, or deleted, stays). Said, with the call that would restore it."""
    if out.data_check or run.backup is None or not (run.backup.dumps or run.backup.volumes):
        return []  # data was restored (and checked), or the stack holds none
    held = sorted({x.service for x in run.backup.dumps} | {v.name for v in run.backup.volumes})
    backup = _data_backup_of(d, run.stack.name, target)
    fix = (f"rollback(stack={run.stack.name!r}, to_deployment={target.operation_id!r}, restore_data=true, "
           f"confirm=true) restores backup {backup} (it overwrites them)") if backup else \
        "no backup of them from when that deployment was left is known (backup_stack list)"
    return [f"data NOT restored: {', '.join(held)} keep what the newer version wrote or deleted; {fix}"]


def _data_backup_of(d: RollbackHost, stack: str, target: Any) -> str | None:
    """The backup holding the data as ``target`` left it (for next steps; None when unknown)."""
    try:
        return backup_after(operations(d.runtime).history(stack, limit=200), target)
    except Exception:
        return None


def _window(spec: Spec, old: LoadedStack) -> float:
    window = verify_default(old, None) if spec.window is None else spec.window
    return window if spec.window_cap is None else min(window, spec.window_cap)


def _last_good(d: RollbackHost, stack: str, exclude: str) -> str | None:
    """The deployment an automatic rollback returns to (None: none recorded, not even adopted)."""
    try:
        history = operations(d.runtime).history(stack, limit=200)
    except Exception:
        return None
    current, _ = targets([h for h in history if h.operation_id != exclude], None)
    if current is not None and current.operation_id != exclude:
        return str(current.operation_id)
    return None
