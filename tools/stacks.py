"""Seeing what is there: list_stacks and inspect_stack (read-only)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from server.models import StackInspection, StackList
from server.runtime import Runtime
from tools._common import READ_ONLY, tool_errors


def register(server: MCPServer, runtime: Runtime) -> None:
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
        from server import inventory

        return await inventory.list_stacks(runtime)

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
        stack's x-dsm settings. Interpolation, .env (COMPOSE_FILE, COMPOSE_PROFILES), override
        files and include are applied; only services `up` starts are shown. Credential-looking
        values are shown as '***'. When the files cannot be read or
        rendered (bad YAML, not a Compose file, references outside the stacks root), `rendered`
        is false and `findings` say what and where; fix them, or run validate_compose for the
        full pre-flight check.
        """
        from server import inventory

        return await inventory.inspect_stack(runtime, path, env)
