"""Diagnosis that does not invent causes, on a real engine (issue 17).

A probe that cannot run is info, never an error; exited one-shots are not probed; a container
detached from its network is found, the call the finding names repairs it, and the dry-run plan
shows it as a change; errors after a deployment name it; restart reports health afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_stack
from tests.test_monitor_tools import call, up

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

PAIR = """\
name: {name}
x-dsm: {{verify_s: 0}}
services:
  db:
    image: {image}
    init: true
    restart: unless-stopped
    mem_limit: 64m
    cpus: 0.5
    networks: [back]
    labels: {{dsm.test: "1"}}
  app:
    image: {image}
    init: true
    restart: unless-stopped
    mem_limit: 64m
    cpus: 0.5
    networks: [back]
    depends_on: [db]
    labels: {{dsm.test: "1"}}
networks:
  back: {{labels: {{dsm.test: "1"}}}}
"""


@pytest.fixture
def no_nc_image(docker_engine: None, project_name: str) -> Any:
    """A web server image with no shell and no nc (busybox's httpd alone, from scratch), like a
    distroless image: the probe cannot run in it. (A busybox sh finds its nc applet without the link.)"""
    tag = f"dsm-test/nonc:{project_name}"
    dockerfile = (b"FROM dsm-test/web:1.0 AS src\nFROM scratch\nCOPY --from=src /bin/busybox /usr/sbin/httpd\n"
                  b"COPY --from=src /www /www\nEXPOSE 80\nENTRYPOINT [\"/usr/sbin/httpd\", \"-f\", \"-p\", \"80\", "
                  b"\"-h\", \"/www\"]\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, "--label", "dsm.test=1", "-"], check=True, timeout=120,
                   capture_output=True, input=dockerfile)
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=60)


async def test_probe_image_without_nc_is_info_or_a_real_probe(
    docker_engine: None, settings: Any, stacks_root: Path, project_name: str, no_nc_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from server.monitor import netcheck
    from server.monitor.diagnose import diagnose_stack
    from server.runtime import Runtime

    up(write_stack(stacks_root, "nonc", PAIR.format(name=project_name, image=no_nc_image)))
    runtime = Runtime(settings)
    try:
        # No helper image: the probe cannot run anywhere -> "could not probe", info, and healthy.
        monkeypatch.setattr(netcheck, "HELPER_REPOSITORIES", ())
        out = await diagnose_stack(runtime, project_name)
        assert out.healthy and not [f for f in out.findings if f.severity == "error"], out.findings
        info = [f for f in out.findings if f.rule == "could-not-probe"]
        assert info and info[0].severity == "info" and info[0].service == "app"
        assert "cannot start a shell" in " ".join(info[0].evidence)
        # With the local busybox image as helper, the probe runs from it: a real (good) result.
        monkeypatch.undo()
        out = await diagnose_stack(runtime, project_name)
        assert out.healthy and not [f for f in out.findings if f.rule in ("could-not-probe", "dependency-unreachable")]
    finally:
        runtime.close()


async def test_exited_one_shot_is_not_probed(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    # The job's image exposes a port; once it has finished nothing listens there: not a network fault.
    directory = write_stack(stacks_root, "job", f"""\
name: {project_name}
services:
  migrate:
    image: dsm-test/web:1.0
    entrypoint: ["sh", "-c", "echo migrated"]
    labels: {{dsm.test: "1"}}
  web:
    image: dsm-test/web:1.0
    init: true
    depends_on:
      migrate: {{condition: service_completed_successfully}}
    labels: {{dsm.test: "1"}}
""")
    up(directory)
    out = await call(mcp_client, "diagnose_stack", {"stack": "job"})
    assert out["healthy"], out["findings"]
    assert not [f for f in out["findings"] if f["rule"] in ("dependency-unreachable", "container-missing")
                or f["service"] == "migrate"]


async def test_detached_container_found_and_fixed_by_the_named_call(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    up(write_stack(stacks_root, "nets", PAIR.format(name=project_name, image="dsm-test/web:1.0")))
    subprocess.run(["docker", "network", "disconnect", f"{project_name}_back", f"{project_name}-db-1"],
                   check=True, capture_output=True, timeout=30)
    status = await call(mcp_client, "stack_status", {"stack": "nets"})
    nets = {s["service"]: s["networks"] for s in status["stacks"][0]["services"]}
    assert nets == {"db": [], "app": [f"{project_name}_back"]}

    out = await call(mcp_client, "diagnose_stack", {"stack": "nets"})
    detached = [f for f in out["findings"] if f["rule"] == "network-detached"]
    assert len(detached) == 1 and detached[0]["service"] == "db" and detached[0]["severity"] == "error"
    call_named = "deploy_stack(path='nets', services=['db'])"
    assert call_named in detached[0]["fix"]
    unreachable = [f for f in out["findings"] if f["rule"] == "dependency-unreachable"]
    assert unreachable and "compose file" not in unreachable[0]["fix"] and call_named in unreachable[0]["fix"]
    assert not any("compose file" in step for step in out["next_steps"])

    plan = await call(mcp_client, "deploy_stack", {"path": "nets", "services": ["db"], "dry_run": True})
    assert plan["plan"], (plan["findings"], plan["phases"])
    db = next(s for s in plan["plan"]["services"] if s["service"] == "db")
    assert db["action"] == "recreate" and "not attached" in db["reason"]

    done = await call(mcp_client, "deploy_stack", {"path": "nets", "services": ["db"]})
    assert done["status"] == "deployed", done
    out = await call(mcp_client, "diagnose_stack", {"stack": "nets"})
    assert out["healthy"] and not [f for f in out["findings"] if f["category"] == "drift"], out["findings"]


async def test_errors_after_a_deployment_name_it_and_restore_noise_is_labelled(
    docker_engine: None, settings: Any, stacks_root: Path, project_name: str
) -> None:
    from server.monitor.diagnose import diagnose_stack
    from server.runtime import Runtime

    directory = write_stack(stacks_root, "after", f"""\
name: {project_name}
services:
  worker:
    image: dsm-test/busybox:1
    init: true
    command:
      - sh
      - -c
      - "echo 'ERROR:  role \\"postgres\\" already exists'; while true; do echo 'ERROR: no queue'; sleep 1; done"
    labels: {{dsm.test: "1"}}
""")
    runtime = Runtime(settings)
    try:
        op = runtime.operations().begin(project_name, "deploy", {})
        up(directory)  # the deploy started the worker; its errors began after it
        op.end("deployed", {"plan": {"services": [{"service": "worker", "action": "create",
                                                   "image_to": "dsm-test/busybox:1"}]}})
        out = await diagnose_stack(runtime, project_name)
        first = out.findings[0]
        assert first.rule == "began-after-deploy" and op.id in first.message and "worker create" in first.message
        assert "rollback" in (first.fix or "")
        noise = [f for f in out.findings if f.rule == "restore-noise"]
        assert noise and noise[0].severity == "info" and "already exists" in noise[0].evidence[0]
        errors = next(f for f in out.findings if f.rule == "log-errors")
        assert not any("already exists" in e for e in errors.evidence)
    finally:
        runtime.close()


async def test_restart_reports_health_after_the_act(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    # Fails on its second start (the marker file survives a restart): the restart must say so.
    directory = write_stack(stacks_root, "flaky", f"""\
name: {project_name}
services:
  web:
    image: dsm-test/web:1.0
    init: true
    labels: {{dsm.test: "1"}}
  once:
    image: dsm-test/busybox:1
    init: true
    restart: "no"
    command: ["sh", "-c", "if [ -f /tmp/ran ]; then echo second start refused; exit 3; fi; touch /tmp/ran; sleep 900"]
    labels: {{dsm.test: "1"}}
""")
    up(directory)
    good = await call(mcp_client, "stack_control", {"stack": "flaky", "action": "restart", "services": ["web"]})
    assert good["health"]["ok"] and [s["verdict"] for s in good["health"]["services"]] == ["ready"]
    bad = await call(mcp_client, "stack_control", {"stack": "flaky", "action": "restart", "services": ["once"]})
    assert not bad["health"]["ok"] and "exited with code 3" in bad["health"]["failure"]
    assert "NOT healthy" in bad["detail"]
