"""The pre-flight remembers (issue 17): a failed incident recorded for the same stack and the same
image digest is a ``failed-before`` warning naming the incident; the memory being unavailable or
slow never fails the pre-flight."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.compose import ComposeRunner
from server.memory.service import Memory
from server.preflight import history
from server.preflight.validation import validate
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import write_stack
from tests.memory_data.helpers import lexical_model, make_memory

pytestmark = pytest.mark.anyio

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def stack(image: str) -> str:
    return f"name: shop\nservices:\n  web:\n    image: {image}\n    mem_limit: 64m\n"


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    m = make_memory("edge", tmp_path / "memory", lexical_model())  # a scroll: no model needed
    yield m
    m.close()


def no_engine() -> Any:
    raise AssertionError("check_host=False must not touch the engine")


def failed(memory: Memory, digest: str = DIGEST, outcome: str = "rolled_back", stack_name: str = "shop") -> str:
    return memory.record_incident(
        title="deploy of shop failed at health: web exited 1", symptoms="web exited with code 1 after the update",
        stack=stack_name, service="web", image_digests={"web": f"dsm-test/web@{digest}"}, outcome=outcome,
        source="deploy").incident_id


async def check(settings: Settings, memory: Any) -> list[Any]:
    report = await validate(settings, ComposeRunner(settings), no_engine, path="shop", check_host=False,
                            memory=memory)
    assert report.valid
    return [f for f in report.findings if f.rule == "failed-before"]


async def test_the_same_image_that_failed_is_a_warning_naming_the_incident(
        settings: Settings, stacks_root: Path, memory: Memory) -> None:
    incident = failed(memory)
    write_stack(stacks_root, "shop", stack(f"dsm-test/web@{DIGEST}"))
    (warning,) = await check(settings, lambda: memory)
    assert warning.severity == "warning" and warning.service == "web" and warning.line
    assert incident in warning.message and "rolled_back" in warning.message
    assert "deploy of shop failed at health" in warning.message


@pytest.mark.parametrize("case", ["other digest", "other stack", "recovered"])
async def test_only_a_failure_of_this_stack_with_this_image_counts(
        settings: Settings, stacks_root: Path, memory: Memory, case: str) -> None:
    failed(memory, digest=OTHER if case == "other digest" else DIGEST,
           stack_name="other" if case == "other stack" else "shop",
           outcome="recovered" if case == "recovered" else "rolled_back")
    write_stack(stacks_root, "shop", stack(f"dsm-test/web@{DIGEST}"))
    assert await check(settings, lambda: memory) == []


async def test_a_broken_memory_never_fails_the_pre_flight(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "shop", stack(f"dsm-test/web@{DIGEST}"))

    def broken() -> Memory:
        raise RuntimeError("the shard is gone")

    assert await check(settings, broken) == []


async def test_a_slow_memory_is_not_waited_for(settings: Settings, stacks_root: Path,
                                               monkeypatch: pytest.MonkeyPatch, memory: Memory) -> None:
    failed(memory)
    write_stack(stacks_root, "shop", stack(f"dsm-test/web@{DIGEST}"))
    monkeypatch.setattr(history, "MEMORY_WAIT_S", 0.5)

    def slow() -> Memory:
        time.sleep(3)
        return memory

    began = time.monotonic()
    assert await check(settings, slow) == []
    assert time.monotonic() - began < 2.5


@pytest.mark.docker
async def test_after_a_failed_deploy_the_next_pre_flight_names_its_incident(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    from tests.deploy_helpers import WEB_BROKEN, deploy, web_stack, write

    crash = "    environment: {WEB_CRASH_AFTER: '0'}\n"
    write(stacks_root, project_name, web_stack(project_name, WEB_BROKEN, extra=crash))
    report = await deploy(runtime, project_name, wait_timeout_s=30)
    assert report.status == "rolled_back" and report.incident_id, report
    runtime.memory_outbox().flush(10.0)
    again = await deploy(runtime, project_name, dry_run=True)
    (warning,) = [f for f in again.findings if f.rule == "failed-before"]
    assert report.incident_id in warning.message and warning.service == "web"
    assert again.status == "planned"  # a warning: the operator may still go ahead
