"""validate_compose and check_resources through the MCP client, on the fixture stacks.

validate_compose with check_host=false needs only the compose binary; check_resources needs the
engine. Host-dependent behaviour (ports, images, memory) is in test_preflight_host.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stacks"
SUPABASE_SERVICES = ["analytics", "auth", "db", "functions", "imgproxy", "kong", "meta", "realtime", "rest",
                     "storage", "studio", "vector"]
FULL = {"detail": "full", "min_severity": "info"}
"""The rules' own findings, one per service (the tool's default folds them and leaves info out)."""


def copy_fixture(stacks_root: Path, name: str) -> Path:
    return Path(shutil.copytree(FIXTURES / name, stacks_root / name))


def dotenv_values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value.strip('"')
    return out


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    """The real server (server.app.build_server) with the pre-flight tools registered."""
    from mcp import Client

    from server.app import build_server
    from server.runtime import Runtime

    runtime = Runtime(settings)
    server = build_server(settings, runtime)
    # The server itself must publish the pre-flight tools: registering them here would hide a
    # build_server that forgot them.
    assert {"validate_compose", "check_resources"} <= {t.name for t in await server.list_tools()}
    async with Client(server) as c:
        yield c


async def call(client: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def test_supabase_shaped_stack(client: Any, stacks_root: Path) -> None:
    directory = copy_fixture(stacks_root, "supabase")
    out = await call(client, "validate_compose", {"path": "supabase", "check_host": False, **FULL})
    assert out["valid"] is True and out["go"] is False and out["host_checked"] is False
    assert out["stack"] == "supabase" and out["services"] == SUPABASE_SERVICES
    by_rule: dict[str, set[str]] = {}
    for f in out["findings"]:
        by_rule.setdefault(f["rule"], set()).add(f["service"])
    # Upstream ships healthchecks on eight services and limits on none.
    # Without the host the images' own configs are unknown: warnings, not errors.
    assert by_rule["healthcheck-unverified"] == {"kong", "rest", "meta", "functions"}
    assert "missing-healthcheck" not in by_rule
    assert by_rule["no-resource-limits"] == set(SUPABASE_SERVICES)
    assert by_rule["docker-socket"] == {"vector"}
    assert by_rule["plaintext-secret"] == {"realtime"}  # DB_ENC_KEY is a literal upstream
    assert "unset-variable" not in by_rule and "port-conflict" not in by_rule
    assert {f["rule"] for f in out["findings"] if f["severity"] == "error"} == {"no-resource-limits", "docker-socket"}
    limits = {f["service"]: f for f in out["findings"] if f["rule"] == "no-resource-limits"}
    assert "memory: 1g" in limits["db"]["fix"] and "memory: 256m" in limits["rest"]["fix"]
    assert all(f["line"] for f in out["findings"] if f["severity"] != "info")
    # Every secret from .env stays out of the output.
    dumped = json.dumps(out)
    for key, value in dotenv_values(directory / ".env").items():
        if len(value) >= 8 and "fixture" in value:
            assert value not in dumped, key


async def test_well_run_stack_has_no_errors_or_warnings(client: Any, stacks_root: Path) -> None:
    copy_fixture(stacks_root, "wellrun")
    out = await call(client, "validate_compose", {"path": "wellrun", "check_host": False})
    assert out["valid"] and out["go"] and out["errors"] == 0 and out["warnings"] == 0, out["findings"]
    assert {f["rule"] for f in out["findings"]} <= {"image-no-digest"}
    assert out["summary"].startswith("GO")


async def test_broken_stack_findings(client: Any, stacks_root: Path) -> None:
    copy_fixture(stacks_root, "broken")
    out = await call(client, "validate_compose", {"path": "broken/compose.yaml", "check_host": False, **FULL})
    assert out["valid"] and not out["go"]
    rules = {(f["rule"], f["service"]) for f in out["findings"] if f["severity"] != "info"}
    assert {
        ("port-conflict", "web"), ("healthcheck-unverified", "web"), ("healthcheck-unverified", "cache"),
        ("docker-socket", "api"), ("privileged", "cache"),
        ("no-resource-limits", "web"), ("image-unpinned", "web"), ("plaintext-secret", "web"),
    } <= rules
    assert "changeme-in-the-file" not in json.dumps(out)


async def test_yaml_error_reports_the_real_line(client: Any, stacks_root: Path) -> None:
    copy_fixture(stacks_root, "badyaml")
    out = await call(client, "validate_compose", {"path": "badyaml"})
    assert out["valid"] is False and out["go"] is False and out["host_checked"] is False
    assert [(f["rule"], f["line"]) for f in out["findings"]] == [("compose-syntax", 8)]


async def test_inline_content_and_env(client: Any) -> None:
    content = "services:\n  web:\n    image: dsm-test/web:${TAG:?TAG is required}\n"
    out = await call(client, "validate_compose", {"content": content, "check_host": False})
    assert out["valid"] is False and out["findings"][0]["rule"] == "missing-variable"
    out = await call(client, "validate_compose", {"content": content, "env": {"TAG": "1.0"}, "check_host": False})
    assert out["valid"] is True and out["path"] is None and out["services"] == ["web"]


async def test_arguments_are_checked(client: Any, stacks_root: Path) -> None:
    for args in ({}, {"path": "x", "content": "services: {}"}):
        result = await client.call_tool("validate_compose", args)
        assert result.is_error and "exactly one of" in result.content[0].text
    result = await client.call_tool("validate_compose", {"path": "../etc"})
    assert result.is_error and "outside the stacks root" in result.content[0].text
    result = await client.call_tool("check_resources", {"path": "x", "content": "services: {}"})
    assert result.is_error


async def test_progress_is_reported(client: Any, stacks_root: Path) -> None:
    copy_fixture(stacks_root, "wellrun")
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool(
        "validate_compose", {"path": "wellrun", "check_host": False}, progress_callback=on_progress
    )
    assert not result.is_error
    assert seen and seen[-1][0] == seen[-1][1]


async def test_tools_are_listed_read_only_with_schemas(client: Any) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("validate_compose", "check_resources"):
        tool = tools[name]
        assert tool.annotations.read_only_hint and not tool.annotations.destructive_hint
        assert tool.output_schema and len(tool.description) > 200
    props = tools["validate_compose"].input_schema["properties"]
    assert set(props) == {"path", "content", "env", "check_host", "detail", "min_severity"}
    assert set(tools["check_resources"].input_schema["properties"]) == {"path", "content", "env"}
