"""Swarm's pure parts and the executor at its own seam (StackCLI faked): the stack file, the task
judgement of the gate, the stack-level rollback's choice per service, the CLI version check."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.deploy.swarm.cli import StackCLI, SwarmUnavailable
from server.deploy.swarm.executor import SwarmExecutor
from server.deploy.swarm.render import stack_file
from server.deploy.swarm.tasks import Service, Task, judge, parse_services
from server.process import ProcessResult

RENDERED: dict[str, Any] = {
    "name": "app",
    "networks": {"default": {"name": "app_default", "ipam": {}}, "ext": {"name": "shared", "external": True}},
    "volumes": {"data": {"name": "app_data"}},
    "services": {
        "web": {"image": "web:1", "command": None, "depends_on": {"db": {"condition": "service_healthy"}},
                "ports": [{"mode": "host", "target": 80, "published": "8080", "protocol": "tcp"}],
                "build": {"context": "."}},
        "db": {"image": "db:1", "deploy": {"update_config": {"parallelism": 2}}},
        "api": {"image": "api:1"},
    },
}


def test_stack_file_reshapes_what_the_stack_loader_reads_differently() -> None:
    doc, _notes = stack_file("app", RENDERED, {"web": "rolling", "db": "recreate", "api": "blue_green"})
    assert "name" not in doc
    assert "name" not in doc["networks"]["default"] and doc["networks"]["ext"]["name"] == "shared"
    assert "name" not in doc["volumes"]["data"]
    web = doc["services"]["web"]
    assert "command" not in web and "build" not in web
    assert web["depends_on"] == ["db"]
    assert web["ports"][0]["published"] == 8080
    assert RENDERED["services"]["web"]["ports"][0]["published"] == "8080"  # the loaded stack is untouched


def test_strategies_become_swarms_update_config_and_the_file_wins() -> None:
    doc, notes = stack_file("app", RENDERED, {"web": "rolling", "db": "recreate", "api": "blue_green"})
    web, db, api = (doc["services"][n]["deploy"]["update_config"] for n in ("web", "db", "api"))
    # rolling is start-first, one at a time; a host-mode port forces stop-first (said in the notes)
    assert web == {"order": "stop-first", "parallelism": 1, "failure_action": "pause", "monitor": "5s"}
    assert any("web: stop-first" in n for n in notes)
    assert db["order"] == "stop-first" and db["parallelism"] == 2  # the file's own parallelism wins
    assert api["order"] == "start-first" and api["parallelism"] == 0
    assert doc["services"]["api"]["deploy"]["rollback_config"]["order"] == "start-first"


def _svc(name: str, replicas: int | None = 2, state: str | None = None, message: str = "") -> Service:
    return Service(name=name, full_name=f"app_{name}", id=name, replicas=replicas, image="x",
                   update_state=state, update_message=message)


def _task(service: str, state: str, *, node: str = "n1", desired: str = "running", current: bool = True,
          error: str = "", age: float = 1.0, slot: int = 1) -> Task:
    return Task(id="t", service=service, slot=slot, node=node, desired=desired, state=state, error=error,
                image="img", current=current, age_s=age)


def test_judge_converges_only_when_every_replica_of_the_new_spec_runs() -> None:
    services = {"web": _svc("web")}
    one = [_task("web", "running", node="n1"), _task("web", "starting", node="n2", slot=2)]
    assert judge(services, one, ["web"], since_s=5).state == "waiting"
    old = [_task("web", "running", node="n1"), _task("web", "running", node="n2", current=False, slot=2)]
    assert judge(services, old, ["web"], since_s=5).state == "waiting"
    both = [_task("web", "running", node="n1"), _task("web", "running", node="n2", slot=2)]
    assert judge(services, both, ["web"], since_s=5).state == "converged"
    assert judge({"web": _svc("web", state="updating")}, both, ["web"], since_s=5).state == "waiting"


def test_judge_names_the_failing_node_and_task_error() -> None:
    tasks = [_task("api", "failed", node="node-b", error="task: non-zero exit (1)", desired="shutdown")]
    verdict = judge({"api": _svc("api")}, tasks, ["api"], since_s=10)
    assert verdict.state == "failed" and verdict.service == "api"
    assert "node-b" in verdict.why and "non-zero exit (1)" in verdict.why
    # a failure older than this deploy is history, not this deploy's failure
    assert judge({"api": _svc("api")}, [t.__class__(**{**t.__dict__, "age_s": 500}) for t in tasks],
                 ["api"], since_s=10).state == "waiting"


def test_judge_fails_on_swarms_own_rollback_and_on_an_unschedulable_task() -> None:
    rolled = judge({"api": _svc("api", state="rollback_completed", message="update rolled back")}, [], ["api"], 5)
    assert rolled.state == "failed" and "rollback completed" in rolled.why
    # the stack-level rollback waits for Swarm's rollbacks instead
    back = [_task("api", "running"), _task("api", "running", slot=2, node="n2")]
    assert judge({"api": _svc("api", state="rollback_completed")}, back, ["api"], 5,
                 rolling_back=True).state == "converged"
    stuck = [_task("api", "pending", node="", error="no suitable node (scheduling constraints not satisfied)",
                   age=30)]
    verdict = judge({"api": _svc("api", replicas=1)}, stuck, ["api"], since_s=30)
    assert verdict.state == "failed" and "cannot be scheduled" in verdict.why


class FakeCLI(StackCLI):
    def __init__(self, services: list[dict[str, Any]]) -> None:
        super().__init__(lambda: {})
        self.raw = services
        self.calls: list[tuple[str, ...]] = []

    async def services(self, stack: str) -> list[dict[str, Any]]:
        return self.raw

    async def service_rollback(self, name: str) -> ProcessResult:
        self.calls.append(("rollback", name))
        return ProcessResult([], 0, "", "")

    async def service_rm(self, *names: str) -> ProcessResult:
        self.calls.append(("rm", *names))
        return ProcessResult([], 0, "", "")


def _raw(name: str, image: str, *, previous: bool = True, state: str | None = None) -> dict[str, Any]:
    spec = {"Name": f"app_{name}", "TaskTemplate": {"ContainerSpec": {"Image": image}},
            "Mode": {"Replicated": {"Replicas": 1}}}
    out: dict[str, Any] = {"ID": name, "Spec": spec}
    if previous:
        out["PreviousSpec"] = json.loads(json.dumps(spec))
    if state:
        out["UpdateStatus"] = {"State": state}
    return out


@pytest.mark.anyio
async def test_stack_level_rollback_takes_every_service_back() -> None:
    class Stack:
        name = "app"

    before = {"web": _raw("web", "web:1"), "api": _raw("api", "api:1"), "same": _raw("same", "s:1")}
    now = [_raw("web", "web:2"), _raw("api", "api:1", state="rollback_completed"), _raw("same", "s:1"),
           _raw("extra", "e:1", previous=False)]
    cli = FakeCLI(now)
    ex = SwarmExecutor(type("R", (), {"settings": None})(), cli=cli)
    ex.before = before
    notes = await ex._roll_back_services(Stack())  # type: ignore[arg-type]
    assert ("rollback", "app_web") in cli.calls  # updated fine, but the stack goes back as one
    assert ("rollback", "app_api") not in cli.calls  # Swarm's failure_action already rolled it back
    assert ("rm", "app_extra") in cli.calls  # new in the failed deploy
    assert "web" in notes[0] and "api, same" in notes[0]
    assert parse_services(now, "app")["api"].update_state == "rollback_completed"


@pytest.mark.anyio
async def test_an_old_docker_cli_is_named_with_what_is_missing() -> None:
    cli = StackCLI(lambda: {})

    async def run(*argv: str, **kw: Any) -> ProcessResult:
        return ProcessResult(list(argv), 0, "20.10.24+dfsg1\n", "")

    cli.run = run  # type: ignore[method-assign]
    with pytest.raises(SwarmUnavailable) as raised:
        await cli.check_version()
    assert "docker CLI >= 23" in str(raised.value) and "20.10.24" in str(raised.value)


def test_each_swarm_deploy_gets_a_fresh_executor_and_compose_stacks_keep_theirs() -> None:
    from server.deploy.swarm import executor_for
    from tests.test_policy_units import make_stack

    compose_executor, runtime = object(), type("R", (), {"settings": None})()
    swarm_stack, compose_stack = make_stack({"a": {"image": "x"}}, x_dsm={"mode": "swarm"}), make_stack(
        {"a": {"image": "x"}})
    first = executor_for(runtime, swarm_stack, compose_executor)
    assert isinstance(first, SwarmExecutor) and first.replaced is compose_executor
    second = executor_for(runtime, swarm_stack, first)
    assert second is not first and second.replaced is compose_executor  # no spec carried over
    assert executor_for(runtime, compose_stack, second) is compose_executor
