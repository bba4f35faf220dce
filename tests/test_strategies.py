"""Strategies at our own seams (issue 16): selection rules and reasons, update_config parsing, and
the rolling strategy's batches, order and failure actions on a fake fleet (no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.deploy.executor import Change, RollContext
from server.deploy.steps import Run, StepLog
from server.deploy.strategies.fleet import Failure
from server.deploy.strategies.registry import strategy_named
from server.deploy.strategies.rolling import Rolling, RolloutFailed
from server.deploy.strategies.select import AUTO_BLUE_GREEN, choose
from server.deploy.strategies.update_config import UpdateConfig, seconds
from server.settings import Settings
from server.xdsm import parse_service_settings
from tests.deploy_fakes import STACK, World, plan

pytestmark = pytest.mark.anyio
HC = {"healthcheck": {"test": ["CMD", "true"]}}


def pick(body: dict[str, Any], *, asked: str = "auto", configured: str = "auto", database: bool = False,
         critical: bool = False, healthcheck: bool | None = True, proxied: bool = True,
         one_shot: bool = False, critical_service: bool = False) -> Any:
    return choose(body, asked=asked, configured=configured, database=database, critical=critical,
                  healthcheck=healthcheck, proxied=proxied, one_shot=one_shot, critical_service=critical_service)


def test_auto_names_the_strategy_that_runs_and_the_rule_that_decided() -> None:
    assert pick({}).strategy == "rolling" and "healthcheck" in pick({}).reason
    db = pick({}, database=True)
    assert (db.strategy, db.refused) == ("planned_downtime", None) and "database" in db.reason
    port = pick({"ports": [{"target": 80, "published": "8080"}]})
    assert port.strategy == "planned_downtime" and "fixed host port 8080" in port.reason
    named = pick({"container_name": "web1"})
    assert named.strategy == "planned_downtime" and "container_name" in named.reason
    vol = pick({"volumes": [{"type": "volume", "source": "data", "target": "/data"}]})
    assert vol.strategy == "planned_downtime" and "single replica writing named volume data" in vol.reason
    read_only = pick({"volumes": [{"type": "volume", "source": "data", "target": "/d", "read_only": True}]})
    assert read_only.strategy == "rolling"
    fixed_ip = pick({"networks": {"back": {"ipv4_address": "10.5.0.9"}}})
    assert fixed_ip.strategy == "planned_downtime" and "fixed address on network back" in fixed_ip.reason
    migration = pick({}, one_shot=True)
    assert migration.strategy == "recreate" and migration.reason.startswith("one-shot"), migration
    assert pick({}, one_shot=True, asked="rolling").refused
    nohc = pick({}, healthcheck=False)
    assert nohc.strategy == "planned_downtime" and "no healthcheck" in nohc.reason
    critical = pick({}, critical=True)  # the stack is critical: every service would need a second copy
    assert critical.strategy == "rolling" and "service itself is marked critical" in critical.reason
    own = pick({}, critical=True, critical_service=True)  # the service itself, with a proxy in front
    assert own.strategy == "blue_green" and own.reason == AUTO_BLUE_GREEN and not own.refused
    alone = pick({}, critical=True, critical_service=True, proxied=False)
    assert alone.strategy == "rolling" and "no proxy" in alone.reason
    stateful = pick({"container_name": "x"}, critical=True, critical_service=True)
    assert stateful.strategy == "planned_downtime"  # what forbids two copies forbids blue_green too
    configured = pick({}, configured="planned-downtime")  # x-dsm's hyphenated spelling
    assert configured.strategy == "planned_downtime" and "x-dsm" in configured.reason
    assert parse_service_settings("web", {"update": {"strategy": "blue-green"}}).update.strategy == "blue_green"


def test_a_strategy_asked_for_that_the_rules_forbid_is_refused_with_the_rule() -> None:
    refused = pick({"ports": [{"target": 80, "published": "8080"}]}, asked="rolling")
    assert refused.refused and "fixed host port 8080" in refused.refused
    assert pick({}, asked="blue_green").refused is None  # server/deploy/strategies/bluegreen.py
    assert "no proxy in the stack" in (pick({}, asked="blue_green", proxied=False).refused or "")
    assert pick({}, asked="recreate").strategy == "recreate" and pick({}, asked="recreate").refused is None
    assert pick({}, database=True, asked="planned_downtime").refused is None
    assert pick({}, asked="sideways").refused
    assert strategy_named("planned-downtime").name == "planned_downtime"


def test_update_config_is_read_as_compose_renders_it() -> None:
    assert seconds("1m30s", 0) == 90 and seconds("500ms", 0) == 0.5 and seconds(None, 5) == 5
    assert seconds("bogus", 7) == 7 and seconds(3, 0) == 3
    cfg = UpdateConfig.of({"deploy": {"update_config": {"parallelism": 0, "delay": "2s", "order": "stop-first",
                                                        "failure_action": "pause", "monitor": "1s",
                                                        "max_failure_ratio": 0.5}}})
    assert (cfg.delay_s, cfg.order, cfg.failure_action, cfg.monitor_s, cfg.max_failure_ratio) == (
        2.0, "stop-first", "pause", 1.0, 0.5)
    assert cfg.batch(3) == 3 and UpdateConfig.of({}).batch(3) == 1
    assert UpdateConfig.of({}).failure_action == "rollback" and UpdateConfig.of({}).order == "start-first"


class FakeFleet:
    """Containers as ids; ``fails`` says which new containers (by creation count) fail their gate."""

    def __init__(self, old: int, fails: set[int] | None = None) -> None:
        self.live = [f"old{i}" for i in range(1, old + 1)]
        self.made = 0
        self.fails = fails or set()
        self.log: list[str] = []

    async def containers(self, stack: Any, svc: str, *, running: bool = False) -> list[str]:
        return list(self.live)

    async def scale(self, change: Change, svc: str, count: int) -> None:
        while len(self.live) < count:
            self.made += 1
            self.live.append(f"new{self.made}")
        self.log.append(f"scale {count}")

    async def hide(self, cid: str, svc: str) -> None:
        self.log.append(f"hide {cid}")

    async def start(self, cid: str) -> None:
        self.log.append(f"start {cid}")

    async def reveal(self, cid: str, svc: str) -> None:
        self.log.append(f"reveal {cid}")

    async def judge(self, svc: str, ids: list[str], **_: Any) -> Failure | None:
        self.log.append(f"judge {','.join(ids)}")
        bad = [cid for cid in ids if int(cid.removeprefix("new")) in self.fails]
        return Failure(f"{STACK}-web-9 ({bad[0]})", "is unhealthy", ["health check output: 500"]) if bad else None

    async def out_of_traffic(self, stack: Any, cid: str, hook: Any) -> str:
        self.log.append(f"drain {cid}")
        return cid

    async def retire(self, cid: str, stop_s: float) -> None:
        self.log.append(f"retire {cid}")
        self.live.remove(cid)

    async def discard(self, ids: list[str]) -> None:
        self.log.append(f"discard {','.join(ids)}")
        for cid in ids:
            self.live.remove(cid)


class _Executor:
    def __init__(self, fleet: FakeFleet) -> None:
        self.fleet = fleet


async def roll(tmp_path: Path, fleet: FakeFleet, replicas: int, update: dict[str, Any]) -> Run:
    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    (tmp_path / "stacks" / STACK).mkdir(parents=True, exist_ok=True)
    world = World(settings, tmp_path / "stacks" / STACK)
    stack = world.stack({"web": {"deploy": {"replicas": replicas, "update_config": update}, **HC}},
                        service_dsm={"web": {"drain_s": 0}})
    run = Run(stack)
    await Rolling().roll("web", RollContext(Change(stack, plan(web="recreate"), None, 30.0), StepLog(run),
                                            _Executor(fleet)))
    return run


async def test_start_first_one_at_a_time_gates_each_new_container_before_an_old_one_leaves(tmp_path: Path) -> None:
    fleet = FakeFleet(old=2)
    run = await roll(tmp_path, fleet, 2, {"parallelism": 1, "monitor": "0s"})
    assert fleet.log == ["scale 3", "hide new1", "start new1", "judge new1", "reveal new1", "drain old1",
                         "retire old1", "scale 3", "hide new2", "start new2", "judge new2", "reveal new2",
                         "drain old2", "retire old2"]
    assert fleet.live == ["new1", "new2"] and [(p.name, p.status) for p in run.phases] == [("rolling", "ok")]


async def test_parallelism_sets_the_batches_and_stop_first_retires_before_starting(tmp_path: Path) -> None:
    fleet = FakeFleet(old=3)
    await roll(tmp_path, fleet, 3, {"parallelism": 2, "monitor": "0s"})
    assert [e for e in fleet.log if e.startswith("judge")] == ["judge new1,new2", "judge new3"]
    everything = FakeFleet(old=3)
    await roll(tmp_path, everything, 3, {"parallelism": 0, "monitor": "0s"})
    assert [e for e in everything.log if e.startswith("judge")] == ["judge new1,new2,new3"]
    stop_first = FakeFleet(old=2)
    await roll(tmp_path, stop_first, 2, {"order": "stop-first", "monitor": "0s"})
    assert stop_first.log[:3] == ["drain old1", "retire old1", "scale 2"]


async def test_a_failing_new_container_is_removed_and_the_old_ones_are_never_touched(tmp_path: Path) -> None:
    fleet = FakeFleet(old=2, fails={1})
    with pytest.raises(RolloutFailed) as failed:
        await roll(tmp_path, fleet, 2, {"failure_action": "rollback", "monitor": "0s"})
    assert not failed.value.pause and failed.value.untouched == ["old1", "old2"]
    assert f"{STACK}-web-9 (new1) is unhealthy" in failed.value.why and "keep serving" in failed.value.why
    assert "health check output: 500" in failed.value.evidence
    assert fleet.live == ["old1", "old2"] and not [e for e in fleet.log if e.startswith(("drain", "retire", "reveal"))]


async def test_pause_stops_where_it_failed_without_asking_for_a_rollback(tmp_path: Path) -> None:
    fleet = FakeFleet(old=2, fails={2})
    with pytest.raises(RolloutFailed) as failed:
        await roll(tmp_path, fleet, 2, {"failure_action": "pause", "monitor": "0s"})
    assert failed.value.pause and "1 container(s) already replaced" in failed.value.why
    assert fleet.live == ["old2", "new1"]


async def test_continue_tries_every_batch_then_fails_naming_the_failures(tmp_path: Path) -> None:
    fleet = FakeFleet(old=2, fails={1})
    with pytest.raises(RolloutFailed) as failed:
        await roll(tmp_path, fleet, 2, {"failure_action": "continue", "monitor": "0s"})
    assert not failed.value.pause and failed.value.untouched == ["old1"]
    assert fleet.live == ["old1", "new2"]  # old2 replaced by a passing new2; old1 kept serving


async def test_max_failure_ratio_lets_a_share_of_the_replicas_fail_once_and_be_retried(tmp_path: Path) -> None:
    fleet = FakeFleet(old=2, fails={1})
    run = await roll(tmp_path, fleet, 2, {"max_failure_ratio": 0.5, "monitor": "0s"})
    assert fleet.live == ["new2", "new3"] and "retried (max_failure_ratio)" in run.phases[0].detail
    strict = FakeFleet(old=2, fails={1})
    with pytest.raises(RolloutFailed):
        await roll(tmp_path, strict, 2, {"max_failure_ratio": 0.4, "monitor": "0s"})  # 0.4 * 2 < 1


async def test_a_paused_rollout_is_reported_failed_without_a_rollback(tmp_path: Path) -> None:
    from server.deploy.transaction import Transaction
    from tests.deploy_fakes import FakeExecutor

    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    (tmp_path / "stacks" / STACK).mkdir(parents=True)
    world = World(settings, tmp_path / "stacks" / STACK)

    async def apply(change: Change) -> None:
        raise RolloutFailed("web: new container x (n1) is unhealthy; removed, paused", "web", ["n1: unhealthy"],
                            pause=True, untouched=["old2"])

    run = Run(world.stack({"web": {}}))
    run.op = world.ops.begin(STACK, "deploy")
    report = await Transaction(world.runtime, FakeExecutor(world.runtime, apply)).execute(
        run, plan(web="recreate"), {}, None, 30.0, 0.0)
    assert report.status == "failed" and report.rollback is None, report
    assert world.compose.calls == []  # no rollback up: the stack stays as the pause left it
    [paused] = [f for f in report.findings if f.rule == "rollout-paused"]
    assert paused.service == "web" and "n1: unhealthy" in paused.evidence


async def test_an_engine_error_mid_roll_is_a_failed_step_so_the_rollback_runs(tmp_path: Path) -> None:
    from server.deploy.compose_executor import ComposeExecutor
    from server.deploy.steps import StepFailed
    from server.errors import DsmError

    class Refused(Rolling):
        async def roll(self, svc: str, ctx: RollContext) -> None:
            raise DsmError("the Docker engine refused to connect web-3 to the network")

    settings = Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state")
    (tmp_path / "stacks" / STACK).mkdir(parents=True)
    world = World(settings, tmp_path / "stacks" / STACK)
    stack = world.stack({"web": {}})
    executor = ComposeExecutor(world.runtime, strategies={"web": Refused()})
    with pytest.raises(StepFailed) as failed:
        await executor.apply(Change(stack, plan(web="recreate"), None, 30.0), StepLog(Run(stack)))
    assert failed.value.phase == "rolling" and failed.value.service == "web" and "refused" in failed.value.why
    assert world.compose.calls == []  # the converging up never ran
