"""The workflows in prompts/ name only tools the server publishes, and each renders with its arguments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.settings import Settings

pytestmark = pytest.mark.anyio
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


async def test_every_tool_a_workflow_names_exists(settings: Settings) -> None:
    from mcp import Client

    from server.app import build_server

    async with Client(build_server(settings)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        rendered = await client.get_prompt("update_stack", {"stack": "supabase"})
    files = sorted(PROMPTS.glob("*.md"))
    assert {f.stem for f in files} == prompts
    for f in files:
        named = set(re.findall(r"`([a-z_]+)\(\)`", f.read_text()))
        assert named and named <= tools, (f.name, named - tools)
    text = rendered.messages[0].content.text  # type: ignore[union-attr]
    assert "`supabase`" in text and "check_updates()" in text and "{" not in text
