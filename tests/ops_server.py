"""The real server (CLI start-up path) plus one test tool that runs a long detached operation.

``python -m tests.ops_server`` with the usual DSM_* environment; used to test what SIGTERM and a
closed stdin do to running operations.
"""

from __future__ import annotations

import anyio

from server.app import build_server
from server.runtime import Runtime
from server.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    runtime = Runtime(settings)
    runtime.shutdown_grace_s = 20.0
    server = build_server(settings, runtime, handle_sigterm=True)

    @server.tool()
    async def slow_operation(stack: str, seconds: float) -> dict:
        """Test only: an operation that takes `seconds` and rolls back when cancelled."""
        ops = runtime.operations()
        op = await ops.begin_async(stack, "deploy")

        async def work() -> dict:
            op.phase("deploy", "running")
            try:
                await anyio.sleep(seconds)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.2)  # a rollback takes a moment
                    op.phase("rollback", "ok", detail="rolled back on shutdown")
                    op.end("rolled_back", {"why": "server shutdown"})
                raise
            op.phase("deploy", "ok")
            op.end("deployed", {"status": "deployed"})
            return {"status": "deployed", "operation_id": op.id}

        return await ops.run_detached(op, work)

    server.run()


if __name__ == "__main__":
    main()
