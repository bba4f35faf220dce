"""The operator's worked deploy examples as scripted MCP sessions over real stdio
(examples/deploy_sessions.py, also shown by `make demo`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cleanup_project
from tests.deploy_helpers import remove_pins

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import deploy_sessions

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@pytest.fixture
def names(project_name: str) -> Iterator[tuple[str, str]]:
    other = project_name + "b"
    yield project_name, other
    cleanup_project(other)
    remove_pins(project_name)
    remove_pins(other)


async def test_worked_examples_over_stdio(stacks_root: Path, tmp_path: Path, names: tuple[str, str],
                                          docker_engine: None) -> None:
    from mcp import Client

    monitoring_name, chat_name = names
    said: list[str] = []
    calls: list[str] = []
    async with Client(deploy_sessions.server_params(stacks_root, tmp_path / "state")) as client:
        call = deploy_sessions.caller(client, said.append, calls)
        report = await deploy_sessions.monitoring(call, said.append, stacks_root, monitoring_name)
        assert report["status"] == "deployed", report
        assert len(calls) <= 6 and calls[:3] == ["validate_compose", "check_resources", "deploy_stack"]
        assert {s["name"] for s in report["services"]} == {"prometheus", "grafana", "node-exporter"}
        assert report["backup_id"] and any(p["name"] == "smoke" and p["status"] == "ok" for p in report["phases"])

        calls.clear()
        out = await deploy_sessions.chat_rollback(call, said.append, stacks_root, chat_name)
        second = await deploy_sessions.chat_second_failure(call, said.append, stacks_root, chat_name)
    assert out["first"]["status"] == "deployed"
    report = out["report"]
    assert report["status"] == "rolled_back", (report["phases"], report.get("rollback"), report["findings"])
    assert report["rollback"]["result"] == "restored" and report["incident_id"]
    assert any("api" in (f.get("service") or "") for f in report["findings"])
    assert out["rows"] == "500" and out["columns"] == "body,id"  # the database as before the update
    assert report["incident_id"] in {hit["incident_id"] for hit in out["search"]["results"]}
    # The second failure (issue 14): the database runs under our pin; the failed migration deleted
    # rows; after the automatic rollback every row and the old schema are back.
    assert second["before"] == "500", second
    assert second["report"]["status"] == "rolled_back", (second["report"]["phases"], second["report"].get("rollback"))
    assert second["rows"] == "500" and second["columns"] == "body,id", second
