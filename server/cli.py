"""The ``docker-stack-mcp`` command: serve MCP over stdio (default), ``--help``, ``--version``.

stdout belongs to the protocol, so everything this process says goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import types
from typing import TYPE_CHECKING

from server import __version__
from server.settings import Settings

if TYPE_CHECKING:
    from server.monitor.watcher import Watcher
    from server.runtime import Runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docker-stack-mcp",
        description="MCP server (stdio) that lets an LLM agent operate Docker Compose stacks safely. "
        "Configure with DSM_STACKS_ROOT, DSM_STATE_DIR, DSM_READ_ONLY, DOCKER_HOST (see README).",
    )
    parser.add_argument("--version", action="version", version=f"docker-stack-mcp {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve MCP over stdio (the default)")
    watch = sub.add_parser("watch", help="watch running stacks: heal, roll back, alert, export metrics")
    watch.add_argument("--stack", action="append", default=[], metavar="S",
                       help="watch only this stack (repeatable; default: every stack under DSM_STACKS_ROOT)")
    watch.add_argument("--interval", type=float, default=10.0, help="seconds between health passes (default 10)")
    watch.add_argument("--metrics-port", type=int, default=None,
                       help="serve Prometheus metrics on 127.0.0.1:PORT (default: DSM_METRICS_PORT, else off)")
    audit = sub.add_parser("audit", help="print the audit trail of tool calls, one line per call")
    audit.add_argument("--stack", default=None, metavar="S", help="only calls about this stack (name or glob)")
    audit.add_argument("--since", default=None, metavar="T",
                       help="only calls since T: an ISO time (2026-12-07T10:00) or a duration ago (30m, 2h, 7d)")
    audit.add_argument("--json", action="store_true", help="print the raw JSON lines")
    for verb, what in (("approve", "show the plan an agent is waiting to carry out and approve it (y/N)"),
                       ("deny", "refuse the plan an agent is waiting to carry out")):
        sub.add_parser(verb, help=what).add_argument("code", help="the code from the agent's approval_required")
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
    from server.monitor.alerts import url_secrets
    from server.redact import guard_logs

    guard_logs(url_secrets(settings.alert_urls))  # every record scrubbed, dependencies' (DEBUG) included
    if args.command in (None, "serve"):
        _import_sdk_server_half()
        from server.app import build_server

        build_server(settings, warm_memory=True, recover_operations=True, handle_sigterm=True).run()
        return 0
    if args.command == "watch":
        return _watch(settings, args)
    if args.command == "audit":
        from server.safety.auditcli import print_audit

        return print_audit(settings, stack=args.stack, since=args.since, raw=args.json)
    if args.command in ("approve", "deny"):
        from server.safety.approvecli import decide

        return decide(settings, args.code, yes=args.command == "approve")
    return 2


def _watch(settings: Settings, args: argparse.Namespace) -> int:
    """Run the watcher until SIGTERM/SIGINT."""
    import signal

    import anyio

    from server.runtime import Runtime

    runtime = Runtime(settings)
    watchers = watchers_for(runtime, args.stack, max(args.interval, 0.5))
    watcher = watchers[0]  # the default engine's: the one the metrics endpoint shows
    port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
    log = logging.getLogger("docker_stack_mcp.watcher")
    if port is not None:
        from server.monitor.metrics import serve

        log.info("metrics on http://127.0.0.1:%d/metrics", serve(watcher, port))

    async def main() -> None:
        stop = anyio.Event()

        async def signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    stop.set()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(signals)
            log.info("watching %s every %.0fs", ", ".join(args.stack) or "every stack under the root", args.interval)
            async with anyio.create_task_group() as each:  # an engine away never stops the others
                for one in watchers:
                    each.start_soon(one.run, stop)
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        runtime.close()
    return 0


def watchers_for(runtime: Runtime, stacks: list[str] | None, interval_s: float) -> list[Watcher]:
    """One watcher per engine (DSM_ENGINES), each with that engine's state, events and loop."""
    from server.monitor.watcher import Watcher

    return [Watcher(rt, stacks, interval_s=interval_s) for rt in runtime.targets().all()]


if __name__ == "__main__":
    sys.exit(main())
