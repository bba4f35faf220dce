"""The published surface: schemas, annotations, read-only mode, lazy imports, docs naming real tools."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


async def _tools(settings: Settings) -> dict[str, Any]:
    from mcp import Client

    from server.app import build_server

    async with Client(build_server(settings)) as client:
        return {t.name: t for t in (await client.list_tools()).tools}


async def test_every_tool_is_typed_and_annotated(settings: Settings) -> None:
    tools = await _tools(settings)
    assert tools
    for name, tool in tools.items():
        assert tool.description and len(tool.description) > 80, name
        assert tool.output_schema, f"{name} has no outputSchema"
        assert tool.input_schema["type"] == "object" and tool.output_schema["type"] == "object", name
        ann = tool.annotations
        assert ann is not None and ann.read_only_hint is not None and ann.destructive_hint is not None, name
        assert ann.idempotent_hint is not None, name


async def test_read_only_mode_registers_only_read_only_tools(settings: Settings) -> None:
    from dataclasses import replace

    full = await _tools(settings)
    read_only = await _tools(replace(settings, read_only=True))
    assert set(read_only) <= set(full)
    assert all(t.annotations.read_only_hint for t in read_only.values())
    assert {n for n, t in full.items() if t.annotations.read_only_hint} == set(read_only)


def tool_names_in_docs() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    agent = (REPO / "agent.md").read_text()
    found["agent.md"] = set(re.findall(r"mcp__docker-stack__([a-z_]+)", agent))
    for md in (REPO / "prompts").glob("*.md"):
        found[md.name] = set(re.findall(r"`([a-z_]+)\(\)`", md.read_text()))
    found["README.md"] = set(re.findall(r"^\| `([a-z_]+)` \|", (REPO / "README.md").read_text(), re.M))
    return found


async def test_docs_and_prompts_name_only_real_tools(settings: Settings) -> None:
    tools = set(await _tools(settings))
    for doc, names in tool_names_in_docs().items():
        assert names, f"{doc} names no tools"
        assert names <= tools, f"{doc} names tools that do not exist: {sorted(names - tools)}"
    front = (REPO / "agent.md").read_text().split("---")[1]
    assert re.search(r"^name: ", front, re.M) and re.search(r"^description: ", front, re.M)
    assert re.search(r"^tools: ", front, re.M)


def test_readme_documents_every_setting() -> None:
    source = (REPO / "server" / "settings.py").read_text()
    variables = set(re.findall(r'"((?:DSM|QDRANT)_[A-Z_]+)"', source))
    readme = (REPO / "README.md").read_text()
    assert variables
    missing = {v for v in variables if v not in readme}
    assert not missing, f"README does not document {sorted(missing)}"
    head = readme[:1500]
    assert "make demo" in head and "make test" in head


def test_startup_imports_stay_light() -> None:
    code = (
        "import sys; from server.app import build_server; from server.settings import Settings; "
        "from pathlib import Path; build_server(Settings(stacks_root=Path('/nonexistent'), state_dir=Path('/tmp/x')));"
        "heavy = [m for m in ('docker', 'qdrant_edge', 'qdrant_client', 'fastembed', 'onnxruntime', 'numpy', "
        "'tokenizers', 'requests', 'yaml', 'server.policy', 'server.preflight.facts', 'server.memory.service', "
        "'server.stackload', 'server.operations.operations') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"


def test_readme_lists_every_rule_id() -> None:
    from server.policy.catalog import RULES

    readme = (REPO / "README.md").read_text()
    missing = sorted(rule_id for rule_id in RULES if rule_id not in readme)
    assert not missing, f"README does not list rules {missing}"


def test_serve_path_skips_the_sdk_client_half() -> None:
    code = (
        "import sys; from server.cli import _import_sdk_server_half; _import_sdk_server_half(); "
        "from server.app import build_server; from server.settings import Settings; from pathlib import Path; "
        "build_server(Settings(stacks_root=Path('/nonexistent'), state_dir=Path('/tmp/x'))); "
        "print('mcp.client' in sys.modules, 'mcp.server.mcpserver' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
