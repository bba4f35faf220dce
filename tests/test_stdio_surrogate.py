"""A lone UTF-16 surrogate in a string argument (issue 15): valid JSON, invalid Unicode. The
SDK's parser refused the line and the request got no JSON-RPC answer at all; over real stdio it
now gets a clear tool error (or, outside tools/call, an invalid-params error), and the server
goes on answering."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import write_stack
from tests.test_stdio import server_env

REPO = Path(__file__).resolve().parent.parent


def _answers(proc: subprocess.Popen[bytes], ids: set[int], timeout_s: float) -> dict[int, dict[str, Any]]:
    assert proc.stdout is not None
    fd, buf, out = proc.stdout.fileno(), b"", {}
    deadline = time.monotonic() + timeout_s
    while ids - out.keys() and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("id") in ids:
                out[msg["id"]] = msg
    return out


def test_a_lone_surrogate_gets_a_clear_answer_over_stdio(stacks_root: Path, tmp_path: Path) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n")
    env = server_env(stacks_root, tmp_path, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "server.cli"], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "inspect_stack", "arguments": {"path": "app\ud800"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "dsm://x\udc00"}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "\ud800"}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "inspect_stack",
                                                                      "arguments": {"path": "app"}}},
    ]
    try:
        assert proc.stdin is not None
        # json.dumps writes a lone surrogate as the escape "\ud800", as a client would send it
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in lines).encode())
        proc.stdin.flush()
        got = _answers(proc, {1, 2, 3, 4}, 60)
        assert set(got) == {1, 2, 3, 4}, got
        tool_error = got[2]["result"]
        assert tool_error["isError"] is True
        text = tool_error["content"][0]["text"]
        assert "`path`" in text and "lone UTF-16 surrogate" in text and "inspect_stack was not run" in text
        assert got[3]["error"]["code"] == -32602 and "`uri`" in got[3]["error"]["message"]
        assert not got[4]["result"].get("isError")  # the server went on answering
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
