"""The safety policy on the real engine: `non_destructive` lets a real deploy through and refuses
restore, remove and data rollback; a stack then made `protected: never` is refused by every
mutating tool with confirm=true, and the running containers are exactly as they were."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from server.app import build_server
from server.runtime import Runtime
from server.safety import audit
from server.settings import Settings
from tests.deploy_helpers import WEB_10, WEB_11, containers, remove_pins, runtime_for, web_stack, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@pytest.fixture
def policed(settings: Settings, docker_engine: None, project_name: str) -> Iterator[tuple[Runtime, Path]]:
    policy = settings.state_dir.parent / "policy.yaml"
    policy.write_text("mode: non_destructive\n")
    runtime = runtime_for(replace(settings, policy_path=policy))
    try:
        yield runtime, policy
    finally:
        runtime.close()
        remove_pins(project_name)


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "text", None))


def running(project: str) -> list[tuple[str, str, str]]:
    return sorted((c["ID"], c["Image"], c["State"]) for c in containers(project))


async def test_policy_gates_every_mutating_tool_on_a_running_stack(
        policed: tuple[Runtime, Path], stacks_root: Path, project_name: str) -> None:
    runtime, policy = policed
    write(stacks_root, project_name, web_stack(project_name, WEB_10))
    async with Client(build_server(runtime.settings, runtime)) as client:
        deployed = await client.call_tool("deploy_stack", {"path": project_name})
        assert not deployed.is_error and deployed.structured_content["status"] == "deployed", text_of(deployed)
        before = running(project_name)
        assert before and all(state == "running" for _, _, state in before)

        for tool, args in [("backup_stack", {"stack": project_name, "action": "restore", "confirm": True}),
                           ("stack_control", {"stack": project_name, "action": "remove", "confirm": True}),
                           ("rollback", {"stack": project_name, "restore_data": True, "confirm": True})]:
            result = await client.call_tool(tool, args)
            assert result.is_error and "mode non_destructive" in text_of(result), (tool, text_of(result))
        assert running(project_name) == before

        # The operator protects the stack while the server runs: re-read at the next call.
        policy.write_text(f"mode: read_write\nprotected:\n  '{project_name[:9]}*': never\n")
        write(stacks_root, project_name, web_stack(project_name, WEB_11))  # a real change is waiting
        for tool, args in [("deploy_stack", {"path": project_name, "confirm": True}),
                           ("rollback", {"stack": project_name, "confirm": True}),
                           ("stack_control", {"stack": project_name, "action": "stop", "confirm": True}),
                           ("stack_control", {"stack": project_name, "action": "remove", "confirm": True}),
                           ("backup_stack", {"stack": project_name, "action": "restore", "confirm": True})]:
            result = await client.call_tool(tool, args)
            assert result.is_error and ": never" in text_of(result), (tool, text_of(result))
            assert "State: nothing was changed" in text_of(result)
        assert running(project_name) == before  # same containers, same image, still running
        status = await client.call_tool("stack_status", {"stack": project_name})
        assert not status.is_error  # reading a protected stack stays allowed, a plan too
        plan = await client.call_tool("deploy_stack", {"path": project_name, "dry_run": True})
        assert not plan.is_error and plan.structured_content["status"] == "planned", text_of(plan)
        assert running(project_name) == before

    outcomes = [(e["tool"], e["outcome"]) for e in audit.read(runtime.settings.state_dir)]
    assert outcomes[0] == ("deploy_stack", "ok") and outcomes.count(("stack_control", "refused")) == 3
    assert len(outcomes) == 11
