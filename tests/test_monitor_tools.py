"""stack_status, stack_logs, diagnose_stack and stack_control through a real MCP client on a real engine."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import write_stack

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

NETWORKS = """\
name: {name}
services:
  db:
    image: dsm-test/web:1.0
    init: true
    networks: [back]
    labels: {{dsm.test: "1"}}
  app:
    image: dsm-test/web:1.0
    init: true
    networks: [{app_net}]
    depends_on: [db]
    labels: {{dsm.test: "1"}}
networks:
  front: {{labels: {{dsm.test: "1"}}}}
  back: {{labels: {{dsm.test: "1"}}}}
"""

OOM = """\
name: {name}
services:
  hog:
    image: dsm-test/busybox:1
    init: true
    restart: "no"
    mem_limit: 16m
    memswap_limit: 16m
    command: ["sh", "-c", "echo starting; sleep 1; head -c 300m /dev/zero | tail > /dev/null"]
    labels: {{dsm.test: "1"}}
"""

CHATTY = """\
name: {name}
x-dsm: {{critical: true}}
services:
  talk:
    image: dsm-test/busybox:1
    init: true
    environment: {{API_TOKEN: "${{API_TOKEN}}"}}
    volumes: ["keep:/data"]
    command:
      - sh
      - -c
      - "i=0; while [ $$i -lt 30 ]; do echo ln $$i token=$$API_TOKEN; i=$$((i+1)); done; echo ERROR: db down; sleep 900"
    labels: {{dsm.test: "1"}}
volumes:
  keep: {{labels: {{dsm.test: "1"}}}}
"""


def up(directory: Path, wait: bool = True) -> None:
    subprocess.run(["docker", "compose", "up", "-d", *(["--wait", "--wait-timeout", "60"] if wait else [])],
                   cwd=directory, check=True, capture_output=True, timeout=120)


async def call(client: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def test_wrong_network_diagnosed_and_right_network_healthy(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "nets", NETWORKS.format(name=project_name, app_net="front"))
    up(directory)
    out = await call(mcp_client, "diagnose_stack", {"stack": "nets"})
    assert out["stack"] == project_name and not out["healthy"]
    bad = [f for f in out["findings"] if f["rule"] == "dependency-unreachable"]
    assert len(bad) == 1 and bad[0]["service"] == "app" and bad[0]["severity"] == "error"
    assert "db:80" in bad[0]["message"] and "front" in bad[0]["message"]
    assert "bad address" in bad[0]["evidence"][0] and bad[0]["likely_cause"]
    assert out["next_steps"]

    (directory / "compose.yaml").write_text(NETWORKS.format(name=project_name, app_net="back"))
    up(directory)
    out = await call(mcp_client, "diagnose_stack", {"stack": project_name})
    assert out["healthy"], out["findings"]
    assert not [f for f in out["findings"] if f["severity"] == "error"]
    leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", "label=dsm.probe=1", "--filter",
                                f"network={project_name}_back"], capture_output=True, text=True).stdout.split()
    assert not leftovers  # probe containers are removed


async def test_oom_killed_service_diagnosed_with_its_limit(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "oom", OOM.format(name=project_name))
    up(directory, wait=False)
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = await call(mcp_client, "stack_status", {"stack": "oom"})
        if status["stacks"][0]["services"][0]["state"] == "exited":
            break
        await anyio.sleep(0.5)
    svc = status["stacks"][0]["services"][0]
    assert svc["state"] == "exited" and svc["oom_killed"] and svc["exit_code"] == 137
    assert svc["memory_limit_bytes"] == 16 * 1024 * 1024
    out = await call(mcp_client, "diagnose_stack", {"stack": "oom", "service": "hog"})
    oom = [f for f in out["findings"] if f["rule"] == "oom-killed"]
    assert oom and oom[0]["severity"] == "error"
    assert "16 MiB" in oom[0]["message"] and "memory" in oom[0]["likely_cause"]
    assert any("16777216" in e for e in oom[0]["evidence"])
    assert "16 MiB" in oom[0]["fix"]


async def test_status_of_all_stacks_logs_paged_and_redacted_control(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    secret = "s3cr3t-token-value-42"
    directory = write_stack(stacks_root, "chatty", CHATTY.format(name=project_name), env=f"API_TOKEN={secret}\n")
    up(directory)
    await anyio.sleep(1)
    everything = await call(mcp_client, "stack_status", {"with_stats": True})
    mine = next(s for s in everything["stacks"] if s["stack"] == project_name)
    svc = mine["services"][0]
    assert mine["managed"] and svc["state"] == "running" and svc["restarts"] == 0
    assert svc["memory_bytes"] and svc["memory_bytes"] > 0 and svc["started_at"]

    page = await call(mcp_client, "stack_logs", {"stack": "chatty", "limit": 10})
    text = json.dumps(page)
    assert secret not in text and len(page["lines"]) == 10 and page["truncated"] and page["next_until"]
    assert page["lines"][-1]["text"] == "ERROR: db down"
    older = await call(mcp_client, "stack_logs", {"stack": "chatty", "limit": 10, "until": page["next_until"]})
    assert len(older["lines"]) == 10 and older["lines"][-1]["time"] < page["lines"][0]["time"]
    first_page = {(ln["time"], ln["text"]) for ln in page["lines"]}
    assert not first_page & {(ln["time"], ln["text"]) for ln in older["lines"]}
    assert secret not in json.dumps(older)
    grep = await call(mcp_client, "stack_logs", {"stack": project_name, "grep": "error"})
    assert [ln["text"] for ln in grep["lines"]] == ["ERROR: db down"] and not grep["truncated"]
    bad = await mcp_client.call_tool("stack_logs", {"stack": project_name, "grep": "(", "regex": True})
    assert bad.is_error and "regular expression" in bad.content[0].text
    missing = await mcp_client.call_tool("stack_status", {"stack": "no-such-stack"})
    assert missing.is_error and "list_stacks" in missing.content[0].text

    diagnosis = await call(mcp_client, "diagnose_stack", {"stack": "chatty"})
    errors = [f for f in diagnosis["findings"] if f["rule"] == "log-errors"]
    assert errors and errors[0]["severity"] == "warning" and diagnosis["healthy"]  # running: no error finding
    assert any("signature" in e and "error: db down" in e for e in errors[0]["evidence"])
    assert secret not in json.dumps(diagnosis)

    # critical stack: stop needs confirmation; restart does not; volumes never removed
    refused = await mcp_client.call_tool("stack_control", {"stack": "chatty", "action": "stop"})
    assert refused.is_error and "confirm" in refused.content[0].text
    done = await call(mcp_client, "stack_control", {"stack": "chatty", "action": "stop", "confirm": True,
                                                     "reason": "test"})
    assert done["operation_id"] and done["services"] == ["talk"]
    status = await call(mcp_client, "stack_status", {"stack": project_name})
    assert status["stacks"][0]["services"][0]["state"] == "exited"
    await call(mcp_client, "stack_control", {"stack": "chatty", "action": "start"})
    maint = await call(mcp_client, "stack_control", {"stack": "chatty", "action": "maintenance_on", "until": "1h",
                                                      "reason": "disk swap"})
    assert maint["maintenance"]["reason"] == "disk swap"
    status = await call(mcp_client, "stack_status", {"stack": project_name})
    assert status["stacks"][0]["maintenance"]["reason"] == "disk swap"
    await call(mcp_client, "stack_control", {"stack": "chatty", "action": "maintenance_off"})
    status = await call(mcp_client, "stack_status", {"stack": project_name})
    assert status["stacks"][0]["maintenance"] is None
    removed = await call(mcp_client, "stack_control", {"stack": "chatty", "action": "remove", "confirm": True})
    assert "volumes are kept" in removed["detail"]
    assert subprocess.run(["docker", "volume", "inspect", f"{project_name}_keep"], capture_output=True).returncode == 0
    gone = await mcp_client.call_tool("stack_status", {"stack": project_name})
    assert gone.is_error


async def test_resources_status_and_events(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "res", NETWORKS.format(name=project_name, app_net="back"))
    up(directory)
    status = await mcp_client.read_resource(f"stack://{project_name}/status")
    body = json.loads(status.contents[0].text)
    assert {s["service"] for s in body["stacks"][0]["services"]} == {"db", "app"}
    events = await mcp_client.read_resource(f"stack://{project_name}/events")
    body = json.loads(events.contents[0].text)
    assert any(e["action"] == "start" and e["service"] == "db" for e in body["events"])


async def test_control_refuses_unmanaged_and_unknown(
    docker_engine: None, mcp_client: Any, stacks_root: Path, tmp_path: Path, project_name: str
) -> None:
    write_stack(stacks_root, "known", NETWORKS.format(name=project_name, app_net="back"))
    unknown = await mcp_client.call_tool("stack_control", {"stack": "known", "action": "restart",
                                                           "services": ["nope"]})
    assert unknown.is_error and "no service nope" in unknown.content[0].text
    outside = await mcp_client.call_tool("stack_control", {"stack": "elsewhere-project", "action": "stop"})
    assert outside.is_error and "observed, not controlled" in outside.content[0].text
    no_until = await mcp_client.call_tool("stack_control", {"stack": "known", "action": "maintenance_on"})
    assert no_until.is_error and "until" in no_until.content[0].text


async def test_port_conflict_diagnosed(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        directory = write_stack(stacks_root, "ports", f"""\
name: {project_name}
services:
  web:
    image: dsm-test/web:1.0
    init: true
    ports: ["127.0.0.1:{port}:80"]
    labels: {{dsm.test: "1"}}
""")
        failed = subprocess.run(["docker", "compose", "up", "-d"], cwd=directory, capture_output=True, timeout=120)
        assert failed.returncode != 0
        out = await call(mcp_client, "diagnose_stack", {"stack": "ports"})
        conflict = [f for f in out["findings"] if f["rule"] == "port-conflict"]
        assert conflict and conflict[0]["severity"] == "error" and not out["healthy"]
        assert str(port) in conflict[0]["evidence"][0]
    finally:
        holder.close()


async def test_changes_since_last_deployment(
    docker_engine: None, settings: Any, stacks_root: Path, project_name: str
) -> None:
    """An image swapped by hand after the recorded deployment, and files edited since, are reported."""
    from server.monitor.diagnose import diagnose_stack
    from server.runtime import Runtime

    compose = NETWORKS.format(name=project_name, app_net="back")
    directory = write_stack(stacks_root, "drift", compose)
    up(directory)
    runtime = Runtime(settings)
    web10 = json.loads(subprocess.run(["docker", "image", "inspect", "dsm-test/web:1.0"], capture_output=True,
                                      text=True, check=True).stdout)[0]["Id"]
    op = runtime.operations().begin(project_name, "deploy", {})
    op.end("deployed", {"image_ids": {"db": web10, "app": web10}})
    out = await diagnose_stack(runtime, project_name)
    assert not [f for f in out.findings if f.category == "changes"], out.findings  # as deployed

    (directory / "compose.yaml").write_text(compose.replace("image: dsm-test/web:1.0\n    init: true\n    networks: "
                                                            "[back]\n    labels", "image: dsm-test/web:1.1\n    "
                                                            "init: true\n    networks: [back]\n    labels", 1))
    up(directory)  # db now runs 1.1: changed outside deploy_stack
    (directory / "compose.yaml").write_text((directory / "compose.yaml").read_text().replace(
        "depends_on: [db]", "depends_on: [db]\n    environment: {FEATURE: 'on'}"))
    out = await diagnose_stack(runtime, project_name)
    rules = {(f.rule, f.service) for f in out.findings}
    assert ("changed-since-deploy", "db") in rules and ("changed-since-deploy", "app") not in rules
    assert ("config-changed", "app") in rules and out.healthy  # changes are warnings/info, not errors
    runtime.close()


async def test_finished_one_shot_job_is_neither_degraded_nor_an_error(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    write = write_stack(stacks_root, "jobs", f"""\
name: {project_name}
services:
  migrate:
    image: dsm-test/busybox:1
    command: ["sh", "-c", "echo migrated"]
    labels: {{dsm.test: "1"}}
    x-dsm: {{one-shot: true}}
  web:
    image: dsm-test/web:1.0
    init: true
    depends_on:
      migrate: {{condition: service_completed_successfully}}
    labels: {{dsm.test: "1"}}
""")
    up(write)
    status = await call(mcp_client, "stack_status", {"stack": "jobs"})
    assert status["stacks"][0]["state"] == "running"
    out = await call(mcp_client, "diagnose_stack", {"stack": "jobs"})
    assert out["healthy"] and not [f for f in out["findings"] if f["service"] == "migrate"]
