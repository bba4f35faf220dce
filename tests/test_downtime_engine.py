"""planned_downtime on a real PostgreSQL (issue 16): a database with a data volume is never rolled;
the plan says why, asking for ``rolling`` is refused before anything changes, and the update
announces its window, backs up with a dump, stops the old container and starts the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.deploy.pipeline import Deployer
from server.runtime import Runtime
from tests.deploy_helpers import PG_VOLUME, container_of, pg_db, phase, psql, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def db_stack(name: str, revision: int) -> str:
    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n"
            + pg_db(env=f", DSM_TEST_REVISION: '{revision}'", x_dsm="") + PG_VOLUME)


async def test_a_database_update_is_planned_downtime_with_its_window_announced(runtime: Runtime, stacks_root: Path,
                                                                               project_name: str) -> None:
    told: list[str] = []

    async def progress(_done: float, _total: float, message: str) -> None:
        told.append(message)

    deployer = Deployer(runtime, progress=progress)
    directory = write(stacks_root, project_name, db_stack(project_name, 1))
    assert (await deployer.deploy(project_name, wait_timeout_s=120)).status == "deployed"
    psql(project_name, "CREATE TABLE items(id int); INSERT INTO items SELECT generate_series(1, 7)")
    before = container_of(project_name, "db")

    (directory / "compose.yaml").write_text(db_stack(project_name, 2))
    planned = await deployer.deploy(project_name, dry_run=True)
    assert planned.plan is not None
    [db] = planned.plan.services
    assert (db.action, db.strategy) == ("recreate", "planned_downtime"), db
    assert "database" in (db.strategy_reason or ""), db
    refused = await deployer.deploy(project_name, strategy="rolling")
    [why] = [f for f in refused.findings if f.rule == "strategy-refused"]
    assert refused.status == "blocked" and why.severity == "error", refused
    assert "database" in why.message and container_of(project_name, "db") == before

    told.clear()
    updated = await deployer.deploy(project_name, wait_timeout_s=120)
    assert updated.status == "deployed", updated
    downtime = phase(updated, "downtime")
    assert downtime is not None and downtime.status == "ok" and "expected window" in downtime.detail, updated.phases
    announced = next(i for i, m in enumerate(told) if m.startswith("downtime: db stops now"))
    assert announced < next(i for i, m in enumerate(told) if m.startswith("up:")), told
    assert updated.backup_id and container_of(project_name, "db") != before
    assert psql(project_name, "SELECT count(*) FROM items") == "7"
