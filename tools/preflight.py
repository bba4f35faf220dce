"""The operator's pre-flight: validate_compose (the go/no-go gate) and check_resources (read-only)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from server.errors import PathRejected
from server.preflight.reports import ResourceReport, ValidationReport
from server.runtime import Runtime
from tools._common import READ_ONLY, progress, tool_errors

PathArg = Annotated[
    str | None,
    Field(
        description="Stack directory (or a compose file in it) relative to the stacks root, e.g. 'supabase'. "
        "See list_stacks. Give this or `content`."
    ),
]
ContentArg = Annotated[
    str | None,
    Field(description="Inline compose YAML to check instead of a stack on disk (e.g. a draft). Give this or `path`."),
]
READ_ONLY_REGISTRIES = READ_ONLY.model_copy(update={"open_world_hint": True})
"""Observes only, but with check_host it asks image registries (outside this host) about images."""

DetailArg = Annotated[
    Literal["summary", "full"],
    Field(description="summary: one finding per rule listing its services and lines; full: one per service."),
]
MinSeverityArg = Annotated[
    Literal["error", "warning", "info"], Field(description="Leave out findings below this (counted in `omitted`).")
]

EnvArg = Annotated[
    dict[str, str] | None,
    Field(description="Values that override the stack's .env for interpolation. Never echoed back."),
]


def register(server: MCPServer, runtime: Runtime) -> None:
    settings = runtime.settings

    @server.tool(annotations=READ_ONLY_REGISTRIES)
    @tool_errors
    async def validate_compose(
        ctx: Context,
        path: PathArg = None,
        content: ContentArg = None,
        env: EnvArg = None,
        check_host: Annotated[
            bool,
            Field(
                description="Also check the live host: ports already bound, images present locally or in their "
                "registry, each image's own healthcheck (read without pulling), memory and disk. False lints the "
                "file alone."
            ),
        ] = True,
        detail: DetailArg = "summary",
        min_severity: MinSeverityArg = "warning",
    ) -> ValidationReport:
        """Pre-flight a Compose stack: the go/no-go gate to call before any deploy or update.

        Renders the stack exactly as `docker compose up` will (.env incl. COMPOSE_FILE and
        COMPOSE_PROFILES, interpolation, overrides, include, extends), then checks it against the
        operator's rules and, with check_host, the live host. go/no-go covers the services `up`
        starts; services behind inactive profiles are linted as warnings. Nothing is changed.

        Read the result: `valid` false means Compose itself rejects the files (findings say where);
        `go` true means no error findings, so a deployment may proceed. Each finding has a stable
        `rule` id, a `severity` (error blocks; warning and info do not), the `file` and `line` that
        set the value, `evidence`, and usually a `fix` (often a YAML patch, e.g. proposed memory limits).
        One finding per rule lists its services and lines (detail='full': one per service); info
        findings are counted in `omitted` unless min_severity='info'.
        Secrets are never shown. Key rules: compose-syntax, compose-invalid, dependency-cycle,
        undefined-reference, missing-variable, unset-variable, port-conflict, missing-healthcheck,
        healthcheck-unverified (the image may bring one: check_host reads it), no-resource-limits,
        image-unpinned, image-unavailable, image-unverified, plaintext-secret, privileged,
        docker-socket, host-namespace, host-path-mount, dangerous-capability,
        insufficient-resources; hardening hints are info.

        Next: fix the errors (apply the `fix` patches) and validate again. If a rule does not
        apply to a service, the stack's owner can waive it in the compose file with a reason
        (x-dsm: policy: waive: [{rule, services, reason}]); waived findings stay visible as info.
        Call check_resources for the host's load and the biggest containers.
        """
        _one_source(path, content)

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        from server.preflight.validation import validate

        report = await validate(
            settings,
            runtime.compose(),
            runtime.engine,
            path=path,
            content=content,
            env=env,
            check_host=check_host,
            progress=tell,
            memory=runtime.memory,
        )
        return report.for_the_caller(detail, min_severity)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def check_resources(
        ctx: Context,
        path: PathArg = None,
        content: ContentArg = None,
        env: EnvArg = None,
    ) -> ResourceReport:
        """Measure the Docker host: CPUs, memory and disk free, and the containers using the most.

        Without a stack: `host` (cpus, memory_total_bytes, memory_available_bytes,
        disk_total_bytes, disk_free_bytes of Docker's root dir, cpu/memory used percent, and
        `source` saying how each figure was measured: a remote engine is measured through the
        Docker API, not this machine), plus `top_cpu` and `top_memory` containers. The operator
        treats more than 95% memory or CPU in use as critical (finding host-pressure).

        With a stack (`path` or `content`): `requested` is the memory it reserves (limits where no
        reservation, times replicas) and `sufficient` says whether that fits what is free, keeping
        5% headroom and crediting back what the stack's own running containers use now (a
        redeploy replaces them). `sufficient` is null without a stack.

        Next: if not sufficient, free memory (stop what top_memory shows is not needed) or lower
        the stack's limits; then run validate_compose as the go/no-go gate.
        """
        if path is not None and content is not None:
            _one_source(path, content)

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        from server.preflight.resources import check_resources

        return await check_resources(
            settings, runtime.compose(), runtime.engine(), path=path, content=content, env=env, progress=tell
        )


def _one_source(path: str | None, content: str | None) -> None:
    if (path is None) == (content is None):
        raise PathRejected(
            "pass exactly one of `path` (a stack under the stacks root) or `content` (inline compose YAML)",
            state="nothing was read",
            next_step="call list_stacks to see the stacks and their paths",
        )
