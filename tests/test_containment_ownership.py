"""Touch only what is ours (issue 15), on the real engine.

A Compose project started by hand from another directory, whose name a stack under the root also
renders: on main validate_compose said GO and deploy_stack recreated that project's service and
removed its other container as an orphan. Now the pre-flight names both directories (NO-GO), and
no mutating tool (deploy_stack, stack_control, rollback, backup_stack) acts on its containers.
Also: one directory under two project names, and two databases on one host data directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cleanup_project, write_stack
from tests.deploy_helpers import POSTGRES, docker

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BUSY = ("    image: dsm-test/busybox:1\n    command: ['sleep', '3600']\n    init: true\n"
        "    labels: {dsm.test: '1'}\n    mem_limit: 16m\n")


def two_services(name: str) -> str:
    return f"name: {name}\nservices:\n  app:\n{BUSY}  side:\n{BUSY}"


def up_by_hand(directory: Path, name: str) -> None:
    subprocess.run(["docker", "compose", "-p", name, "up", "-d"], cwd=directory, check=True, capture_output=True,
                   timeout=120)


def snapshot(project: str) -> dict[str, tuple[str, str]]:
    out = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "--format",
                 "{{json .}}")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["Names"]: (r["ID"], r["State"]) for r in rows}


async def call(client: Any, tool: str, args: dict[str, Any]) -> Any:
    return await client.call_tool(tool, args)


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_foreign_project_of_the_same_name_is_never_touched(
        docker_engine: None, mcp_client: Any, stacks_root: Path, tmp_path: Path, project_name: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "compose.yaml").write_text(two_services(project_name))
    up_by_hand(elsewhere, project_name)
    before = snapshot(project_name)
    assert len(before) == 2 and all(state == "running" for _, state in before.values())
    stack_dir = write_stack(stacks_root, project_name, f"name: {project_name}\nservices:\n  app:\n{BUSY}")

    report = (await call(mcp_client, "validate_compose", {"path": project_name})).structured_content
    assert report["go"] is False, report["summary"]
    [finding] = [f for f in report["findings"] if f["rule"] == "foreign-project"]
    assert str(elsewhere) in finding["message"] and str(stack_dir.resolve()) in finding["message"]

    deployed = (await call(mcp_client, "deploy_stack", {"path": project_name})).structured_content
    assert deployed["status"] == "blocked" and "foreign-project" in {f["rule"] for f in deployed["findings"]}

    for tool, args in [("stack_control", {"stack": project_name, "action": "stop"}),
                       ("stack_control", {"stack": project_name, "action": "remove"}),
                       ("rollback", {"stack": project_name}),
                       ("backup_stack", {"stack": project_name, "action": "create"})]:
        refused = await call(mcp_client, tool, args)
        assert refused.is_error, (tool, args, refused.content)
        assert "not started from this stack" in text(refused) and str(elsewhere) in text(refused), text(refused)

    assert snapshot(project_name) == before  # same containers, still running

    # Nor is it shown as ours: list_stacks counts none of its containers for the stack and lists
    # the project as observed; stack_status says it is not managed.
    listed = (await call(mcp_client, "list_stacks", {})).structured_content
    [entry] = [s for s in listed["stacks"] if s["name"] == project_name]
    assert entry["containers"] == 0 and entry["state"] == "not-deployed", entry
    [observed] = [p for p in listed["other_projects"] if p["name"] == project_name]
    assert observed["containers"] == 2 and observed["working_dir"] == str(elsewhere), observed
    status = (await call(mcp_client, "stack_status", {"stack": project_name})).structured_content
    assert [s["managed"] for s in status["stacks"]] == [False], status


async def test_restore_refuses_a_foreign_project(
        docker_engine: None, settings: Any, stacks_root: Path, tmp_path: Path, project_name: str) -> None:
    from types import SimpleNamespace

    from server.backups import service
    from server.errors import StackConflict
    from server.runtime import Runtime

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "compose.yaml").write_text(two_services(project_name))
    up_by_hand(elsewhere, project_name)
    write_stack(stacks_root, project_name, f"name: {project_name}\nservices:\n  app:\n{BUSY}")
    runtime = Runtime(settings)
    try:
        with pytest.raises(StackConflict, match="restore refused"):
            await service.restore(runtime, SimpleNamespace(stack=project_name, backup_id="b"), None)  # type: ignore[arg-type]
    finally:
        runtime.close()


async def test_our_own_project_is_ours(
        docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str) -> None:
    """Started by hand from the stack directory itself: ours (the stack_control path works)."""
    stack_dir = write_stack(stacks_root, project_name, two_services(project_name))
    up_by_hand(stack_dir, project_name)
    report = (await call(mcp_client, "validate_compose", {"path": project_name})).structured_content
    assert not {"foreign-project", "directory-in-use"} & {f["rule"] for f in report["findings"]}, report
    stopped = await call(mcp_client, "stack_control", {"stack": project_name, "action": "stop", "services": ["side"]})
    assert not stopped.is_error, text(stopped)


async def test_one_directory_is_not_deployed_under_a_second_name(
        docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str) -> None:
    second = f"{project_name}b"
    try:
        stack_dir = write_stack(stacks_root, project_name, two_services(project_name))
        up_by_hand(stack_dir, project_name)
        for tool in ("validate_compose", "deploy_stack"):
            report = (await call(mcp_client, tool, {"path": project_name,
                                                     "env": {"COMPOSE_PROJECT_NAME": second}})).structured_content
            rules = {f["rule"] for f in report["findings"]}
            assert "directory-in-use" in rules, report
            assert report.get("go") is False or report.get("status") == "blocked"
        assert snapshot(second) == {}
    finally:
        cleanup_project(second)


async def test_two_databases_on_one_data_directory(
        docker_engine: None, mcp_client: Any, stacks_root: Path, tmp_path: Path, project_name: str) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    db = (f"    image: {POSTGRES}\n    labels: {{dsm.test: '1'}}\n    mem_limit: 256m\n"
          f"    volumes: ['{data}:/var/lib/postgresql/data']\n")
    write_stack(stacks_root, "twins", f"name: {project_name}\nservices:\n  db:\n{db}  db2:\n{db}")
    lint = (await call(mcp_client, "validate_compose", {"path": "twins", "check_host": False})).structured_content
    assert [f["service"] for f in lint["findings"] if f["rule"] == "shared-data-directory"] == ["db"], lint

    write_stack(stacks_root, "single", f"name: {project_name}\nservices:\n  db:\n{db}")
    by_hand = f"{project_name}-hand"
    docker("run", "-d", "--name", by_hand, "--label", "dsm.test=1", "-v", f"{data}:/var/lib/postgresql/data",
           "--entrypoint", "sleep", POSTGRES, "3600")
    try:
        report = (await call(mcp_client, "validate_compose", {"path": "single"})).structured_content
        [f] = [f for f in report["findings"] if f["rule"] == "shared-data-directory"]
        assert f["service"] == "db" and by_hand in f["message"] and str(data) in f["message"]
        assert report["go"] is False
    finally:
        docker("rm", "-f", by_hand, check=False)
