"""operation_status and stack_history through MCP: in-memory client, then a real stdio process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.operations import Operations
from server.settings import Settings
from tests.conftest import write_stack
from tests.test_stdio import EXE, server_env

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent


async def _call(client: Any, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def _error(client: Any, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, result.structured_content
    return result.content[0].text


def _deploy(ops: Operations, stack: str, status: str, *, tag: str, backup_id: str | None = None,
            kind: str = "deploy", **extra: Any) -> str:
    op = ops.begin(stack, kind, {"path": stack, "env": {"API_KEY": "k-123456789"}})  # type: ignore[arg-type]
    op.phase("backup", "ok", duration_s=0.5)
    op.phase("deploy", "failed" if status == "rolled_back" else "ok", detail="web unhealthy" if
             status == "rolled_back" else "")
    op.end(status, {"status": status, "backup_id": backup_id,  # type: ignore[arg-type]
                    "services": [{"name": "web", "state": "running", "health": "healthy", "image": f"web:{tag}",
                                  "image_digest": f"sha256:{tag * 8}"}], **extra})
    return op.id


async def test_operation_status_reports_progress_and_result(mcp_client: Any, settings: Settings) -> None:
    ops = Operations(settings)
    op = ops.begin("shop", "deploy", {"path": "shop", "env": {"DB_PASSWORD": "pw-very-secret"}})
    op.phase("backup", "ok", duration_s=1.5)
    op.phase("deploy", "running", detail="docker compose up")
    running = await _call(mcp_client, "operation_status", operation_id=op.id)
    assert running["status"] == "running" and running["result"] is None and running["kind"] == "deploy"
    assert [(p["name"], p["status"]) for p in running["phases"]] == [("backup", "ok"), ("deploy", "running")]
    assert running["params"] == {"path": "shop", "env": ["DB_PASSWORD"]} and running["elapsed_s"] >= 0
    assert running["pid"] == os.getpid() and running["ended_at"] is None
    op.phase("deploy", "ok")
    op.end("deployed", {"status": "deployed", "note": "DB_PASSWORD=pw-very-secret"})
    done = await _call(mcp_client, "operation_status", operation_id=f"  {op.id} ")
    assert done["status"] == "deployed" and done["ended_at"] and done["result"]["status"] == "deployed"
    assert "pw-very-secret" not in str(done)


async def test_operation_status_unknown_and_malformed(mcp_client: Any) -> None:
    text = await _error(mcp_client, "operation_status", operation_id="op-20260101T000000Z-deadbeef")
    assert "no operation" in text and "stack_history" in text
    text = await _error(mcp_client, "operation_status", operation_id='../../etc/passwd"')
    assert "no operation" in text


async def test_stack_history_by_name_and_by_directory(mcp_client: Any, settings: Settings,
                                                      stacks_root: Path) -> None:
    # The directory and the project name differ: both spellings must reach the same history.
    write_stack(stacks_root, "shop-dir", "name: shop\nservices:\n  web:\n    image: web:1\n")
    ops = Operations(settings)
    first = _deploy(ops, "shop", "deployed", tag="1", backup_id="20260101T000000Z-aaaaaa")
    ops.begin("shop", "backup").end("done", {"backup_id": "b"})  # not a deployment: not listed
    second = _deploy(ops, "shop", "rolled_back", tag="2", backup_id="20260102T000000Z-bbbbbb")
    third = _deploy(ops, "shop", "deployed", tag="3", kind="rollback")
    _deploy(ops, "other", "deployed", tag="9")
    by_name = await _call(mcp_client, "stack_history", stack="shop")
    by_dir = await _call(mcp_client, "stack_history", stack="shop-dir")
    assert by_name == by_dir and by_name["stack"] == "shop"
    entries = by_name["deployments"]
    assert [e["deployment_id"] for e in entries] == [third, second, first]
    assert [e["kind"] for e in entries] == ["rollback", "deploy", "deploy"]
    assert entries[1]["status"] == "rolled_back" and entries[1]["detail"] == "phase deploy failed: web unhealthy"
    assert entries[2]["images"] == [{"service": "web", "image": "web:1", "digest": "sha256:11111111"}]
    assert entries[2]["backup_id"] == "20260101T000000Z-aaaaaa" and entries[0]["backup_id"] is None
    limited = await _call(mcp_client, "stack_history", stack="shop", limit=1)
    assert [e["deployment_id"] for e in limited["deployments"]] == [third]


async def test_stack_history_edges(mcp_client: Any, settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "fresh", "services:\n  web:\n    image: web:1\n")
    assert await _call(mcp_client, "stack_history", stack="fresh") == {"stack": "fresh", "deployments": []}
    # A stack removed from disk keeps its history.
    gone = _deploy(Operations(settings), "retired", "deployed", tag="4")
    history = await _call(mcp_client, "stack_history", stack="retired")
    assert [e["deployment_id"] for e in history["deployments"]] == [gone]
    for bad in ("nope", "../../etc", "-rf", "/etc"):
        text = await _error(mcp_client, "stack_history", stack=bad)
        assert "Next:" in text, bad
    assert "limit" in await _error(mcp_client, "stack_history", stack="fresh", limit=0)


async def test_list_deployments_is_gone(mcp_client: Any) -> None:
    names = {t.name for t in (await mcp_client.list_tools()).tools}
    assert {"operation_status", "stack_history"} <= names and "list_deployments" not in names


@pytest.mark.slow
async def test_over_stdio_a_killed_servers_operation(stacks_root: Path, tmp_path: Path) -> None:
    """Another process holds the stack and is SIGKILLed: a fresh server over stdio sees the
    operation running, then interrupted, and its start-up recovery stops the leftover group."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from server.operations import procs

    write_stack(stacks_root, "web", "services:\n  web:\n    image: web:1\n")
    state = tmp_path / "state"
    worker = subprocess.Popen([sys.executable, "-m", "tests.ops_worker", "hold", str(state), "web"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    ready = worker.stdout.readline().split()
    assert ready and ready[0] == "ready", worker.stderr.read() if worker.stderr else ""
    op_id, pgid = ready[1], int(ready[2])
    params = StdioServerParameters(command=EXE, args=[], env=server_env(stacks_root, tmp_path))
    try:
        async with Client(params) as client:
            status = await _call(client, "operation_status", operation_id=op_id)
            assert status["status"] == "running" and status["pid"] == worker.pid
            assert status["phases"][0]["detail"] == "docker compose up"
            history = await _call(client, "stack_history", stack="web")
            assert [(e["deployment_id"], e["status"]) for e in history["deployments"]] == [(op_id, "running")]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        assert procs.group_members(pgid)
        async with Client(params) as client:  # a new server: the CLI runs recovery at start-up
            import anyio

            status = {}

            with anyio.fail_after(20):
                while procs.group_members(pgid) or "process_groups" not in (status.get("result") or {}):
                    await anyio.sleep(0.1)
                    status = await _call(client, "operation_status", operation_id=op_id)
            assert status["status"] == "interrupted" and status["result"]["stack_state"] == []
            assert status["result"]["process_groups"] == [{"pgid": pgid, "outcome": "killed"}]
            assert "hunter2-secret" not in str(status)
    finally:
        if worker.poll() is None:
            worker.kill()


def _ops_server(stacks_root: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = server_env(stacks_root, tmp_path, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "tests.ops_server"], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _rpc(proc: subprocess.Popen[bytes], *messages: dict[str, Any]) -> None:
    import json

    assert proc.stdin is not None
    for m in messages:
        proc.stdin.write((json.dumps(m) + "\n").encode())
    proc.stdin.flush()


def _start_slow_operation(proc: subprocess.Popen[bytes], seconds: float) -> None:
    _rpc(proc,
         {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
             "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
         {"jsonrpc": "2.0", "method": "notifications/initialized"},
         {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
          "params": {"name": "slow_operation", "arguments": {"stack": "web", "seconds": seconds}}})


def _wait_for(predicate: Any, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_cancels_running_operations_which_roll_back(stacks_root: Path, tmp_path: Path) -> None:
    import time

    settings = Settings(stacks_root=stacks_root, state_dir=tmp_path / "state")
    proc = _ops_server(stacks_root, tmp_path)
    try:
        _start_slow_operation(proc, 120)
        ops = Operations(settings)
        _wait_for(lambda: bool(ops.history("web")) and ops.history("web")[0].phases, 60)
        op_id = ops.history("web")[0].operation_id
        assert ops.get(op_id).status == "running"  # type: ignore[union-attr]
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - start < 10  # cancelled at once, not after the 20 s grace
        rec = ops.get(op_id)
        assert rec is not None and rec.status == "rolled_back", (rec, proc.stderr.read() if proc.stderr else "")
        assert [p["name"] for p in rec.phases] == ["deploy", "rollback"]
        ops.begin("web", "deploy").end("done")  # the lock went with the process
    finally:
        if proc.poll() is None:
            proc.kill()


def test_closed_stdin_lets_running_operations_finish(stacks_root: Path, tmp_path: Path) -> None:
    settings = Settings(stacks_root=stacks_root, state_dir=tmp_path / "state")
    proc = _ops_server(stacks_root, tmp_path)
    try:
        _start_slow_operation(proc, 2)
        ops = Operations(settings)
        _wait_for(lambda: bool(ops.history("web")), 60)
        assert proc.stdin is not None
        proc.stdin.close()  # the client went away mid-operation
        proc.wait(timeout=30)
        rec = ops.history("web")[0]
        assert rec.status == "deployed" and [p["status"] for p in rec.phases] == ["ok"]
    finally:
        if proc.poll() is None:
            proc.kill()
