"""The MCP surface: thin async tool functions over the core in ``server/``, one module per family.

Each family module exposes ``register(server, runtime)``; :func:`server.app.build_server` calls
them. Read-only families register always; changing ones are skipped under DSM_READ_ONLY.
"""
