"""Seeing what is there: list_stacks and inspect_stack (read-only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from server.engine import ContainerSummary
from server.errors import DockerUnavailable, UnsafeYaml
from server.models import Finding, Frozen, ServiceView, sort_findings
from server.runtime import Runtime
from server.stackload import StackRenderFailed, load_stack
from server.stacks import discover
from server.stackview import service_view
from server.yamlsafe import load_yaml, read_text_capped
from tools._common import READ_ONLY, tool_errors

log = logging.getLogger("docker_stack_mcp.tools.stacks")


class StackEntry(Frozen):
    name: str = Field(description="Compose project name; pass it as `stack` to tools that act on a running stack.")
    path: str = Field(description="Directory relative to the stacks root; pass it as `path` to tools that read files.")
    compose_files: list[str]
    services: list[str] = Field(description="Services declared in the compose files.")
    containers: int = Field(description="Containers of this project on the engine, in any state.")
    running: int
    healthy: int = Field(description="Running containers whose healthcheck passes or that have none.")
    state: str = Field(description="not-deployed | running | degraded (some not running/healthy) | stopped | unknown")


class ObservedProject(Frozen):
    name: str
    working_dir: str | None
    containers: int
    running: int
    healthy: int


class StackList(Frozen):
    stacks_root: str
    stacks: list[StackEntry]
    other_projects: list[ObservedProject] = Field(
        description="Compose projects running on the host that are not under the stacks root: observed only."
    )
    problems: list[str] = Field(description="Name conflicts, unreadable directories, engine unreachable, ...")


class StackInspection(Frozen):
    stack: str
    path: str | None
    files: list[str]
    rendered: bool = Field(description="True when Compose rendered the model; false means see findings.")
    services: list[ServiceView]
    networks: list[str]
    volumes: list[str]
    secrets: list[str] = Field(description="Names of declared secrets (never their values).")
    settings: dict[str, object] = Field(description="The stack's top-level x-dsm settings.")
    findings: list[Finding]


def register(server: MCPServer, runtime: Runtime) -> None:
    settings = runtime.settings

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_stacks() -> StackList:
        """List the Compose stacks under the stacks root and every other Compose project on the host.

        Start here: it tells you each stack's `name` (for tools that act on running stacks) and
        `path` (for tools that read compose files), how many containers run and are healthy, and
        `state`. Projects outside the root appear under `other_projects`: you may observe them
        but this server will not change them. If the engine is unreachable the stacks on disk are
        still listed and `problems` says why counts are missing.
        """
        locations, problems = discover(settings)
        containers = []
        engine_ok = True
        try:
            containers = await runtime.engine().compose_containers()
        except DockerUnavailable as exc:
            engine_ok = False
            problems.append(str(exc))
        by_project: dict[str, list[ContainerSummary]] = {}
        for c in containers:
            by_project.setdefault(c.project or "", []).append(c)
        root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
        entries = []
        for loc in locations:
            mine = by_project.pop(loc.name, [])
            running = sum(c.running for c in mine)
            healthy = sum(c.healthy for c in mine)
            entries.append(
                StackEntry(
                    name=loc.name,
                    path=str(loc.directory.relative_to(root)),
                    compose_files=[f.name for f in loc.files],
                    services=_declared_services(loc.files, settings.yaml_max_bytes),
                    containers=len(mine),
                    running=running,
                    healthy=healthy,
                    state=_state(len(mine), running, healthy, engine_ok=engine_ok),
                )
            )
        others = [
            ObservedProject(
                name=name,
                working_dir=(group[0].labels or {}).get("com.docker.compose.project.working_dir"),
                containers=len(group),
                running=sum(c.running for c in group),
                healthy=sum(c.healthy for c in group),
            )
            for name, group in sorted(by_project.items())
            if name
        ]
        return StackList(stacks_root=str(root), stacks=entries, other_projects=others, problems=problems)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def inspect_stack(
        path: Annotated[
            str,
            Field(
                description="Stack directory (or a compose file in it), relative to the stacks "
                "root, e.g. 'librechat'. See list_stacks."
            ),
        ],
        env: Annotated[
            dict[str, str] | None,
            Field(description="Values that override the stack's .env for interpolation. Never echoed back."),
        ] = None,
    ) -> StackInspection:
        """Show a stack's effective model exactly as Docker Compose renders it, secrets redacted.

        Use it to understand a stack before changing it: services with image, ports, volumes,
        networks, depends_on conditions, whether a healthcheck is declared, limits and the
        stack's x-dsm settings. Interpolation, .env, override files and every profile are
        applied. Credential-looking values are shown as '***'. When the files cannot be read or
        rendered (bad YAML, not a Compose file, references outside the stacks root), `rendered`
        is false and `findings` say what and where; fix them, or run validate_compose for the
        full pre-flight check.
        """
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
            files=[f.name for f in stack.files],
            rendered=True,
            services=[service_view(stack, name, svc or {}) for name, svc in sorted(stack.services.items())],
            networks=sorted((stack.rendered.get("networks") or {}).keys()),
            volumes=sorted((stack.rendered.get("volumes") or {}).keys()),
            secrets=sorted((stack.rendered.get("secrets") or {}).keys()),
            settings=stack.settings.model_dump(exclude_defaults=True),
            findings=[],
        )


def _state(total: int, running: int, healthy: int, *, engine_ok: bool) -> str:
    if not engine_ok:
        return "unknown"
    if total == 0:
        return "not-deployed"
    if running == 0:
        return "stopped"
    if running == total and healthy == total:
        return "running"
    return "degraded"


def _declared_services(files: list[Path], max_bytes: int) -> list[str]:
    names: list[str] = []
    for file in files:
        try:
            data = load_yaml(read_text_capped(file, max_bytes), file.name, max_bytes=max_bytes).data
        except UnsafeYaml:
            continue
        services = data.get("services") if isinstance(data, dict) else None
        for name in services or {}:
            if str(name) not in names:
                names.append(str(name))
    return names
