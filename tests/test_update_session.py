"""The operator's third worked example, updating a 12-service Supabase-shaped stack, as a scripted MCP
session over real stdio (examples/update_session.py, also shown by `make demo`): check_updates, a dry
run, the update with per-service strategies, the status after; the data kept, the rolling services
never down, the new tags written where the user keeps them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.deploy_helpers import docker, free_port, remove_pins

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import deploy_sessions
import update_session

pytestmark = [pytest.mark.anyio, pytest.mark.docker]
BUDGET_CHARS = 20_000


async def test_supabase_update_over_stdio(stacks_root: Path, tmp_path: Path, project_name: str,
                                          registry: str) -> None:
    from mcp import Client

    said: list[str] = []
    calls: list[str] = []
    read: list[int] = []
    try:
        async with Client(deploy_sessions.server_params(stacks_root, tmp_path / "state")) as client:
            setup = deploy_sessions.caller(client, said.append, [])
            first = await update_session.prepare(setup, said.append, stacks_root, project_name, registry, free_port())
            assert first["status"] == "deployed", first
            call = deploy_sessions.caller(client, said.append, calls, read)
            out = await update_session.update(call, said.append, stacks_root, project_name)
    finally:
        remove_pins(project_name)
        # The tags this session pushed and pulled (the registry keeps its copies under the stack's name).
        refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                      f"reference={registry}/{project_name}/*", check=False).split()
        if refs:
            docker("rmi", *refs, check=False)
    text = "\n".join(said)
    assert calls == ["check_updates", "update_stack", "update_stack", "stack_status"], calls
    assert 0 < sum(read) <= BUDGET_CHARS, list(zip(calls, read, strict=True))

    found = {s.split("/")[-1] for i in out["updates"]["images"] if i.get("newer") for s in i["services"]}
    assert set(update_session.UPDATED) <= found, out["updates"]

    planned = {s["service"]: s for s in out["plan"]["plan"]["services"] if s["action"] != "unchanged"}
    assert set(planned) == set(update_session.UPDATED), planned
    assert planned["db"]["strategy"] == "planned_downtime" and planned["storage"]["strategy"] == "planned_downtime"
    assert planned["auth"]["strategy"] == "rolling" and planned["rest"]["strategy"] == "rolling", planned

    report = out["report"]
    assert report["status"] == "deployed", (report["phases"], report.get("rollback"), report["findings"])
    assert report["backup_id"], report
    # The data: every row of the database is still there after its planned downtime.
    assert out["rows_before"] == out["rows_after"] == "300", text
    # The services the plan called zero-downtime never failed a request while the update ran.
    for svc in ("auth", "rest"):
        counts = out["probed"][svc]
        assert counts["ok"] > 0 and counts["fail"] == 0, (svc, counts, text)
    # The new tags are where the user keeps them: .env for the interpolated images, comments kept.
    assert "postgres:15.1.1" in out["env"] and "auth:1.0.1" in out["env"], out["env"]
    assert out["env"].startswith("# Versions of the stack's images"), out["env"]
    compose = (stacks_root / project_name / "compose.yaml").read_text()
    assert "rest:1.0.1" in compose and "storage:1.0.1" in compose and "kong:1.0.0" in compose, compose
    assert "# the database's version lives in .env" in compose
    stack = out["status"]["stacks"][0]
    assert stack["state"] == "running" and len(stack["services"]) == 12, stack
