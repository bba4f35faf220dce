"""The one rollback path on a real engine with a real PostgreSQL: data first, then code, then the
same checks as a deploy; `failed` (never `rolled_back`) when the data or the checks say so.

Scenarios (issue 14): two failures in a row (the second's migration deletes rows), also after an
explicit rollback and after a rollback of a rollback; a migration that breaks the schema caught by a
smoke check, and the same with the dump gone; the order (the old app starts only after the restore);
a stack started by hand (adopted); an interrupted deploy then rollback()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from server.deploy.pipeline import Deployer
from server.deploy.seams import operations
from server.operations.views import DeploymentEntry
from server.runtime import Runtime
from tests.deploy_helpers import (
    PG_VOLUME,
    POSTGRES,
    WEB_10,
    WEB_11,
    WEB_BROKEN,
    container_of,
    containers,
    deploy,
    docker,
    free_port,
    get,
    pg_db,
    pg_migrate,
    phase,
    psql,
    web_stack,
    write,
)
from tests.test_deploy_processes import start_deploy, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

V1 = ["CREATE TABLE IF NOT EXISTS items(id int primary key, note text)"]
DELETE_AND_FAIL = ["DELETE FROM items", "SELECT no_such_function()"]
BREAK_SCHEMA = ["ALTER TABLE items RENAME COLUMN note TO body"]
SMOKE = '{smoke: [{exec: [psql, -U, postgres, -tAc, "SELECT note FROM items LIMIT 1"]}]}'


def app(name: str, port: int, api: str, sql: list[str], smoke: bool = False) -> str:
    db_dsm = f"{{role: database, {SMOKE[1:-1]}}}" if smoke else "{role: database}"
    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n" + pg_db(x_dsm=db_dsm) + pg_migrate(sql)
            + f"  api:\n    image: {api}\n    init: true\n    restart: unless-stopped\n"
            f"    ports: ['127.0.0.1:{port}:80']\n    environment: {{WEB_CRASH_AFTER: '0'}}\n"
            "    depends_on: {migrate: {condition: service_completed_successfully}}\n"
            "    mem_limit: 64m\n    labels: {dsm.test: '1'}\n" + PG_VOLUME)


def rows(project: str) -> str:
    return psql(project, "SELECT count(*) FROM items")


async def _deploy(runtime: Runtime, directory: Path, text: str, **kw: Any) -> Any:
    (directory / "compose.yaml").write_text(text)
    return await deploy(runtime, directory.name, wait_timeout_s=120, **kw)


def _restored(report: Any, count: int) -> None:
    assert report.status == "rolled_back", ([(p.name, p.status, p.detail) for p in report.phases], report.rollback,
                                            report.next_steps)
    assert report.rollback is not None and report.rollback.result == "restored"
    # Also from a pinned state: a pinned postgres is still dumped as postgres (server.roles).
    assert report.rollback.data_check == f"db: 1 table(s), {count} row(s) as dumped", report.rollback
    assert report.rollback.time_to_recover_s is not None and report.rollback.time_to_recover_s > 0


async def test_two_failures_in_a_row_and_after_explicit_rollbacks_every_row_is_there(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, app(project_name, port, WEB_10, V1))
    d1 = await deploy(runtime, project_name, wait_timeout_s=120)
    assert d1.status == "deployed", d1
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 50) g")
    d2 = await _deploy(runtime, directory, app(project_name, port, WEB_11, V1))
    assert d2.status == "deployed", d2

    # First failure: the api crashes; rolled back to d2 under our pins.
    f3 = await _deploy(runtime, directory, app(project_name, port, WEB_BROKEN, V1))
    assert f3.status == "rolled_back" and f3.rollback is not None, f3
    assert f3.rollback.to_deployment == d2.deployment_id and f3.rollback.failed_images == {"api": WEB_BROKEN}
    # Second failure, from that pinned state: the migration deletes every row, then fails.
    f4 = await _deploy(runtime, directory, app(project_name, port, WEB_11, DELETE_AND_FAIL))
    _restored(f4, 50)
    assert rows(project_name) == "50" and get(f"http://127.0.0.1:{port}/") == "web 1.1"

    # An explicit rollback (to d1), then the same failure: every row is there.
    r5 = await Deployer(runtime).rollback(project_name, wait_timeout_s=120)
    assert r5.status == "rolled_back" and r5.rollback and r5.rollback.to_deployment == d1.deployment_id, r5
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    # The code went back, the data did not: said, with the call that would bring it back.
    [kept] = [s for s in r5.next_steps if s.startswith("data NOT restored")]
    assert "db" in kept and f"to_deployment={d1.deployment_id!r}, restore_data=true" in kept, kept
    f6 = await _deploy(runtime, directory, app(project_name, port, WEB_10, DELETE_AND_FAIL))
    _restored(f6, 50)
    assert f6.rollback and f6.rollback.to_deployment == d1.deployment_id
    assert rows(project_name) == "50"

    # A rollback of that rollback (back to d2), then the same failure again.
    r7 = await Deployer(runtime).rollback(project_name, to_deployment=d2.deployment_id, wait_timeout_s=120)
    assert r7.status == "rolled_back", r7
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"
    f8 = await _deploy(runtime, directory, app(project_name, port, WEB_11, DELETE_AND_FAIL))
    _restored(f8, 50)
    assert rows(project_name) == "50" and get(f"http://127.0.0.1:{port}/") == "web 1.1"
    history = [DeploymentEntry.of(r) for r in operations(runtime).history(project_name)]
    failed = next(h for h in history if h.deployment_id == f3.deployment_id)
    assert [(i.service, i.image) for i in failed.failed_images] == [("api", WEB_BROKEN)]


def _watch_events(project: str, into: Path) -> subprocess.Popen[bytes]:
    """Stream the project's engine events to a file while the deploy runs (the engine keeps only
    its last 256 events, shared by every project on it, so they cannot be read afterwards)."""
    with into.open("wb") as out:
        return subprocess.Popen(["docker", "events", "--filter", f"label=com.docker.compose.project={project}",
                                 "--format", "{{json .}}"], stdout=out, stderr=subprocess.DEVNULL)


def _events(proc: subprocess.Popen[bytes], path: Path) -> list[dict[str, Any]]:
    time.sleep(0.5)
    proc.terminate()
    proc.wait(timeout=10)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_broken_schema_caught_by_smoke_is_restored_and_a_lost_dump_is_a_failed_rollback(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, app(project_name, port, WEB_10, V1, smoke=True))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 20) g")
    began: list[float] = []

    async def progress(step: float, total: float, message: str) -> None:
        if message.startswith("rolling back") and not began:
            began.append(time.time())

    (directory / "compose.yaml").write_text(app(project_name, port, WEB_11, BREAK_SCHEMA, smoke=True))
    watcher = _watch_events(project_name, stacks_root / "events.jsonl")
    try:
        report = await Deployer(runtime, progress=progress).deploy(project_name, wait_timeout_s=120)
    finally:
        events = _events(watcher, stacks_root / "events.jsonl")
    assert report.rollback is not None and report.rollback.why.startswith("smoke:"), report
    _restored(report, 20)
    assert phase(report, "rollback_smoke").status == "ok"
    assert psql(project_name, "SELECT count(note) FROM items") == "20"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"

    # Order: no api container started after the rollback began until the dump was replayed.
    execs = [e for e in events if str(e.get("Action", "")).startswith("exec_")]
    restore = [e for e in execs if "ON_ERROR_STOP=0" in e["Action"]]
    assert restore, [e["Action"][:100] for e in events if "pg_isready" not in e["Action"]]
    exec_id = restore[0]["Actor"]["Attributes"].get("execID")
    done = [e for e in execs if e["timeNano"] > restore[0]["timeNano"] and e["Action"].startswith("exec_die")
            and e["Actor"]["Attributes"].get("execID", exec_id) == exec_id]
    assert done, [(e["Action"][:60], e["Actor"]["Attributes"].get("execID")) for e in execs]
    done_at = done[0]["timeNano"]
    api_starts = [e for e in events if e.get("Action") == "start" and e.get("Type") == "container"
                  and e["Actor"]["Attributes"].get("com.docker.compose.service") == "api"
                  and e["timeNano"] >= began[0] * 1e9]
    assert api_starts, "the old api was never started"
    assert all(e["timeNano"] > done_at for e in api_starts), "the old api started before the restore"

    # The same failure from the pinned state, with the dump gone before the rollback: `failed`.
    async def lose_dump(step: float, total: float, message: str) -> None:
        if message.startswith("rolling back"):
            backups = runtime.settings.state_dir / "backups" / project_name
            for data in [*backups.glob("*/dumps/*"), *backups.glob("*/volumes/*")]:
                data.unlink()

    (directory / "compose.yaml").write_text(app(project_name, port, WEB_11, BREAK_SCHEMA, smoke=True))
    report = await Deployer(runtime, progress=lose_dump).deploy(project_name, wait_timeout_s=120)
    assert report.status == "failed", report.phases
    assert report.rollback is not None and report.rollback.result == "failed"
    assert phase(report, "restore_data").status == "failed"
    assert "data was NOT restored" in report.next_steps[0] and "api" in report.next_steps[0]
    assert not any(c["State"] == "running" for c in containers(project_name) if "service=api" in c["Labels"])
    record = operations(runtime).get(report.operation_id or "")
    assert record is not None and record.status == "failed"


async def test_a_stack_started_by_hand_is_adopted_and_rolled_back_to(runtime: Runtime, stacks_root: Path,
                                                                     project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, app(project_name, port, WEB_10, V1))
    docker("compose", "up", "-d", cwd=directory)
    wait_for(lambda: _serves(port, "web 1.0"), timeout=90)
    psql(project_name, "INSERT INTO items SELECT g, 'by hand' FROM generate_series(1, 30) g")

    broken = await _deploy(runtime, directory, app(project_name, port, WEB_BROKEN, V1))
    assert broken.status == "rolled_back", broken
    history = operations(runtime).history(project_name)
    adopted = next(h for h in history if h.status == "adopted")
    assert broken.rollback is not None and broken.rollback.to_deployment == adopted.operation_id
    assert DeploymentEntry.of(adopted).backup_id == broken.backup_id
    assert {i.service: i.image for i in DeploymentEntry.of(adopted).images}["api"] == WEB_10
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0" and rows(project_name) == "30"

    good = await _deploy(runtime, directory, app(project_name, port, WEB_11, [*V1, "INSERT INTO items VALUES "
                                                                              "(1000, 'new')"]))
    assert good.status == "deployed", good
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1" and rows(project_name) == "31"

    back = await Deployer(runtime).rollback(project_name, restore_data=True, confirm=True, wait_timeout_s=120)
    assert back.status == "rolled_back" and back.rollback is not None, back
    assert back.rollback.to_deployment == adopted.operation_id
    assert back.rollback.data_check == "db: 1 table(s), 30 row(s) as dumped"
    assert not [s for s in back.next_steps if "NOT restored" in s]  # it was: nothing to warn about
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0" and rows(project_name) == "30"


def _serves(port: int, text: str) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/") == text
    except OSError:
        return False


async def test_rollback_after_an_interrupted_deploy_goes_to_the_last_good_deployment(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    d1 = await deploy(runtime, project_name)
    d2 = await _deploy(runtime, directory, web_stack(project_name, WEB_11, port))
    assert (d1.status, d2.status) == ("deployed", "deployed")
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_10, port, extra="    environment: {X: '1'}\n"))
    proc = start_deploy(runtime.settings, project_name, verify_s=60)
    ops = operations(runtime)
    killed = wait_for(lambda: ops.running(project_name))
    wait_for(lambda: _serves(port, "web 1.0"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    entry = DeploymentEntry.of(next(h for h in ops.history(project_name) if h.operation_id == killed.operation_id))
    assert entry.status == "interrupted" and entry.backup_id, entry
    report = await Deployer(runtime).rollback(project_name, wait_timeout_s=60)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.to_deployment == d2.deployment_id
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"


async def test_backing_up_a_stack_started_by_hand_adopts_it(runtime: Runtime, stacks_root: Path,
                                                            project_name: str) -> None:
    from server.backups import service

    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port, volume=False))
    docker("compose", "up", "-d", cwd=directory)
    wait_for(lambda: _serves(port, "web 1.0"), timeout=60)
    result = await service.create(runtime, service.resolve_stack(runtime, project_name), "by hand", None)
    [adopted] = operations(runtime).history(project_name)
    entry = DeploymentEntry.of(adopted)
    assert (entry.kind, entry.status, entry.backup_id) == ("deploy", "adopted", result.backups[0].backup_id)
    assert [(i.service, i.image) for i in entry.images] == [("web", WEB_10)]
    await service.create(runtime, service.resolve_stack(runtime, project_name), "again", None)
    assert len(operations(runtime).history(project_name)) == 1  # adopted once


def upgraded(name: str, port: int) -> str:
    """A new version whose one-shot rewrites the database's data directory in place before the new
    server starts (as an in-place major upgrade does): this server refuses it, and so will the old."""
    old_db = f"  db:\n    image: {POSTGRES}\n    init: true\n"
    new_db = (
        "  upgrade:\n    image: dsm-test/busybox:1\n"
        '    command: ["sh", "-c", "echo 99 > /data/PG_VERSION"]\n'
        "    volumes: [pgdata:/data]\n    restart: 'no'\n    mem_limit: 32m\n    labels: {dsm.test: '1'}\n"
        "    x-dsm: {one-shot: true}\n"
        f"  db:\n    image: {POSTGRES}\n    init: true\n"
        "    depends_on: {upgrade: {condition: service_completed_successfully}}\n"
        '    command: ["postgres", "-c", "max_connections=90"]\n')
    text = app(name, port, WEB_10, V1)
    assert old_db in text
    return text.replace(old_db, new_db)


async def test_a_rewritten_data_directory_is_rolled_back_with_every_row(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, app(project_name, port, WEB_10, V1))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 30) g")
    report = await _deploy(runtime, directory, upgraded(project_name, port))
    # The new server refused the rewritten directory; the old one refuses it too, so the rollback
    # must bring the data back another way (the volume archive, or the dump into a fresh directory).
    assert report.rollback is not None, report
    _restored(report, 30)
    assert rows(project_name) == "30" and get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert docker("exec", container_of(project_name, "db"), "cat", "/var/lib/postgresql/data/PG_VERSION") == "15"
