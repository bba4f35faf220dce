"""What is pasted into an incident is stored and returned without its credentials, per shape,
through the memory tools (record, then read back by update and search)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

from server.runtime import Runtime
from server.settings import Settings
from tools import memory as memory_tools

pytestmark = pytest.mark.anyio

PEM_BODY = ["MIIEpAIBAAKCAQEA7vQzLx1mNq8Rt5Wd", "q9ZxUv3KpLm0Ns7YtBfGhJkLmNoPqRsT"]
PEM = ["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"]
SECRETS = ["Abc123Def456Ghi789", *PEM_BODY, "Pw-Memo-55", "eyJyb2xlIjoiYW5vbiJ9"]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    from mcp import Client

    runtime = Runtime(settings)
    server = MCPServer("memory-secrets-test")
    memory_tools.register(server, runtime)
    try:
        async with Client(server) as c:
            yield c
    finally:
        runtime.close()


async def _call(client: Any, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content)


async def test_pasted_credentials_never_stored_or_returned(client: Any) -> None:
    symptoms = ("gateway returns 401 for requests sent with bearer Abc123Def456Ghi789; key in the container:\n"
                + "\n".join(PEM) + "\nDB at postgres://app:Pw-Memo-55@db/app")
    recorded = await _call(client, "record_incident", title="Gateway rejects API calls after key rotation",
                           symptoms=symptoms, stack="gateway", service="api",
                           log_lines=["auth: token eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlMTIz bad",
                                      *PEM])
    updated = await _call(client, "update_incident", incident_id=recorded["incident_id"], severity="low")
    found = await _call(client, "search_past_incidents", query="gateway rejects api calls 401 bearer")
    dumped = json.dumps([updated, found])
    for secret in SECRETS:
        assert secret not in dumped, secret
    assert found["results"] and "bearer ***" in found["results"][0]["symptoms"]
    assert any("***" in line for line in updated["log_lines"])
