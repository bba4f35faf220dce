"""MCP prompts: the operator's workflows, written as instructions the calling model follows.

Each workflow is a Markdown file beside this module with ``{placeholders}`` for its arguments.
Tool names in them are written as `tool_name()`; a test checks that each one exists.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field


def workflow_text(name: str, **values: str) -> str:
    template = files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return template.format(**values)


def register(server: MCPServer) -> None:
    @server.prompt(name="deploy_new_stack", title="Deploy a new stack safely")
    def deploy_new_stack(
        path: Annotated[str, Field(description="Stack directory relative to the stacks root")],
    ) -> str:
        """The operator's pre-deployment workflow for a stack: validate, check the host, learn from the past."""
        return workflow_text("deploy_new_stack", path=path)

    @server.prompt(name="troubleshoot_stack", title="Troubleshoot a stack")
    def troubleshoot_stack(
        stack: Annotated[str, Field(description="Stack (Compose project) name, see list_stacks")],
        symptom: Annotated[str, Field(description="What is wrong, in the user's words")] = "not healthy",
    ) -> str:
        """A systematic diagnosis of a misbehaving stack, ending with the incident recorded."""
        return workflow_text("troubleshoot_stack", stack=stack, symptom=symptom)

    @server.prompt(name="emergency_rollback", title="Emergency rollback of a failing stack")
    def emergency_rollback(
        stack: Annotated[str, Field(description="Stack (Compose project) name, see list_stacks")],
        symptom: Annotated[str, Field(description="What is failing, in the user's words")] = "failing after an update",
    ) -> str:
        """Restore a failing stack to its last healthy deployment, data included when needed, and record why."""
        return workflow_text("emergency_rollback", stack=stack, symptom=symptom)

    @server.prompt(name="update_stack", title="Update a stack's images without downtime")
    def update_stack(
        stack: Annotated[str, Field(description="Stack (Compose project) name, see list_stacks")],
        goal: Annotated[str, Field(description="What the user asked for, e.g. 'latest patch releases'")]
        = "the latest patch releases",
    ) -> str:
        """The update workflow: what is newer, the plan with a strategy per service, the update, the proof."""
        return workflow_text("update_stack", stack=stack, goal=goal)
