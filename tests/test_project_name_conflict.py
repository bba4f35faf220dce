"""deploy_stack refuses to deploy a stack under another stack's project name.

With ``env: {COMPOSE_PROJECT_NAME: <other stack>}`` the plan of directory b read "create b's
services, remove the other stack's worker (orphan)" and the deploy was GO: ``up
--remove-orphans`` would have removed the other stack's containers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_stack

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

STACK = """\
name: {name}
services:
  {service}:
    image: dsm-test/busybox:1
    command: ["sleep", "3600"]
    init: true
    labels: {{dsm.test: "1"}}
    healthcheck: {{test: ["CMD", "true"], interval: 1s}}
    deploy: {{resources: {{limits: {{memory: 16m, cpus: "0.1", pids: 16}}}}}}
"""


async def test_a_given_project_name_of_another_stack_is_refused(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    write_stack(stacks_root, "first", STACK.format(name=project_name, service="worker"))
    write_stack(stacks_root, "second", STACK.format(name=f"{project_name}b", service="api"))
    result = await mcp_client.call_tool("deploy_stack", {"path": "second", "dry_run": True,
                                                         "env": {"COMPOSE_PROJECT_NAME": project_name}})
    assert not result.is_error, result.content
    report = result.structured_content
    assert report["status"] == "blocked" and report["plan"] is None
    assert [f["rule"] for f in report["findings"]] == ["project-name-conflict"]
    assert "first" in report["findings"][0]["message"]
    own = await mcp_client.call_tool("deploy_stack", {"path": "second", "dry_run": True})
    assert own.structured_content["status"] == "planned"  # under its own name it is fine
