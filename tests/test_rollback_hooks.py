"""x-dsm backup hooks on a real PostgreSQL: a hooks dump is counted as postgres, so a restore that
leaves the failed version's data is a `failed` rollback with the row mismatch named, never `rolled_back`.

The README's example hooks once read ``pg_dumpall -U postgres`` (no ``--clean``): replayed into the
live database, its COPY conflicts with the rows still there and is skipped, psql exits 0, and the
rollback said ``rolled_back`` with ``db: restored (no row counts recorded)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, deploy, free_port, write
from tests.test_rollback_data import V1, app, psql, rows

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

HOOKS = "{role: database, backup: {dump: [pg_dumpall, -U, postgres], restore: [psql, -U, postgres]}}"
DELETE_SOME_AND_FAIL = ["DELETE FROM items WHERE id > 25", "SELECT no_such_function()"]


def hooks_app(name: str, port: int, api: str, sql: list[str]) -> str:
    return app(name, port, api, sql).replace("x-dsm: {role: database}", f"x-dsm: {HOOKS}", 1)


async def test_a_hooks_dump_without_clean_that_leaves_the_failed_rows_is_a_failed_rollback(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, hooks_app(project_name, port, WEB_10, V1))
    assert HOOKS in (directory / "compose.yaml").read_text()
    d1 = await deploy(runtime, project_name, wait_timeout_s=120)
    assert d1.status == "deployed", d1
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 50) g")

    (directory / "compose.yaml").write_text(hooks_app(project_name, port, WEB_11, DELETE_SOME_AND_FAIL))
    report = await deploy(runtime, project_name, wait_timeout_s=120)
    assert report.status == "failed", ([(p.name, p.status, p.detail) for p in report.phases], report.rollback)
    assert report.rollback is not None and report.rollback.result == "failed"
    assert report.rollback.data_check is not None
    assert "db: MISMATCH postgres.public.items 25 rows, dumped 50" in report.rollback.data_check, report.rollback
    assert rows(project_name) == "25"


async def test_the_readme_hooks_with_clean_restore_every_row_and_are_checked(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    clean = HOOKS.replace("[pg_dumpall, -U, postgres]", "[pg_dumpall, --clean, --if-exists, -U, postgres]")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "backup: {dump: [pg_dumpall, --clean, --if-exists, -U, postgres], restore: [psql, -U, postgres]" in readme
    directory = write(stacks_root, project_name, hooks_app(project_name, port, WEB_10, V1).replace(HOOKS, clean))
    assert (await deploy(runtime, project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "INSERT INTO items SELECT g, 'row' FROM generate_series(1, 50) g")

    (directory / "compose.yaml").write_text(
        hooks_app(project_name, port, WEB_11, DELETE_SOME_AND_FAIL).replace(HOOKS, clean))
    report = await deploy(runtime, project_name, wait_timeout_s=120)
    assert report.status == "rolled_back", ([(p.name, p.status, p.detail) for p in report.phases], report.rollback)
    assert report.rollback is not None and report.rollback.data_check == "db: 1 table(s), 50 row(s) as dumped"
    assert rows(project_name) == "50"
