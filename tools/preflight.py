"""The operator's pre-flight: validate_compose (the go/no-go gate) and check_resources (read-only)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from server.errors import PathRejected
from server.preflight.reports import ResourceReport, ValidationReport
from server.runtime import Runtime
from tools._common import READ_ONLY, OptionalId, progress, tool_errors

PathArg = Annotated[
    OptionalId,  # a JSON string "null" is a path (one that does not exist), never "no path"
    Field(
        description="Stack directory (or a compose file in it) under the stacks root, e.g. 'supabase'. Or `content`."
    ),
]
ContentArg = Annotated[
    str | None,
    Field(description="Inline compose YAML (e.g. a draft) instead of `path`."),
]
READ_ONLY_REGISTRIES = READ_ONLY.model_copy(update={"open_world_hint": True})
"""Observes only, but with check_host it asks image registries (outside this host) about images."""

DetailArg = Annotated[
    Literal["summary", "full"],
    Field(description="full: one finding per service, not per rule."),
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
                description="Also check the live host: ports bound, images (local or in their registry, their own "
                "healthcheck), memory, disk. False lints the file alone."
            ),
        ] = True,
        detail: DetailArg = "summary",
        min_severity: MinSeverityArg = "warning",
    ) -> ValidationReport:
        """Pre-flight a Compose stack: the go/no-go gate to call before any deploy or update.

        Renders the stack exactly as `docker compose up` will (.env, profiles, interpolation,
        overrides, include, extends), checks it against the operator's rules and, with
        check_host, the live host. Changes nothing; never shows secrets.

        `valid` false: Compose rejects the files. `go` true: no error findings, a deploy may
        proceed. Each finding: a stable `rule` id (e.g. no-resource-limits, port-conflict,
        docker-socket), `severity` (error blocks), `file`, `line`, `evidence`, usually a `fix`
        (often a YAML patch). One finding per rule lists its services and lines (detail='full':
        one per service); info findings are counted in `omitted` unless min_severity='info'.

        Next: apply the fixes, validate again. A rule that does not apply is waived with a reason
        (x-dsm: policy: waive: [{rule, services, reason}]).
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

        `host`: CPU, memory and disk (Docker's root dir) totals, free and used percent, with the
        `source` of each figure; `top_cpu`, `top_memory`. Above 95% memory or CPU is critical.
        With a stack (`path` or `content`): `requested` memory (reservations, else limits, times
        replicas) and `sufficient`: it fits what is free with 5% headroom, crediting what the
        stack's own containers use now (null without a stack).

        Next: if not sufficient, free memory or lower the limits; then validate_compose.
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
