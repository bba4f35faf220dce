"""Hostile arguments get a clear answer (issue 15, "Low, each with a clear answer").

On main: a 300-character stack name was an internal OSError in stack_logs, diagnose_stack and
stack_control; ``plan_id="null"`` became None in the SDK and deploy_stack skipped its plan check
(``""`` and ``to_deployment=""`` were taken as not given); a compose file of thousands of
trivial services gave an answer of hundreds of MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_stack

pytestmark = pytest.mark.anyio


def text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize(("tool", "args"), [
    ("stack_logs", {}), ("diagnose_stack", {}), ("stack_control", {"action": "stop"}), ("stack_status", {}),
    ("stack_history", {}), ("rollback", {}), ("backup_stack", {}),
])
async def test_a_300_character_stack_name_is_refused_clearly(mcp_client: Any, tool: str, args: dict[str, Any]) -> None:
    tools = {t.name for t in (await mcp_client.list_tools()).tools}
    if tool not in tools:
        pytest.skip(f"{tool} is not published")
    result = await mcp_client.call_tool(tool, {"stack": "a" * 300, **args})
    assert result.is_error and "too long (300 characters)" in text(result), text(result)
    assert "internal error" not in text(result)


@pytest.mark.parametrize("tool", ["validate_compose", "inspect_stack", "deploy_stack", "check_resources"])
async def test_a_300_character_path_is_refused_clearly(mcp_client: Any, tool: str) -> None:
    result = await mcp_client.call_tool(tool, {"path": "x/" + "b" * 300})
    assert result.is_error and "too long" in text(result), text(result)


@pytest.mark.parametrize("value", ["null", "", "None", " ", "undefined", "0" * 31])
async def test_a_plan_id_that_is_not_an_id_is_an_error_not_a_missing_plan(mcp_client: Any, value: str) -> None:
    result = await mcp_client.call_tool("deploy_stack", {"path": "app", "plan_id": value})
    assert result.is_error and "is not an id from deploy_stack(dry_run=true)" in text(result), text(result)
    assert "nothing was changed" in text(result)


@pytest.mark.parametrize("value", ["null", "", "None", "latest"])
async def test_a_to_deployment_that_is_not_an_id_is_an_error(mcp_client: Any, value: str) -> None:
    result = await mcp_client.call_tool("rollback", {"stack": "app", "to_deployment": value})
    assert result.is_error and "is not an id from stack_history" in text(result), text(result)


async def test_json_null_and_omitted_still_mean_not_given(mcp_client: Any) -> None:
    for args in ({"path": "app", "plan_id": None}, {"path": "app"}):
        result = await mcp_client.call_tool("deploy_stack", args)
        assert result.is_error and "is not an id" not in text(result) and "does not exist" in text(result)
    result = await mcp_client.call_tool("rollback", {"stack": "app", "to_deployment": None})
    assert "is not an id" not in text(result), text(result)
    good = await mcp_client.call_tool("deploy_stack", {"path": "app", "plan_id": "0" * 32})
    assert "is not an id" not in text(good) and "does not exist" in text(good)


async def test_too_many_services_is_a_finding_and_a_small_answer(mcp_client: Any, stacks_root: Path) -> None:
    services = "".join(f"  s{i}: {{image: busybox:1}}\n" for i in range(5000))
    write_stack(stacks_root, "many", "services:\n" + services)
    result = await mcp_client.call_tool("validate_compose", {"path": "many", "check_host": False})
    report = result.structured_content
    assert report["go"] is False and [f["rule"] for f in report["findings"]] == ["too-many-services"]
    assert "declares 5000 services; at most 1000" in report["findings"][0]["message"]
    assert len(json.dumps(report)) < 10_000
    inspected = await mcp_client.call_tool("inspect_stack", {"path": "many"})
    assert len(text(inspected)) < 10_000


@pytest.mark.parametrize("action", ["verify", "restore"])
@pytest.mark.parametrize("value", ["null", "", "None", "newest"])
async def test_a_backup_id_that_is_not_an_id_is_an_error_not_the_newest(mcp_client: Any, stacks_root: Path,
                                                                       action: str, value: str) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: nginx:alpine\n")
    result = await mcp_client.call_tool("backup_stack", {"stack": "app", "action": action, "backup_id": value,
                                                         "confirm": True})
    assert result.is_error and "is not an id from backup_stack(action='list')" in text(result), text(result)
    assert "nothing was changed" in text(result)


@pytest.mark.parametrize(("arg", "value"), [("until", "null"), ("until", ""), ("since", "null"), ("since", " ")])
async def test_a_log_window_that_is_not_a_time_is_an_error_not_no_window(mcp_client: Any, stacks_root: Path,
                                                                         arg: str, value: str) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: nginx:alpine\n")
    result = await mcp_client.call_tool("stack_logs", {"stack": "app", arg: value})
    assert result.is_error and f"{arg}={value!r} is neither a duration" in text(result), text(result)


async def test_a_path_null_is_a_path_that_does_not_exist(mcp_client: Any) -> None:
    result = await mcp_client.call_tool("validate_compose", {"path": "null"})
    assert "'null'" in text(result) and "exactly one of" not in text(result), text(result)
    both = await mcp_client.call_tool("validate_compose", {"path": "null", "content": "services: {}\n"})
    assert both.is_error and "exactly one of" in text(both), text(both)


@pytest.mark.parametrize(("tool", "args", "said"), [
    ("deploy_stack", {"path": "app", "dry_run": "maybe"}, "argument 'dry_run' must be true or false (got a string)"),
    ("update_stack", {"stack": "app", "images": ["web:2"]}, "argument 'images' must be an object"),
    ("scale_service", {"stack": "app", "service": "web", "replicas": 1.5}, "argument 'replicas' must be a whole"),
    ("deploy_stack", {"dry_run": True}, "argument 'path' is required"),
    ("update_stack", {"stack": "app", "to": "newest"}, "argument 'to' must be one of 'digest', 'patch'"),
    ("scale_service", {"stack": "app", "service": "web", "replicas": -3},
     "argument 'replicas' must be greater than or equal to 0 (got an integer)"),  # not "must be be"
])
async def test_a_wrong_argument_type_is_one_clear_line(mcp_client: Any, tool: str, args: dict[str, Any],
                                                       said: str) -> None:
    """Not pydantic's text (class names, the rejected value, a docs link): the argument, the type it
    must be, and that nothing ran, for every tool from one place (server/argerrors.py)."""
    result = await mcp_client.call_tool(tool, {**args, "env": {"TOKEN": "s3cr3t-value"}} if tool == "deploy_stack"
                                        else args)
    said_text = text(result)
    assert result.is_error and said in said_text and "nothing was run" in said_text, said_text
    assert "\n" not in said_text and "pydantic" not in said_text and "validation error" not in said_text
    assert "s3cr3t-value" not in said_text and "maybe" not in said_text and "web:2" not in said_text


@pytest.mark.parametrize(("tool", "args", "unknown"), [
    ("stack_logs", {"stack": "app", "tial": 5}, "'tial'"),  # a misspelt tail: never all the logs instead
    ("check_resources", {"foo": 1}, "'foo'"),
    ("deploy_stack", {"path": "app", "dryrun": True}, "'dryrun'"),  # a dry run misspelt must not deploy
])
async def test_an_unknown_argument_is_refused_not_dropped(mcp_client: Any, tool: str, args: dict[str, Any],
                                                          unknown: str) -> None:
    result = await mcp_client.call_tool(tool, args)
    said = text(result)
    assert result.is_error and f"{unknown} is not an argument of {tool}" in said, said
    assert "nothing was run" in said and "It takes:" in said, said
