"""A separate server-like process for the operations tests: ``python -m tests.ops_worker CMD STATE_DIR ...``.

Commands:
  race STACK GO_FILE       wait for GO_FILE, then begin on STACK; print "won <id>" (holding 1.5 s) or
                           "busy <holder id>"
  write STACK N [MAX]      N operations (begin, 3 phases, end) on STACK; journal max bytes MAX
  hold STACK               begin on STACK, spawn `sleep 300` via run_argv(on_start=op.child) and a
                           grandchild in that group that ignores SIGTERM, print "ready <op> <pgid>
                           <grandchild pid>", then wait for ever (the test SIGKILLs us)
  compose STACK DIR        begin on STACK, run a real attached `docker compose up` of DIR through
                           ComposeRunner(on_start=op.child), print "ready <op> <pgid>" once started
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio

from server.errors import StackBusy
from server.operations import Operations
from server.settings import Settings


def _ops(state: str, max_bytes: int | None = None) -> Operations:
    settings = Settings(stacks_root=Path("/nonexistent-stacks"), state_dir=Path(state))
    if max_bytes:
        from dataclasses import replace

        settings = replace(settings, journal_max_bytes=max_bytes)
    return Operations(settings, kill_grace_s=1.0)


def race(state: str, stack: str, go: str) -> None:
    ops = _ops(state)
    while not os.path.exists(go):
        time.sleep(0.002)
    try:
        op = ops.begin(stack, "deploy", {"by": os.getpid()})
    except StackBusy as exc:
        print("busy", exc.operation_id, flush=True)
        return
    print("won", op.id, flush=True)
    time.sleep(1.5)
    op.end("deployed", {"by": os.getpid()})


def write(state: str, stack: str, n: int, max_bytes: int | None) -> None:
    ops = _ops(state, max_bytes)
    for i in range(n):
        op = ops.begin(stack, "deploy", {"i": i, "pad": "x" * 200})
        for phase in ("backup", "deploy", "verify"):
            op.phase(phase, "ok", detail=f"{stack} {i} {phase}", duration_s=0.01)
        op.end("deployed", {"i": i})


async def hold(state: str, stack: str) -> None:
    from server.process import run_argv

    ops = _ops(state)
    op = ops.begin(stack, "deploy", {"env": {"DB_PASSWORD": "hunter2-secret"}})
    op.phase("deploy", "running", detail="docker compose up")
    marker = Path(state) / f"grandchild-{os.getpid()}"
    pgids: list[int] = []

    def on_start(pgid: int) -> None:
        op.child(pgid)
        pgids.append(pgid)

    script = f"sh -c 'trap \"\" TERM; echo $$ > {marker}; exec sleep 300' & exec sleep 300"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_argv(["sh", "-c", script], timeout_s=600, env={"PATH": os.environ["PATH"]},
                                       on_start=on_start))
        while not pgids or not marker.exists() or not marker.read_text().strip():
            await anyio.sleep(0.02)
        print("ready", op.id, pgids[0], marker.read_text().strip(), flush=True)
        await anyio.sleep(600)


async def compose(state: str, stack: str, directory: str) -> None:
    from server.compose import ComposeRunner, project_flags

    ops = _ops(state)
    settings = Settings(stacks_root=Path(directory).parent, state_dir=Path(state))
    op = ops.begin(stack, "deploy", {"path": directory})
    op.phase("deploy", "running", detail="docker compose up")
    started: list[int] = []

    def on_start(pgid: int) -> None:
        op.child(pgid)
        started.append(pgid)

    runner = ComposeRunner(settings)
    await runner.prefix()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: runner.run(project_flags(Path(directory), [], stack), ["up"], cwd=Path(directory),
                                          timeout_s=600, on_start=on_start, check=False))
        while not started:
            await anyio.sleep(0.02)
        print("ready", op.id, started[0], flush=True)
        await anyio.sleep(600)


def main() -> None:
    cmd, state, *rest = sys.argv[1:]
    if cmd == "race":
        race(state, rest[0], rest[1])
    elif cmd == "write":
        write(state, rest[0], int(rest[1]), int(rest[2]) if len(rest) > 2 else None)
    elif cmd == "compose":
        anyio.run(compose, state, rest[0], rest[1])
    elif cmd == "hold":
        anyio.run(hold, state, rest[0])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
