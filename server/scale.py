"""scale_service: one service's replicas and limits, persisted in ``compose.dsm.yaml``, applied
by the deploy transaction.

Order: render the stack as it runs (our file included) -> the rolling rules and the host check
(server/scale_rules.py; refused = nothing written) -> a dry run or a bare call stops here with
the change and a suggestion from observed usage -> the entry is written next to a rollback's
``x-dsm-pins`` (server.deploy.override), which every deploy keeps -> the deploy transaction for
the service (lock, backup, ``up``, gate, verify, record; on failure the one rollback, whose file
restore puts this service's previous entry back: :class:`Scaling`). Whatever the deploy refused
before it changed anything puts the previous files back here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.deploy import override
from server.deploy.executor import Change, Executor, Observed, OnWait, Restored, Snapshot, Start
from server.deploy.health import GateResult, Watched
from server.deploy.steps import StepLog
from server.errors import DsmError
from server.runtime import Runtime
from server.scale_models import Ask, ScaleReport, Suggestion
from server.scale_rules import (
    UNCHANGED,
    check_fit,
    check_rules,
    describe,
    merged,
    new_entry,
    replicas_of,
    suggest,
)
from server.stackmodel import LoadedStack

Progress = Callable[[float, float, str], Awaitable[None]]
Confirm = Callable[[str], Awaitable[bool]]


async def scale_service(runtime: Runtime, stack_arg: str, service: str, ask: Ask, *, dry_run: bool = False,
                        confirm: bool = False, progress: Progress | None = None, confirmer: Confirm | None = None,
                        wait_timeout_s: float | None = None) -> ScaleReport:
    from server.deploy.seams import operations
    from server.preflight.facts import gather_facts
    from server.stackload import load_stack

    stack = await load_stack(runtime.settings, runtime.compose(), path=stack_arg)
    directory = stack.directory
    if directory is None:
        raise DsmError("scale_service needs a stack directory", state=UNCHANGED)
    if service not in stack.services:
        raise DsmError(f"unknown service {service!r} in stack {stack.name!r}", state=UNCHANGED,
                       next_step="call inspect_stack for the service names")
    body = stack.services[service]
    previous = override.scale_entry(directory, service)
    entry = new_entry(body, previous, ask)
    after = merged(body, entry)
    changes = describe(body, after)
    engine = runtime.engine()
    running = await count(engine, stack.name, service)
    wanted = replicas_of(after)
    if running != wanted and not any(c.startswith("replicas") for c in changes):
        changes.insert(0, f"containers running {running} -> {wanted}")
    check_rules(service, after, wanted, confirm=confirm)
    measure = ask.empty or dry_run
    snap = await gather_facts(engine, stack, sample_cpu=measure, check_images=False)
    resources = check_fit(stack, service, body, after, snap.facts)
    suggestion = _suggestion(snap, stack.name, service) if measure else None
    report = ScaleReport(status="suggested", stack=stack.name, service=service, changes=changes, resources=resources,
                         suggestion=suggestion)
    if ask.empty:
        return report.model_copy(update={"next_steps": [
            "call scale_service again with replicas, memory, cpus (and reservations) to apply; nothing was changed"]})
    if changes and override.holds_pins(directory):  # the dry run says what the real call will say
        raise DsmError(f"stack {stack.name!r} runs images pinned by a rollback (compose.dsm.yaml x-dsm-pins), and "
                       "the deploy that applies a scale replaces pins with the files' images", state=UNCHANGED,
                       next_step="fix the compose files and deploy_stack first (or keep the rollback), then scale")
    if dry_run:
        return report.model_copy(update={"status": "planned", "next_steps": [
            "call again without dry_run to write compose.dsm.yaml and deploy the service; nothing was changed"]})
    if not changes:
        return report.model_copy(update={"status": "unchanged", "next_steps": ["nothing to do: already so"]})
    critical = stack.settings.critical or stack.service_settings_for(service).critical
    # The deploy asks only when its plan recreates something; a replicas-only change recreates nothing.
    if critical and not confirm and not (confirmer and await confirmer(
            f"Scale {service} of critical stack {stack.name!r}: {'; '.join(changes)}?")):
        return report.model_copy(update={"status": "blocked", "next_steps": [
            "this stack is critical: confirm (confirm=true) after the user agreed; nothing was changed"]})
    confirm = confirm or bool(critical)  # asked once: the deploy does not ask again
    busy = operations(runtime).running(stack.name)
    if busy is not None:
        return report.model_copy(update={"status": "busy", "next_steps": [
            f"another {busy.kind} runs on this stack: poll operation_status('{busy.operation_id}'); nothing changed"]})
    from server.updates.files import drop_own, own_edits

    kept = _Files(directory)
    override.write_scale(directory, service, entry)
    written = kept.override_now()
    # Measured before the deploy records its own baseline: our edits (.env's COMPOSE_FILE) are not drift.
    own = own_edits(runtime.settings, stack.name, directory, {directory / n: b for n, b in kept.before.items()})
    from server.deploy.compose_executor import ComposeExecutor
    from server.deploy.transaction import Transaction

    executor = Scaling(ComposeExecutor(runtime), runtime, directory, service, wanted, previous)
    try:
        deployed = await Transaction(runtime, executor, progress, confirmer).deploy(
            str(directory), services=[service], confirm=confirm, wait_timeout_s=wait_timeout_s)
    except BaseException:
        kept.put_back_if(written)  # a refusal raised before the backup; after it, the rollback restored them
        raise
    if deployed.status in ("blocked", "busy") or (deployed.status == "failed" and deployed.rollback is None):
        kept.put_back_if(written)  # the deploy changed nothing: neither do we
    steps = [*(["compose.dsm.yaml keeps these: the next deploy_stack and `docker compose up` run them"]
               if deployed.status == "deployed" else []), *deployed.next_steps]
    if own and deployed.plan is not None and deployed.plan.drift:
        deployed = deployed.model_copy(update={"plan": deployed.plan.model_copy(update={
            "drift": drop_own(deployed.plan.drift, own)})})
    # The plan compares the files' config hashes, which replicas and limits kept in compose.dsm.yaml
    # do not all move: its "0 change(s)" would hide the one change this call makes.
    deployed = deployed.model_copy(update={"phases": [
        p.model_copy(update={"detail": f"1 change: {service} scaled as asked (compose.dsm.yaml)"})
        if p.name == "plan" else p for p in deployed.phases]})
    deploy = deployed.for_the_caller().model_dump(mode="json")
    return report.model_copy(update={"status": deployed.status, "deploy": deploy,
                                     "next_steps": steps[:3]})


def _suggestion(snap: Any, project: str, service: str) -> Suggestion:
    from server.preflight.usage import memory_peak

    mine = [c for c in snap.containers if c.summary.project == project and c.summary.service == service]
    usage = [snap.usage.get(c.summary.id) for c in mine]
    return suggest([memory_peak(c.full_id) for c in mine], [u.memory_bytes if u else None for u in usage],
                   [u.cpu_percent if u else None for u in usage])


class _Files:
    """compose.dsm.yaml and .env as they were before the scale wrote them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.before = {name: _read(directory / name) for name in (override.OVERRIDE_NAME, ".env")}

    def override_now(self) -> bytes | None:
        return _read(self.directory / override.OVERRIDE_NAME)

    def put_back_if(self, written: bytes | None) -> None:
        """Put the old files back, unless something else (the rollback) already replaced ours."""
        if self.override_now() != written:
            return
        for name, data in self.before.items():
            path = self.directory / name
            if data is None:
                path.unlink(missing_ok=True)
            else:
                override._atomic_write(path, data.decode("utf-8"))


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


# -- the executor wrapper -------------------------------------------------------------------------
class Scaling:
    """The stack's executor for a scale: ``observe`` also counts the service's containers (Compose
    leaves replicas out of the config hash, so only the count tells a pending scale), and
    ``restore`` puts the service's previous entry back in ``compose.dsm.yaml`` after the files
    (the backup was taken with the new entry in place)."""

    def __init__(self, inner: Executor, runtime: Any, directory: Path, service: str, replicas: int,
                 previous: dict[str, Any]) -> None:
        self.inner, self.runtime, self.directory = inner, runtime, directory
        self.service, self.replicas, self.previous = service, replicas, previous

    async def observe(self, stack: LoadedStack, services: list[str] | None) -> Observed:
        seen = await self.inner.observe(stack, services)
        running = await count(self.runtime.engine(), stack.name, self.service)
        return seen if running == self.replicas else Observed(ready=False, services=seen.services)

    async def apply(self, change: Change, steps: StepLog) -> None:
        try:
            await self.inner.apply(change, steps)
        finally:
            # Scaled, though the plan names no change (replicas are not in the config hash): the
            # rollback must restart the service's old version, not leave its containers as "never
            # stopped" (server/deploy/compose_executor.py restore).
            changed = getattr(self.inner, "changed", None)
            if isinstance(changed, set):
                changed.add(self.service)

    async def gate(self, stack: LoadedStack, watched: list[Watched], timeout_s: float, on_wait: OnWait
                   ) -> GateResult:
        return await self.inner.gate(stack, watched, timeout_s, on_wait)

    async def restore(self, snapshot: Snapshot, steps: StepLog) -> Restored:
        from server.stackload import load_stack

        restored = await self.inner.restore(snapshot, steps)
        override.write_scale(self.directory, self.service, self.previous)
        notes = [*restored.notes, f"compose.dsm.yaml: the previous replicas and limits of {self.service} put back"]
        old = restored.stack
        if old is not None:  # rendered again: the entry just put back is part of what restarts
            old = await load_stack(self.runtime.settings, self.runtime.compose(), path=str(self.directory),
                                   env=snapshot.env, dsm_override=False)
        return Restored(old, restored.pins, notes)

    async def start(self, start: Start) -> None:
        await self.inner.start(start)


async def count(engine: Any, project: str, service: str) -> int:
    from server.deploy.plan import ONEOFF_LABEL

    return sum(1 for c in await engine.compose_containers(project)
               if c.service == service and c.running and c.labels.get(ONEOFF_LABEL) != "True")
