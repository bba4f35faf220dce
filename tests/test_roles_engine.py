"""What a service IS, on the real engine (issue 14): a postgres running under our pin is still
dumped; an API built from the postgres image is neither dumped nor planned as a database; a
renamed database volume is in the plan before anything runs; after a rollback, files that drop
a service deploy."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.deploy.seams import backup_store
from server.runtime import Runtime
from server.stackload import load_stack
from tests.deploy_helpers import POSTGRES, WEB_10, WEB_11, container_of, deploy, docker, free_port, get, psql, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

FAILING = "    healthcheck: {test: ['CMD', 'false'], interval: 1s, timeout: 1s, retries: 2}\n"


def _service(name: str, image: str, extra: str = "") -> str:
    return (f"  {name}:\n    image: {image}\n    init: true\n    restart: unless-stopped\n"
            f"    labels: {{dsm.test: '1'}}\n    mem_limit: 256m\n    cpus: 0.5\n{extra}")


def _db(volume: str = "pgdata", extra: str = "") -> str:
    # No x-dsm role: what the service is must come from its image and what it runs.
    return _service("db", POSTGRES, "    environment: {POSTGRES_HOST_AUTH_METHOD: trust}\n"
                                    f"    volumes: [{volume}:/var/lib/postgresql/data]\n{extra}")


CHANGED = "    stop_grace_period: 9s\n"
"""A change of a service's configuration: the failed deploy recreates it, so its rollback pins it
(a service the failed deploy left alone keeps running, unpinned)."""


def _stack(name: str, services: str, volumes: tuple[str, ...] = ()) -> str:
    tail = "".join(f"  {v}:\n    labels: {{dsm.test: '1'}}\n" for v in volumes)
    return f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n{services}" + (f"volumes:\n{tail}" if tail else "")


def _web(port: int, image: str = WEB_10, extra: str = "") -> str:
    return _service("web", image, f"    ports: ['127.0.0.1:{port}:80']\n{extra}")


async def test_a_pinned_postgres_is_still_dumped(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, _stack(project_name, _db() + _web(port), ("pgdata",)))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "CREATE TABLE items(id int); INSERT INTO items SELECT generate_series(1, 42)")
    (directory / "compose.yaml").write_text(_stack(project_name, _db(extra=CHANGED) + _web(port, WEB_11, FAILING),
                                                   ("pgdata",)))
    failed = await deploy(runtime, project_name, wait_timeout_s=30)
    assert failed.status == "rolled_back", failed
    # The database now runs under our pin; the override remembers what the pin stands for.
    running = docker("inspect", "-f", "{{.Config.Image}}", container_of(project_name, "db"))
    assert running.startswith(f"dsm-pin/{project_name}-db:"), running

    # A backup as backup_stack takes it (the files with our pins) still dumps the database.
    stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
    assert str(stack.services["db"]["image"]).startswith("dsm-pin/")
    manifest = await backup_store(runtime).create(stack, reason="after a rollback")
    assert [d.service for d in manifest.dumps] == ["db"], manifest.notes
    assert manifest.dumps[0].kind == "postgres" and manifest.dumps[0].tables == {"postgres.public.items": 42}
    override = (directory / "compose.dsm.yaml").read_text()
    assert "x-dsm-pins" in override and POSTGRES in override  # what each pin stands for
    pin = next(p for p in manifest.images if p.service == "db")
    assert pin.image.startswith("dsm-pin/") and pin.original == POSTGRES
    # And the next deploy's plan still counts it as a database.
    plan = (await deploy(runtime, project_name, dry_run=True)).plan
    assert plan is not None and plan.backup.dumps == ["db"]


async def test_an_api_built_from_the_postgres_image_is_not_a_database(runtime: Runtime, stacks_root: Path,
                                                                      project_name: str) -> None:
    port = free_port()
    api = _service("api", POSTGRES, "    command: ['perl', '-e', 'sleep']\n"
                                    "    healthcheck: {test: ['CMD', 'true'], interval: 1s, retries: 2}\n")
    write(stacks_root, project_name, _stack(project_name, _db() + api + _web(port), ("pgdata",)))
    planned = await deploy(runtime, project_name, dry_run=True)
    assert planned.plan is not None and planned.plan.backup.dumps == []  # nothing runs yet
    by_service = {s.service: s for s in planned.plan.services}
    # The role shows in the strategy that will run: the postgres image running perl is an app,
    # rolled; the database, planned downtime.
    assert by_service["db"].strategy == "planned_downtime", by_service["db"]
    assert by_service["api"].strategy == "rolling", by_service["api"]
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    plan = (await deploy(runtime, project_name, dry_run=True)).plan
    assert plan is not None and plan.backup.dumps == ["db"]
    stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
    manifest = await backup_store(runtime).create(stack, reason="roles")
    assert [d.service for d in manifest.dumps] == ["db"]
    assert not any("api" in n for n in manifest.notes), manifest.notes


async def test_a_renamed_database_volume_is_in_the_plan_and_needs_confirmation(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, _stack(project_name, _db() + _web(port), ("pgdata",)))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "CREATE TABLE items(id int); INSERT INTO items VALUES (1)")
    before = container_of(project_name, "db")
    (directory / "compose.yaml").write_text(_stack(project_name, _db("pgdata2") + _web(port), ("pgdata2",)))

    planned = await deploy(runtime, project_name, dry_run=True)
    assert planned.status == "planned" and planned.plan is not None
    moved = [f for f in planned.plan.findings if f.rule == "data-volume-moved"]
    assert len(moved) == 1 and moved[0].service == "db" and moved[0].severity == "error"
    assert f"{project_name}_pgdata" in moved[0].message and "renamed" in moved[0].message
    assert moved[0] in planned.findings

    blocked = await deploy(runtime, project_name, wait_timeout_s=120)
    assert blocked.status == "blocked" and "confirm=true" in blocked.next_steps[0], blocked
    assert container_of(project_name, "db") == before  # nothing ran
    assert psql(project_name, "SELECT count(*) FROM items") == "1"

    confirmed = await deploy(runtime, project_name, wait_timeout_s=120, confirm=True)
    assert confirmed.status == "deployed", confirmed
    assert any(f.rule == "data-volume-moved" and f.severity == "warning" for f in confirmed.findings)
    # The old volume is never removed: the data is still there for whoever moves it back.
    assert docker("volume", "inspect", "-f", "{{.Name}}", f"{project_name}_pgdata") == f"{project_name}_pgdata"


async def test_after_a_rollback_files_without_a_service_deploy(runtime: Runtime, stacks_root: Path,
                                                               project_name: str) -> None:
    port = free_port()
    api = _service("api", WEB_10)
    directory = write(stacks_root, project_name, _stack(project_name, _web(port) + api))
    assert (await deploy(runtime, project_name)).status == "deployed"
    (directory / "compose.yaml").write_text(_stack(project_name, _web(port, WEB_11, FAILING)
                                                   + _service("api", WEB_10, CHANGED)))
    assert (await deploy(runtime, project_name, wait_timeout_s=30)).status == "rolled_back"
    assert "api" in (directory / "compose.dsm.yaml").read_text()

    # The new files drop api: our pin for it must not stand in the way (nor bring it back).
    (directory / "compose.yaml").write_text(_stack(project_name, _web(port, WEB_11)))
    report = await deploy(runtime, project_name, wait_timeout_s=60)
    assert report.status == "deployed", (report.findings, report.phases)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"
    assert not any("com.docker.compose.service=api" in line for line in docker(
        "ps", "-a", "--filter", f"label=com.docker.compose.project={project_name}", "--format", "{{.Labels}}"
    ).splitlines())
