"""A database can always be brought back, a damaged dump is refused, and a server killed
mid-backup leaves nothing stopped or stuck (real engine, real PostgreSQL 15 built locally).

The scenario of issue 14: a new version rewrote the database's data directory and failed; the old
server refuses the directory (here: PG_VERSION says 99) and the database is down. backup_stack
restore (server.backups.service.restore, the tool's core) brings it back with every row: from the
volume archive when the backup has one, else by replaying the dump into a fresh data directory,
keeping what the volume held. Issue 15: a SIGKILLed server mid-backup left the database it had
stopped for archiving stopped and its helper container holding the volume; the next start's
recovery starts the one and removes the other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.backups import service
from server.errors import BackupFailed, EngineError
from server.runtime import Runtime
from server.settings import Settings
from server.stackload import load_stack
from tests.conftest import REPO, write_stack
from tests.test_backups import BUSYBOX, POSTGRES, compose_up, container_of, leftovers, sh

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

PASSWORD = "Pg-" + uuid.uuid4().hex[:12]
STACK = """\
name: {name}
services:
  db:
    image: {db_image}
    environment:
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD}}
      POSTGRES_DB: app
    volumes: [pgdata:/var/lib/postgresql/data]
{db_extra}  web:
    image: {web_image}
    init: true
volumes:
  pgdata: {{}}
"""
FAILING_DUMP = """    x-dsm:
      backup:
        dump: ["sh", "-c", "echo no dump here >&2; exit 3"]
"""


def psql(project: str, sql: str) -> str:
    db = container_of(project, "db")
    return sh("docker", "exec", db, "psql", "-X", "-At", "-U", "postgres", "-d", "app", "-c", sql).strip()


async def wait_ready(project: str) -> None:
    """Until the server accepts connections on the socket psql() uses (it was just started)."""
    for _ in range(60):
        if subprocess.run(["docker", "exec", container_of(project, "db"), "pg_isready", "-q"],
                          timeout=30).returncode == 0:
            return
        await anyio.sleep(1)
    raise AssertionError(f"{project}: PostgreSQL not ready after 60 s")


def state_of(project: str, service: str) -> str:
    out = sh("docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "--filter",
             f"label=com.docker.compose.service={service}", "--format", "{{.State}}")
    return out.strip()


def break_data_directory(project: str) -> None:
    """What an in-place major upgrade leaves to the old server: a directory it refuses. Then down."""
    db = container_of(project, "db")
    sh("docker", "exec", db, "sh", "-c", "echo 99 > /var/lib/postgresql/data/PG_VERSION")
    sh("docker", "stop", db)
    sh("docker", "start", db)  # the old server refuses the directory and exits
    for _ in range(30):
        if state_of(project, "db") == "exited":
            break
        subprocess.run(["sleep", "0.5"], timeout=5)
    assert state_of(project, "db") == "exited"


async def make_stack(runtime: Runtime, stacks_root: Path, project: str, db_extra: str = "") -> None:
    directory = write_stack(stacks_root, project, STACK.format(name=project, db_image=POSTGRES, web_image=BUSYBOX,
                                                               db_extra=db_extra),
                            env=f"POSTGRES_PASSWORD={PASSWORD}\n")
    compose_up(directory)
    psql(project, "CREATE TABLE items (id int primary key, name text); "
                  "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g; "
                  "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('keep me')")


async def test_dump_replayed_into_a_fresh_data_directory(
    runtime: Runtime, stacks_root: Path, project_name: str
) -> None:
    await make_stack(runtime, stacks_root, project_name)
    store = runtime.backups()
    stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
    manifest = await store.create(stack, reason="before the upgrade")
    assert [d.service for d in manifest.dumps] == ["db"] and manifest.volumes == []
    psql(project_name, "DELETE FROM items WHERE id > 10")  # the new version's migration
    db_before = container_of(project_name, "db")

    # A dump that does not match its checksum: refused before anything is touched.
    dump_path = store.backup_dir(project_name, manifest.backup_id) / manifest.dumps[0].file
    original = dump_path.read_bytes()
    dump_path.write_bytes(original.replace(b"item 250", b"item 25O"))
    with pytest.raises(BackupFailed, match="damaged") as refused:
        await service.restore(runtime, manifest, None)
    assert "nothing was restored" in str(refused.value)
    assert container_of(project_name, "db") == db_before and psql(project_name, "SELECT count(*) FROM items") == "10"
    dump_path.write_bytes(original)

    break_data_directory(project_name)
    result = await service.restore(runtime, manifest, None)

    assert result.restored == ["dump db"]
    step = result.steps[0]
    assert step.way == "dump into a fresh data directory, database could not start", step
    assert "did not become ready" in step.detail, step.detail
    assert psql(project_name, "SELECT count(*), min(name), max(name) FROM items") == "300|item 1|item 99"
    assert psql(project_name, "SELECT body FROM notes") == "keep me"
    check = result.data_checks[0]
    assert (check.ok, check.tables_expected, check.tables_found, check.rows_expected, check.rows_found) == (
        True, 2, 2, 301, 301), check
    assert check.missing == [] and check.differ == []
    # What the volume held is kept, not deleted: the refused directory, PG_VERSION 99 and all.
    assert len(step.failed_state) == 1
    kept = store.backup_dir(project_name, manifest.backup_id) / step.failed_state[0]
    assert oct(kept.stat().st_mode)[-3:] == "600"
    with tarfile.open(kept) as archive:
        member = archive.extractfile("./PG_VERSION")
        assert member is not None and member.read().strip() == b"99"
    assert any(str(kept) in s for s in result.next_steps), result.next_steps
    assert state_of(project_name, "web") == "running"
    assert leftovers(project_name) == []
    record = runtime.operations().history(project_name, kinds=("restore",))[0]
    assert record.status == "done" and record.result and record.result["data_checks"][0]["ok"] is True


async def test_volume_archive_restored_when_the_database_cannot_start(
    runtime: Runtime, stacks_root: Path, project_name: str
) -> None:
    # Its dump hook fails, so the backup stops the database and archives its volume instead.
    await make_stack(runtime, stacks_root, project_name, db_extra=FAILING_DUMP)
    store = runtime.backups()
    stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
    manifest = await store.create(stack, reason="before the upgrade")
    assert manifest.dumps == [] and [v.name for v in manifest.volumes] == [f"{project_name}_pgdata"]
    assert state_of(project_name, "db") == "running"
    await wait_ready(project_name)  # the archive stopped it; started again, it is not accepting yet
    psql(project_name, "DROP TABLE notes")
    break_data_directory(project_name)
    # A never-started helper a killed server left on the volume: it used to make the restore fail
    # with "volume is in use" (and say that nothing was changed). Ours are removed first.
    sh("docker", "create", "--label", "dsm.helper=1", "--name", f"dsm-helper-stale-{project_name}", "-v",
       f"{project_name}_pgdata:/dsm-volume", BUSYBOX, "true")

    result = await service.restore(runtime, manifest, None)

    assert result.restored == [f"volume {project_name}_pgdata"]
    assert result.steps[0].way == "volume archive"
    assert state_of(project_name, "db") == "running"  # it ran when the backup was taken: it runs again
    await wait_ready(project_name)
    assert psql(project_name, "SELECT count(*) FROM items") == "300"
    assert psql(project_name, "SELECT body FROM notes") == "keep me"
    assert leftovers(project_name) == []


BUSY_STACK = """\
name: {name}
services:
  db:
    image: {image}
    init: true
    volumes: [data:/data]
    x-dsm:
      backup:
        dump: ["sh", "-c", "exit 3"]
volumes:
  data: {{}}
"""


def helpers_of(project: str) -> list[str]:
    return sh("docker", "ps", "-aq", "--filter", "label=dsm.helper=1", "--filter", f"label=dsm.stack={project}").split()


async def test_server_killed_mid_backup_is_repaired_at_the_next_start(
    settings: Settings, stacks_root: Path, project_name: str, docker_engine: None
) -> None:
    from tests.deploy_helpers import runtime_for

    compose_up(write_stack(stacks_root, project_name, BUSY_STACK.format(name=project_name, image=BUSYBOX)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-m", "tests.backup_worker", str(stacks_root), str(settings.state_dir),
                               project_name], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert worker.stdout is not None
        ready = worker.stdout.readline().split()
        assert ready and ready[0] == "ready", worker.stderr.read() if worker.stderr else ""
        op_id = ready[1]
        # Mid-archive: the database is stopped and our helper holds its volume.
        assert state_of(project_name, "db") == "exited"
        assert len(helpers_of(project_name)) == 1
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    helper_ids = helpers_of(project_name)
    try:
        runtime = runtime_for(settings)
        try:
            await anyio.to_thread.run_sync(runtime.recover_operations)  # what a server start runs
            record = runtime.operations().get(op_id)
        finally:
            runtime.close()
        assert state_of(project_name, "db") == "running"
        assert helpers_of(project_name) == []
        assert record is not None and record.status == "interrupted"
        assert record.result is not None
        repaired = record.result["repaired"]
        assert repaired["restarted"] == ["db"] and len(repaired["helpers_removed"]) == 1, repaired
        assert not list((settings.state_dir / "backups" / project_name / ".stopped").glob("*.json"))
    finally:
        if helper_ids:
            sh("docker", "rm", "-f", *helper_ids, check=False)


class VolumeInUse:
    """An engine whose volume removal fails after the restore stopped and removed a container."""

    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def compose_containers(self, project: str) -> list[Any]:
        from server.engine import ContainerSummary

        return [ContainerSummary(id="c1", name=f"{project}-web-1", project=project, service="web", state="running",
                                 status="Up", health=None, image="img", image_id="sha256:1",
                                 volumes={f"{project}_data": "/data"})]

    async def image_attrs(self, ref: str) -> dict[str, Any]:
        return {}

    async def stop_container(self, container_id: str, timeout_s: int = 30) -> None:
        self.stopped.append(container_id)

    async def remove_container(self, container_id: str) -> None:
        return None

    async def call(self, fn: Any, what: str) -> list[Any]:
        return []

    async def volume_attrs(self, name: str) -> dict[str, Any]:
        return {}

    async def remove_volume(self, name: str) -> None:
        raise EngineError(f"the Docker engine refused to remove volume {name}: volume is in use",
                          state="nothing was changed by this call")


async def test_an_error_after_a_change_says_what_was_changed(settings: Settings, monkeypatch: Any) -> None:
    import hashlib

    from server.backups import revive
    from server.backups.models import BackupManifest, VolumeArchive
    from server.backups.store import BackupStore, new_backup_id

    async def no_compose(*args: Any) -> None:
        return None

    monkeypatch.setattr(revive, "recreate", no_compose)
    engine = VolumeInUse()
    store = BackupStore(settings, engine, None)  # type: ignore[arg-type]
    backup_id = new_backup_id()
    (store.backup_dir("app", backup_id) / "volumes").mkdir(parents=True)
    (store.backup_dir("app", backup_id) / "volumes" / "app_data.tar").write_bytes(b"\0" * 1024)
    manifest = BackupManifest(
        backup_id=backup_id, stack="app", created_at="2026-01-01T00:00:00+00:00", reason="t", files=[], images=[],
        volumes=[VolumeArchive(name="app_data", file="volumes/app_data.tar", bytes=1024,
                               sha256=hashlib.sha256(b"\0" * 1024).hexdigest(), service="web")],
        dumps=[], bytes=1024)
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(manifest)
    text = str(failed.value)
    assert engine.stopped == ["c1"]
    assert "volume is in use" in text and "nothing was changed" not in text, text
    assert "already changed: container app-web-1 stopped and removed" in text, text
