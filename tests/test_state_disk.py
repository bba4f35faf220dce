"""A full or read-only state disk, and a stack directory deleted mid-deploy (issue 15): the
deploy says so instead of an internal error, and a rollback still ends cleanly with a true
message. The state directory is a tiny tmpfs (root only: skipped where mounting is refused)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.deploy import snapshots
from server.deploy.pipeline import Run, StepFailed
from server.deploy.transaction import Transaction
from server.settings import Settings
from tests.deploy_fakes import STACK, FakeExecutor, World, manifest, plan, record

OLD = "services:\n  web:\n    image: img/web:1\n"
NEW = "services:\n  web:\n    image: img/web:2\n"


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(state)],
                             capture_output=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=30)


def _fill(state: Path) -> None:
    subprocess.run(["sh", "-c", f"dd if=/dev/zero of={state}/filler bs=1k 2>/dev/null"], timeout=30)
    with pytest.raises(OSError):
        (state / "probe").write_bytes(b"x" * 8192)


def _read_only(state: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True, timeout=30)


@pytest.fixture
def world(tiny_state: Path, stacks_root: Path) -> World:
    settings = Settings(stacks_root=stacks_root, state_dir=tiny_state)
    directory = stacks_root / STACK
    directory.mkdir()
    (directory / "compose.yaml").write_text(OLD)
    snapshots.save(settings, STACK, "op-prev", directory)  # the last good deployment ran OLD
    (directory / "compose.yaml").write_text(NEW)
    w = World(settings, directory)
    w.ops.records = [record("op-prev", "2026-01-01T01:00:00Z",
                            result={"status": "deployed", "current_deployment": "op-prev"})]
    w.store.manifest = manifest("b-1", pins={"web": "dsm-pin/unit-web:b-1"})
    w.engine.add("web", image_id="sha256:old")
    return w


async def _failing_deploy(world: World, monkeypatch: pytest.MonkeyPatch, mid: Any) -> Any:
    run = Run(world.stack({"web": {"image": "img/web:2"}}))

    async def apply(_: Any) -> None:
        mid()  # the disk or the directory goes away while the deploy runs
        raise StepFailed("health", "web is unhealthy", "web", [])

    deployer = Transaction(world.runtime, FakeExecutor(world.runtime, apply))

    async def load_stack(*_: Any, **__: Any) -> Any:  # the old files, as the rollback renders them
        return run.stack

    monkeypatch.setattr("server.stackload.load_stack", load_stack)
    run.op = world.ops.begin(STACK, "deploy")
    return await deployer.execute(run, plan(web="recreate"), {}, ["web"], 30.0, 0.5)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["full", "read-only"])
async def test_rollback_runs_and_says_what_could_not_be_kept_when_the_state_disk_refuses_writes(
        world: World, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    state = world.settings.state_dir
    report = await _failing_deploy(world, monkeypatch, lambda: _fill(state) if how == "full" else _read_only(state))
    # The rollback itself ran (the old files back, the old images pinned, `up`), and says so.
    said = " ".join(p.detail for p in report.phases)  # the rollback's phases (server/deploy/rollback.py)
    assert report.status == "rolled_back", said
    [up] = [c for c in world.compose.calls if c.argv[0] == "up"]
    assert up.compose_text == OLD
    cause = "No space left on device" if how == "full" else "Read-only file system"
    assert f"the failed files could not be kept ({cause})" in said
    assert "files of deployment op-prev restored" in said


@pytest.mark.anyio
async def test_stack_directory_deleted_mid_deploy_ends_failed_with_the_cause(
        settings: Settings, stacks_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = stacks_root / STACK
    directory.mkdir()
    (directory / "compose.yaml").write_text(OLD)
    snapshots.save(settings, STACK, "op-prev", directory)
    (directory / "compose.yaml").write_text(NEW)
    world = World(settings, directory)
    world.ops.records = [record("op-prev", "2026-01-01T01:00:00Z",
                                result={"status": "deployed", "current_deployment": "op-prev"})]
    world.store.manifest = manifest("b-1", pins={"web": "dsm-pin/unit-web:b-1"})
    report = await _failing_deploy(world, monkeypatch, lambda: shutil.rmtree(directory))
    assert report.status == "failed" and report.rollback is not None and report.rollback.result == "failed"
    assert "No such file or directory" in report.phases[-1].detail and str(directory) in report.phases[-1].detail
    assert "NOT healthy" in report.next_steps[0]
    assert not [c for c in world.compose.calls if c.argv[0] == "up"]  # nothing was started from a directory gone


@pytest.mark.anyio
@pytest.mark.docker
async def test_deploy_on_a_full_state_disk_says_so_and_changes_nothing(
        tiny_state: Path, stacks_root: Path, project_name: str, docker_engine: None) -> None:
    from server.statedisk import StateUnwritable
    from tests.deploy_helpers import WEB_10, containers, deploy, runtime_for, web_stack, write

    runtime = runtime_for(Settings(stacks_root=stacks_root, state_dir=tiny_state))
    try:
        write(stacks_root, project_name, web_stack(project_name, WEB_10, volume=False))
        _fill(tiny_state)
        with pytest.raises(StateUnwritable) as refused:
            await deploy(runtime, project_name)
        text = str(refused.value)
        assert "the state directory cannot be written: No space left on device" in text
        assert "nothing was changed: the deploy did not start" in text and "engine" not in text
        assert containers(project_name) == []
    finally:
        runtime.close()
