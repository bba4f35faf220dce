"""stack_status: every service's live state from one list query plus one inspect per container.

The list endpoint lacks restarts, exit code, OOM and start time, so each container is inspected,
all in parallel. CPU and memory come from cgroup files when the engine is local (two readings
0.25 s apart), else from ``docker stats`` in parallel; only when asked (``with_stats``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.engine import ContainerSummary, RunningContainer, inspect_container
from server.errors import DockerUnavailable, StackNotFound
from server.monitor import watchstate
from server.monitor.models import ServiceStatus, StackStatus, StatusReport, WatcherView
from server.monitor.resolve import managed_locations, resolve_stack
from server.policy import Usage
from server.preflight.parallel import run_for_each
from server.runtime import Runtime

if TYPE_CHECKING:
    from server.monitor.driftcheck import DriftReport

log = logging.getLogger("docker_stack_mcp.monitor")


@dataclass(frozen=True)
class Observed:
    """One container: the list row and its inspect document."""

    summary: ContainerSummary
    inspect: dict[str, Any]

    @property
    def full_id(self) -> str:
        return str(self.inspect.get("Id") or self.summary.id)

    @property
    def state(self) -> dict[str, Any]:
        return self.inspect.get("State") or {}

    @property
    def health(self) -> str | None:
        health = self.state.get("Health") or {}
        return health.get("Status") or None

    @property
    def service(self) -> str:
        return self.summary.service or self.summary.name

    @property
    def labels(self) -> dict[str, str]:
        return (self.inspect.get("Config") or {}).get("Labels") or self.summary.labels

    @property
    def memory_limit(self) -> int | None:
        value = (self.inspect.get("HostConfig") or {}).get("Memory") or 0
        return int(value) or None


async def observe(runtime: Runtime, project: str | None,
                  keep: Callable[[ContainerSummary], bool] | None = None) -> list[Observed]:
    """Compose containers (of one project, or all; ``keep`` filters before inspecting) with their
    inspect documents, in parallel."""
    engine = runtime.engine()
    summaries = await engine.compose_containers(project)
    if keep is not None:
        summaries = [s for s in summaries if keep(s)]
    found: dict[str, Observed] = {}

    async def one(summary: ContainerSummary) -> None:
        doc = await inspect_container(engine, summary.id)
        if doc is not None:
            found[summary.id] = Observed(summary, doc)

    await run_for_each(one, summaries)
    return [found[s.id] for s in summaries if s.id in found]


async def stack_status(runtime: Runtime, stack: str | None = None, with_stats: bool = False) -> StatusReport:
    settings = runtime.settings
    project = resolve_stack(settings, stack).name if stack else None
    problems: list[str] = []
    try:
        observed = await observe(runtime, project)
    except DockerUnavailable:
        raise
    if project and not observed:
        from server.monitor.swarm_status import swarm_stack_status

        swarm = await swarm_stack_status(runtime, project)  # a swarm stack's tasks carry no Compose label
        if swarm is not None:
            return StatusReport(stacks=[swarm], problems=problems)
        raise StackNotFound(
            f"no containers of stack {project!r} on the engine",
            state="the stack is not deployed (or was removed)",
            next_step="call list_stacks to see stacks and their state",
        )
    usage: dict[str, Usage] = {}
    if with_stats:
        usage = await sample_usage(runtime, observed)
    managed = managed_locations(settings)
    state = watchstate.load(settings)
    grouped: dict[str, list[Observed]] = {}
    for o in observed:
        grouped.setdefault(o.summary.project or "", []).append(o)
    stacks = []
    for name in sorted(grouped):
        maint = None
        if name in managed:
            try:
                from server.monitor.opsbridge import maintenance

                maint = maintenance(runtime, name)
            except Exception as exc:  # the journal is optional for a read-only view
                log.debug("maintenance of %s unknown: %s", name, exc)
        services = [_service(o, usage.get(o.summary.id), watchstate.service_view(state, name, o.service))
                    for o in sorted(grouped[name], key=lambda o: (o.service, o.summary.name))]
        from server.monitor.stackpolicy import stack_policy

        policy = stack_policy(managed.get(name), {o.service: o.labels for o in grouped[name]})
        # One-shot jobs (migrations, init) that finished with 0 did their work: not a degraded stack.
        counted = [s for s in services
                   if not (policy.service(s.service).is_one_shot and s.state == "exited" and s.exit_code == 0)]
        from server.ownership import WORKING_DIR_LABEL, same_directory

        # Ours only when its containers were started from the stack's directory (server.ownership).
        ours = name in managed and all(same_directory(o.labels.get(WORKING_DIR_LABEL), managed[name].directory)
                                       for o in grouped[name])
        drift = await _drift(runtime, name, managed[name].directory, grouped[name]) if ours else None
        stacks.append(StackStatus(stack=name, managed=ours, state=_stack_state(counted or services),
                                  maintenance=maint, services=services, drift_since=drift.since if drift else None,
                                  drift=drift.lines() if drift else []))
    return StatusReport(stacks=stacks, problems=problems)


async def _drift(runtime: Runtime, name: str, directory: Path, observed: list[Observed]) -> DriftReport | None:
    """Changes since the last recorded deployment (server.monitor.driftcheck); None when unknown."""
    from server.monitor.driftcheck import check

    try:
        return await check(runtime.settings, runtime.engine(), name, directory, [o.summary for o in observed],
                           operations=runtime.operations())
    except Exception as exc:  # a status must not fail for a check of its own
        log.warning("drift of %s not compared: %s", name, exc)
        return None


async def sample_usage(runtime: Runtime, observed: list[Observed]) -> dict[str, Usage]:
    from server.preflight.usage import fill_usage

    engine = runtime.engine()
    running = [RunningContainer(full_id=o.full_id, summary=o.summary) for o in observed if o.summary.running]
    local = engine.endpoint_url().startswith("unix://")
    out: dict[str, Usage] = {}
    await fill_usage(engine, running, local, True, out)
    return out


def _service(o: Observed, usage: Usage | None, seen: dict[str, Any] | None) -> ServiceStatus:
    st = o.state
    status = st.get("Status") or o.summary.state
    exit_code = st.get("ExitCode") if status in ("exited", "dead") else None
    return ServiceStatus(
        service=o.service,
        name=o.summary.name,
        container_id=o.summary.id,
        state=status,
        # An exited container keeps its last probe result ("unhealthy" after a clean exit 0 of a
        # one-shot): health means something only while it runs.
        health=o.health if status in ("running", "restarting") else None,
        restarts=int(o.inspect.get("RestartCount") or 0),
        exit_code=exit_code,
        oom_killed=bool(st.get("OOMKilled")),
        started_at=st.get("StartedAt") if not str(st.get("StartedAt", "")).startswith("0001") else None,
        cpu_percent=usage.cpu_percent if usage else None,
        memory_bytes=usage.memory_bytes if usage else None,
        memory_limit_bytes=o.memory_limit,
        ports=_ports(o.summary.ports),
        image=(o.inspect.get("Config") or {}).get("Image") or o.summary.image,
        networks=sorted(((o.inspect.get("NetworkSettings") or {}).get("Networks") or {}).keys()),
        watcher=_watcher_view(seen) if seen else None,
    )


def _watcher_view(seen: dict[str, Any]) -> WatcherView:
    return WatcherView(
        seen=seen.get("seen"), seen_at=seen.get("seen_at"), action=seen.get("action"),
        action_at=seen.get("action_at"), outcome=seen.get("outcome"),
        restarts_in_window=len(seen.get("attempts") or []), budget_exhausted=bool(seen.get("exhausted")),
    )


def _ports(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for p in rows:
        target = f"{p.get('PrivatePort')}/{p.get('Type', 'tcp')}"
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{target}")  # noqa: S104 (display)
        else:
            out.append(target)
    return sorted(set(out))


def _stack_state(services: list[ServiceStatus]) -> str:
    running = [s for s in services if s.state == "running"]
    if not running:
        return "stopped"
    if len(running) == len(services) and all(s.health in (None, "healthy") for s in services):
        return "running"
    return "degraded"
