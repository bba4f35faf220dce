"""`make demo` is the README's first command: the scripted session must run and show real results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(600)  # ~3 minutes alone; the run below allows 600 s, and under 4 parallel workers it takes longer
def test_demo_runs_end_to_end(docker_engine: None) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py")], capture_output=True, text=True,
                            timeout=600, env=env, cwd=REPO)
    out = result.stdout
    assert result.returncode == 0, (out[-3000:], result.stderr[-3000:])
    assert "homepage     running       2/2 running, 2 healthy" in out
    assert "GO: 2 service(s), no errors, 0 warning(s)" in out
    assert "NO-GO:" in out and "ERROR   privileged [worker]" in out and "ERROR   port-conflict" in out
    assert "new incident:" in out and "homepage web returns 502 after db restart" in out
    assert out.count("tool error:") == 2 and "demo finished" in out
    assert "=> deployed, backup " in out and "=> rolled_back:" in out
    assert "after the rollback: 500 messages, columns body,id" in out
    assert "web     running  health unhealthy" in out
    assert "ERROR   unhealthy [web]" in out and "ERROR   dependency-unreachable [worker]" in out
    assert "watcher: restart -> recovered" in out and "stack shop: running" in out
    password = (REPO / ".cache" / "demo" / "stacks" / "homepage" / "db_password.txt").read_text().strip()
    assert password not in out and password not in result.stderr
