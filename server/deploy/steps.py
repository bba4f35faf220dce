"""What the deploy and the rollback share: the run being reported, how a step fails, the checks a
new (or restored) version must pass, and the journal's end record and maintenance window.

The checks (health gate, x-dsm smoke, verification window) live here so that a rollback runs
exactly the checks a deploy runs: a version is judged the same way whichever path started it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from server.compose import ComposeRunner
from server.deploy.health import GateResult, Watched, run_gate
from server.deploy.plan import IMAGE_LABEL
from server.deploy.report import DeployPlan, DeployReport, Phase, ServiceState
from server.deploy.smoke import run_smoke
from server.deploy.verify import verify_window
from server.engine import Engine, image_attrs_digest
from server.models import Finding
from server.stackmodel import LoadedStack

log = logging.getLogger("docker_stack_mcp.deploy")

Tell = Callable[[str], Awaitable[None]]
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


@dataclass
class Step:
    """One phase in progress: what it says when it ends (``status``/``detail`` may be set inside)."""

    name: str
    started: float
    status: str = "ok"
    detail: str = ""


class StepLog:
    """Times, journals and reports each phase in one place: ``async with steps.phase("up", "up: ..."):``
    tells the progress message, then records the phase (report and journal) when the block ends:
    ``ok`` (or the status the block set), ``failed`` on StepFailed."""

    def __init__(self, run: Run, tell: Callable[[str, bool], Awaitable[None]] | None = None) -> None:
        self.run = run
        self._tell = tell

    async def tell(self, message: str, advance: bool = True) -> None:
        if self._tell is not None:
            await self._tell(message, advance)

    def record(self, name: str, status: str, started: float, detail: str = "") -> None:
        self.run.phase(name, status, started, detail)

    @asynccontextmanager
    async def phase(self, name: str, message: str | None = None) -> AsyncIterator[Step]:
        if message is not None:
            await self.tell(message, True)
        step = Step(name, time.monotonic())
        try:
            yield step
        except StepFailed as failed:
            self.record(name, "failed", step.started, step.detail or failed.why)
            raise
        except Blocked:  # nothing changed: the transaction records it, whoever raised it
            raise
        self.record(name, step.status, step.started, step.detail)


Gate = Callable[[LoadedStack, list[Watched], float, Callable[[str], Awaitable[None]]], Awaitable[GateResult]]


async def run_checks(steps: StepLog, engine: Engine, stack: LoadedStack, watched: list[Watched], changed: set[str], *,
                     wait_s: float, window: float, gate: Gate | None = None, prefix: str = "") -> None:
    """Health gate (the executor's, else the containers of the project), smoke checks, verification
    window; raises StepFailed at the first that fails. ``prefix`` names the phases of a rollback
    apart from the deploy's (``rollback_health``): the journal keeps one entry per phase name."""
    label = prefix.replace("_", " ")

    async def waiting(message: str) -> None:
        await steps.tell(message, False)

    async with steps.phase(prefix + "health", f"{label}health gate: waiting up to {wait_s:.0f}s") as step:
        result = await (gate(stack, watched, wait_s, waiting) if gate is not None else
                        run_gate(engine, stack.name, watched, timeout_s=wait_s, on_wait=waiting))
        if not result.ok:
            raise StepFailed(prefix + "health", result.failure, result.failed_service, result.evidence)
        step.detail = f"{len(watched)} service(s) ready"

    async with steps.phase(prefix + "smoke", f"{label}smoke tests") as step:
        smoke_services = [w.service for w in watched if stack.service_settings_for(w.service).smoke]
        if smoke_services:
            results = await run_smoke(engine, stack, smoke_services, await container_ids(engine, stack.name))
            bad = [r for r in results if not r.ok]
            step.detail = "; ".join(f"{r.service}: {r.detail}" for r in results)
            if bad:
                raise StepFailed(prefix + "smoke", f"smoke check failed: {bad[0].service}: {bad[0].detail}",
                                 bad[0].service, [f"{r.service}: {r.detail}" for r in bad])
        else:
            step.status, step.detail = "skipped", "no x-dsm smoke checks"

    async with steps.phase(prefix + "verify", f"{label}verification window: {window:.0f}s") as step:
        verdict = await verify_window(engine, stack.name, watched, changed, window_s=window,
                                      dependencies=frozenset(stack.services), tell=waiting)
        if not verdict.ok:
            raise StepFailed(prefix + "verify", verdict.failure, verdict.failed_service, verdict.evidence)
        step.status, step.detail = ("ok" if window > 0 else "skipped"), verdict.summary


def completed_dep(stack: LoadedStack, service: str) -> bool:
    """Another service waits for this one to complete: it is a one-shot in all but name."""
    for body in stack.services.values():
        cfg = (body.get("depends_on") or {}).get(service)
        if isinstance(cfg, dict) and cfg.get("condition") == "service_completed_successfully":
            return True
    return False


def watched(stack: LoadedStack, plan: DeployPlan, services: list[str] | None = None) -> list[Watched]:
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
    return [Watched(s.service, stack.service_settings_for(s.service).is_one_shot or completed_dep(stack, s.service))
            for s in plan.services if s.action != "remove" and s.service in wanted]


def watched_all(stack: LoadedStack, running: set[str]) -> list[Watched]:
    """Every service of ``stack`` that has a container, judged as the deploy judges it."""
    return [Watched(s, stack.service_settings_for(s).is_one_shot or completed_dep(stack, s))
            for s in stack.services if s in running]


async def container_ids(engine: Engine, project: str) -> dict[str, str]:
    return {c.service or "": c.id for c in await engine.compose_containers(project) if c.running}


async def states(engine: Engine, stack: LoadedStack, run: Run | None = None) -> list[ServiceState]:
    out = []
    for c in sorted(await engine.compose_containers(stack.name), key=lambda c: c.name):
        image_id = c.labels.get(IMAGE_LABEL)
        if run is not None and image_id and c.service and c.running:
            run.image_ids[c.service] = image_id
        out.append(ServiceState(name=c.service or c.name, state=c.state, health=c.health, image=c.image,
                                image_digest=await image_attrs_digest(engine, image_id) if image_id else None))
    return out


def end_journal(run: Run, report: DeployReport | None) -> None:
    """The operation's end record: status, the report, and where the stack now is."""
    op = run.op
    if op is None or getattr(op, "ended", False):
        return
    try:
        if report is None:
            op.end("failed", None)
            return
        result = report.model_dump(mode="json", exclude={"plan"})
        if report.plan is not None:  # what the plan changed per service, for stack_history (the plan is left out)
            result["actions"] = {s.service: s.action for s in report.plan.changes}
        if report.status == "deployed":
            result["current_deployment"] = op.id
        elif report.status == "rolled_back" and report.rollback:
            result["current_deployment"] = report.rollback.to_deployment
        result["image_ids"] = dict(run.image_ids)
        op.end(report.status, result)
    except Exception:
        log.exception("journal end write failed")


def maintenance(ops: Any, stack: str, seconds: float, reason: str) -> Any:
    """Open a maintenance window for the operation (the health watcher stays out of its way);
    returns the user's window open before, to put back afterwards."""
    from datetime import UTC, datetime, timedelta

    until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    try:
        return ops.set_maintenance(stack, until, reason) or {}
    except Exception:  # a window is a courtesy to the watcher, never a reason to fail a deploy
        log.warning("could not open a maintenance window for %s", stack, exc_info=True)
        return None


def maintenance_back(ops: Any, stack: str, previous: Any) -> None:
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


def on_start(compose: ComposeRunner, op: Any) -> dict[str, Any]:
    """Pass the journal's child recorder when ComposeRunner.run supports it (journal branch)."""
    import inspect

    if op is not None and "on_start" in inspect.signature(compose.run).parameters:
        return {"on_start": op.child}
    return {}


def brief(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:400]


def verify_default(stack: LoadedStack, services: list[str] | None) -> float:
    value = stack.settings.verify_s
    per_service = [stack.service_settings_for(s).verify_s for s in (services or stack.services)]
    values = [v for v in per_service if v is not None]
    if values:
        return float(max(values))
    return float(value) if value is not None else DEFAULT_VERIFY_S
