"""list_stacks on a real engine: stacks under the root with live counts, other projects observed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cleanup_project, write_stack

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

WEB = """\
name: {name}
services:
  web:
    image: dsm-test/web:1.0
    labels: {{dsm.test: "1"}}
  idle:
    image: dsm-test/busybox:1
    command: ["sleep", "600"]
    labels: {{dsm.test: "1"}}
"""


def compose_up(directory: Path) -> None:
    subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "60"], cwd=directory,
                   check=True, capture_output=True, timeout=120)


async def test_running_stack_and_foreign_project(
    docker_engine: None, mcp_client: Any, stacks_root: Path, tmp_path: Path, project_name: str
) -> None:
    mine = write_stack(stacks_root, "mine", WEB.format(name=project_name))
    foreign_name = project_name + "x"
    foreign = write_stack(tmp_path / "elsewhere", "foreign", WEB.format(name=foreign_name))
    write_stack(stacks_root, "idle", "services:\n  a:\n    image: busybox:1\n")
    try:
        compose_up(mine)
        compose_up(foreign)
        result = await mcp_client.call_tool("list_stacks", {})
        assert not result.is_error, result.content
        out = result.structured_content
        stacks = {s["name"]: s for s in out["stacks"]}
        assert stacks[project_name]["containers"] == 2
        assert stacks[project_name]["running"] == 2 and stacks[project_name]["healthy"] == 2
        assert stacks[project_name]["state"] == "running"
        assert stacks[project_name]["services"] == ["web", "idle"]
        assert stacks["idle"]["state"] == "not-deployed"
        others = {p["name"]: p for p in out["other_projects"]}
        assert others[foreign_name]["running"] == 2
        assert others[foreign_name]["working_dir"] == str(foreign)
        assert project_name not in others

        subprocess.run(["docker", "compose", "stop", "idle"], cwd=mine, check=True, capture_output=True,
                       timeout=60)
        out = (await mcp_client.call_tool("list_stacks", {})).structured_content
        entry = next(s for s in out["stacks"] if s["name"] == project_name)
        assert entry["state"] == "degraded" and entry["running"] == 1
    finally:
        cleanup_project(foreign_name)


async def test_dead_daemon_still_lists_files(stacks_root: Path, tmp_path: Path) -> None:
    from mcp import Client

    from server.app import build_server
    from server.settings import Settings

    write_stack(stacks_root, "app", "services:\n  a:\n    image: busybox:1\n")
    settings = Settings(stacks_root=stacks_root, state_dir=tmp_path / "s",
                        docker_host=f"unix://{tmp_path}/no-such.sock")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("list_stacks", {})
    out = result.structured_content
    assert not result.is_error and out["stacks"][0]["state"] == "unknown"
    assert any("cannot be reached" in p for p in out["problems"])
    assert out["engine"] == f"unix://{tmp_path}/no-such.sock (from DOCKER_HOST)"  # which engine was asked
