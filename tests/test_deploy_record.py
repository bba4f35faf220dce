"""The record phase on the real engine: the journal's end is durable before deploy_stack answers,
the memory record is written after the answer (through the outbox) and is not lost, also when the
server shuts down right after answering."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from server.runtime import Runtime
from server.settings import Settings
from tests.deploy_helpers import WEB_10, deploy, phase, remove_pins, runtime_for, web_stack, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def _gate_memory(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The memory answers only once the returned event is set (the outbox's worker waits on it)."""
    release = threading.Event()
    real = Runtime.memory.__get__(runtime)

    def gated() -> Any:
        assert release.wait(60), "the test never released the memory"
        return real()

    monkeypatch.setattr(runtime, "memory", gated)
    return release


async def test_deploy_answers_before_the_memory_write_and_the_record_follows(
        runtime: Runtime, stacks_root: Path, project_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = _gate_memory(runtime, monkeypatch)
    write(stacks_root, project_name, web_stack(project_name, WEB_10))
    report = await deploy(runtime, project_name)  # would hang for 60 s if it waited for the memory
    assert report.status == "deployed", report
    assert "memory record queued" in phase(report, "record").detail
    # The journal's end is on disk before the answer (read back from the file).
    record = runtime.operations().get(report.operation_id or "")
    assert record is not None and record.status == "deployed"
    outbox = runtime.memory_outbox()
    assert len(outbox.pending()) == 1  # durable until written
    memory = Runtime.memory.__get__(runtime)()
    assert memory.list_deployments(stack=project_name).deployments == []  # the memory was not waited for

    release.set()
    assert outbox.flush(60)
    [dep] = memory.list_deployments(stack=project_name).deployments
    assert dep.operation_id == report.operation_id and dep.outcome == "success"
    assert dep.image_digests == {s.name: s.image_digest for s in report.services if s.image_digest}
    assert dep.image_digests  # the digest of the image that runs
    assert outbox.pending() == []


async def test_server_shutdown_right_after_the_answer_still_writes_the_record(
        settings: Settings, docker_engine: None, stacks_root: Path, project_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp import Client

    from server.app import build_server

    runtime = runtime_for(settings)
    release = _gate_memory(runtime, monkeypatch)
    write(stacks_root, project_name, web_stack(project_name, WEB_10))
    try:
        async with Client(build_server(runtime.settings, runtime)) as client:
            result = await client.call_tool("deploy_stack", {"path": project_name})
            out = result.structured_content or {}
            assert not result.is_error and out["status"] == "deployed", out
            # The client goes away at once; the memory answers only while the server shuts down.
            threading.Timer(0.5, release.set).start()
    finally:
        runtime.close()  # idempotent: the server's lifespan closed it already
        remove_pins(project_name)
    after = runtime_for(settings)
    try:
        deps = after.memory().list_deployments(stack=project_name).deployments
        assert [d.operation_id for d in deps] == [out["operation_id"]]
        assert after.memory_outbox().pending() == []
    finally:
        after.close()


async def test_a_blocked_preflight_wins_over_the_plan_computed_alongside(
        runtime: Runtime, stacks_root: Path, project_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan runs next to the host checks; when the pre-flight blocks, the answer is the
    pre-flight's (even if the plan failed too) and nothing is created."""
    import server.deploy.transaction as transaction
    from server.errors import DsmError
    from tests.deploy_helpers import containers

    async def failing_plan(*_: Any, **__: Any) -> Any:
        raise DsmError("config --hash failed", state="nothing was changed")

    write(stacks_root, project_name, web_stack(project_name, WEB_10, extra="    privileged: true\n"))
    monkeypatch.setattr(transaction, "compute_plan", failing_plan)
    blocked = await deploy(runtime, project_name)
    assert blocked.status == "blocked" and [p.name for p in blocked.phases] == ["preflight"]
    assert any(f.rule == "privileged" and f.severity == "error" for f in blocked.findings)

    # A pre-flight that passes: the plan's failure is the answer, still before anything changed.
    write(stacks_root, project_name, web_stack(project_name, WEB_10))
    with pytest.raises(DsmError, match="config --hash failed"):
        await deploy(runtime, project_name)
    assert containers(project_name) == []
    assert runtime.operations().history(project_name) == []  # no operation was begun
