"""Deploys from real server processes over stdio: two at once (one runs, one is told `busy`), and a
server SIGKILLed mid-deploy (the operation ends `interrupted`; the stack is deployable again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.deploy.seams import operations
from server.runtime import Runtime
from server.settings import Settings
from tests.deploy_helpers import (
    WEB_10,
    WEB_11,
    containers,
    deploy,
    free_port,
    get,
    web_stack,
    write,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]
EXE = str(Path(sys.executable).parent / "docker-stack-mcp")


def start_deploy(settings: Settings, path: str, **arguments: Any) -> subprocess.Popen[str]:
    """A server process over stdio that has been asked to deploy ``path`` (answer on stdout)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "DSM_STACKS_ROOT": str(settings.stacks_root), "DSM_STATE_DIR": str(settings.state_dir)}
    proc = subprocess.Popen([EXE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    assert proc.stdin is not None
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "deploy_stack", "arguments": {"path": path, **arguments}}},
    ):
        proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()
    return proc


def answer(proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        message = json.loads(line)
        if message.get("id") == 2:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=30)
            return dict(message["result"]["structuredContent"])
    proc.kill()
    raise AssertionError("no answer from the server")


def wait_for(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached")


async def test_two_deploys_from_two_processes(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    first = start_deploy(runtime.settings, project_name, verify_s=8)
    ops = operations(runtime)
    holder = wait_for(lambda: ops.running(project_name))
    window = wait_for(lambda: ops.maintenance(project_name))  # the watcher stays out of a deploy's way
    assert holder.operation_id in window["reason"]
    second = start_deploy(runtime.settings, project_name, verify_s=0)
    busy = answer(second)
    assert busy["status"] == "busy" and busy["operation_id"] == holder.operation_id
    done = answer(first)
    assert done["status"] == "deployed" and done["operation_id"] == holder.operation_id
    assert ops.maintenance(project_name) is None
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_sigkill_mid_deploy_leaves_interrupted_then_deployable(runtime: Runtime, stacks_root: Path,
                                                                     project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    proc = start_deploy(runtime.settings, project_name, verify_s=60)
    ops = operations(runtime)
    killed = wait_for(lambda: ops.running(project_name))
    wait_for(lambda: any("healthy" in c.get("Status", "") for c in containers(project_name)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    report = await deploy(runtime, project_name)
    assert report.status == "deployed", report
    record = ops.get(killed.operation_id)
    assert record is not None and record.status == "interrupted"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"


async def test_server_shutdown_mid_deploy_rolls_back(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    """Shutdown cancels the detached operation after its grace; the rollback runs shielded."""
    import anyio

    from server.deploy.pipeline import Deployer

    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    outcome: dict[str, Any] = {}

    async def run() -> None:
        try:
            outcome["report"] = await Deployer(runtime).deploy(project_name, verify_s=120)
        except BaseException as exc:  # the caller sees the cancellation; the rollback already ran
            outcome["error"] = type(exc).__name__
            raise

    ops = operations(runtime)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(60):
            while get_or_empty(port) != "web 1.1":
                await anyio.sleep(0.2)
        op = ops.running(project_name)
        assert op is not None
        await runtime.shutdown(grace_s=0.5)
        tg.cancel_scope.cancel()
    record = ops.get(op.operation_id)
    assert record is not None and record.status == "rolled_back", record
    assert record.result and "interrupted" in record.result["rollback"]["why"]
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


def get_or_empty(port: int) -> str:
    try:
        return get(f"http://127.0.0.1:{port}/", timeout=1)
    except OSError:
        return ""
