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
BUDGET_CHARS = 20_000
"""What one session may make the calling model read: the text content of every result (issue 17)."""


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
    read: list[int] = []
    async with Client(deploy_sessions.server_params(stacks_root, tmp_path / "state")) as client:
        call = deploy_sessions.caller(client, said.append, calls, read)
        report = await deploy_sessions.monitoring(call, said.append, stacks_root, monitoring_name)
        assert report["status"] == "deployed", report
        assert len(calls) <= 6 and calls[:3] == ["validate_compose", "check_resources", "deploy_stack"]
        assert len(read) == len(calls) and 0 < sum(read) <= BUDGET_CHARS, list(zip(calls, read, strict=True))
        assert {s["name"] for s in report["services"]} == {"prometheus", "grafana", "node-exporter"}
        assert report["backup_id"] and any(p["name"] == "smoke" and p["status"] == "ok" for p in report["phases"])

        calls.clear()
        read.clear()
        out = await deploy_sessions.chat_rollback(call, said.append, stacks_root, chat_name)
        # The emergency rollback as the operator sees it: deploy, the bad update, the search after.
        assert len(calls) <= 6 and calls.count("deploy_stack") == 2, calls
        assert 0 < sum(read) <= BUDGET_CHARS, list(zip(calls, read, strict=True))
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


async def test_troubleshoot_network_over_stdio(stacks_root: Path, tmp_path: Path, project_name: str,
                                               docker_engine: None) -> None:
    """The seed's third task: services that cannot reach each other (a worker on another network
    than the web service it depends on). diagnose_stack finds it and names the fix; the fix is
    applied; the stack works after, in at most six calls and 20,000 characters read."""
    from mcp import Client

    said: list[str] = []
    calls: list[str] = []
    read: list[int] = []
    try:
        async with Client(deploy_sessions.server_params(stacks_root, tmp_path / "state")) as client:
            call = deploy_sessions.caller(client, said.append, calls, read)
            out = await deploy_sessions.troubleshoot_network(call, said.append, stacks_root, project_name)
    finally:
        remove_pins(project_name)
    assert out["before"] is False, "the setup must start broken"
    (found,) = out["found"]
    assert found["service"] == "worker" and found["severity"] == "error", found
    assert "compose file" in found["fix"] and "deploy_stack" in found["fix"], found
    assert not out["diagnosis"]["healthy"]
    assert out["report"]["status"] == "deployed", out["report"]["phases"]
    assert out["after"]["healthy"], out["after"]["findings"]
    assert not [f for f in out["after"]["findings"] if f["rule"] == "dependency-unreachable"]
    assert out["reaches"] is True
    assert calls == ["diagnose_stack", "deploy_stack", "diagnose_stack"], calls
    assert len(read) == len(calls) and 0 < sum(read) <= BUDGET_CHARS, list(zip(calls, read, strict=True))
