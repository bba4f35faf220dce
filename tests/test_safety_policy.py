"""The safety policy (DSM_POLICY) without an engine: the file's validation (also through the real
entry point), the gate's refusals and approvals on a real in-memory MCP session, re-reading,
DSM_READ_ONLY routed through it, and the registries rule in the pre-flight."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp import types as mt

from server.app import build_server
from server.errors import SettingsError
from server.safety.gate import PolicyRefused, check
from server.safety.policy import parse
from server.settings import Settings
from tests.conftest import write_stack

REPO = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "docker-stack-mcp")
STACK = "name: {name}\nservices:\n  web:\n    image: busybox:1.36\n"


def with_policy(settings: Settings, text: str) -> Settings:
    path = settings.state_dir.parent / "policy.yaml"
    path.write_text(text)
    return replace(settings, policy_path=path)


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "text", None))


@pytest.mark.parametrize(("text", "key", "why"), [
    ("mode: yolo\n", "'mode'", "read_write"),
    ("protected: {vault: sometimes}\n", "'protected.vault'", "never"),
    ("fallback: ask_the_model\n", "'fallback'", "out_of_band"),
    ("registries: ['ghcr.io/org']\n", "'registries'", "not a registry host"),
    ("approve: [{tool: deploy_stack, acts: [explode]}]\n", "'approve.0.acts.0'", "restore"),
    ("modes: read_only\n", "'modes'", "unknown key"),
    ("- mode\n", "", "must be a mapping"),
    ("mode: [unclosed\n", "", "not valid YAML"),
])
def test_policy_errors_name_the_key(text: str, key: str, why: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse(text, "DSM_POLICY=/p.yaml")
    message = str(err.value)
    assert key in message and why in message and "\n" not in message


def test_bad_policy_stops_the_real_server_with_one_line(tmp_path: Path, stacks_root: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: read_write\nprotected:\n  vault: forever\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "DSM_STACKS_ROOT": str(stacks_root), "DSM_STATE_DIR": str(tmp_path / "state"), "DSM_POLICY": str(policy)}
    result = subprocess.run([EXE], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "configuration error" in lines[0] and "'protected.vault'" in lines[0] and "never" in lines[0]
    # A missing file is refused too (a typo must not silently mean "no policy").
    env["DSM_POLICY"] = str(tmp_path / "nope.yaml")
    missing = subprocess.run([EXE], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2 and "DSM_POLICY" in missing.stderr


def test_read_only_is_the_policy_mode(settings: Settings) -> None:
    with pytest.raises(PolicyRefused, match=r"mode read_only \(DSM_READ_ONLY\)"):
        check(replace(settings, read_only=True), "deploy_stack", "app", "deploy")
    ro = with_policy(settings, "mode: read_only\n")
    with pytest.raises(PolicyRefused, match="mode read_only") as err:
        check(ro, "stack_control", "app", "start")
    assert "State: nothing was changed" in str(err.value) and "Next:" in str(err.value)


@pytest.mark.anyio
async def test_policy_read_only_publishes_only_read_only_tools(settings: Settings) -> None:
    async with Client(build_server(with_policy(settings, "mode: read_only\n"))) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "list_stacks" in names and not names & {"deploy_stack", "rollback", "stack_control", "backup_stack"}


MUTATING_CALLS = [
    ("deploy_stack", {"path": "{s}", "confirm": True}),
    ("rollback", {"stack": "{s}", "confirm": True}),
    ("rollback", {"stack": "{s}", "restore_data": True, "confirm": True}),
    ("stack_control", {"stack": "{s}", "action": "stop", "confirm": True}),
    ("stack_control", {"stack": "{s}", "action": "remove", "confirm": True}),
    ("stack_control", {"stack": "{s}", "action": "maintenance_on", "until": "1h", "confirm": True}),
    ("backup_stack", {"stack": "{s}", "action": "restore", "confirm": True}),
    ("update_stack", {"stack": "{s}", "to": "patch", "confirm": True}),
    ("scale_service", {"stack": "{s}", "service": "web", "replicas": 2, "confirm": True}),
]


def _args(args: dict[str, Any], stack: str) -> dict[str, Any]:
    return {k: (v.format(s=stack) if isinstance(v, str) else v) for k, v in args.items()}


@pytest.mark.anyio
async def test_protected_never_is_refused_by_every_mutating_tool(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "vault-dir", STACK.format(name="vaultwarden"))
    write_stack(stacks_root, "blog", STACK.format(name="blog"))
    policy = with_policy(settings, "protected:\n  'vault*': never\n")
    async with Client(build_server(policy)) as client:
        for name in ("vaultwarden", "vault-dir"):  # by project name and by directory
            for tool, args in MUTATING_CALLS:
                result = await client.call_tool(tool, _args(args, name))
                text = text_of(result)
                assert result.is_error and "protected ('vault*': never" in text, (tool, args, text)
                assert "State: nothing was changed" in text and "confirm does not change that" in text
        # Reading stays allowed; other stacks are not affected.
        assert not (await client.call_tool("inspect_stack", {"path": "vault-dir"})).is_error
        assert not (await client.call_tool("backup_stack", {"stack": "vaultwarden", "action": "list"})).is_error
        ok = await client.call_tool("stack_control", {"stack": "blog", "action": "maintenance_on", "until": "1h"})
        assert not ok.is_error, text_of(ok)


@pytest.mark.anyio
async def test_non_destructive_refuses_restore_remove_and_data_rollback(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", STACK.format(name="app"))
    async with Client(build_server(with_policy(settings, "mode: non_destructive\n"))) as client:
        for tool, args in [MUTATING_CALLS[2], MUTATING_CALLS[4], MUTATING_CALLS[6]]:
            result = await client.call_tool(tool, _args(args, "app"))
            assert result.is_error and "mode non_destructive" in text_of(result), text_of(result)
        ok = await client.call_tool("stack_control", {"stack": "app", "action": "maintenance_on", "until": "1h"})
        assert not ok.is_error, text_of(ok)


def _elicit(action: str, asked: list[str]) -> Any:
    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        asked.append(params.message)
        return mt.ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)  # type: ignore[arg-type]

    return elicit


MAINT = {"stack": "db", "action": "maintenance_on", "until": "1h"}


@pytest.mark.anyio
@pytest.mark.parametrize(("fallback", "confirm", "allowed", "says"), [
    ("model", False, False, "ask the user"),
    ("model", True, True, ""),
    ("deny", True, False, "fallback is deny"),
    ("out_of_band", True, False, "approval_required: code "),
])
async def test_approve_without_elicitation_follows_the_fallback(
        settings: Settings, stacks_root: Path, fallback: str, confirm: bool, allowed: bool, says: str) -> None:
    write_stack(stacks_root, "db", STACK.format(name="db"))
    policy = with_policy(settings, f"protected: {{db: approve}}\nfallback: {fallback}\n")
    async with Client(build_server(policy)) as client:
        result = await client.call_tool("stack_control", {**MAINT, "confirm": confirm})
    assert result.is_error is (not allowed), text_of(result)
    if not allowed:
        assert says in text_of(result) and "protected ('db': approve)" in text_of(result)


@pytest.mark.anyio
@pytest.mark.parametrize(("answer", "allowed"), [("accept", True), ("decline", False)])
async def test_approve_asks_the_human_and_confirm_does_not_count(
        settings: Settings, stacks_root: Path, answer: str, allowed: bool) -> None:
    write_stack(stacks_root, "db", STACK.format(name="db"))
    asked: list[str] = []
    policy = with_policy(settings, "protected: {db: approve}\n")
    async with Client(build_server(policy), elicitation_callback=_elicit(answer, asked), mode="legacy") as client:
        result = await client.call_tool("stack_control", {**MAINT, "confirm": True})
    assert len(asked) == 1 and "'db'" in asked[0] and "approval" in asked[0]
    assert result.is_error is (not allowed), text_of(result)
    from server.safety.audit import read

    [line] = list(read(policy.state_dir))
    assert line["approval"]["rule"] == "stack 'db' is protected ('db': approve)"
    assert line["approval"].get("by") == ("user" if allowed else None)


@pytest.mark.anyio
async def test_fallback_deny_also_governs_todays_confirm(settings: Settings, stacks_root: Path) -> None:
    """A critical stack's stop needed confirm before any policy; with fallback deny the model's
    confirm=true no longer stands in for a human."""
    write_stack(stacks_root, "core", "name: core\nx-dsm: {critical: true}\nservices:\n  web:\n    image: busybox:1\n")
    policy = with_policy(settings, "fallback: deny\n")
    async with Client(build_server(policy)) as client:
        result = await client.call_tool("stack_control", {"stack": "core", "action": "stop", "confirm": True})
        assert result.is_error and "fallback is deny" in text_of(result), text_of(result)
        # deploy and rollback of a critical stack: asked by the gate (the pipeline skips its own question).
        for tool, args in [("deploy_stack", {"path": "core", "confirm": True}),
                           ("rollback", {"stack": "core", "confirm": True})]:
            refused = await client.call_tool(tool, args)
            assert refused.is_error and "fallback is deny" in text_of(refused), text_of(refused)


@pytest.mark.anyio
async def test_approve_rules_by_tool_stack_and_criticality(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "prod-api", STACK.format(name="prod-api"))
    write_stack(stacks_root, "dev-api", STACK.format(name="dev-api"))
    policy = with_policy(settings, "approve:\n  - {tool: stack_control, acts: [maintenance_on], stacks: ['prod-*']}\n"
                                   "fallback: deny\n")
    async with Client(build_server(policy)) as client:
        prod = await client.call_tool("stack_control", {**MAINT, "stack": "prod-api", "confirm": True})
        assert prod.is_error and "approve[0]" in text_of(prod)
        dev = await client.call_tool("stack_control", {**MAINT, "stack": "dev-api", "confirm": True})
        assert not dev.is_error, text_of(dev)


@pytest.mark.anyio
async def test_the_policy_is_re_read_when_it_changes(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", STACK.format(name="app"))
    policy = with_policy(settings, "mode: read_write\n")
    assert policy.policy_path is not None
    async with Client(build_server(policy)) as client:
        assert not (await client.call_tool("stack_control", MAINT | {"stack": "app"})).is_error
        policy.policy_path.write_text("protected: {app: never}\n# changed\n")
        refused = await client.call_tool("stack_control", MAINT | {"stack": "app"})
        assert refused.is_error and "never" in text_of(refused)
        policy.policy_path.write_text("mode: sideways\n")
        broken = await client.call_tool("stack_control", MAINT | {"stack": "app"})
        assert broken.is_error and "policy file is unusable" in text_of(broken) and "'mode'" in text_of(broken)
        assert not (await client.call_tool("list_stacks", {})).is_error  # reading still works


@pytest.mark.anyio
async def test_an_image_from_a_registry_not_allowed_is_a_preflight_error(settings: Settings, stacks_root: Path) -> None:
    # The stack tries to switch the rule off and waive it: the operator's policy is not its to waive.
    compose = ("name: mixed\nx-dsm: {policy: {severity: {image-registry-not-allowed: 'off'},\n"
               "  waive: [{rule: image-registry-not-allowed, reason: mine}]}}\nservices:\n"
               "  web:\n    image: quay.io/acme/web:1.2\n  cache:\n    image: redis:7.2\n"
               "  local:\n    image: localhost:5000/tools:1\n")
    write_stack(stacks_root, "mixed", compose)
    policy = with_policy(settings, "registries: [docker.io, 'localhost:5000']\n")
    async with Client(build_server(policy)) as client:
        result = await client.call_tool("validate_compose", {"path": "mixed", "check_host": False})
    report = result.structured_content or {}
    assert report["go"] is False and "NO-GO" in report["summary"] and "image-registry-not-allowed" in report["summary"]
    hits = [f for f in report["findings"] if f["rule"] == "image-registry-not-allowed"]
    assert [(f["service"], f["severity"]) for f in hits] == [("web", "error")]  # the stack cannot waive it
    assert "quay.io/acme/web:1.2" in hits[0]["message"] and "'quay.io'" in hits[0]["message"]
    async with Client(build_server(settings)) as client:  # no policy: no such finding
        plain = (await client.call_tool("validate_compose", {"path": "mixed", "check_host": False})).structured_content
    assert not [f for f in (plain or {})["findings"] if f["rule"] == "image-registry-not-allowed"]
