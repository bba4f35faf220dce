"""Services named like Compose flags ("-v", "--volumes") are names, never options.

Compose accepts such names. Passed bare after ``rm --stop --force`` the name ``--volumes``
became the flag: removing one service removed every service and its anonymous volumes;
``up -d -v`` and ``restart -v`` failed. Every service list now follows ``--``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.compose import services_argv
from tests.conftest import write_stack

pytestmark = [pytest.mark.anyio]

FLAGS = """\
name: {name}
x-dsm: {{verify_s: 0}}
x-svc: &svc
  image: dsm-test/busybox:1
  command: ["sleep", "3600"]
  init: true
  labels: {{dsm.test: "1"}}
  healthcheck: {{test: ["CMD", "true"], interval: 1s}}
  deploy: {{resources: {{limits: {{memory: 16m, cpus: "0.1", pids: 16}}}}}}
services:
  "-v": *svc
  "--volumes": *svc
"""


def test_services_follow_a_double_dash() -> None:
    assert services_argv(["-v", "web"]) == ["--", "-v", "web"]
    assert services_argv([]) == [] and services_argv(None) == []


def _services(project: str) -> set[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                          "--format", '{{.Label "com.docker.compose.service"}}'],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return set(out.split())


@pytest.mark.docker
async def test_flag_like_service_names_are_services(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    write_stack(stacks_root, "flags", FLAGS.format(name=project_name))
    deployed = await mcp_client.call_tool("deploy_stack", {"path": "flags", "services": ["-v"], "verify_s": 0})
    assert not deployed.is_error and deployed.structured_content["status"] == "deployed", deployed.structured_content
    assert _services(project_name) == {"-v"}
    restarted = await mcp_client.call_tool("stack_control", {"stack": "flags", "action": "restart",
                                                             "services": ["-v"]})
    assert not restarted.is_error, restarted.content
    await mcp_client.call_tool("deploy_stack", {"path": "flags", "verify_s": 0})
    assert _services(project_name) == {"-v", "--volumes"}
    removed = await mcp_client.call_tool("stack_control", {"stack": "flags", "action": "remove",
                                                           "services": ["--volumes"]})
    assert not removed.is_error, removed.content
    assert _services(project_name) == {"-v"}  # the other service was not removed with it
