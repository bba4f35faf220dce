"""A real PostgreSQL stack whose update runs a migration (one-shot) that fails half-way: the
rollback restores the dump, so every row written before the update is there afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.runtime import Runtime
from tests.deploy_helpers import (
    PG_VOLUME,
    WEB_10,
    WEB_11,
    deploy,
    free_port,
    get,
    pg_db,
    pg_migrate,
    phase,
    psql,
    write,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

V1_SQL = ["CREATE TABLE IF NOT EXISTS items(id int primary key, note text)"]
# Each -c commits on its own: the delete and the new column are in before the failing statement,
# so without a restore the rows would be gone (test_half_migration_really_loses_rows checks that).
V2_SQL = ["DELETE FROM items", "ALTER TABLE items ADD COLUMN price int", "SELECT no_such_function()"]


def chat_stack(name: str, port: int, api_image: str, sql: list[str]) -> str:
    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n" + pg_db(extra="    cpus: 1\n") + pg_migrate(sql)
            + f"  api:\n    image: {api_image}\n    init: true\n    restart: unless-stopped\n"
            f"    ports: ['127.0.0.1:{port}:80']\n"
            "    depends_on: {migrate: {condition: service_completed_successfully}}\n"
            "    mem_limit: 64m\n    cpus: 0.5\n    labels: {dsm.test: '1'}\n" + PG_VOLUME)


async def test_failed_migration_rolls_back_with_every_row(runtime: Runtime, stacks_root: Path,
                                                          project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, chat_stack(project_name, port, WEB_10, V1_SQL))
    first = await deploy(runtime, project_name, wait_timeout_s=120)
    assert first.status == "deployed", first
    psql(project_name, "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 250) g")
    assert psql(project_name, "SELECT count(*) FROM items") == "250"

    (directory / "compose.yaml").write_text(chat_stack(project_name, port, WEB_11, V2_SQL))
    report = await deploy(runtime, project_name, wait_timeout_s=120)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.result == "restored"
    assert "migrate" in report.rollback.why
    # The failing service's image is blamed, not web 1.1 that changed beside it and ran fine.
    assert report.rollback.failed_images is not None and "api" not in report.rollback.failed_images, report.rollback
    assert "data restored" in phase(report, "restore_data").detail
    assert report.rollback.data_check and "1 table(s), 250 row(s) as dumped" in report.rollback.data_check
    assert psql(project_name, "SELECT count(*) FROM items") == "250"
    assert psql(project_name, "SELECT count(*) FROM information_schema.columns WHERE table_name='items' "
                              "AND column_name='price'") == "0"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert report.incident_id


async def test_half_migration_really_loses_rows(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    """The control for the test above: the same failed migration, with restore_on_rollback off."""
    port = free_port()
    directory = write(stacks_root, project_name, chat_stack(project_name, port, WEB_10, V1_SQL))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 20) g")
    text = chat_stack(project_name, port, WEB_11, V2_SQL).replace(
        "x-dsm: {role: database}", "x-dsm: {role: database, backup: {restore_on_rollback: false}}")
    (directory / "compose.yaml").write_text(text)
    report = await deploy(runtime, project_name, wait_timeout_s=120)
    assert report.status == "rolled_back"
    assert psql(project_name, "SELECT count(*) FROM items") == "0"
