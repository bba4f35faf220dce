"""A server-like process that hangs mid-backup: ``python -m tests.backup_worker STACKS STATE STACK``.

It runs backup_stack's create (server.backups.service.create: lock, journal, capture) on STACK;
the archive of a volume never returns (the engine's archive read is replaced by a wait), so the
worker stops there with the database it stopped for archiving stopped and the helper container
created. It prints ``ready <operation id>`` and waits to be SIGKILLed by the test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio

from server.engine import Engine
from server.runtime import Runtime
from server.settings import Settings


async def main(stacks: str, state: str, stack: str) -> None:
    from server.backups import service

    runtime = Runtime(Settings(stacks_root=Path(stacks), state_dir=Path(state)))

    async def hang(self: Engine, container_id: str, path: str, dest: Path) -> Any:
        running = runtime.operations().running(stack)
        print("ready", running.operation_id if running else "?", flush=True)
        await anyio.sleep(600)

    Engine.archive_to_file = hang  # type: ignore[method-assign]
    location = service.resolve_stack(runtime, stack)
    await service.create(runtime, location, "killed mid-backup", None)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
