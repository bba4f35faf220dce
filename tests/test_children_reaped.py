"""Children die with the server (issue 15): a SIGKILLed server's direct child is killed by
PR_SET_PDEATHSIG at once, and what that child started (the group it leads) is reaped by the next
server's start-up. A real server over stdio, with a fake Compose binary that hangs on ``config``
and starts a grandchild, as ``docker compose`` starts its plugin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.operations import procs
from server.process import run_argv
from tests.conftest import write_stack
from tests.test_stdio import server_env

REPO = Path(__file__).resolve().parent.parent


def _fake_compose(tmp_path: Path) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    script = tmp_path / "fake-compose"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *version*) echo 2.40.3; exit 0;; esac\n'
        f"echo $$ >> {pids}\n"  # the server's direct child
        "sleep 300 &\n"
        f"echo $! >> {pids}\n"  # its child, in its process group
        "wait\n"
    )
    script.chmod(0o755)
    return script, pids


def _start(stacks_root: Path, tmp_path: Path, compose: Path) -> subprocess.Popen[bytes]:
    env = server_env(stacks_root, tmp_path, DSM_COMPOSE_BIN=str(compose), PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "server.cli"], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _send(proc: subprocess.Popen[bytes], *messages: dict[str, Any]) -> None:
    assert proc.stdin is not None
    for m in messages:
        proc.stdin.write((json.dumps(m) + "\n").encode())
    proc.stdin.flush()


_INIT = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"}]


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    return procs.start_time(pid) is None  # gone, or a zombie nobody reaped yet


def test_sigkilled_servers_children_die_and_the_next_start_reaps_the_rest(stacks_root: Path, tmp_path: Path) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n")
    compose, pids = _fake_compose(tmp_path)
    first = _start(stacks_root, tmp_path, compose)
    second = None
    started: list[int] = []
    try:
        _send(first, *_INIT, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                              "params": {"name": "inspect_stack", "arguments": {"path": "app"}}})
        _wait(lambda: pids.exists() and len(pids.read_text().split()) >= 2, 60, "the fake compose to start")
        started = [int(p) for p in pids.read_text().split()]
        child, grandchild = started[:2]
        assert not _gone(child) and not _gone(grandchild)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        _wait(lambda: _gone(child), 5, "the direct child to die with its server (PR_SET_PDEATHSIG)")
        assert not _gone(grandchild)  # the death signal reaches the direct child only
        # The next server's start-up reaps what the dead one's group left running.
        second = _start(stacks_root, tmp_path, compose)
        _send(second, *_INIT)
        _wait(lambda: _gone(grandchild), 30, "the next start to reap the dead server's process group")
        _wait(lambda: not list((tmp_path / "state" / "children").glob("*.json")), 10, "the record to be dropped")
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for pid in started:
            if not _gone(pid):
                import os

                os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_a_missing_program_is_still_file_not_found(tmp_path: Path) -> None:
    # The death-signal wrapper must not turn "no such program" into the wrapper's exit 127.
    with pytest.raises(FileNotFoundError):
        await run_argv(["dsm-no-such-program"], timeout_s=5, env={"PATH": str(tmp_path)})
    with pytest.raises(FileNotFoundError):
        await run_argv([str(tmp_path / "nope")], timeout_s=5, env={"PATH": "/usr/bin:/bin"})
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        await run_argv([str(plain)], timeout_s=5, env={"PATH": "/usr/bin:/bin"})
    ok = await run_argv(["true"], timeout_s=5, env={"PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0


@pytest.mark.anyio
async def test_children_are_registered_while_they_run(tmp_path: Path) -> None:
    from server.operations.children import ChildRegistry
    from server.process import track_children

    registry = ChildRegistry(tmp_path / "children")
    track_children(registry)
    try:
        result = await run_argv(["sh", "-c", f"sleep 1; ls {tmp_path / 'children'}"], timeout_s=10,
                                env={"PATH": "/usr/bin:/bin"})
    finally:
        track_children(None)
    assert result.stdout.strip().endswith(".json")  # recorded while it ran
    assert not list((tmp_path / "children").iterdir())  # forgotten once it ended
    assert registry.reap() == []


@pytest.mark.anyio
async def test_every_child_is_started_with_the_parent_death_signal() -> None:
    # What the child itself reads back with prctl(PR_GET_PDEATHSIG): SIGKILL (9).
    probe = ("import ctypes; v = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")
    result = await run_argv([sys.executable, "-I", "-S", "-c", probe], timeout_s=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.strip() == str(int(signal.SIGKILL)), result
