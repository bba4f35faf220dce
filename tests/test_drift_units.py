"""Drift (issue 18) at its seams, without an engine: what is drift and what is ours.

The engine tests (tests/test_drift_engine.py) show drift found for real; these pin the rules a
real engine makes slow to reach: our own journaled acts (the watcher's recreate, stack_control
remove, a restore writing files) are not drift, a newer failed deploy stops the comparison, the
list is bounded, and which stacks the watcher alerts for.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.engine import ContainerSummary
from server.monitor import baseline, driftcheck
from server.monitor.baseline import Baseline, ServiceBaseline
from server.monitor.driftcheck import MAX_ITEMS, NO_DEPLOYMENT, check, iso
from server.settings import Settings
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio

HASH = "com.docker.compose.config-hash"
T0 = time.time() - 600  # the deployment was recorded ten minutes ago


class Engine:
    async def image_attrs(self, ref: str) -> dict[str, Any] | None:
        return {"Id": ref, "RepoDigests": [f"dsm-test/web@sha256:{'d' * 64}"]}

    async def call(self, fn: Any, what: str) -> Any:
        raise RuntimeError("no events here")


class Journal:
    def __init__(self, *records: Any) -> None:
        self.records = list(records)

    def history(self, stack: str, kinds: Any = ("deploy", "rollback"), limit: int = 20) -> list[Any]:
        return [r for r in self.records if r.kind in set(kinds)][:limit]


def op(kind: str, status: str, start: float, end: float | None, op_id: str = "op-x", **params: Any) -> Any:
    return SimpleNamespace(operation_id=op_id, kind=kind, status=status, started_at=iso(start),
                           ended_at=iso(end) if end else None, params=params)


def container(cid: str, service: str = "web", created: float = T0 - 5, config: str = "h1", image: str = "sha256:a1",
              networks: tuple[str, ...] = ("p_default",)) -> ContainerSummary:
    return ContainerSummary(id=cid, name=f"p-{service}-{cid}", project="p", service=service, state="running",
                            status="Up", health=None, image="dsm-test/web:1.0", created=int(created),
                            labels={HASH: config}, image_id=image, networks=networks)


def recorded(settings: Settings, directory: Path | None = None, **services: ServiceBaseline) -> Baseline:
    base = Baseline(stack="p", deployment_id="op-deploy", kind="deploy", recorded_at=iso(T0), recorded_epoch=T0,
                    files=baseline.file_hashes(directory) if directory else {}, services=services or {
                        "web": ServiceBaseline(replicas=1, config_hash="h1", image="dsm-test/web:1.0",
                                               image_id="sha256:a1", digest=None,
                                               containers={"c1": ["p_default"]})})
    where = baseline.stack_dir(settings, "p")
    where.mkdir(parents=True)
    (where / baseline.LATEST).write_text(base.to_json())
    return base


DEPLOYED = op("deploy", "deployed", T0 - 30, T0, op_id="op-deploy")


async def test_nothing_recorded_is_no_drift(settings: Settings) -> None:
    report = await check(settings, Engine(), "p", None, [container("c9", config="other")],  # type: ignore[arg-type]
                         operations=Journal())
    assert report.note == NO_DEPLOYMENT and not report.items and report.for_plan() == [f"not compared: {NO_DEPLOYMENT}"]


async def test_a_container_the_watcher_recreated_is_ours_one_recreated_by_hand_is_drift(settings: Settings) -> None:
    recorded(settings)
    again = container("c2", created=T0 + 100)
    recovery = op("recovery", "done", T0 + 99, T0 + 101, service="web")
    ours = await check(settings, Engine(), "p", None, [again], operations=Journal(DEPLOYED, recovery))  # type: ignore[arg-type]
    assert ours.deployment == "op-deploy" and ours.items == []
    hand = await check(settings, Engine(), "p", None, [again], operations=Journal(DEPLOYED))  # type: ignore[arg-type]
    assert [(i.kind, i.service, i.since) for i in hand.items] == [("recreated", "web", iso(T0 + 100))]


async def test_removed_by_stack_control_is_ours_removed_by_hand_is_drift(settings: Settings) -> None:
    recorded(settings)
    removal = op("control", "done", T0 + 50, T0 + 52, action="remove", services=["web"])
    assert (await check(settings, Engine(), "p", None, [], operations=Journal(DEPLOYED, removal))).items == []  # type: ignore[arg-type]
    (item,) = (await check(settings, Engine(), "p", None, [], operations=Journal(DEPLOYED))).items  # type: ignore[arg-type]
    assert (item.kind, item.since) == ("removed", f"after {iso(T0)}")


async def test_another_image_config_and_scale_each_say_what_and_since(settings: Settings) -> None:
    recorded(settings)
    image = await check(settings, Engine(), "p", None, [container("c3", created=T0 + 10, config="h2",  # type: ignore[arg-type]
                                                                  image="sha256:b2")], operations=Journal(DEPLOYED))
    assert [i.kind for i in image.items] == ["image"]  # the image says more than its config hash
    assert "runs dsm-test/web:1.0 (dddddddddddd)" in image.items[0].change  # the digest it runs now
    assert image.items[0].change.endswith("left dsm-test/web:1.0 (a1)")  # the id recorded (no digest then)
    config = await check(settings, Engine(), "p", None, [container("c3", created=T0 + 10, config="h2")],  # type: ignore[arg-type]
                         operations=Journal(DEPLOYED))
    assert [(i.kind, i.since) for i in config.items] == [("config", iso(T0 + 10))]
    scaled = await check(settings, Engine(), "p", None, [container("c1"), container("c4", created=T0 + 20)],  # type: ignore[arg-type]
                         operations=Journal(DEPLOYED))
    assert [(i.kind, i.change, i.since) for i in scaled.items] == [("replicas", "1 -> 2 container(s)", iso(T0 + 20))]
    detached = await check(settings, Engine(), "p", None, [container("c1", networks=())],  # type: ignore[arg-type]
                           operations=Journal(DEPLOYED))
    assert [(i.kind, i.since) for i in detached.items] == [("network", f"after {iso(T0)}")]  # no event: bounded


async def test_a_newer_failed_deploy_stops_the_comparison(settings: Settings) -> None:
    recorded(settings)
    failed = op("deploy", "failed", T0 + 60, T0 + 90, op_id="op-failed")
    unchanged = op("deploy", "unchanged", T0 + 95, T0 + 96, op_id="op-same")
    report = await check(settings, Engine(), "p", None, [container("c7", config="h9")],  # type: ignore[arg-type]
                         operations=Journal(unchanged, failed, DEPLOYED))
    assert report.items == [] and report.note is not None and "op-failed (failed)" in (report.note or "")


async def test_files_written_by_our_restore_are_ours_edited_by_hand_are_drift(settings: Settings,
                                                                              stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "p", "services:\n  web:\n    image: dsm-test/web:1.0\n", env="A=1\n")
    recorded(settings, directory)
    (directory / ".env").write_text("A=2\n")
    os.utime(directory / ".env", (T0 + 40, T0 + 40))
    restore = op("restore", "done", T0 + 39, T0 + 41)
    mine = await check(settings, Engine(), "p", directory, [container("c1")], operations=Journal(DEPLOYED, restore))  # type: ignore[arg-type]
    assert mine.items == []
    hand = await check(settings, Engine(), "p", directory, [container("c1")], operations=Journal(DEPLOYED))  # type: ignore[arg-type]
    assert hand.lines() == [f"file files: .env edited since the deployment (since {iso(T0 + 40)})"]


async def test_the_list_is_bounded_and_a_plan_for_some_services_shows_theirs(settings: Settings) -> None:
    many = {f"s{n:02d}": ServiceBaseline(replicas=1, config_hash="h1", image="i", image_id="sha256:a1", digest=None,
                                         containers={f"x{n}": []}) for n in range(20)}
    recorded(settings, **many)
    report = await check(settings, Engine(), "p", None, [], operations=Journal(DEPLOYED))  # type: ignore[arg-type]
    assert len(report.items) == MAX_ITEMS and report.items[-1].change == f"and {20 - MAX_ITEMS + 1} more change(s)"
    some = await check(settings, Engine(), "p", None, [], services={"s03"}, operations=Journal(DEPLOYED))  # type: ignore[arg-type]
    assert [i.service for i in some.items] == ["s03"]


def test_the_watcher_alerts_for_protected_and_critical_stacks_only(settings: Settings, tmp_path: Path) -> None:
    from server.monitor.driftwatch import watched_because
    from server.monitor.stackpolicy import StackPolicy
    from server.xdsm import StackSettings

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("protected:\n  vault*: approve\n")
    watcher: Any = SimpleNamespace(runtime=SimpleNamespace(settings=dataclasses.replace(settings,
                                                                                       policy_path=policy_file)))
    location: Any = SimpleNamespace(directory=Path("/srv/stacks/other"))
    plain = StackPolicy()
    assert watched_because(watcher, "vaultwarden", location, plain) == (
        "protected by the safety policy (vault*: approve)")
    assert watched_because(watcher, "blog", location, plain) is None
    critical = StackPolicy(settings=StackSettings().model_copy(update={"critical": True}))
    assert watched_because(watcher, "blog", location, critical) == "critical stack (x-dsm)"
    assert driftcheck.NO_DEPLOYMENT == "no deployment recorded"


async def test_a_partial_deploy_keeps_the_drift_of_the_services_it_did_not_touch(settings: Settings,
                                                                                stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "p", "services:\n  web:\n    image: dsm-test/web:1.0\n")
    web = ServiceBaseline(replicas=1, config_hash="h1", image="dsm-test/web:1.0", image_id="sha256:a1", digest=None,
                          containers={"c1": ["p_default"]})
    recorded(settings, directory, web=web, db=dataclasses.replace(web, containers={"d1": ["p_default"]}))
    now = [container("c2", config="h2"), container("d2", service="db", created=T0 + 30)]  # db recreated by hand

    class Listing(Engine):
        async def compose_containers(self, project: str | None = None) -> list[ContainerSummary]:
            return now

    assert await baseline.record(settings, Listing(), "p", directory, "op-web", "deploy", ["web"])  # type: ignore[arg-type]
    after = baseline.load(settings, "p")
    assert after is not None and after.deployment_id == "op-web"
    assert list(after.services["web"].containers) == ["c2"] and list(after.services["db"].containers) == ["d1"]
    journal = Journal(op("deploy", "deployed", T0 + 40, T0 + 50, op_id="op-web"))
    report = await check(settings, Listing(), "p", directory, now, operations=journal)  # type: ignore[arg-type]
    assert [(i.kind, i.service) for i in report.items] == [("recreated", "db")]
    # A full deploy converges every service: all of it is the new record.
    assert await baseline.record(settings, Listing(), "p", directory, "op-all", "deploy")  # type: ignore[arg-type]
    assert list((baseline.load(settings, "p") or after).services["db"].containers) == ["d2"]
