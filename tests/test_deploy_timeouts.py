"""Timeouts follow the stack's stop grace periods (issue 15): a container that ignores SIGTERM
with a long ``stop_grace_period`` made ``up`` hit a fixed 120 s part-way through its stop.
What Compose stops (and so what counts) was checked on the real engine; see
server/deploy/timeouts.py. Here: the arithmetic, and that deploy's ``up`` is given it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.deploy.compose_executor import ComposeExecutor
from server.deploy.executor import Change
from server.deploy.pipeline import Run, StepFailed
from server.deploy.steps import StepLog
from server.deploy.timeouts import (
    deploy_up_timeout_s,
    duration_s,
    restarted_with,
    rollback_up_timeout_s,
    up_timeout_s,
)
from server.settings import Settings
from tests.deploy_fakes import STACK, World, plan


@pytest.mark.parametrize(("value", "seconds"), [
    ("1m30s", 90.0), ("90s", 90.0), ("1h30m0s", 5400.0), ("1.5h", 5400.0), ("500ms", 0.5), ("2m", 120.0),
    (None, 10.0), ("", 10.0), ("soon", 10.0), ("5s junk", 10.0), (45, 45.0), ("30", 30.0), (True, 10.0),
])
def test_compose_durations(value: Any, seconds: float) -> None:
    assert duration_s(value) == seconds


SERVICES: dict[str, dict[str, Any]] = {
    "db": {"image": "pg", "stop_grace_period": "5m0s"},
    "web": {"image": "w", "stop_grace_period": "1m0s", "deploy": {"replicas": 3},
            "depends_on": {"db": {"condition": "service_healthy", "restart": True}}},
    "worker": {"image": "k", "depends_on": {"db": {"condition": "service_started"}}},
    "cron": {"image": "c", "scale": 2, "depends_on": {"web": {"condition": "service_started", "restart": True}}},
}


def test_restart_true_dependents_are_stopped_with_their_dependency() -> None:
    assert restarted_with(SERVICES, ["db"]) == {"db", "web", "cron"}  # transitive; worker is left running
    assert restarted_with(SERVICES, ["worker"]) == {"worker"}


def test_up_timeout_adds_every_grace_period_up_may_wait_out() -> None:
    # db 300 + web 3 x 60 + cron 2 x 10 (default grace), on top of the old floor
    assert up_timeout_s(SERVICES, ["db"], wait_s=60) == 120 + 300 + 180 + 20
    assert up_timeout_s(SERVICES, ["worker"], wait_s=200) == 200 + 10
    assert up_timeout_s(SERVICES, [], wait_s=30) == 120  # nothing stopped: as before
    assert up_timeout_s(SERVICES, None, wait_s=30) == 120 + 300 + 180 + 10 + 20  # a rollback: any of them


def _world(tmp_path: Path) -> World:
    directory = tmp_path / "stacks" / STACK
    directory.mkdir(parents=True)
    (directory / "compose.yaml").write_text("services: {}\n")
    return World(Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state"), directory)


def test_deploy_and_rollback_helpers_count_what_the_plan_changes(tmp_path: Path) -> None:
    stack = _world(tmp_path).stack(SERVICES)
    assert deploy_up_timeout_s(stack, plan(db="unchanged", web="unchanged", worker="recreate", cron="unchanged"),
                               60) == 130
    assert deploy_up_timeout_s(stack, plan(db="recreate", web="unchanged", worker="unchanged", cron="unchanged"),
                               60) == 620
    assert rollback_up_timeout_s(stack, 60) == 630


@pytest.mark.anyio
async def test_deploys_up_waits_out_a_long_stop_grace_period(tmp_path: Path) -> None:
    world = _world(tmp_path)
    world.compose.fail.add("up")  # stop right after the call: only its arguments matter here
    stack = world.stack({"db": {"image": "pg", "stop_grace_period": "10m"}, "web": {"image": "w"}})
    run = Run(stack)
    run.op = world.ops.begin(STACK, "deploy")
    with pytest.raises(StepFailed):
        await ComposeExecutor(world.runtime).apply(Change(stack, plan(db="recreate", web="unchanged"), None, 60.0,
                                                          run.op), StepLog(run))
    [up] = [c for c in world.compose.calls if c.argv[0] == "up"]
    assert up.kwargs["timeout_s"] == 120 + 600  # not a fixed 120 s: the db may take 10 minutes to stop
