"""The ``docker-stack-mcp`` command: serve MCP over stdio (default), ``--help``, ``--version``.

stdout belongs to the protocol, so everything this process says goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import types

from server import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docker-stack-mcp",
        description="MCP server (stdio) that lets an LLM agent operate Docker Compose stacks safely. "
        "Configure with DSM_STACKS_ROOT, DSM_STATE_DIR, DSM_READ_ONLY, DOCKER_HOST (see README).",
    )
    parser.add_argument("--version", action="version", version=f"docker-stack-mcp {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve MCP over stdio (the default)")
    return parser


def _import_sdk_server_half() -> None:
    """Import the SDK's server half without running ``mcp/__init__.py``.

    The package root eagerly imports the SDK's client half (HTTP clients, auth, the in-memory
    client: about 40-60 ms here) that a stdio server never uses, and agents spawn this server
    often. The server modules import only submodules (``mcp.server``, ``mcp.shared``,
    ``mcp.types``), so a bare package object with the right ``__path__`` serves them. Should a
    future SDK need its package root from the server half, the import fails here and we fall
    back to the normal import.
    """
    if "mcp" in sys.modules:
        return
    spec = importlib.util.find_spec("mcp")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("mcp")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["mcp"] = package
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
            del sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from server.errors import SettingsError
    from server.settings import Settings

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"docker-stack-mcp: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in (None, "serve"):
        _import_sdk_server_half()
        from server.app import build_server

        build_server(settings, warm_memory=True, recover_operations=True, handle_sigterm=True).run()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
