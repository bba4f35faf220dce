"""Approvals bound to the plan, on the real engine (issue 18).

- out_of_band: a code approved through the real CLI (pseudo-terminal) and used after the running
  state changed, a code used for another plan (files edited), a code replayed, a code expired:
  each refused with the containers exactly as they were; a code used for its plan deploys, and the
  audit line names it.
- elicitation on both protocol generations for deploy_stack, rollback, stack_control and
  backup_stack restore: the question names the stack, the change, the data and the backup; a
  decline changes nothing; a plan that moves while the person is asked is not acted on.
- over stdio: the real server process asks with the plan.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp import types as mt

from server.app import build_server
from server.runtime import Runtime
from server.safety import approvals, audit
from server.settings import Settings
from tests.deploy_helpers import (
    WEB_10,
    WEB_11,
    container_of,
    containers,
    docker,
    remove_pins,
    runtime_for,
    web_service,
    web_stack,
    write,
)
from tests.test_approvals import EXE, run_in_pty

pytestmark = [pytest.mark.anyio, pytest.mark.docker]
CODE = re.compile(r"approval_required: code ([A-Z2-9]{6})")


@pytest.fixture
def policed(settings: Settings, docker_engine: None, project_name: str) -> Iterator[tuple[Runtime, Path]]:
    policy = settings.state_dir.parent / "policy.yaml"
    policy.write_text("mode: read_write\n")
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


async def code_for(client: Client, tool: str, args: dict[str, Any]) -> tuple[str, str]:
    result = await client.call_tool(tool, args)
    match = CODE.search(text_of(result))
    assert result.is_error and match, text_of(result)
    return match.group(1), text_of(result)


async def test_out_of_band_approval_is_bound_to_the_plan(
        policed: tuple[Runtime, Path], stacks_root: Path, project_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, policy = policed
    store = approvals.ApprovalStore(runtime.settings.state_dir)
    write(stacks_root, project_name, web_stack(project_name, WEB_10, volume=False))
    async with Client(build_server(runtime.settings, runtime)) as client:
        first = await client.call_tool("deploy_stack", {"path": project_name})
        assert first.structured_content["status"] == "deployed", text_of(first)
        policy.write_text(f"protected: {{{project_name}: approve}}\nfallback: out_of_band\n")
        write(stacks_root, project_name, web_stack(project_name, WEB_11, volume=False))
        before = running(project_name)

        # The call answers approval_required: a code and the question with the plan; nothing changed.
        code1, said = await code_for(client, "deploy_stack", {"path": project_name})
        assert f"stack {project_name!r}" in said and f"{WEB_10} -> {WEB_11}" in said
        assert "Backup taken first" in said and "downtime" in said and "State: nothing was changed" in said
        assert running(project_name) == before

        # A person approves on the host, through the real CLI in a pseudo-terminal...
        env = {"PATH": os.environ["PATH"], "HOME": str(stacks_root.parent), "DSM_STACKS_ROOT": str(stacks_root),
               "DSM_STATE_DIR": str(runtime.settings.state_dir),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        rc, shown = run_in_pty(["approve", code1], env, "y")
        assert rc == 0 and f"{WEB_10} -> {WEB_11}" in shown and "Approved by" in shown, shown
        # ...then the running state changes before the agent uses the code: refused, the new plan shown.
        web = container_of(project_name, "web")
        docker("stop", "-t", "1", web)
        stopped = running(project_name)
        moved = await client.call_tool("deploy_stack", {"path": project_name, "approval": code1})
        assert moved.is_error and "the plan is now" in text_of(moved) and "The new plan:" in text_of(moved)
        assert running(project_name) == stopped
        docker("start", web)
        assert running(project_name) == before
        replayed = await client.call_tool("deploy_stack", {"path": project_name, "approval": code1})
        assert replayed.is_error and "void" in text_of(replayed)  # the state is back; the code stays dead

        # Used for another plan: the files were edited after the approval.
        code2, _ = await code_for(client, "deploy_stack", {"path": project_name})
        store.decide(code2, yes=True, by="test")
        write(stacks_root, project_name, web_stack(project_name, WEB_11, volume=False, extra="    cpu_shares: 512\n"))
        other = await client.call_tool("deploy_stack", {"path": project_name, "approval": code2})
        assert other.is_error and "the plan is now" in text_of(other), text_of(other)
        # Denied on the host: refused.
        code3, _ = await code_for(client, "deploy_stack", {"path": project_name})
        rc, _ = run_in_pty(["deny", code3], env, None)
        denied = await client.call_tool("deploy_stack", {"path": project_name, "approval": code3})
        assert rc == 0 and denied.is_error and "denied" in text_of(denied)
        assert running(project_name) == before

        # Expired: an approval for a stop, used after its lifetime (the approvals' clock moved).
        code4, _ = await code_for(client, "stack_control", {"stack": project_name, "action": "stop"})
        store.decide(code4, yes=True, by="test")
        real = approvals.now()
        monkeypatch.setattr(approvals, "now", lambda: real + 601)
        late = await client.call_tool("stack_control", {"stack": project_name, "action": "stop", "approval": code4})
        assert late.is_error and "expired" in text_of(late), text_of(late)
        monkeypatch.undo()
        assert running(project_name) == before

        # The approved plan, unchanged: deployed, and the audit line names the code.
        code5, _ = await code_for(client, "deploy_stack", {"path": project_name})
        store.decide(code5, yes=True, by="test")
        done = await client.call_tool("deploy_stack", {"path": project_name, "approval": code5})
        assert not done.is_error and done.structured_content["status"] == "deployed", text_of(done)
        assert {c["Image"] for c in containers(project_name)} == {WEB_11}
        after = running(project_name)
        again = await client.call_tool("deploy_stack", {"path": project_name, "approval": code5})
        assert again.is_error and "already used" in text_of(again)  # replayed
        assert running(project_name) == after

    lines = list(audit.read(runtime.settings.state_dir))
    used = [e for e in lines if (e.get("approval") or {}).get("code") == code5]
    assert [e["outcome"] for e in used] == ["refused", "ok", "refused"]  # asked, used, replayed
    assert used[1]["approval"]["by"] == "test" and used[1]["arguments"]["approval"] == code5


CRITICAL = "name: {name}\nx-dsm: {{critical: true, verify_s: 0}}\nservices:\n{web}"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_elicitation_asks_with_the_plan_for_every_mutating_tool(
        runtime: Runtime, stacks_root: Path, project_name: str, mode: str) -> None:
    """No policy file: a critical stack's deploy, rollback, stop and a restore need the user's yes,
    asked with the plan (mid-call on handshake protocols, InputRequiredResult on 2026-07-28)."""
    write(stacks_root, project_name, CRITICAL.format(name=project_name, web=web_service("web", WEB_10)))
    questions: list[str] = []
    answers: list[str] = []
    on_question: list[Any] = []

    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        questions.append(params.message)
        for hook in on_question:
            hook()
        on_question.clear()
        if answers.pop(0) == "accept":
            return mt.ElicitResult(action="accept", content={"confirm": True})
        return mt.ElicitResult(action="decline")

    async def call(tool: str, args: dict[str, Any], answer: str) -> Any:
        answers.append(answer)
        asked = len(questions)
        result = await client.call_tool(tool, args)
        assert len(questions) == asked + 1, (tool, text_of(result))
        assert f"{project_name!r}" in questions[-1] and "(plan " in questions[-1] and "Go ahead?" in questions[-1]
        return result

    async with Client(build_server(runtime.settings, runtime), elicitation_callback=elicit,
                      mode=mode) as client:  # type: ignore[arg-type]
        made = await client.call_tool("backup_stack", {"stack": project_name, "action": "create"})
        assert not made.is_error, text_of(made)
        declined = await call("deploy_stack", {"path": project_name, "confirm": True}, "decline")
        assert declined.is_error and "did not confirm" in text_of(declined)
        assert "web: create" in questions[-1] and "Backup taken first" in questions[-1]
        assert containers(project_name) == []
        deployed = await call("deploy_stack", {"path": project_name}, "accept")
        assert deployed.structured_content["status"] == "deployed", text_of(deployed)
        before = running(project_name)

        for tool, args, says in [
                ("rollback", {"stack": project_name}, "Roll back"),
                ("stack_control", {"stack": project_name, "action": "stop"}, "stop every service (web)"),
                ("backup_stack", {"stack": project_name, "action": "restore"}, "Overwrite the current data"),
                ("update_stack", {"stack": project_name, "images": {"web": WEB_11}}, "web: recreate"),
                ("scale_service", {"stack": project_name, "service": "web", "replicas": 2}, "Scale service 'web'")]:
            refused = await call(tool, {**args, "confirm": True}, "decline")
            assert refused.is_error and "did not confirm" in text_of(refused), (tool, text_of(refused))
            assert says in questions[-1], (tool, questions[-1])
        assert running(project_name) == before
        assert WEB_10 in (stacks_root / project_name / "compose.yaml").read_text()  # the update wrote nothing

        # The plan moves while the person is asked (a container stopped by hand).
        web = container_of(project_name, "web")
        on_question.append(lambda: docker("stop", "-t", "1", web))
        answers.extend(["accept", "accept"])
        moved = await client.call_tool("stack_control", {"stack": project_name, "action": "stop"})
        if mode == "legacy":  # asked mid-call: the answer was for the old plan, so nothing is done
            assert moved.is_error and "plan moved while the user was asked" in text_of(moved), text_of(moved)
            assert len(answers) == 1
            answers.clear()
        else:  # the retry recomputes the plan: a new question, about the new plan, answered again
            assert not moved.is_error, text_of(moved)
            assert questions[-1] != questions[-2] and re.search(r"plan (\w+)", questions[-1])
        assert all(c["State"] == "exited" for c in containers(project_name))

    approved = [e for e in audit.read(runtime.settings.state_dir) if (e.get("approval") or {}).get("by") == "user"]
    assert approved and all(re.fullmatch(r"[A-Z2-9]{6}", e["approval"]["code"]) for e in approved)


async def test_the_question_over_stdio(stacks_root: Path, tmp_path: Path, project_name: str,
                                       docker_engine: None) -> None:
    from mcp.client.stdio import StdioServerParameters

    write(stacks_root, project_name, CRITICAL.format(name=project_name, web=web_service("web", WEB_10)))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DSM_STACKS_ROOT": str(stacks_root),
           "DSM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    asked: list[str] = []

    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        asked.append(params.message)
        return mt.ElicitResult(action="decline")

    async with Client(StdioServerParameters(command=EXE, args=[], env=env), elicitation_callback=elicit) as client:
        result = await client.call_tool("stack_control", {"stack": project_name, "action": "stop", "confirm": True})
    assert result.is_error and "did not confirm" in text_of(result), text_of(result)
    assert len(asked) == 1 and f"stop every service (web) of stack {project_name!r} (plan " in asked[0]


async def test_an_unasked_approval_is_noted_and_another_stacks_plan_id_named(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    """No policy asks: an approval code given is said to be unused (a note, not an error). A
    plan_id from another stack's dry run is answered as that, not as "the plan changed"."""
    other = f"{project_name}b"
    write(stacks_root, project_name, web_stack(project_name, volume=False))
    write(stacks_root, other, web_stack(other, volume=False))
    async with Client(build_server(runtime.settings, runtime)) as client:
        planned = await client.call_tool("deploy_stack", {"path": project_name, "dry_run": True,
                                                          "approval": "ABC234"})
        assert not planned.is_error, text_of(planned)
        steps = planned.structured_content["next_steps"]
        assert steps[0].startswith("approval 'ABC234' not used: no safety policy rule asks"), steps
        theirs = await client.call_tool("deploy_stack", {"path": other, "dry_run": True})
        plan_id = theirs.structured_content["plan"]["plan_id"]
        wrong = await client.call_tool("deploy_stack", {"path": project_name, "plan_id": plan_id})
    assert not wrong.is_error and wrong.structured_content["status"] == "blocked", text_of(wrong)
    (finding,) = [f for f in wrong.structured_content["findings"] if f["rule"].startswith("plan-")]
    assert finding["rule"] == "plan-other-stack" and f"a plan of stack {other!r}" in finding["message"], finding
    assert containers(project_name) == [], "nothing was started"
