"""docker-stack-mcp: the application core behind the MCP tools.

Only ``tools/``, ``prompts/`` and ``tests/`` import this package; it never imports them.
"""

__version__ = "0.1.0"
