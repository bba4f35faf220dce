"""build_server(settings): the MCPServer with every tool family and prompt registered.

Registration only defines functions; nothing connects to Docker or opens the memory here, so
``initialize`` and ``tools/list`` answer at the SDK's own start-up cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer

from server import __version__
from server.runtime import Runtime
from server.settings import Settings

INSTRUCTIONS = """\
docker-stack-mcp operates Docker Compose stacks on this host the way a careful operator would.
Start with list_stacks. Read a stack with inspect_stack. Before any change: validate_compose
(the go/no-go gate) and check_resources, and search_past_incidents for what went wrong before.
Record what you learn with record_incident. Stacks outside the stacks root are observed only.
Tool errors say what happened, the state now, and what to call next."""


def build_server(settings: Settings, runtime: Runtime | None = None) -> MCPServer:
    runtime = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Runtime]:
        try:
            yield runtime
        finally:
            runtime.close()

    server: MCPServer = MCPServer(
        name="docker-stack",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )
    from prompts import register as register_prompts
    from tools import stacks

    stacks.register(server, runtime)
    register_prompts(server)
    return server
