"""The real server process over real stdio, driven by the SDK's client and by the MCP Inspector."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_stack

EXE = str(Path(sys.executable).parent / "docker-stack-mcp")
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def server_env(stacks_root: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)),
           "DSM_STACKS_ROOT": str(stacks_root), "DSM_STATE_DIR": str(tmp_path / "state")}
    env.update(extra)
    return env


@pytest.mark.anyio
async def test_stdio_session(stacks_root: Path, tmp_path: Path) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n")
    params = StdioServerParameters(command=EXE, args=[], env=server_env(stacks_root, tmp_path))
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_stacks", "inspect_stack"} <= names
        result = await client.call_tool("inspect_stack", {"path": "app"})
        assert not result.is_error and result.structured_content["services"][0]["image"] == "busybox:1"
        bad = await client.call_tool("inspect_stack", {"path": "../../etc/passwd"})
        assert bad.is_error
        again = await client.call_tool("inspect_stack", {"path": "app"})
        assert not again.is_error
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"deploy_new_stack", "troubleshoot_stack"} <= prompts


def test_nothing_but_protocol_on_stdout(stacks_root: Path, tmp_path: Path) -> None:
    """A raw JSON-RPC exchange: every stdout line must parse as a JSON-RPC message."""
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n")
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "inspect_stack",
                                                                       "arguments": {"path": "app"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "inspect_stack",
                                                                       "arguments": {"path": "--help"}}},
    ]
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    proc = subprocess.run([EXE], input=stdin, capture_output=True, text=True, timeout=60,
                          env=server_env(stacks_root, tmp_path, DSM_LOG_LEVEL="DEBUG"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    parsed = [json.loads(ln) for ln in lines]
    assert all(m.get("jsonrpc") == "2.0" for m in parsed)
    assert {m.get("id") for m in parsed} >= {1, 2, 3}
    assert proc.stderr  # logs went somewhere: stderr


@pytest.mark.skipif(shutil.which("npx") is None and not os.environ.get("CI"), reason="npx not installed")
@pytest.mark.slow
def test_mcp_inspector_cli(stacks_root: Path, tmp_path: Path) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n")
    envargs = []
    for key, value in server_env(stacks_root, tmp_path).items():
        if key.startswith("DSM_"):
            envargs += ["-e", f"{key}={value}"]
    base = ["npx", "-y", INSPECTOR, "--cli", *envargs, EXE]
    listed = subprocess.run([*base, "--method", "tools/list"], capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    tools = {t["name"]: t for t in json.loads(listed.stdout)["tools"]}
    assert tools["inspect_stack"]["annotations"]["readOnlyHint"] is True
    assert "outputSchema" in tools["inspect_stack"]
    called = subprocess.run([*base, "--method", "tools/call", "--tool-name", "inspect_stack",
                             "--tool-arg", "path=app"], capture_output=True, text=True, timeout=300)
    assert called.returncode == 0, called.stderr[-2000:]
    assert json.loads(called.stdout)["structuredContent"]["services"][0]["name"] == "web"
    refused = subprocess.run([*base, "--method", "tools/call", "--tool-name", "inspect_stack",
                              "--tool-arg", "path=/etc/passwd"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 5  # the Inspector's exit code for a tool error
