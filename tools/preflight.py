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
        description="Stack directory (or a compose file in it) under the stacks root; or `content`."
    ),
]
ContentArg = Annotated[
    str | None,
    Field(description="Inline compose YAML instead of `path`."),
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
    Field(description="Override the stack's .env; never echoed."),
]


def register(server: MCPServer, runtime: Runtime) -> None:

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
                description="Also check the host: ports, images (local or registry), memory, disk."
            ),
        ] = True,
        detail: DetailArg = "summary",
        min_severity: MinSeverityArg = "warning",
    ) -> ValidationReport:
        """The go/no-go gate before any deploy: renders the stack as `docker compose up` will and
        checks it against the operator's rules and (check_host) the live host. Changes nothing.

        `valid` false: Compose rejects the files. `go` true: no error, a deploy may proceed.
        Findings: `rule` id, `severity` (error blocks), `file`, `line`, `evidence`, often a `fix`
        (YAML patch); one per rule listing its services (detail='full': per service); info ones
        counted in `omitted`. Waive a rule that does not apply: x-dsm: policy: waive:
        [{rule, services, reason}].
        """
        _one_source(path, content)

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        from server.preflight.validation import validate

        rt = await runtime.for_stack(path) if path is not None else runtime  # the stack's engine
        report = await validate(
            rt.settings,
            rt.compose(),
            rt.engine,
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
        """The Docker host's CPUs, memory and disk (totals, free, used %; >95% is critical) and the
        containers using most (`top_cpu`, `top_memory`). With a stack (`path` or `content`):
        `requested` memory (reservations, else limits, x replicas) and `sufficient` (fits what is
        free with 5% headroom, its own running containers credited).
        """
        if path is not None and content is not None:
            _one_source(path, content)

        async def tell(done: float, total: float, message: str) -> None:
            await progress(ctx, done, total, message)

        from server.preflight.resources import check_resources

        rt = await runtime.for_stack(path) if path is not None else runtime  # the stack's engine
        return await check_resources(
            rt.settings, rt.compose(), rt.engine(), path=path, content=content, env=env, progress=tell
        )


def _one_source(path: str | None, content: str | None) -> None:
    if (path is None) == (content is None):
        raise PathRejected(
            "pass exactly one of `path` (a stack under the stacks root) or `content` (inline compose YAML)",
            state="nothing was read",
            next_step="call list_stacks to see the stacks and their paths",
        )
