"""The ``docker-stack-mcp`` command: serve MCP over stdio (default), ``--help``, ``--version``.

stdout belongs to the protocol, so everything this process says goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

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
        from server.app import build_server

        build_server(settings, warm_memory=True).run()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
