"""confirm_destructive (asked from a tool body) on a real in-memory MCP session."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp import types as mt
from mcp.server.mcpserver import Context, MCPServer

from tools._common import confirm_destructive, tool_errors

pytestmark = pytest.mark.anyio


def server() -> MCPServer:
    mcp = MCPServer(name="t")

    @mcp.tool()
    @tool_errors
    async def wipe(ctx: Context, confirm: bool = False) -> str:
        """Pretend to wipe something, after asking the user (test tool, long enough description)."""
        await confirm_destructive(ctx, "Wipe the test volume?", confirm)
        return "wiped"

    return mcp


@pytest.mark.parametrize(("action", "wiped"), [("accept", True), ("decline", False), ("cancel", False)])
async def test_user_is_asked_when_the_client_can_elicit(action: str, wiped: bool) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        asked.append(params.message)
        return mt.ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)  # type: ignore[arg-type]

    async with Client(server(), elicitation_callback=elicit, mode="legacy") as client:
        result = await client.call_tool("wipe", {"confirm": True})
    assert asked == ["Wipe the test volume?"]
    assert result.is_error is (not wiped)
    if not wiped:
        assert "did not confirm" in result.content[0].text  # type: ignore[union-attr]


async def test_without_elicitation_confirm_true_is_required() -> None:
    async with Client(server()) as client:
        refused = await client.call_tool("wipe", {})
        assert refused.is_error and "confirm=true" in refused.content[0].text  # type: ignore[union-attr]
        assert not (await client.call_tool("wipe", {"confirm": True})).is_error


async def test_accepting_with_no_unticked_box_is_a_refusal() -> None:
    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        return mt.ElicitResult(action="accept", content={"confirm": False})

    async with Client(server(), elicitation_callback=elicit, mode="legacy") as client:
        assert (await client.call_tool("wipe", {"confirm": True})).is_error
