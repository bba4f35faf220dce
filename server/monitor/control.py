"""stack_control: start, stop, restart, remove (never volumes) and maintenance windows.

Every action takes the stack's lock and is journaled (``Operations.begin(stack, 'control')``),
so it never races a deploy, a backup or the watcher. Only stacks under the stacks root are
changed, and only when the project's containers were started from the stack's directory
(server.ownership); Compose does the work (``docker compose -p ... start|stop|restart|rm``), so
dependency order is Compose's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from server.compose import services_argv
from server.errors import StackNotFound
from server.monitor import opsbridge
from server.monitor.logs import BadArgument, parse_time
from server.monitor.models import ControlResult, HealthAfter, ServiceHealth
from server.monitor.resolve import resolve_stack
from server.monitor.stackpolicy import StackPolicy, stack_policy
from server.ownership import require_ours
from server.runtime import Runtime

_COMPOSE_ARGS = {
    "start": ["start"],
    "stop": ["stop"],
    "restart": ["restart"],
    "remove": ["rm", "--stop", "--force"],  # no --volumes, ever
}
HEALTH_TIMEOUT_S = 60.0
"""start/restart wait this long for the deploy's health gate on the services acted on."""


async def stack_control(
    runtime: Runtime, stack: str, action: str, *, services: list[str] | None = None, until: str | None = None,
    reason: str | None = None, confirm: Callable[[str], Awaitable[None]],
) -> ControlResult:
    if runtime.settings.read_only:
        from server.errors import ReadOnlyMode

        raise ReadOnlyMode("stack_control changes containers and DSM_READ_ONLY is set", state="nothing was changed")
    ref = resolve_stack(runtime.settings, stack)
    if ref.location is None:
        raise StackNotFound(
            f"stack {ref.name!r} is not under the stacks root: it can be observed, not controlled",
            state="nothing was changed", next_step="call list_stacks; manage it from its own directory")
    declared = ref.location.declared_services
    unknown = [s for s in services or [] if s not in declared]
    if unknown:
        raise BadArgument(f"stack {ref.name!r} has no service {', '.join(unknown)}",
                          state="nothing was changed", next_step=f"services are: {', '.join(declared)}")
    if action not in ("maintenance_on", "maintenance_off"):  # a window touches no container
        await require_ours(runtime.engine(), ref.name, ref.location.directory, f"stack_control {action}")
    policy = stack_policy(ref.location)
    if action in ("stop", "remove") and policy.critical:
        question = f"{action} {'services ' + ', '.join(services) if services else 'every service'} of the " \
                   f"critical stack {ref.name!r}?"
        await confirm(question)  # raises ConfirmationRequired unless the user agreed
    params = {"action": action, "services": services or [], "reason": reason or "", "until": until}
    op = opsbridge.begin(runtime, ref.name, "control", params, directory=ref.location.directory)
    status = "failed"
    try:
        if action in ("maintenance_on", "maintenance_off"):
            window = _maintenance(runtime, ref.name, action, until, reason)
            op.phase(action, "done", detail=reason or "")
            status = "done"
            return ControlResult(stack=ref.name, action=action, operation_id=op.id, services=[],
                                 maintenance=window, detail="maintenance window set" if window
                                 else "maintenance ended: the watcher and alerts resume")
        project = ref.location.project().named(ref.name)
        # The whole stack goes with `down` (containers and networks; never --volumes), a subset with rm.
        # `--` ends the options: a service named like a flag (Compose accepts "--volumes" and "-v")
        # must not become one (`rm --stop --force --volumes` removes every service and its volumes).
        args = ["down", "--remove-orphans"] if action == "remove" and not services else [
            *_COMPOSE_ARGS[action], *services_argv(services)]
        await runtime.compose().run_project(project, args, on_start=op.child, what=f"docker compose {action}")
        op.phase(action, "done", detail=", ".join(services or declared))
        health = None
        if action in ("start", "restart"):
            health = await health_after(runtime, ref.name, services or declared, policy)
            op.phase("health", "ok" if health.ok else "failed", detail=health.failure or "ready")
        status = "done"
        detail = f"{action} done; volumes are kept" if action == "remove" else f"{action} done"
        if health is not None:
            detail += "; every service is ready" if health.ok else f"; NOT healthy: {health.failure}"
        return ControlResult(stack=ref.name, action=action, operation_id=op.id, services=services or declared,
                             detail=detail, health=health)
    finally:
        op.end(status, {"action": action, "services": services or []})


async def health_after(runtime: Runtime, project: str, services: list[str], policy: StackPolicy,
                       timeout_s: float = HEALTH_TIMEOUT_S) -> HealthAfter:
    """The deploy's health gate (server.deploy.health) on the services acted on that have containers;
    one-shot jobs (x-dsm, or awaited with service_completed_successfully) count as done at exit 0."""
    from server.deploy.health import Watched, run_gate
    from server.monitor.netcheck import COMPLETED

    engine = runtime.engine()
    containers = [c for c in await engine.compose_containers(project)
                  if c.labels.get("com.docker.compose.oneoff") != "True"]
    awaited = {part.split(":", 1)[0] for c in containers
               for part in c.labels.get("com.docker.compose.depends_on", "").split(",")
               if part.split(":")[1:2] == [COMPLETED]}
    present = {c.service for c in containers}
    watched = [Watched(s, one_shot=policy.service(s).is_one_shot or s in awaited) for s in services if s in present]
    if not watched:
        return HealthAfter(ok=True, timeout_s=timeout_s, failure="")
    gate = await run_gate(engine, project, watched, timeout_s=timeout_s)
    return HealthAfter(ok=gate.ok, timeout_s=timeout_s, failure=gate.failure,
                       services=[ServiceHealth(service=a.service, verdict=a.verdict, why=a.why)
                                 for a in gate.assessments],
                       # Log lines stay out (they may hold secrets): stack_logs masks them.
                       evidence=[e for e in gate.evidence if not e.startswith("log: ")][:6])


def _maintenance(runtime: Runtime, stack: str, action: str, until: str | None, reason: str | None) -> dict | None:
    if action == "maintenance_off":
        opsbridge.set_maintenance(runtime, stack, None, reason or "maintenance ended")
        return None
    if not until:
        raise BadArgument("maintenance_on needs `until` ('2h' from now, or an ISO time)", state="nothing was changed")
    epoch = _future(until)
    iso = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    opsbridge.set_maintenance(runtime, stack, iso, reason or "maintenance")
    return opsbridge.maintenance(runtime, stack) or {"until": iso, "reason": reason or "maintenance"}


def _future(until: str) -> float:
    """'2h' means two hours from now (parse_time reads durations as 'ago')."""
    now = datetime.now(UTC).timestamp()
    ago = parse_time(until, "until")
    assert ago is not None
    if until.strip()[-1] in "smhd" and until.strip()[:-1].isdigit():
        return now + (now - ago)
    if ago <= now:
        raise BadArgument(f"until={until!r} is in the past", state="nothing was changed")
    return ago
