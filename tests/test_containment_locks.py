"""One directory, two names: the lock is per project name AND per stack directory.

On main ``deploy_stack(path=X, env={COMPOSE_PROJECT_NAME: other})`` took the lock of ``other``
and ran beside a deploy of X: two full copies of one directory (two PostgreSQL servers on one
PGDATA when it was bind-mounted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.errors import StackBusy
from server.operations import Operations
from server.settings import Settings
from tests.conftest import write_stack


def test_a_directory_is_locked_whatever_name_it_runs_under(settings: Settings, stacks_root: Path) -> None:
    ops = Operations(settings)
    app, other = stacks_root / "app", stacks_root / "other"
    app.mkdir()
    other.mkdir()
    first = ops.begin("app", "deploy", {}, directory=app)
    with pytest.raises(StackBusy) as busy:
        ops.begin("renamed", "deploy", {}, directory=app)
    assert busy.value.stack == "app" and busy.value.operation_id == first.id
    with pytest.raises(StackBusy):
        ops.begin("renamed", "deploy", {}, directory=stacks_root / ".." / stacks_root.name / "app")  # same dir
    assert ops.running("renamed") is None  # the refused begin left the name's own lock free
    ops.begin("third", "control", {}, directory=other).end("done")  # another directory: free
    first.end("deployed")
    ops.begin("renamed", "deploy", {}, directory=app).end("deployed")


def test_a_name_busy_in_another_directory_is_still_busy(settings: Settings, stacks_root: Path) -> None:
    ops = Operations(settings)
    (stacks_root / "a").mkdir()
    (stacks_root / "b").mkdir()
    held = ops.begin("app", "deploy", {}, directory=stacks_root / "a")
    with pytest.raises(StackBusy):
        ops.begin("app", "deploy", {}, directory=stacks_root / "b")
    assert ops.begin("other", "backup", {}, directory=stacks_root / "b").end("done") is None
    held.end("deployed")


@pytest.mark.anyio
@pytest.mark.docker
async def test_deploy_under_a_second_name_waits_for_the_directory(
        docker_engine: None, mcp_client: Any, settings: Settings, stacks_root: Path, project_name: str) -> None:
    directory = write_stack(stacks_root, project_name, (
        f"name: {project_name}\nservices:\n  app:\n    image: dsm-test/busybox:1\n    command: ['sleep', '60']\n"
        "    init: true\n    labels: {dsm.test: '1'}\n    mem_limit: 16m\n"
        "    healthcheck: {test: ['CMD', 'true'], interval: 1s}\n"))
    held = Operations(settings).begin(project_name, "deploy", {}, directory=directory)  # "another server" deploys X
    try:
        result = await mcp_client.call_tool("deploy_stack", {
            "path": project_name, "env": {"COMPOSE_PROJECT_NAME": f"{project_name}b"}})
        report = result.structured_content
        assert report["status"] == "busy" and report["operation_id"] == held.id, (report["findings"], report["phases"])
    finally:
        held.end("deployed")
