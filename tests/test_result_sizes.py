"""Results a model can afford (issue 17): compact JSON, one finding per rule, named omissions,
measured over the 12-service Supabase-shaped stack (tests/fixtures/stacks/supabase).

Sizes are the characters of the text content, as a model reads it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.results import without_nulls
from server.settings import Settings
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stacks" / "supabase"
GO_ANSWER_MAX = 4_000
DEPLOY_REPORT_MAX = 4_000


def supabase(stacks_root: Path, name: str = "supabase", *, go: bool = False) -> Path:
    """The fixture as upstream ships it (NO-GO: no memory limits, the Docker socket in vector), or
    made deployable: a memory and pids limit per service, no socket."""
    directory = Path(shutil.copytree(FIXTURE, stacks_root / name))
    if go:
        compose = directory / "compose.yaml"
        text = compose.read_text().replace("      - ${DOCKER_SOCKET_LOCATION}:/var/run/docker.sock:ro,z\n", "")
        text = re.sub(r"^(    image: .*)$", r"\1\n    mem_limit: 512m\n    pids_limit: 512", text, flags=re.M)
        compose.write_text(text)
    return directory


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    from mcp import Client

    from server.app import build_server

    async with Client(build_server(settings)) as c:
        yield c


async def answer(client: Any, tool: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    (block,) = result.content
    return block.text, dict(result.structured_content)


async def test_text_content_is_compact_json_with_the_structured_meaning(client: Any, stacks_root: Path) -> None:
    supabase(stacks_root)
    text, structured = await answer(client, "validate_compose", {"path": "supabase", "check_host": False})
    assert "\n" not in text  # no indentation: a newline only ever appears escaped inside a string
    # The same data, null fields left out of the text (the structured content keeps them).
    assert json.loads(text) == without_nulls(structured)
    assert json.dumps(without_nulls(structured), separators=(",", ":"), ensure_ascii=False) == text
    assert any(f.get("line") is None for f in structured["findings"])  # there were nulls to leave out
    assert '"line":null' not in text


async def test_a_go_answer_of_twelve_services_fits(client: Any, stacks_root: Path) -> None:
    supabase(stacks_root, go=True)
    text, out = await answer(client, "validate_compose", {"path": "supabase", "check_host": False})
    assert out["go"] and len(out["services"]) == 12
    assert len(text) <= GO_ANSWER_MAX, f"GO answer is {len(text)} characters"
    # What was left out is named, and the caller can ask for it.
    assert out["omitted"] == {"info_findings": out["infos"]} and out["infos"] > 0
    _, full = await answer(client, "validate_compose", {"path": "supabase", "check_host": False,
                                                         "detail": "full", "min_severity": "info"})
    assert len(full["findings"]) > len(out["findings"]) and not full["omitted"]
    assert len(full["findings"]) >= full["warnings"] + full["infos"] - 12  # hint rules fold themselves


async def test_findings_of_one_rule_are_one_finding_listing_services_and_lines(client: Any,
                                                                               stacks_root: Path) -> None:
    supabase(stacks_root, go=True)
    _, out = await answer(client, "validate_compose", {"path": "supabase", "check_host": False})
    rules = [f["rule"] for f in out["findings"]]
    assert len(rules) == len(set((f["rule"], f["severity"]) for f in out["findings"]))
    (unverified,) = [f for f in out["findings"] if f["rule"] == "healthcheck-unverified"]
    assert unverified["service"] is None
    for service in ("functions", "kong", "meta", "rest"):
        assert re.search(rf"\b{service}:\d+", unverified["message"]), unverified["message"]
    assert unverified["file"] == "compose.yaml"


async def test_a_no_go_answer_shows_every_error(client: Any, stacks_root: Path) -> None:
    supabase(stacks_root)
    text, out = await answer(client, "validate_compose", {"path": "supabase", "check_host": False})
    _, full = await answer(client, "validate_compose", {"path": "supabase", "check_host": False, "detail": "full"})
    assert not out["go"] and out["errors"] == full["errors"] == 13
    errors = [f for f in full["findings"] if f["severity"] == "error"]
    assert len(errors) == 13
    folded = [f for f in out["findings"] if f["severity"] == "error"]
    for e in errors:  # each error: its service, line, message and fix are in the short answer
        holder = next(f for f in folded if f["rule"] == e["rule"])
        if holder["service"] == e["service"]:  # the rule fired once: the finding as it is
            assert holder == e
            continue
        assert f"{e['service']}:{e['line']}" in holder["message"] and holder["file"] == e["file"]
        assert any(e["message"] in ev for ev in holder["evidence"])
        assert e["fix"] in (holder["fix"] or ""), (e["fix"], holder["fix"])
    print(f"NO-GO answer: {len(text)} characters")


async def test_min_severity_leaves_out_and_counts(client: Any, stacks_root: Path) -> None:
    supabase(stacks_root)
    _, out = await answer(client, "validate_compose", {"path": "supabase", "check_host": False,
                                                        "min_severity": "error"})
    assert {f["severity"] for f in out["findings"]} == {"error"}
    assert out["omitted"] == {"warning_findings": out["warnings"], "info_findings": out["infos"]}


async def test_plain_text_results_stay_as_they_are(client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "one", "services:\n  a:\n    image: dsm-test/web:1.0\n")
    result = await client.call_tool("validate_compose", {"path": "../etc"})
    assert result.is_error and "outside the stacks root" in result.content[0].text


@pytest.mark.docker
async def test_a_dry_run_of_twelve_services_fits_and_says_what_the_real_call_needs(
    settings: Settings, stacks_root: Path, docker_engine: None, project_name: str,
) -> None:
    from mcp import Client

    from server.app import build_server

    directory = supabase(stacks_root, go=True)
    compose = directory / "compose.yaml"
    compose.write_text(compose.read_text().replace("name: supabase", f"name: {project_name}", 1))
    async with Client(build_server(settings)) as client:
        text, report = await answer(client, "deploy_stack", {"path": "supabase", "dry_run": True})
        assert report["status"] == "planned", report
        import jsonschema

        schema = next(t.output_schema for t in (await client.list_tools()).tools if t.name == "deploy_stack")
        jsonschema.validate(report, schema)  # the slimmed schema accepts the folded report
        assert len(text) <= DEPLOY_REPORT_MAX, f"dry-run report is {len(text)} characters"
        assert report["needs_confirm"] is None
        assert report["omitted"].get("info_findings", 0) > 0
        assert len(report["plan"]["services"]) == 12  # nothing runs yet: twelve creates, none left out
        print(f"dry-run report: {len(text)} characters")
        # A critical stack: the dry run says the real call needs confirm=true.
        compose.write_text(compose.read_text() + "x-dsm:\n  critical: true\n")
        _, critical = await answer(client, "deploy_stack", {"path": "supabase", "dry_run": True})
        assert critical["status"] == "planned" and critical["needs_confirm"] == f"critical stack {project_name!r}"
