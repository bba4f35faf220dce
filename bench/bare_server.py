"""The baseline for bench/coldstart.py: the SDK's MCPServer with one trivial tool, nothing else."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def ping() -> str:
    """Answer pong."""
    return "pong"


if __name__ == "__main__":
    server.run()
