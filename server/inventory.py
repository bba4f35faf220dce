"""What is there: the stacks under the root, other Compose projects, and one stack's rendered view.

The core of list_stacks and inspect_stack; the tool layer only publishes it.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.engine import ContainerSummary
from server.errors import DockerUnavailable
from server.models import ObservedProject, StackEntry, StackInspection, StackList, sort_findings
from server.runtime import Runtime
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stacks import StackLocation, discover, relative_name
from server.stackview import service_view


async def list_stacks(runtime: Runtime) -> StackList:
    """Stacks on disk with live container counts; other projects observed. Works without an engine.
    With several engines (DSM_ENGINES) every engine is asked in parallel (server.targets)."""
    targets = runtime.targets()
    if targets.several:
        from server.multiengine import list_every_engine

        return await list_every_engine(runtime)
    settings = runtime.settings
    locations, problems = discover(settings)
    containers = []
    engine_ok = True
    try:
        containers = await runtime.engine().compose_containers()
    except DockerUnavailable as exc:
        engine_ok = False
        problems.append(str(exc))
    by_project = group_by_project(containers)
    entries, others = tally(settings, locations, by_project, engine_ok=engine_ok)
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    return StackList(stacks_root=str(root), stacks=entries, other_projects=others, problems=problems,
                     engine=engine_named(runtime))


def group_by_project(containers: list[ContainerSummary]) -> dict[str, list[ContainerSummary]]:
    by_project: dict[str, list[ContainerSummary]] = {}
    for c in containers:
        by_project.setdefault(c.project or "", []).append(c)
    return by_project


def tally(settings: Settings, locations: list[StackLocation], by_project: dict[str, list[ContainerSummary]], *,
          engine_ok: bool, engine: str | None = None) -> tuple[list[StackEntry], list[ObservedProject]]:
    """The stacks ``locations`` with the containers of one engine (``by_project``, consumed), and
    the projects left over as observed ones."""
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    entries = []
    from server.ownership import WORKING_DIR_LABEL, same_directory

    for loc in locations:
        # Only the containers started from this stack's directory are this stack's: a project of the
        # same name started by hand elsewhere stays an observed project (server.ownership).
        group = by_project.pop(loc.name, [])
        mine = [c for c in group if same_directory((c.labels or {}).get(WORKING_DIR_LABEL), loc.directory)]
        if len(mine) < len(group):
            by_project[loc.name] = [c for c in group if c not in mine]
        running = sum(c.running for c in mine)
        healthy = sum(c.healthy for c in mine)
        entries.append(
            StackEntry(
                name=loc.name,
                path=str(loc.directory.relative_to(root)),
                compose_files=[relative_name(f, loc.directory) for f in loc.files],
                services=loc.active_services,
                containers=len(mine),
                running=running,
                healthy=healthy,
                state=state_of(len(mine), running, healthy, engine_ok=engine_ok),
                engine=engine,
            )
        )
    others = [
        ObservedProject(
            name=name,
            working_dir=(group[0].labels or {}).get("com.docker.compose.project.working_dir"),
            containers=len(group),
            running=sum(c.running for c in group),
            healthy=sum(c.healthy for c in group),
            engine=engine,
        )
        for name, group in sorted(by_project.items())
        if name
    ]
    return entries, others


async def inspect_stack(runtime: Runtime, path: str, env: Mapping[str, str] | None) -> StackInspection:
    """The stack rendered by Compose, redacted; findings instead when it cannot be read or rendered."""
    settings = runtime.settings
    try:
        stack = await load_stack(settings, runtime.compose(), path=path, env=env)
    except StackRenderFailed as exc:
        return StackInspection(
            stack=exc.name,
            path=path,
            files=[],
            rendered=False,
            services=[],
            networks=[],
            volumes=[],
            secrets=[],
            settings={},
            findings=sort_findings(exc.findings),
        )
    root = settings.stacks_root.resolve()
    return StackInspection(
        stack=stack.name,
        path=str(stack.directory.relative_to(root)) if stack.directory else None,
        files=list(stack.read_files) or [f.name for f in stack.files],
        rendered=True,
        services=[service_view(stack, name, svc or {}) for name, svc in sorted(stack.services.items())],
        networks=sorted((stack.rendered.get("networks") or {}).keys()),
        volumes=sorted((stack.rendered.get("volumes") or {}).keys()),
        secrets=sorted((stack.rendered.get("secrets") or {}).keys()),
        settings=stack.settings.model_dump(exclude_defaults=True),
        findings=[],
    )


def engine_named(runtime: Runtime) -> str | None:
    """The endpoint, already resolved by the listing above (no I/O); a URL may carry a password."""
    from server.redact import Scrubber

    try:
        return Scrubber()(runtime.endpoint().describe())
    except DockerUnavailable:
        return None


def state_of(total: int, running: int, healthy: int, *, engine_ok: bool) -> str:
    if not engine_ok:
        return "unknown"
    if total == 0:
        return "not-deployed"
    if running == 0:
        return "stopped"
    if running == total and healthy == total:
        return "running"
    return "degraded"
