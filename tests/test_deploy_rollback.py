"""The one rollback path (server/deploy/rollback.py), at the pipeline's own seams (fakes for the engine, Compose, the
journal, backups and memory; real files on disk): after a failed deploy, and on an explicit
rollback, what is put back, in which order, and what is recorded. The real engine tests
(tests/test_deploy_engine.py) are the test of the capability; these pin its decisions."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.deploy import override, rollback, snapshots
from server.deploy.executor import Change
from server.deploy.pipeline import Deployer
from server.deploy.report import DeployReport, RollbackInfo
from server.deploy.steps import Blocked, Run, StepFailed
from server.deploy.steps import end_journal as _end
from server.deploy.steps import maintenance_back as _maintenance_back
from server.deploy.targets import backup_after as _backup_after
from server.deploy.targets import targets as _targets
from server.deploy.transaction import Transaction
from server.errors import DsmError
from server.models import Finding
from server.settings import Settings
from tests.deploy_fakes import STACK, FakeExecutor, World, manifest, plan, record

pytestmark = pytest.mark.anyio

OLD = "services:\n  web:\n    image: img/web:1\n"
NEW = "services:\n  web:\n    image: img/web:2\n"
BEFORE = "services:\n  web:\n    image: img/web:before\n"
SECRET = "hunter2-very-secret"
T1, T2, T3, T4 = "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"
WEB_PIN = "dsm-pin/unit-web:b-1"


@pytest.fixture
def world(settings: Settings, stacks_root: Path) -> World:
    directory = stacks_root / STACK
    directory.mkdir()
    (directory / "compose.yaml").write_text(OLD)
    snapshots.save(settings, STACK, "op-prev", directory)  # the last good deployment ran OLD
    (directory / "compose.yaml").write_text(NEW)  # the user's edit being deployed
    return World(settings, directory)


def _history_prev(world: World) -> None:
    world.ops.records = [record("op-prev", T1, result={"status": "deployed", "current_deployment": "op-prev"})]


def _ph(report: DeployReport, name: str) -> Any:
    return next(p for p in report.phases if p.name == name)


async def _fail_deploy(world: World, stack: Any, the_plan: Any, failed: StepFailed | BaseException,
                       monkeypatch: pytest.MonkeyPatch, wait_s: float = 30.0, window: float = 0.0,
                       old_verify_s: float = 0) -> tuple[DeployReport, Run]:
    """Transaction.execute with the executor's apply failing the given way (the backup is the world's manifest)."""

    async def progress(step: float, total: float, message: str) -> None:
        told.append(message)

    told: list[str] = []
    world.told = told  # type: ignore[attr-defined]
    run = Run(stack)
    env, services = {"TAG": "2"}, ["web"]

    async def apply(change: Change) -> None:
        assert change == Change(stack, the_plan, services, wait_s, run.op)
        raise failed

    deployer = Transaction(world.runtime, FakeExecutor(world.runtime, apply), progress=progress)

    async def load_stack(settings: Any, compose: Any, *, path: str, env: Any = None, dsm_override: bool = True
                         ) -> Any:
        assert path == str(world.directory) and dsm_override is False  # the old files, without our pins
        # The old version's own verification window (x-dsm verify_s: 0 here), not the failed one's.
        return dataclasses.replace(stack, settings=stack.settings.model_copy(update={"verify_s": old_verify_s}))

    monkeypatch.setattr("server.stackload.load_stack", load_stack)
    run.op = world.ops.begin(STACK, "deploy")
    report = await deployer.execute(run, the_plan, env, services, wait_s, window)
    return report, run


# -- automatic rollback after a failed deploy -------------------------------------------------------
@pytest.mark.parametrize(("window", "old_verify_s", "expected"), [(5.0, 60, 5.0), (90.0, 20, 20.0)])
async def test_the_rollback_verifies_the_old_version_for_the_shorter_window(
        world: World, monkeypatch: pytest.MonkeyPatch, window: float, old_verify_s: float, expected: float) -> None:
    """The old version's own window, but never longer than the failed deploy's: a caller who asked
    for 5 s does not wait 60 for the rollback (found by a newcomer: 30 s after verify_s=5)."""
    windows: list[float] = []

    async def verify_window(*_: Any, window_s: float, **__: Any) -> Any:
        from server.deploy.verify import VerifyResult

        windows.append(window_s)
        return VerifyResult(True, summary="checked")

    monkeypatch.setattr("server.deploy.steps.verify_window", verify_window)
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web", image_id="sha256:old")
    stack = world.stack({"web": {"image": "img/web:2"}})
    report, _ = await _fail_deploy(world, stack, plan(web="recreate"), StepFailed("health", "web is unhealthy", "web"),
                                   monkeypatch, window=window, old_verify_s=old_verify_s)
    assert report.status == "rolled_back", report.phases
    assert windows == [expected]


async def test_failed_deploy_restores_last_good_files_before_up_with_previous_images_pinned(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web", image_id="sha256:old")
    stack = world.stack({"web": {"image": "img/web:2"}, "db": {"image": "pg"}}, secrets=frozenset({SECRET}))
    failed = StepFailed("health", "web is unhealthy", "web", ["web: probe failed", f"log: password={SECRET}"])
    the_plan = plan(web="recreate", db="unchanged")
    report, run = await _fail_deploy(world, stack, the_plan, failed, monkeypatch, wait_s=200.0)
    assert report.plan == the_plan and [s.name for s in report.services] == ["web"]
    assert run.image_ids == {"web": "sha256:old"}  # what runs now, for the journal's end record
    assert _ph(report, "rollback").detail == ("files of deployment op-prev restored; images pinned in "
                                              "compose.dsm.yaml: web; old version started")

    assert report.status == "rolled_back"
    assert report.rollback is not None and report.rollback.time_to_recover_s is not None
    assert report.rollback == RollbackInfo(why="health: web is unhealthy", to_deployment="op-prev", result="restored",
                                           time_to_recover_s=report.rollback.time_to_recover_s)
    assert report.backup_id == "b-1"
    # One `up`, on the last good deployment's files, with the images that ran before pinned.
    [up] = world.compose.calls
    assert up.argv == ["up", "-d", "--remove-orphans"] and up.what == "docker compose up (rollback)"
    assert up.compose_text == OLD and up.pins == {"web": WEB_PIN}
    # The wait, plus each service's stop grace period (10 s by default): it may have to stop any of them.
    assert up.kwargs["timeout_s"] == 200.0 + 10 * 2 and up.kwargs["on_start"] == run.op.child
    assert up.project.directory == world.directory and dict(up.project.env) == {"TAG": "2"}
    assert override.pinned_images(world.directory) == {"web": WEB_PIN}
    assert "compose.dsm.yaml" in (world.directory / ".env").read_text()
    # The failed files are kept next to the backup taken before the deploy.
    kept = world.settings.state_dir / "backups" / STACK / "b-1" / "failed-files" / "compose.yaml"
    assert kept.read_text() == NEW
    # The restored state is itself a deployment's files (a later rollback can return to it).
    assert snapshots.exists(world.settings, STACK, run.op.id + "-rollback")
    # Memory: the deployment rolled back, and an incident with the evidence.
    [dep] = world.memory.deployments
    assert dep["outcome"] == "rolled_back" and dep["services"] == ["web"] and dep["operation_id"] == run.op.id
    scrubbed = ["web: probe failed", "log: password=***"]  # the recorder scrubs what the memory stores
    assert dep["notes"] == "health failed: web is unhealthy" and dep["log_lines"] == scrubbed
    assert dep["stack"] == STACK and 0 <= dep["duration_s"] < 1
    [inc] = world.memory.incidents
    assert inc["title"] == "deploy of unit failed at health: web is unhealthy"
    assert inc["service"] == "web" and inc["severity"] == "high" and inc["source"] == "deploy"
    assert inc["stack"] == STACK and inc["time_to_recover_s"] == dep["duration_s"]
    assert inc["outcome"] == "rolled_back" and inc["deployment_id"] == "dep-1"
    assert inc["symptoms"].startswith("web is unhealthy. Evidence: web: probe failed | log: password=")
    assert inc["log_lines"] == scrubbed
    assert inc["resolution"].startswith("automatic rollback: files of deployment op-prev restored; images pinned")
    assert "previous version healthy" in inc["resolution"]
    assert report.incident_id == "inc-1"
    # The report carries the failure as a finding, evidence scrubbed.
    finding = report.findings[-1]
    assert (finding.rule, finding.severity, finding.service, finding.category) == (
        "deploy-failed", "error", "web", "deploy")
    assert finding.message == "web is unhealthy" and finding.evidence[0] == "web: probe failed"
    assert SECRET not in " ".join(finding.evidence) and len(finding.evidence) == 2
    # The old version passes the same checks as a deploy: gate, smoke, verification window.
    assert [p.name for p in report.phases] == ["backup", "rollback", "rollback_health", "rollback_smoke",
                                               "rollback_verify"]
    assert world.told == ["backup: files, pinned images, data", "rolling back: web is unhealthy",  # type: ignore[attr-defined]
                          "rollback health gate: waiting up to 200s", "rollback smoke tests",
                          "rollback verification window: 0s"]
    assert _ph(report, "rollback_health").detail == "1 service(s) ready"  # db has no container
    assert report.phases[0].detail == "backup b-1: 1 image(s) pinned, 0 volume(s), 0 dump(s)"
    assert any("b-1" in s for s in report.next_steps) and "web is unhealthy" in report.next_steps[0]
    assert world.store.created == [{"reason": f"before deploy {run.op.id}", "env": {"TAG": "2"}}]
    # Order: backup, then files + pins, then up, then the health of the old version, then memory.
    assert [e[0] for e in world.events] == ["begin", "backup", "compose", "memory", "memory"]


async def test_evidence_is_bounded_in_the_incident_and_the_finding(world: World,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web")
    evidence = [f"line {i}" for i in range(40)]
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                   StepFailed("verify", "x" * 900, "web", evidence), monkeypatch)
    [dep], [inc] = world.memory.deployments, world.memory.incidents
    assert dep["log_lines"] == evidence[-20:] and inc["log_lines"] == evidence[-30:]
    assert inc["symptoms"].endswith(" | ".join(evidence[:8])) and len(inc["title"]) == 200
    assert report.findings[-1].evidence == evidence[:15] and len(report.findings[-1].message) == 500
    assert report.rollback is not None and len(report.rollback.why) == 500
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                   StepFailed("verify", "x", "web", ["y" * 400]), monkeypatch)
    assert report.findings[-1].evidence == ["y" * 300]


@pytest.mark.parametrize("recorded", [False, True], ids=["no-earlier-deployment", "files-not-kept"])
async def test_without_the_last_good_files_the_backup_files_go_back(
        world: World, monkeypatch: pytest.MonkeyPatch, recorded: bool) -> None:
    if recorded:  # journaled as deployed, but its files were never kept
        world.ops.records = [record("op-lost", T1, result={"status": "deployed"})]
    world.store = type(world.store)(world.events, manifest("b-1", pins={"web": WEB_PIN}), {"compose.yaml": BEFORE})
    world.engine.add("web")
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                   StepFailed("up", "docker compose up failed"), monkeypatch)
    assert report.status == "rolled_back"
    assert report.rollback is not None and report.rollback.to_deployment == ("op-lost" if recorded else None)
    assert ("restore_files", "b-1") in world.events
    [up] = world.compose.calls
    assert up.compose_text == BEFORE and up.pins == {"web": WEB_PIN}
    assert "no earlier deployment recorded" in _ph(report, "rollback").detail


async def test_nothing_ran_before_removes_the_new_containers_and_keeps_volumes(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1")  # no image pinned: nothing ran
    report, run = await _fail_deploy(world, world.stack({"web": {}}), plan(web="create"),
                                     StepFailed("health", "web exited"), monkeypatch)
    [down] = world.compose.calls
    assert down.argv == ["down", "--remove-orphans"] and "-v" not in down.argv
    assert down.what == "docker compose down (rollback)" and down.kwargs.get("on_start") == run.op.child
    assert down.compose_text == OLD and down.pins == {} and dict(down.project.env) == {"TAG": "2"}
    assert report.status == "rolled_back"
    assert "nothing ran before: the new containers were removed, volumes kept" in report.phases[-1].detail


async def test_a_pinned_one_shot_that_completed_counts_as_healthy(world: World,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"migrate": "dsm-pin/unit-migrate:b-1"})
    world.engine.add("migrate", status="exited", health=None, exit_code=0)
    report, _ = await _fail_deploy(world, world.stack({"migrate": {}}, service_dsm={"migrate": {"one_shot": True}}),
                                   plan(migrate="recreate"), StepFailed("health", "x"), monkeypatch)
    assert report.status == "rolled_back", report.phases[-1].detail


async def test_previous_version_unhealthy_is_a_failed_rollback(world: World,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web", health="unhealthy")
    report, run = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                     StepFailed("health", "web is unhealthy", "web"), monkeypatch)
    assert report.status == "failed"
    assert report.rollback is not None and report.rollback.result == "failed"
    assert report.rollback.to_deployment == "op-prev"
    assert report.phases[-1].name == "rollback_health" and report.phases[-1].status == "failed"
    assert "web is unhealthy" in report.phases[-1].detail
    assert not snapshots.exists(world.settings, STACK, run.op.id + "-rollback")
    assert world.memory.deployments[0]["outcome"] == "rollback_failed"
    assert world.memory.incidents[0]["outcome"] == "unresolved"
    assert "NOT healthy" in report.next_steps[0]
    # The deploy's own backup holds the data of before the change.
    assert "backup_stack(action='restore', backup_id='b-1') puts back the data as deployment op-prev had it" \
        in report.next_steps[1]


async def test_a_rollback_step_that_fails_is_reported_not_raised(world: World,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.compose.fail = {"up"}
    report, run = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                     StepFailed("smoke", "smoke check failed", "web"), monkeypatch)
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"
    assert "rollback step failed: docker compose up failed: boom" in report.phases[-1].detail
    assert world.memory.incidents[0]["outcome"] == "unresolved"
    assert not snapshots.exists(world.settings, STACK, run.op.id + "-rollback")


DB = {"image": "pg"}
MIGRATE = {"image": "app", "depends_on": {"db": {"condition": "service_healthy"}}}
WEB_ON_DB = {"image": "app", "depends_on": {"db": {"condition": "service_healthy"}}}

# (services, changes, x-dsm per service, dumps in the backup, databases whose dump goes back)
DUMP_CASES = [
    ({"db": DB, "web": {}}, {"db": "recreate"}, {}, ("db",), ["db"]),
    ({"db": DB, "migrate": MIGRATE}, {"migrate": "recreate"}, {"migrate": {"one_shot": True}}, ("db",), ["db"]),
    ({"db": DB, "migrate": MIGRATE}, {"migrate": "create"}, {"migrate": {"role": "one-shot"}}, ("db",), ["db"]),
    ({"db": DB, "web": WEB_ON_DB}, {"web": "recreate"}, {}, ("db",), []),
    ({"db": DB, "migrate": MIGRATE}, {"db": "unchanged", "migrate": "unchanged"}, {"migrate": {"one_shot": True}},
     ("db",), []),
    ({"db": DB, "cache": {}, "migrate": {"depends_on": {"cache": {}}}}, {"migrate": "recreate"},
     {"migrate": {"one_shot": True}}, ("db",), []),
    ({"db": DB, "web": {}}, {"db": "recreate"}, {"db": {"backup": {"restore_on_rollback": False}}}, ("db",), []),
    ({"db": DB, "migrate": MIGRATE}, {"migrate": "recreate"},
     {"migrate": {"one_shot": True}, "db": {"backup": {"restore_on_rollback": False}}}, ("db",), []),
    ({"db": DB, "web": {}}, {"db": "recreate"}, {}, (), []),
    ({"db": DB, "db2": DB, "web": {}}, {"db2": "recreate", "db": "recreate"}, {}, ("db2", "db"), ["db", "db2"]),
    ({"db": DB, "db2": DB, "web": {}}, {"db2": "recreate", "db": "recreate"},
     {"db": {"backup": {"restore_on_rollback": False}}}, ("db2", "db"), ["db2"]),
]


@pytest.mark.parametrize(("services", "changes", "dsm", "dumps", "restored"), DUMP_CASES)
async def test_dumps_go_back_only_for_databases_the_failed_deploy_touched(
        world: World, monkeypatch: pytest.MonkeyPatch, services: dict[str, Any], changes: dict[str, str],
        dsm: dict[str, Any], dumps: tuple[str, ...], restored: list[str]) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"db": "dsm-pin/unit-db:b-1"}, dumps=dumps)
    for name in services:
        if name == "migrate":  # a one-shot that completed
            world.engine.add(name, status="exited", health=None, exit_code=0)
        else:
            world.engine.add(name)
    report, _ = await _fail_deploy(world, world.stack(services, service_dsm=dsm), plan(**changes),
                                   StepFailed("health", "x"), monkeypatch, wait_s=2)
    assert report.status == "rolled_back", report.phases
    data = [e for e in world.events if e[0] == "restore_data"]
    if restored:
        # Data first: the services that use it stopped, the databases started alone, the dumps (or
        # the volume archives where there is no dump) restored, then the rest of the old version.
        assert data == [("restore_data", "b-1", tuple(restored), True, True)]
        kinds = [e[0] for e in world.events]
        ups = [c.argv for c in world.compose.calls]
        assert ups == [["up", "-d", *sorted(set(restored) | set(dumps) & set(services))],
                       ["up", "-d", "--remove-orphans"]]
        assert kinds.index("compose") < kinds.index("restore_data")
        assert kinds.index("restore_data") < len(kinds) - 1 - kinds[::-1].index("compose")
        stopped = [e[1].split("-c")[0] for e in world.events if e[0] == "stop"]
        assert stopped == sorted(set(services) - set(dumps) - {"migrate"})  # a completed one-shot is not running
        assert all(kinds.index("stop") < kinds.index("compose") for _ in stopped[:1])
        detail = _ph(report, "restore_data").detail
        assert f"data restored from backup b-1: dump of {restored[0]} restored" in detail
        assert report.rollback is not None and report.rollback.data_check == "; ".join(
            f"{s}: restored, not verified: no row counts were recorded for this dump" for s in dumps if s in restored)
        assert _ph(report, "rollback_up").status == "ok"
    else:
        assert data == [] and "restore_data" not in [p.name for p in report.phases]
        assert [c.argv for c in world.compose.calls] == [["up", "-d", "--remove-orphans"]]
        assert report.rollback is not None and report.rollback.data_check is None


async def test_a_database_that_does_not_start_is_still_restored_then_judged(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore may bring it back (a volume archive, a fresh data directory): it is tried, and the
    old version must then pass the checks; here it still does not: `failed`, never `rolled_back`."""
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN}, dumps=("db",))
    world.engine.add("web")
    world.engine.add("db", status="exited", exit_code=3)
    report, _ = await _fail_deploy(world, world.stack({"db": DB, "web": {}}), plan(db="recreate"),
                                   StepFailed("health", "x"), monkeypatch)
    assert [e for e in world.events if e[0] == "restore_data"] == [("restore_data", "b-1", ("db",), True, True)]
    assert "database not healthy before the restore: db exited with code 3" in _ph(report, "restore_data").detail
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"
    assert _ph(report, "rollback_health").status == "failed" and "NOT healthy" in report.next_steps[0]


async def test_data_that_cannot_be_restored_leaves_its_users_stopped_and_fails(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN, "db": "dsm-pin/unit-db:b-1"}, dumps=("db",))
    world.engine.add("web")
    world.engine.add("db")

    async def broken(*_: Any, **__: Any) -> list[str]:
        raise DsmError("backup b-1 is damaged: dumps/db.sql: file missing")

    monkeypatch.setattr(world.store, "restore_data", broken)
    report, _ = await _fail_deploy(world, world.stack({"db": DB, "web": {}}), plan(db="recreate"),
                                   StepFailed("health", "x"), monkeypatch)
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"
    assert _ph(report, "restore_data").status == "failed"
    assert "data NOT restored from backup b-1: backup b-1 is damaged" in _ph(report, "restore_data").detail
    assert [c.argv for c in world.compose.calls] == [["up", "-d", "db"]]  # the app is never started
    assert ("stop", "web-c0") in world.events
    assert "data was NOT restored" in report.next_steps[0] and "web are left stopped" in report.next_steps[0]
    assert world.memory.incidents[0]["outcome"] == "unresolved"


# -- the transaction's decision to roll back --------------------------------------------------------
async def test_unchanged_and_healthy_takes_no_backup(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.engine.add("web", image_id="sha256:web")
    world.engine.add("db", status="exited", exit_code=1)  # not asked for (services=["web"])
    the_plan = plan(web="unchanged")
    report, run = await _fail_deploy(world, world.stack({"web": {}, "db": DB}), the_plan,
                                     StepFailed("health", "must not run"), monkeypatch)
    assert report.status == "unchanged" and world.store.created == [] and world.compose.calls == []
    assert [(p.name, p.status, p.detail) for p in report.phases] == [("health", "ok", "already running healthy")]
    assert report.plan == the_plan and [s.name for s in report.services] == ["db", "web"]
    assert run.image_ids == {"web": "sha256:web"} and report.next_steps[0].startswith("nothing to do")


async def test_unchanged_but_not_ready_goes_through_the_deploy(world: World,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web", status="exited", exit_code=1)
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="unchanged"),
                                   StepFailed("health", "web exited"), monkeypatch)
    assert report.status == "failed" and len(world.store.created) == 1  # backup, rollback, old version unhealthy


async def test_a_failed_backup_changes_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.store.fail_create = True
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"),
                                   StepFailed("health", "must not run"), monkeypatch)
    assert report.status == "failed" and report.rollback is None and world.compose.calls == []
    assert [(p.name, p.status) for p in report.phases] == [("backup", "failed")]
    assert report.phases[0].detail == "disk full"
    assert report.next_steps[0].startswith("the backup failed, so nothing was changed")
    assert report.plan is not None
    assert (world.directory / "compose.yaml").read_text() == NEW


async def test_blocked_after_the_backup_rolls_nothing_back(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    block = Blocked("pull", "image missing", [Finding(rule="image-unavailable", severity="error",
                                                      category="images", message="no such image")])
    report, _ = await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"), block, monkeypatch)
    assert report.status == "blocked" and report.rollback is None and world.compose.calls == []
    assert report.plan is not None and report.next_steps[0].startswith("nothing was changed")
    assert report.findings[-1].rule == "image-unavailable"
    assert [(p.name, p.status, p.detail) for p in report.phases][-1] == ("pull", "blocked", "image missing")
    assert (world.directory / "compose.yaml").read_text() == NEW and world.memory.incidents == []


async def test_an_interrupted_deploy_rolls_back_ends_the_journal_and_reraises(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web")
    with pytest.raises(RuntimeError, match="bug"):
        await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"), RuntimeError("bug"), monkeypatch)
    op = world.ops.begun[0]
    assert op.status == "rolled_back" and op.result["current_deployment"] == "op-prev"
    assert op.result["rollback"]["why"] == "deploy: interrupted: RuntimeError: bug"
    assert world.compose.calls[0].compose_text == OLD and dict(world.compose.calls[0].project.env) == {"TAG": "2"}


async def test_an_error_after_the_backup_never_says_nothing_was_changed(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine refusal raised mid-deploy carries the engine call's own state; once the backup is
    taken the deploy may have changed the stack, so the caller is told the state is unknown."""
    from server.errors import EngineError

    _history_prev(world)
    world.store.manifest = manifest("b-1", pins={"web": WEB_PIN})
    world.engine.add("web")
    refused = EngineError("the Docker engine refused to read logs", state="nothing was changed by this call")
    with pytest.raises(EngineError) as err:
        await _fail_deploy(world, world.stack({"web": {}}), plan(web="recreate"), refused, monkeypatch)
    assert "nothing was changed" not in str(err.value)
    assert "State: unknown" in str(err.value) and "stack_status and stack_history" in str(err.value)


async def test_success_records_the_deployment_and_keeps_its_files(world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world.engine.add("web", image_id="sha256:new")
    executor = FakeExecutor(world.runtime)
    deployer = Transaction(world.runtime, executor)
    run = Run(world.stack({"web": {}}))
    run.op = world.ops.begin(STACK, "deploy")
    report = await deployer.execute(run, plan(web="recreate"), {}, None, 30.0, 0.0)
    assert report.status == "deployed" and world.compose.calls == [] and len(executor.changes) == 1
    assert [p.name for p in report.phases] == ["backup", "health", "smoke", "verify", "record"]
    assert snapshots.exists(world.settings, STACK, run.op.id)
    assert world.runtime.memory_outbox().flush(5.0)  # the record is written after the answer
    assert world.memory.deployments[0]["outcome"] == "success" and run.image_ids == {"web": "sha256:new"}


# -- explicit rollback -------------------------------------------------------------------------------
def _explicit_world(world: World, monkeypatch: pytest.MonkeyPatch, **stack_kw: Any) -> None:
    """Deployed op-1 (OLD files, image sha256:old), then op-2 (NEW, backup b-2 taken before it)."""
    world.ops.records = [
        record("op-1", T1, result={"status": "deployed", "current_deployment": "op-1", "backup_id": "b-0",
                                   "image_ids": {"web": "sha256:old", "gone": "sha256:gone", "none": ""}}),
        record("op-2", T2, result={"status": "deployed", "current_deployment": "op-2", "backup_id": "b-2",
                                   "image_ids": {"web": "sha256:new"}}),
    ]
    snapshots.restore(world.settings, STACK, "op-prev", world.directory)  # OLD on disk...
    snapshots.save(world.settings, STACK, "op-1", world.directory)  # ...kept as op-1's files
    (world.directory / "compose.yaml").write_text(NEW)
    world.engine.images["sha256:old"] = {"Id": "sha256:old"}
    world.engine.add("web", image_id="sha256:old")
    service_dsm = {"migrate": {"one_shot": True}, **stack_kw.pop("service_dsm", {})}
    stack = world.stack({"web": {}, "db": DB, "migrate": {}}, service_dsm=service_dsm,
                        secrets=frozenset({SECRET}), x_dsm={"verify_s": 0, **stack_kw.pop("x_dsm", {})}, **stack_kw)
    world.engine.add("migrate", status="exited", health=None, exit_code=0)  # a one-shot that completed

    async def load_stack(settings: Any, compose: Any, *, path: str, env: Any = None, dsm_override: bool = True
                         ) -> Any:
        assert settings is world.settings and compose is world.compose and path == str(world.directory)
        return stack

    monkeypatch.setattr("server.stackload.load_stack", load_stack)


async def test_explicit_rollback_backs_up_then_restores_files_and_pins_images(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    world.ops.window = {"until": future, "reason": "user upgrade"}
    report = await Deployer(world.runtime).rollback(STACK, wait_timeout_s=5)
    op = world.ops.begun[0]
    assert report.status == "rolled_back", report.phases
    assert report.rollback is not None
    assert report.rollback == RollbackInfo(why="asked for", to_deployment="op-1", result="restored",
                                           time_to_recover_s=report.rollback.time_to_recover_s)
    assert world.ops.secrets == {SECRET}
    until = datetime.fromisoformat(str(world.ops.maintenance_calls[0][1]))
    assert 600 < (until - datetime.now(UTC)).total_seconds() <= 2 * 5 + 600  # two gates' time, and a margin
    assert op.params == {"to_deployment": "op-1", "restore_data": False, "reason": None}
    assert world.store.created[0]["reason"] == f"before rollback {op.id}"
    [up] = world.compose.calls
    assert up.argv == ["up", "-d", "--remove-orphans"] and up.what == "docker compose up (rollback)"
    assert up.compose_text == OLD and up.pins == {"web": "dsm-pin/unit-web:op-1"}
    assert up.kwargs["timeout_s"] == 120 + 10 * 3 and up.kwargs["on_start"] == op.child  # + each grace period
    assert ("tag", "sha256:old", "dsm-pin/unit-web:op-1") in world.events
    assert not [e for e in world.events if e[0] == "tag" and e[1] != "sha256:old"]
    kinds = [e[0] for e in world.events if e[0] != "memory"]  # the memory record follows via the outbox
    assert kinds == ["begin", "backup", "tag", "compose", "end"]
    # The journal says where the stack now is; the restored files are a deployment's files again.
    assert op.status == "rolled_back" and op.result["current_deployment"] == "op-1"
    assert op.result["image_ids"] == {"web": "sha256:old"}
    assert snapshots.exists(world.settings, STACK, op.id)
    assert world.runtime.memory_outbox().flush(5.0)
    [dep] = world.memory.deployments
    assert dep["outcome"] == "rolled_back" and dep["notes"] == "explicit rollback to op-1"
    assert dep["operation_id"] == op.id and dep["services"] == ["migrate", "web"] and dep["stack"] == STACK
    assert [(p.name, p.status) for p in report.phases] == [
        ("backup", "ok"), ("rollback", "ok"), ("rollback_health", "ok"), ("rollback_smoke", "skipped"),
        ("rollback_verify", "skipped")]
    assert report.phases[0].detail == "backup b-1 of the state being left"
    assert dep["image_digests"] == {"web": "sha256:old"} and [s.name for s in report.services] == ["migrate", "web"]
    assert report.next_steps[0].startswith("done;") and world.ops.maintenance_calls[0][0] == STACK
    assert "files of deployment op-1 restored; images pinned in compose.dsm.yaml: web" in report.phases[1].detail
    assert report.phases[2].detail == "2 service(s) ready"  # web and the completed one-shot
    assert "pinned in compose.dsm.yaml" in report.next_steps[0]
    # The user's maintenance window is put back after ours.
    assert world.ops.maintenance_calls[0][2] == f"rollback {op.id}"
    assert world.ops.maintenance_calls[-1] == (STACK, future, "user upgrade")


async def test_explicit_rollback_to_an_unhealthy_version_fails(world: World,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.engine.containers.clear()
    world.engine.add("web", health="unhealthy", image_id="sha256:old")
    report = await Deployer(world.runtime).rollback(STACK, wait_timeout_s=5)
    op = world.ops.begun[0]
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"
    assert op.status == "failed" and "current_deployment" not in op.result
    assert not snapshots.exists(world.settings, STACK, op.id)
    assert world.runtime.memory_outbox().flush(5.0)
    assert world.memory.deployments[0]["outcome"] == "rollback_failed"
    assert report.phases[-1].status == "failed" and "web is unhealthy" in report.phases[-1].detail
    assert report.next_steps[0].startswith("the stack is on deployment op-1 but NOT healthy")
    assert world.ops.maintenance_calls[-1] == (STACK, None, "")
    # The data of before the change is in b-2 (taken right after op-1); b-1, taken just before this
    # rollback, holds the broken state and is never offered as the data to go back to.
    assert "backup_stack(action='restore', backup_id='b-2') puts back the data as deployment op-1 had it" \
        in report.next_steps[1]
    assert "backup_id='b-1'" not in report.next_steps[1] and "backup b-1 holds the state just left, the broken " \
        "one" in report.next_steps[1]


async def test_a_failed_explicit_rollback_without_a_data_backup_says_none_is_known(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.ops.records[1].result.pop("backup_id")
    world.engine.containers.clear()
    world.engine.add("web", health="unhealthy", image_id="sha256:old")
    report = await Deployer(world.runtime).rollback(STACK, wait_timeout_s=5)
    assert report.status == "failed"
    assert "no backup holding the data of deployment op-1 is known" in report.next_steps[1]
    assert "backup_stack(action='restore'" not in report.next_steps[1]


async def test_explicit_rollback_without_the_image_pins_nothing(world: World,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.engine.images.clear()
    report = await Deployer(world.runtime).rollback(STACK, wait_timeout_s=5)
    assert report.status == "rolled_back" and not [e for e in world.events if e[0] == "tag"]
    assert world.compose.calls[0].pins == {} and not (world.directory / "compose.dsm.yaml").exists()
    assert "images pinned in compose.dsm.yaml: none" in report.phases[1].detail


async def test_explicit_rollback_with_restore_data_uses_the_backup_taken_right_after_the_target(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.store.manifests["b-2"] = manifest("b-2", dumps=("db", "db2"))
    world.engine.add("db")
    world.engine.add("db2")
    report = await Deployer(world.runtime).rollback(STACK, restore_data=True, confirm=True, wait_timeout_s=5)
    assert report.status == "rolled_back"
    assert world.store.restored_data == [{"backup": "b-2", "services": None, "volumes": True, "dumps": True}]
    # The users of the data stopped, the databases alone, the data, then the rest of the old version.
    assert [c.argv for c in world.compose.calls] == [["up", "-d", "db"], ["up", "-d", "--remove-orphans"]]
    kinds = [e[0] for e in world.events]
    assert kinds.index("stop") < kinds.index("compose") < kinds.index("restore_data") < kinds.index("compose",
        kinds.index("restore_data"))
    phase = next(p for p in report.phases if p.name == "restore_data")
    assert phase.status == "ok" and "data restored from backup b-2: dump of db restored, dump of db2 restored" in \
        phase.detail
    assert world.ops.begun[0].params == {"to_deployment": "op-1", "restore_data": True, "reason": None}


async def test_restore_data_into_a_database_that_does_not_start_is_tried_then_judged(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.store.manifests["b-2"] = manifest("b-2", dumps=("db",))
    world.engine.add("db", status="exited", exit_code=1)
    report = await Deployer(world.runtime).rollback(STACK, restore_data=True, confirm=True, wait_timeout_s=5)
    assert world.store.restored_data == [{"backup": "b-2", "services": None, "volumes": True, "dumps": True}]
    phase = next(p for p in report.phases if p.name == "restore_data")
    assert "database not healthy before the restore: db exited with code 1" in phase.detail
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"


async def test_restore_data_without_a_later_backup_says_so(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.ops.records[1].result.pop("backup_id")
    report = await Deployer(world.runtime).rollback(STACK, restore_data=True, confirm=True, wait_timeout_s=5)
    phase = next(p for p in report.phases if p.name == "restore_data")
    assert (phase.status, phase.detail) == ("failed", "no backup taken when that deployment was left")
    assert world.store.restored_data == []


@pytest.mark.parametrize(("records", "to", "message"), [
    ([], None, "no earlier successful deployment of 'unit' to roll back to"),
    ([record("op-1", T1, result={"status": "deployed"})], None,
     "no earlier successful deployment of 'unit' to roll back to"),
    ([record("op-1", T1, result={"status": "deployed"})], "op-9",
     "no earlier successful deployment of 'unit' to roll back to (asked for op-9)"),
    ([record("op-0", T1, result={"status": "deployed"}), record("op-1", T2, result={"status": "deployed"})], None,
     "the files of deployment op-0 were not kept"),
])
async def test_a_rollback_with_nowhere_to_go_says_so_and_changes_nothing(
        world: World, records: list[Any], to: str | None, message: str) -> None:
    world.ops.records = records
    with pytest.raises(DsmError) as err:
        await Deployer(world.runtime).rollback(STACK, to_deployment=to)
    assert err.value.what == message and err.value.state == "nothing was changed"
    assert world.ops.begun == [] and world.compose.calls == [] and world.store.created == []


@pytest.mark.parametrize(("restore_data", "critical", "answer", "asked"), [
    (True, False, None, True), (False, True, None, True), (True, False, False, True), (False, True, False, True)])
async def test_overwriting_state_needs_confirmation(world: World, monkeypatch: pytest.MonkeyPatch,
                                                    restore_data: bool, critical: bool, answer: bool | None,
                                                    asked: bool) -> None:
    _explicit_world(world, monkeypatch, x_dsm={"critical": True} if critical else {})
    questions: list[str] = []

    async def confirm(question: str) -> bool:
        questions.append(question)
        return bool(answer)

    deployer = Deployer(world.runtime, confirm=confirm if answer is not None else None)
    with pytest.raises(DsmError, match="needs confirmation") as err:
        await deployer.rollback(STACK, restore_data=restore_data)
    assert err.value.state == "nothing was changed" and world.ops.begun == []
    assert err.value.what == ("rolling back " + ("with restore_data " if restore_data else "a critical stack ")
                              + "overwrites state and needs confirmation")
    if answer is not None:
        assert questions == [f"Roll back 'unit' to op-1{' and overwrite its data with the backup' * restore_data}?"]


async def test_a_critical_stack_rolls_back_once_the_user_agrees(world: World,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch, service_dsm={"db": {"critical": True}})

    async def confirm(question: str) -> bool:
        return True

    report = await Deployer(world.runtime, confirm=confirm).rollback(STACK, wait_timeout_s=5)
    assert report.status == "rolled_back"


async def test_a_critical_stack_is_not_rolled_back_unasked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch, service_dsm={"db": {"critical": True}})
    with pytest.raises(DsmError, match="a critical stack"):
        await Deployer(world.runtime).rollback(STACK)
    report = await Deployer(world.runtime).rollback(STACK, confirm=True, wait_timeout_s=5)
    assert report.status == "rolled_back"


async def test_a_busy_stack_is_answered_busy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.ops.busy = True
    report = await Deployer(world.runtime).rollback(STACK)
    assert report.status == "busy" and report.operation_id == "op-holder"
    assert report.next_steps == ["poll operation_status('op-holder')"] and world.compose.calls == []


async def test_rollback_to_a_named_deployment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.ops.records.append(record("op-3", T3, result={"status": "deployed", "current_deployment": "op-3"}))
    report = await Deployer(world.runtime).rollback(STACK, to_deployment="op-1", wait_timeout_s=5)
    assert report.rollback is not None and report.rollback.to_deployment == "op-1"


# -- the decisions, one by one ----------------------------------------------------------------------
D1 = record("d1", T1)
D2 = record("d2", T2)
D3 = record("d3", T3)
F3 = record("f3", T3, status="failed")
R3 = record("r3", T3, status="rolled_back", kind="rollback", result={"status": "rolled_back",
                                                                     "current_deployment": "d1"})
R3B = record("r3b", T3, status="rolled_back", kind="rollback", result={"status": "rolled_back"})
D4 = record("d4", T4)
EMPTY3 = record("e3", T3, result={})
DR = record("dr", T3, kind="rollback")

TARGETS = [
    ([], None, (None, None)),
    ([D1], None, ("d1", None)),
    ([D2, D1], None, ("d2", "d1")),
    ([D3, D2, D1], None, ("d3", "d2")),
    ([F3, D2, D1], None, ("d2", "d1")),  # a failed deploy is not where the stack is
    ([EMPTY3, D2, D1], None, ("d2", "d1")),  # nor one without a result
    ([R3, D2, D1], None, ("d1", None)),  # rolled back to d1: nothing before it
    ([D4, R3, D2, D1], None, ("d4", "d2")),  # a rollback is never a target
    ([R3B, D2, D1], None, ("r3b", "d2")),  # a rollback without current_deployment is where it is
    ([DR, D2, D1], None, ("dr", "d2")),  # only deploys are targets
    ([record("r5", T3, status="rolled_back", kind="rollback", result={"current_deployment": "d0"}), D2], None,
     ("r5", "d2")),  # rolled back to one no longer in the history read: where it is, is the rollback
    # An interrupted deploy, or one that failed after its backup (its rollback failed), left the
    # stack off the last good deployment: rollback() returns to that one, not to the one before it.
    ([record("i3", T3, status="interrupted", result={}), D2, D1], None, ("d2", "d2")),
    ([record("i3", T3, status="running", result={}), D2, D1], None, ("d2", "d2")),
    ([record("f3", T3, status="failed", result={"backup_id": "b-3"}), D2, D1], None, ("d2", "d2")),
    ([record("f3", T3, status="failed", kind="rollback", result={"backup_id": "b-3"}), D2, D1], None,
     ("d2", "d2")),
    ([record("f3", T3, status="failed", result={"status": "failed"}), D2, D1], None, ("d2", "d1")),  # no backup
    ([record("i4", T4, status="interrupted", result={}), R3, D2, D1], None, ("d1", "d1")),
    # A deploy (an update) that failed and rolled itself back to d2: the stack runs d2 again, so an
    # explicit rollback goes on to d1 (going "back" to d2 would change nothing).
    ([record("u3", T3, status="rolled_back", result={"status": "rolled_back", "current_deployment": "d2"}), D2, D1],
     None, ("d2", "d1")),
    ([D4, record("i3", T3, status="interrupted", result={}), D2], None, ("d4", "d2")),  # deployed since
    # What ran before us, adopted, is a deployment like any other.
    ([D2, record("a1", T1, status="adopted")], None, ("d2", "a1")),
    ([record("a1", T1, status="adopted")], None, ("a1", None)),
    ([D3, D2, D1], "d1", ("d3", "d1")),
    ([D3, D2, D1], "r3", ("d3", None)),
    ([D3, R3, D2], "r3", ("d3", None)),
    ([D3, D2, D1], "d9", ("d3", None)),
    ([F3], "f3", (None, None)),
    ([], "d1", (None, None)),
]


@pytest.mark.parametrize(("history", "to", "expected"), TARGETS)
def test_targets(history: list[Any], to: str | None, expected: tuple[str | None, str | None]) -> None:
    current, target = _targets(history, to)
    assert (current and current.operation_id, target and target.operation_id) == expected


def test_targets_with_same_time_current_is_not_its_own_target() -> None:
    twin = record("d2b", T2)
    assert _targets([twin, D2], None)[1] is None
    assert _targets([D2, record("d1b", T1, kind="deploy", status="deployed"), D1], None)[1].operation_id == "d1b"


def _with_backup(op_id: str, at: str, backup: str | None) -> Any:
    return record(op_id, at, result={"status": "deployed", **({"backup_id": backup} if backup else {})})


@pytest.mark.parametrize(("history", "expected"), [
    ([], None),
    ([_with_backup("x", T1, "b-x")], None),  # the target itself
    ([_with_backup("y", T2, None)], None),
    ([_with_backup("z", T4, "b-4"), _with_backup("y", T3, "b-3"), _with_backup("w", T2, None)], "b-3"),
    ([_with_backup("y", T3, "b-3"), _with_backup("z", T4, "b-4")], "b-3"),
    ([_with_backup("v", "2026-01-01T00:00:00Z", "b-0"), _with_backup("z", T4, "b-4")], "b-4"),
])
def test_backup_after_is_the_first_backup_after_the_target(history: list[Any], expected: str | None) -> None:
    assert _backup_after(history, record("x", T1)) == expected


def test_backup_after_is_the_last_time_the_stack_left_the_target() -> None:
    """The stack returned to x twice (a deploy that rolled itself back, an explicit rollback): its data
    is the backup taken when it last left x, not the first (rows written since would be lost)."""
    def op(op_id: str, at: str, backup: str, status: str = "deployed", to: str | None = None,
           kind: str = "deploy") -> Any:
        return record(op_id, at, status=status, kind=kind, result={
            "status": status, "backup_id": backup, "current_deployment": to or op_id})

    t = [f"2026-01-01T01:0{i}:00Z" for i in range(1, 8)]
    history = [op("f1", t[0], "b-f1", "rolled_back", to="x"),  # left x, returned to it
               op("y", t[1], "b-y"),                            # left x again
               op("r", t[2], "b-r", "rolled_back", to="x", kind="rollback"),  # back to x
               op("z", t[3], "b-z")]                            # left x the last time
    assert _backup_after(history, record("x", T1)) == "b-z"
    # An interrupted deploy left the stack unknown: a rollback's backup of that state is not x's data.
    broken = [record("i", t[0], status="interrupted", result={"backup_id": "b-i"}),
              op("r2", t[1], "b-r2", "rolled_back", to="x", kind="rollback")]
    assert _backup_after(broken, record("x", T1)) == "b-i"


async def test_last_good(world: World) -> None:
    deployer = Deployer(world.runtime)
    world.ops.records = [D2, D1]
    assert rollback._last_good(deployer, STACK, exclude="op-now") == "d2"
    assert rollback._last_good(deployer, STACK, exclude="d2") == "d1"  # the running deploy is never the target
    world.ops.records = [record("i3", T3, status="interrupted"), D2, D1]
    assert rollback._last_good(deployer, STACK, exclude="op-now") == "d2"
    world.ops.records = []
    assert rollback._last_good(deployer, STACK, exclude="op-now") is None
    world.ops.records = [D2]
    world.ops.history_fails = True
    assert rollback._last_good(deployer, STACK, exclude="op-now") is None


def _report(status: str, rollback: RollbackInfo | None = None) -> DeployReport:
    return DeployReport(status=status, stack=STACK, rollback=rollback)  # type: ignore[arg-type]


@pytest.mark.parametrize(("report", "status", "current"), [
    (None, "failed", "absent"),
    (_report("deployed"), "deployed", "op-deploy-1"),
    (_report("rolled_back", RollbackInfo(why="x", to_deployment="d1", result="restored")), "rolled_back", "d1"),
    (_report("rolled_back"), "rolled_back", "missing"),
    (_report("failed", RollbackInfo(why="x", to_deployment="d1", result="failed")), "failed", "missing"),
    (_report("unchanged"), "unchanged", "missing"),
])
def test_end_records_where_the_stack_now_is(world: World, report: DeployReport | None, status: str,
                                            current: str) -> None:
    run = Run(world.stack({"web": {}}))
    run.op = world.ops.begin(STACK, "deploy")
    run.image_ids = {"web": "sha256:a"}
    _end(run, report)
    assert run.op.status == status
    if current == "absent":
        assert run.op.result is None
    else:
        assert run.op.result.get("current_deployment", "missing") == current
        assert run.op.result["image_ids"] == {"web": "sha256:a"} and "plan" not in run.op.result
        assert run.op.result["status"] == status


def test_end_is_written_once_and_never_raises(world: World) -> None:
    run = Run(world.stack({"web": {}}))
    _end(run, None)  # no operation: nothing to end
    run.op = world.ops.begin(STACK, "deploy")
    _end(run, _report("deployed"))
    _end(run, _report("failed"))  # already ended: the first end stands
    assert run.op.status == "deployed" and run.op.end_calls == 1

    class Broken:
        id, ended = "op-x", False

        def end(self, *_: Any) -> None:
            raise OSError("disk full")

    run.op = Broken()
    _end(run, None)


def _iso(delta_s: float, z: bool = False) -> str:
    text = (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if z else text


@pytest.mark.parametrize(("previous", "expected"), [
    (None, []),
    ({}, [(STACK, None, "")]),
    ({"until": None, "reason": "x"}, [(STACK, None, "")]),
    ({"until": "future", "reason": "user work"}, [(STACK, "future", "user work")]),
    ({"until": "future-z", "reason": None}, [(STACK, "future-z", "")]),
    ({"until": "past", "reason": "old"}, [(STACK, None, "")]),
])
def test_maintenance_window_is_put_back(world: World, previous: dict[str, Any] | None,
                                        expected: list[tuple[str, str | None, str]]) -> None:
    values = {"future": _iso(3600), "future-z": _iso(3600, z=True), "past": _iso(-60)}
    if previous and previous.get("until") in values:
        previous = {**previous, "until": values[previous["until"]]}
    _maintenance_back(world.ops, STACK, previous)
    assert world.ops.maintenance_calls == [(s, values.get(u, u) if u else u, r) for s, u, r in expected]


def test_maintenance_window_failure_is_not_raised(world: World) -> None:
    world.ops.maintenance_fails = True
    _maintenance_back(world.ops, STACK, {"until": _iso(3600), "reason": "x"})
    _maintenance_back(world.ops, STACK, {"until": "not a time"})


async def test_an_explicit_rollback_that_breaks_still_ends_the_journal(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    world.store.fail_create = True
    with pytest.raises(OSError, match="disk full"):
        await Deployer(world.runtime).rollback(STACK, wait_timeout_s=5)
    op = world.ops.begun[0]
    assert op.status == "failed" and op.result is None  # the stack's lock is released with it
    assert world.ops.maintenance_calls[-1] == (STACK, None, "")
    assert world.compose.calls == [] and (world.directory / "compose.yaml").read_text() == NEW


async def test_an_explicit_rollback_waits_three_minutes_by_default(world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _explicit_world(world, monkeypatch)
    report = await Deployer(world.runtime).rollback(STACK)
    assert report.status == "rolled_back"
    until = datetime.fromisoformat(str(world.ops.maintenance_calls[0][1]))
    assert 2 * 180 + 590 < (until - datetime.now(UTC)).total_seconds() <= 2 * 180 + 600
    assert world.compose.calls[0].kwargs["timeout_s"] == 180 + 10 * 3  # + each service's stop grace period


# -- adopting what ran before us --------------------------------------------------------------------
def test_adopt_records_what_ran_once_just_before_the_operation(world: World) -> None:
    from types import SimpleNamespace

    from server.deploy.targets import adopt_if_new
    from server.operations import Operations
    from server.operations.views import DeploymentEntry, ImageRef

    ops = Operations(world.settings)
    runtime = SimpleNamespace(settings=world.settings, operations=lambda: ops)
    stack = world.stack({"web": {}})
    assert adopt_if_new(runtime, stack, manifest("b-0")) is None  # nothing ran: nothing to go back to
    op_id = adopt_if_new(runtime, stack, manifest("b-1", pins={"web": WEB_PIN}), before="2026-01-01T00:00:00.000Z")
    record_ = ops.get(op_id or "")
    assert record_ is not None and (record_.kind, record_.status) == ("deploy", "adopted")
    assert record_.started_at == "2025-12-31T23:59:59.999Z"
    assert record_.result is not None and record_.result["image_ids"] == {"web": "sha256:web"}
    assert record_.result["current_deployment"] == op_id
    assert snapshots.exists(world.settings, STACK, record_.operation_id)
    entry = DeploymentEntry.of(record_)
    assert entry.backup_id == "b-1" and entry.images == [ImageRef(service="web", image="img/web")]
    assert entry.detail is not None and entry.detail.startswith("adopted: what ran before")
    assert adopt_if_new(runtime, stack, manifest("b-2", pins={"web": WEB_PIN})) is None  # known now
    assert _targets(ops.history(STACK), None)[0].operation_id == op_id


def test_adoption_never_fails_its_caller(world: World) -> None:
    from types import SimpleNamespace

    from server.deploy.targets import adopt_if_new

    def broken() -> Any:
        raise OSError("journal unreadable")

    runtime = SimpleNamespace(settings=world.settings, operations=broken)
    assert adopt_if_new(runtime, world.stack({"web": {}}), manifest("b-1", pins={"web": WEB_PIN})) is None


def test_an_interrupted_operation_names_its_backup(world: World) -> None:
    from server.operations import Operations
    from server.operations.views import DeploymentEntry

    ops = Operations(world.settings)
    op = ops.begin(STACK, "deploy")
    op.phase("backup", "ok", "backup 20260101T000000Z-abcdef: 1 image(s) pinned, 0 volume(s), 0 dump(s)")
    op._lock.release()  # its server died: the next begin recovers it
    ops.begin(STACK, "rollback").end("failed", {})
    record_ = ops.get(op.id)
    assert record_ is not None and record_.status == "interrupted" and record_.result is not None
    assert record_.result["backup_id"] == "20260101T000000Z-abcdef"
    assert DeploymentEntry.of(record_).backup_id == "20260101T000000Z-abcdef"


@pytest.mark.parametrize(("now", "ok", "summary"), [
    ({"postgres.public.items": 250}, True, "db: 1 table(s), 250 row(s) as dumped"),
    ({"postgres.public.items": 0}, False, "db: MISMATCH postgres.public.items 0 rows, dumped 250"),
    ({}, False, "db: MISMATCH postgres.public.items missing rows, dumped 250"),
    ({"postgres.public.items": 250, "postgres.public.new": 1}, False,
     "db: MISMATCH postgres.public.new not in the dump"),
    (None, False, "db: rows could not be counted after the restore"),
])
async def test_data_check_compares_rows_with_the_dump(world: World, now: dict[str, int] | None, ok: bool,
                                                      summary: str) -> None:
    from server.deploy.datacheck import data_check

    world.engine.add("db")
    dump = manifest("b-1", dumps=("db", "cache")).dumps
    backup = manifest("b-1").model_copy(update={"dumps": [
        dump[0].model_copy(update={"tables": {"postgres.public.items": 250}}),
        dump[1].model_copy(update={"kind": "redis"})]})

    class Store:
        async def exec_counts(self, container_id: str, recipe: Any) -> dict[str, int] | None:
            assert container_id == "db-c0" and recipe.kind == "postgres"
            return now

    result = await data_check(world.engine, Store(), STACK, backup, ["db"])  # type: ignore[arg-type]
    assert result == (ok, summary)
    assert (await data_check(world.engine, Store(), STACK, backup, None))[1].endswith(  # type: ignore[arg-type]
        "; cache: restored, not verified: no row counts were recorded for this dump")


async def test_a_hooks_dump_of_postgres_is_recounted_as_postgres_and_a_mismatch_fails(world: World) -> None:
    # x-dsm hooks without --clean replay over the failed version's rows: the recount shows it.
    from server.deploy.datacheck import data_check

    world.engine.add("db")
    dump = manifest("b-1", dumps=("db",)).dumps[0].model_copy(update={
        "kind": "hooks", "counted_as": "postgres", "tables": {"postgres.public.items": 250}})
    backup = manifest("b-1").model_copy(update={"dumps": [dump]})

    class Store:
        async def exec_counts(self, container_id: str, recipe: Any) -> dict[str, int] | None:
            assert recipe.kind == "postgres" and recipe.counts
            return {"postgres.public.items": 200}

    assert await data_check(world.engine, Store(), STACK, backup, None) == (  # type: ignore[arg-type]
        False, "db: MISMATCH postgres.public.items 200 rows, dumped 250")
