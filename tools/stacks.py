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
        """Start here: the Compose stacks under the stacks root with their `name` (for tools on
        running stacks), `path` (for tools that read files), containers running and healthy and
        `state`. Other Compose projects on the host are in `other_projects` (observe only).
        Engine unreachable: stacks on disk are still listed, `problems` says why. Several engines:
        each entry names its `engine`, `engines` says which answered.
        """
        from server import inventory

        return await inventory.list_stacks(runtime)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def inspect_stack(
        path: Annotated[
            str,
            Field(
                description="Stack directory (or a compose file in it) under the stacks root."
            ),
        ],
        env: Annotated[
            dict[str, str] | None,
            Field(description="Override the stack's .env; never echoed."),
        ] = None,
    ) -> StackInspection:
        """A stack's effective model as `docker compose up` renders it (.env, profiles, overrides,
        include applied), credentials as '***': per service image, ports, volumes, networks,
        depends_on conditions, healthcheck declared, limits, x-dsm settings. Files that cannot be
        rendered: `rendered` false and `findings` say what and where.
        """
        from server import inventory

        return await inventory.inspect_stack(runtime, path, env)
