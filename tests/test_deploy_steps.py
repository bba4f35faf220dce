"""The step log (server/deploy/steps.py) and the Compose executor's strategy seam: unit tests at
our own seams (a FakeOp journal, the world's fakes), no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.deploy.compose_executor import RECREATE, ComposeExecutor
from server.deploy.executor import Change, RollContext
from server.deploy.steps import Blocked, Run, StepFailed, StepLog
from server.settings import Settings
from tests.deploy_fakes import STACK, FakeOp, World, plan

pytestmark = pytest.mark.anyio


def _log(tmp_path: Path) -> tuple[StepLog, Run, FakeOp, list[tuple[str, bool]]]:
    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    (tmp_path / "stacks" / STACK).mkdir(parents=True)
    run = Run(World(settings, tmp_path / "stacks" / STACK).stack({"web": {}}))
    run.op = FakeOp([], "op-1", "deploy")
    told: list[tuple[str, bool]] = []

    async def tell(message: str, advance: bool) -> None:
        told.append((message, advance))

    return StepLog(run, tell), run, run.op, told


async def test_a_phase_is_told_timed_reported_and_journaled_in_one_place(tmp_path: Path) -> None:
    steps, run, op, told = _log(tmp_path)
    async with steps.phase("pull", "pull: web") as step:
        step.status, step.detail = "skipped", "all local"
    async with steps.phase("up"):
        pass
    assert told == [("pull: web", True)]  # no message: nothing told, the phase still recorded
    assert [(p.name, p.status, p.detail) for p in run.phases] == [("pull", "skipped", "all local"), ("up", "ok", "")]
    assert op.phases == [("pull", "skipped", "all local"), ("up", "ok", "")]
    assert all(p.duration_s >= 0 for p in run.phases)


async def test_a_failed_step_is_recorded_failed_and_raised_a_blocked_one_is_left_to_the_transaction(
        tmp_path: Path) -> None:
    steps, _run, op, _ = _log(tmp_path)
    with pytest.raises(StepFailed):
        async with steps.phase("health"):
            raise StepFailed("health", "web is unhealthy", "web")
    with pytest.raises(StepFailed):
        async with steps.phase("smoke") as step:
            step.detail = "web: 500; api: ok"  # what the block had to say wins over the short why
            raise StepFailed("smoke", "smoke check failed: web: 500", "web")
    with pytest.raises(Blocked):
        async with steps.phase("pull"):
            raise Blocked("pull", "image missing", [])
    with pytest.raises(RuntimeError):  # a bug is not a step outcome: nothing recorded, re-raised
        async with steps.phase("up"):
            raise RuntimeError("bug")
    assert op.phases == [("health", "failed", "web is unhealthy"), ("smoke", "failed", "web: 500; api: ok")]


async def test_the_compose_executor_rolls_every_change_with_recreate_and_refuses_nothing(tmp_path: Path) -> None:
    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    (tmp_path / "stacks" / STACK).mkdir(parents=True)
    world = World(settings, tmp_path / "stacks" / STACK)
    stack = world.stack({"web": {}, "db": {}})
    executor = ComposeExecutor(world.runtime)
    assert executor.strategy("web") is RECREATE and RECREATE.name == "recreate"
    assert RECREATE.refuse("web", stack) is None
    run = Run(stack)
    steps = StepLog(run)
    await RECREATE.roll("web", RollContext(Change(stack, plan(web="recreate")), steps, executor))
    assert world.compose.calls == [] and run.phases == []  # recreate is the executor's converging up
    await executor.apply(Change(stack, plan(web="recreate", db="unchanged"), None, 30.0), steps)
    [up] = world.compose.calls
    assert up.argv == ["up", "-d", "--remove-orphans"]
    assert [(p.name, p.status) for p in run.phases] == [("pull", "skipped"), ("up", "ok")]
