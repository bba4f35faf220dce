"""Cold start: spawn -> initialize -> tools/list, our server vs a bare one-tool MCPServer.

Both are measured alternately in one run (so machine noise hits both alike) over raw JSON-RPC
on pipes. Prints the medians and the ratio ours/bare. Target: <= 1.10.

    .venv/bin/python bench/coldstart.py [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def one_run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(MESSAGES[0]) + "\n")
        proc.stdin.flush()
        _read_response(proc, 1)
        proc.stdin.write(json.dumps(MESSAGES[1]) + "\n" + json.dumps(MESSAGES[2]) + "\n")
        proc.stdin.flush()
        tools = _read_response(proc, 2)["result"]["tools"]
        elapsed = time.perf_counter() - start
        assert tools, "no tools listed"
        return elapsed
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _read_response(proc: subprocess.Popen[str], wanted: int) -> dict:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server closed stdout before answering request {wanted}")
        message = json.loads(line)
        if message.get("id") == wanted:
            return message


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", tmp), "DSM_STACKS_ROOT": tmp,
               "DSM_STATE_DIR": str(Path(tmp).parent / "dsm-bench-state"), "DSM_LOG_LEVEL": "WARNING"}
        ours_argv = [str(Path(sys.executable).parent / "docker-stack-mcp")]
        bare_argv = [sys.executable, str(REPO / "bench" / "bare_server.py")]
        one_run(ours_argv, env)  # warm the OS page cache for both before measuring
        one_run(bare_argv, env)
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(args.runs):
            ours.append(one_run(ours_argv, env))
            bare.append(one_run(bare_argv, env))
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    print(f"cold start (spawn -> initialize -> tools/list), {args.runs} alternating runs each")
    print(f"  docker-stack-mcp : median {m_ours * 1000:7.1f} ms  (p90 {_p90(ours) * 1000:7.1f} ms)")
    print(f"  bare MCPServer   : median {m_bare * 1000:7.1f} ms  (p90 {_p90(bare) * 1000:7.1f} ms)")
    print(f"  ratio ours/bare  : {m_ours / m_bare:.3f}  (target <= 1.10)")


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9) - 1]


if __name__ == "__main__":
    main()
