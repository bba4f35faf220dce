"""Everything under DSM_STATE_DIR is private: directories 0700, files 0600 (README, state layout).

On main, after a deploy, a backup and a watcher round, backups/, deployments/ snapshots, failed
files, alerts/, watcher/ and the memory shard and outbox held 0644 files and 0755 directories
(under the usual umask 022): copies of ``.env`` and rendered models readable by every local user.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.deploy import snapshots
from server.settings import Settings
from server.statefiles import copy_private, private_dir, tighten, write_private
from tests.deploy_helpers import WEB_10, WEB_BROKEN, deploy, runtime_for, web_stack, write
from tests.helpers_monitor import alert_receiver


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def loose(root: Path) -> list[str]:
    """Every path under ``root`` (root included) that is not 0700 (directory) or 0600 (file)."""
    bad = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            bad.append(f"{path.relative_to(root)} {oct(mode)}")
    return bad


def test_the_helpers_ignore_the_umask(tmp_path: Path, umask_022: None) -> None:
    deep = private_dir(tmp_path / "a" / "b" / "c")
    write_private(deep / "f.json", "{}")
    source = tmp_path / "src.env"
    source.write_text("A=1\n")
    source.chmod(0o644)
    copy_private(source, deep / "copy.env")
    (deep / "lib").mkdir()
    (deep / "lib" / "x").write_text("x")
    tighten(deep / "lib")
    assert loose(tmp_path / "a") == []
    assert (deep / "copy.env").read_text() == "A=1\n"


def test_snapshots_and_failed_files_are_private(settings: Settings, stacks_root: Path, umask_022: None) -> None:
    stack = write(stacks_root, "app", "services: {web: {image: x:1}}\n", env="PASSWORD=s3cret\n")
    (stack / ".env").chmod(0o644)
    snapshots.save(settings, "app", "op-1", stack)
    snapshots.keep_failed(settings, "app", "b-1", stack)
    assert loose(settings.state_dir) == []


@pytest.mark.anyio
@pytest.mark.docker
async def test_a_deploy_backup_and_watcher_round_leaves_only_private_state(
        docker_engine: None, settings: Settings, stacks_root: Path, project_name: str, umask_022: None) -> None:
    from server.backups import service
    from server.monitor.alerts import Alert, Alerter
    from server.monitor.watcher import Watcher
    from server.stacks import locate_stack
    from tests.deploy_helpers import remove_pins

    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10), env="API_TOKEN=s3cret-token\n")
    with alert_receiver() as (url, _received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = runtime_for(s)
        try:
            assert (await deploy(runtime, project_name)).status == "deployed"
            crash = "    environment: {WEB_CRASH_AFTER: '0'}\n"
            (directory / "compose.yaml").write_text(web_stack(project_name, WEB_BROKEN, extra=crash))
            assert (await deploy(runtime, project_name, wait_timeout_s=30)).status == "rolled_back"
            await service.create(runtime, locate_stack(s, project_name), "test", None)
            await Watcher(runtime, interval_s=1.0, alerter=Alerter(s)).tick()
            await Alerter(s).send(Alert(key="k", level="warning", title="t", what_broke="b"))
            assert runtime.memory_outbox().flush(10.0)
            runtime.memory().search_incidents("failed", stack=project_name)
        finally:
            runtime.close()
            remove_pins(project_name)
    state = s.state_dir
    for expected in ("backups", "deployments", "journal", "locks", "watcher", "alerts", "memory"):
        assert (state / expected).is_dir(), expected
    assert list((state / "backups" / project_name).glob("*/failed-files"))
    assert list((state / "backups" / project_name).glob("*/volumes/*.tar"))
    assert loose(state) == []
