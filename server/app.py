"""build_server(settings): the MCPServer with every tool family and prompt registered.

Registration only defines functions; nothing connects to Docker or opens the memory here, so
``initialize`` and ``tools/list`` answer at the SDK's own start-up cost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, Icon, MCPServer
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations
from mcp.types import Tool as MCPTool

from server import __version__
from server.results import compact_result, slim_input_schema, slim_output_schema
from server.runtime import Runtime
from server.settings import Settings

INSTRUCTIONS = """\
docker-stack-mcp operates Docker Compose stacks on this host the way a careful operator would.
Start with list_stacks. Read a stack with inspect_stack. Before any change: validate_compose
(the go/no-go gate) and check_resources, and search_past_incidents for what went wrong before.
Record what you learn with record_incident. Stacks outside the stacks root are observed only.
One operation runs per stack: after a timeout or a `busy` answer, poll operation_status, never repeat.
Tool errors say what happened, the state now, and what to call next."""


log = logging.getLogger("docker_stack_mcp.app")


class DockerStackServer(MCPServer[Runtime]):
    """MCPServer that enforces DSM_READ_ONLY at registration, in one place for every tool family.

    A tool is published in read-only mode only when its annotations say ``readOnlyHint``; a tool
    without annotations is treated as one that changes things.
    """

    def __init__(self, *, read_only: bool, state_dir: Path | None = None, **kwargs: Any) -> None:
        self.read_only = read_only
        self.state_dir = state_dir
        self.hidden: set[str] = set()
        super().__init__(**kwargs)

    def hide(self, *names: str) -> None:
        """Keep these tools callable but out of tools/list: names published before a tool was
        folded into another, kept for one release so existing clients and prompts still work."""
        self.hidden.update(names)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Every tool call gets its audit line (server/safety/audit.py): the tool wrapper records
        the outcome; a call that never reached it (bad arguments, unknown tool) is recorded here."""
        if self.state_dir is None:
            return await self._compact_call(name, arguments, context)
        from server.safety.audit import CURRENT, Call

        call = Call(self.state_dir, name, dict(arguments or {}), client=_client_name(context))
        token = CURRENT.set(call)
        try:
            result = await self._compact_call(name, arguments, context)
        except Exception as exc:
            # Rejected before the tool ran (bad arguments, unknown tool): the first line only, as
            # the rest quotes the arguments back (input_value=...), secrets included.
            call.finish("error", detail=str(exc).split("\n", 1)[0])
            raise
        finally:
            CURRENT.reset(token)
        if type(result).__name__ == "InputRequiredResult":
            call.finish("asked", detail="waiting for the user's answer (input required)")
        else:
            call.finish("ok", result=result)
        return result

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        if self.read_only and not (annotations and annotations.read_only_hint):
            log.debug("DSM_READ_ONLY: not registering %s", name or fn.__name__)
            return
        super().add_tool(fn, name, title, description, annotations, icons, meta, structured_output)

    async def _compact_call(
        self, name: str, arguments: dict[str, Any], context: Context[Runtime, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # Every tool's text content as compact JSON, here once for every tool family (the SDK
        # indents it, which costs a reading model a third more characters for nothing).
        from mcp.server.mcpserver.exceptions import ToolError
        from pydantic import ValidationError

        tool = self._tool_manager.get_tool(name)
        if tool is not None and arguments:
            # An argument the tool does not take is refused, never dropped: a misspelt `tail` or
            # `dry_run` ignored silently makes the call do something else than the caller meant.
            known = set((tool.parameters or {}).get("properties") or {})
            unknown = sorted(k for k in arguments if k not in known)
            if unknown:
                from server.argerrors import describe

                raise ToolError(describe(name, [{"loc": (k,), "type": "extra_forbidden"} for k in unknown])
                                + f" It takes: {', '.join(sorted(known)) or 'no arguments'}.")
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            # Arguments of the wrong type, said once for every tool (server/argerrors.py).
            from server.argerrors import describe

            cause = exc.__cause__
            raise ToolError(describe(name, [dict(e) for e in cause.errors()])) from cause
        return compact_result(result) if isinstance(result, CallToolResult) else result

    async def list_tools(self) -> list[MCPTool]:
        # Schemas without pydantic's noise, output schemas as structure only (server/results.py);
        # aliases unlisted (see hide).
        return [
            tool.model_copy(update={
                "input_schema": slim_input_schema(tool.input_schema),
                "output_schema": slim_output_schema(tool.output_schema, tool.name) if tool.output_schema else None,
            })
            for tool in await super().list_tools()
            if tool.name not in self.hidden
        ]

    async def run_stdio_async(self) -> None:
        """The SDK's stdio loop, except that a request line its parser refuses because a string
        holds a lone UTF-16 surrogate gets an answer instead of silence (server.transport)."""
        from mcp.server.stdio import stdio_server

        from server.transport import AnswerRefusedLines

        async with stdio_server() as (read_stream, write_stream):
            await self._lowlevel_server.run(
                AnswerRefusedLines(read_stream, write_stream),
                write_stream,
                self._lowlevel_server.create_initialization_options(),
            )


def _client_name(context: Any) -> str | None:
    try:
        info = context.request_context.session.client_params.client_info
        return f"{info.name}/{info.version}" if info.version else str(info.name)
    except AttributeError:
        return None
    except ValueError:  # no request context
        return None


def _exit_on_sigterm(runtime: Runtime) -> None:
    """SIGTERM (systemd, docker stop, an MCP client shutting us down) cancels the operations
    running in this process at once, so their shielded cleanup rolls them back, then exits.

    Only SIGKILL leaves an operation ``interrupted``. The exit is ``os._exit``: the SDK reads
    stdin in a worker thread that no cancellation can interrupt, so a cancelled server would
    otherwise hang until its client wrote a line or closed the pipe.
    """
    import asyncio
    import os
    import signal
    import sys

    loop = asyncio.get_running_loop()

    async def terminate() -> None:
        runtime.terminating = True
        log.warning("SIGTERM: cancelling running operations (they roll back), then exiting")
        try:
            with anyio.CancelScope(shield=True):
                await runtime.shutdown(0.0)
            runtime.close()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            os._exit(128 + signal.SIGTERM)

    try:
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(terminate()))
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no signals here
        log.debug("SIGTERM handler not installed", exc_info=True)


def _fix_endpoints(runtime: Runtime) -> None:
    """Every engine's endpoint resolved now (server.targets: a few small files, no connection), so
    a context edited while the server runs cannot move an engine under it. One that cannot be
    resolved is said by the first tool that needs it (start-up checked DSM_ENGINES already)."""
    from server.errors import DsmError

    for target in runtime.targets().all():
        try:
            target.endpoint()
        except DsmError:
            log.debug("engine %s not resolved at start-up", target.target.name, exc_info=True)


def _read_only(settings: Settings) -> bool:
    """DSM_READ_ONLY, or the policy's mode: read_only at start-up: changing tools are not even
    published. A policy switched to read_only later is enforced by the gate (server/safety/gate.py);
    one switched away from it takes a restart to publish the changing tools again."""
    if settings.read_only:
        return True
    from server.safety.gate import current

    return current(settings).policy.mode == "read_only"


def build_server(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    warm_memory: bool = False,
    recover_operations: bool = False,
    handle_sigterm: bool = False,
) -> MCPServer:
    """The server with every tool family registered. ``warm_memory`` loads the embedding model
    in the background a second after start-up; ``recover_operations`` finishes off operations a
    killed server left behind, in the background too; ``handle_sigterm`` makes SIGTERM roll
    running operations back before the process exits (the CLI sets all three; tests choose)."""
    runtime = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[Runtime]:
        _fix_endpoints(runtime)
        if warm_memory:
            # Off the start-up path: even opening the memory object costs imports we would
            # otherwise pay before answering initialize.
            threading.Timer(1.0, lambda: runtime.memory().warm_up()).start()
        if recover_operations:
            runtime.track_children()  # before any tool runs: what this server starts, the next start can reap
            threading.Thread(target=runtime.recover_operations, name="recover-operations", daemon=True).start()
        if handle_sigterm:
            _exit_on_sigterm(runtime)
        try:
            yield runtime
        finally:
            try:
                # Operations outlive their requests, not the server: let them finish (or, after a
                # SIGTERM, cancel them at once so their own rollback runs). Shielded: the server's
                # task group is usually being cancelled when we get here.
                with anyio.CancelScope(shield=True):
                    await runtime.shutdown(0.0 if runtime.terminating else runtime.shutdown_grace_s)
            finally:
                runtime.close()

    server = DockerStackServer(
        read_only=_read_only(settings),
        state_dir=settings.state_dir,
        name="docker-stack",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )
    from prompts import register as register_prompts
    from tools import backups, deploy, memory, monitor, operations, preflight, scale, stacks, updates

    stacks.register(server, runtime)
    preflight.register(server, runtime)
    operations.register(server, runtime)
    backups.register(server, runtime)
    deploy.register(server, runtime)
    updates.register(server, runtime)
    scale.register(server, runtime)
    memory.register(server, runtime)
    monitor.register(server, runtime)
    register_prompts(server)
    return server
