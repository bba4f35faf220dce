"""Smoke checks, the critical-log trigger, pulls (with the healthcheck re-check), an explicit
rollback, and a 12-service stack shaped like Supabase deployed, broken and rolled back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.deploy.compose_executor import missing_healthchecks
from server.deploy.pipeline import Deployer
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import cleanup_project
from tests.deploy_helpers import (
    POSTGRES,
    WEB_10,
    WEB_11,
    WEB_BROKEN,
    WEB_NOHC,
    container_of,
    containers,
    deploy,
    docker,
    free_port,
    get,
    phase,
    remove_pins,
    runtime_for,
    web_service,
    web_stack,
    write,
)
from tests.test_registry_config import delete_from_registry

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def smoke(port: int, path: str = "/") -> str:
    return (f"    x-dsm:\n      smoke:\n        - {{http: 'http://web/', expect_status: 200}}\n"
            f"        - {{http: 'http://127.0.0.1:{port}{path}', expect_status: 200, timeout_s: 3}}\n"
            "        - {exec: ['cat', '/www/index.html'], expect_exit: 0}\n")


async def test_smoke_checks_pass_and_fail(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port, extra=smoke(port)))
    report = await deploy(runtime, project_name)
    assert report.status == "deployed", report
    detail = phase(report, "smoke").detail
    assert "inside network" in detail and "from the host" in detail and "exit 0" in detail
    assert docker("ps", "-aq", "--filter", f"label=dsm.smoke={project_name}") == ""  # probe removed

    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port, extra=smoke(port, "/missing")))
    failed = await deploy(runtime, project_name)
    assert failed.status == "rolled_back"
    assert phase(failed, "smoke").status == "failed" and "HTTP 404" in phase(failed, "smoke").detail
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_critical_log_lines_trigger_a_rollback(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    noisy = ("    command: ['sh', '-c', 'httpd -p 80 -h /www; while true; do "
             "echo \"FATAL: could not connect to the database\"; sleep 0.4; done']\n")
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port, extra=noisy))
    report = await deploy(runtime, project_name, verify_s=20)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and "critical lines" in report.rollback.why
    assert any("could not connect" in e for e in report.findings[-1].evidence)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_missing_healthcheck_known_from_the_registry_or_after_the_pull(
        runtime: Runtime, stacks_root: Path, project_name: str, registry: str) -> None:
    ref = f"{registry}/{project_name}/web:nohc"
    docker("tag", WEB_NOHC, ref)
    docker("push", ref)
    docker("rmi", ref)
    try:
        # The registry tells the pre-flight the image has no healthcheck: blocked, nothing pulled.
        write(stacks_root, project_name, web_stack(project_name, ref))
        report = await deploy(runtime, project_name)
        assert report.status == "blocked", report
        assert phase(report, "preflight").status == "blocked"
        assert "missing-healthcheck" in {f.rule for f in report.findings}
        assert containers(project_name) == [] and docker("images", "-q", ref) == ""
        # When it could not be told before, the pulled image is checked before `up` (and a waiver holds).
        from server.stackload import load_stack

        docker("pull", ref)
        stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
        found = await missing_healthchecks(runtime.engine(), stack, ["web"])
        assert [f.rule for f in found] == ["missing-healthcheck"] and found[0].service == "web"
        waive = "    x-dsm: {waive: [{rule: missing-healthcheck, reason: smoke-tested}]}\n"
        write(stacks_root, project_name, web_stack(project_name, ref, extra=waive))
        stack = await load_stack(runtime.settings, runtime.compose(), path=project_name)
        assert await missing_healthchecks(runtime.engine(), stack, ["web"]) == []
    finally:
        docker("rmi", ref, check=False)
        delete_from_registry(registry, ref)

    # An image with a healthcheck, only in the registry: pulled, then deployed.
    ok_ref = f"{registry}/{project_name}/web:1.1"
    docker("tag", WEB_11, ok_ref)
    docker("push", ok_ref)
    docker("rmi", ok_ref)
    try:
        write(stacks_root, project_name, web_stack(project_name, ok_ref))
        report = await deploy(runtime, project_name)
        assert report.status == "deployed", report
        assert phase(report, "pull").status == "ok" and report.plan and report.plan.services[0].pull
    finally:
        cleanup_project(project_name)
        docker("rmi", ok_ref, check=False)
        delete_from_registry(registry, ok_ref)


async def test_explicit_rollback_to_the_previous_deployment(runtime: Runtime, stacks_root: Path,
                                                            project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    first = await deploy(runtime, project_name)
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"

    report = await Deployer(runtime).rollback(project_name)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.to_deployment == first.deployment_id
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert WEB_10 in (directory / "compose.yaml").read_text()
    # Nothing earlier than the first deployment: refused, nothing changed.
    with pytest.raises(Exception, match="no earlier successful deployment"):
        await Deployer(runtime).rollback(project_name)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


def supabase(name: str, port: int, auth_image: str, auth_env: str = "") -> str:
    def svc(n: str, deps: list[str], image: str = WEB_10, extra: str = "") -> str:
        dep = "".join(f"      {d}: {{condition: service_healthy}}\n" for d in deps)
        return web_service(n, image, extra=(f"    depends_on:\n{dep}" if deps else "") + extra)

    db = (f"  db:\n    image: {POSTGRES}\n    init: true\n    restart: unless-stopped\n"
          "    environment: {POSTGRES_HOST_AUTH_METHOD: trust}\n    volumes: [dbdata:/var/lib/postgresql/data]\n"
          "    mem_limit: 256m\n    cpus: 1\n    labels: {dsm.test: '1'}\n")
    services = [
        db,
        svc("auth", ["db"], auth_image, auth_env),
        svc("rest", ["db"]), svc("realtime", ["db"]), svc("storage", ["db", "rest"]), svc("imgproxy", []),
        svc("meta", ["db"]), svc("functions", []), svc("analytics", ["db"]), svc("vector", []),
        svc("kong", ["auth", "rest", "realtime", "storage", "meta", "functions"],
            extra=f"    ports: ['127.0.0.1:{port}:80']\n"),
        svc("studio", ["kong", "analytics"]),
    ]
    return (f"name: {name}\nx-dsm: {{verify_s: 3}}\nservices:\n" + "".join(services)
            + "volumes:\n  dbdata:\n    labels: {dsm.test: '1'}\n")


async def test_supabase_shaped_stack_deployed_broken_rolled_back(runtime: Runtime, stacks_root: Path,
                                                                 project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, supabase(project_name, port, WEB_10))
    first = await deploy(runtime, project_name, wait_timeout_s=150)
    assert first.status == "deployed", first
    assert len(first.services) == 12 and all(s.health == "healthy" for s in first.services)

    (directory / "compose.yaml").write_text(
        supabase(project_name, port, WEB_BROKEN, "    environment: {WEB_CRASH_AFTER: '0'}\n"))
    broken = await deploy(runtime, project_name, wait_timeout_s=150)
    assert broken.status == "rolled_back", broken
    assert broken.plan is not None
    assert {s.service for s in broken.plan.changes} == {"auth"}
    assert broken.findings[-1].service == "auth"
    states = {s.name: s for s in broken.services}
    assert len(states) == 12 and all(s.state == "running" for s in states.values())
    assert states["auth"].health == "healthy"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_critical_stack_needs_confirmation_and_progress_is_reported(
        settings: Settings, stacks_root: Path, project_name: str, docker_engine: None) -> None:
    import dataclasses

    from mcp import Client

    from server.app import build_server
    from tests.helpers_monitor import alert_receiver

    port = free_port()
    text = web_stack(project_name, WEB_10, port).replace("x-dsm: {verify_s: 0}", "x-dsm: {verify_s: 0, critical: true}")
    write(stacks_root, project_name, text)
    receiver = alert_receiver()
    url, received = receiver.__enter__()
    runtime = runtime_for(dataclasses.replace(settings, alert_urls=(url,)))
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    try:
        async with Client(build_server(runtime.settings, runtime)) as client:
            refused = await client.call_tool("deploy_stack", {"path": project_name})
            out = refused.structured_content or {}
            assert out["status"] == "blocked" and "critical" in out["next_steps"][0]
            assert containers(project_name) == []
            done = await client.call_tool("deploy_stack", {"path": project_name, "confirm": True},
                                          progress_callback=on_progress)
            assert (done.structured_content or {})["status"] == "deployed"
        # The outcome is announced through the alert path; the blocked call changed nothing and is not.
        assert [(r["type"], r["title"]) for r in received] == [("success", f"{project_name}: deploy deployed")]
    finally:
        receiver.__exit__(None, None, None)
        runtime.close()
        remove_pins(project_name)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    joined = " | ".join(progress)
    for word in ("pre-flight", "backup", "up:", "health gate", "recording"):
        assert word in joined, joined


async def test_deploy_a_subset_of_services(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    text = web_stack(project_name, WEB_10).replace("services:\n", "services:\n" + web_service("side", WEB_11), 1)
    write(stacks_root, project_name, text)
    report = await deploy(runtime, project_name, services=["web"])
    assert report.status == "deployed", report
    assert report.plan is not None
    assert {s.service: s.action for s in report.plan.services} == {"side": "unchanged", "web": "create"}
    assert {s.name for s in report.services} == {"web"}
    full = await deploy(runtime, project_name)
    assert full.status == "deployed" and {s.name for s in full.services} == {"web", "side"}


async def test_waived_healthcheck_gets_a_grace_period(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    waive = "    x-dsm: {waive: [{rule: missing-healthcheck, reason: watched by its smoke test}]}\n"
    write(stacks_root, project_name, web_stack(project_name, WEB_NOHC, extra=waive))
    started = time.monotonic()
    report = await deploy(runtime, project_name)
    assert report.status == "deployed", report
    assert phase(report, "health").duration_s >= 4.5  # stayed up through the grace period
    assert time.monotonic() - started < 60
    # Without the waiver the pre-flight blocks: nothing changes.
    write(stacks_root, project_name, web_stack(project_name, WEB_NOHC).replace(WEB_NOHC, WEB_NOHC + "\n    command: "
                                                                                "['sh', '-c', 'exit 0']"))
    blocked = await deploy(runtime, project_name)
    assert blocked.status == "blocked" and "missing-healthcheck" in {f.rule for f in blocked.findings}


async def test_rollback_with_restore_data_needs_confirmation(runtime: Runtime, stacks_root: Path,
                                                             project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    first = await deploy(runtime, project_name)
    docker("exec", container_of(project_name, "web"), "sh", "-c", "echo one > /data/keep")
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    assert (await deploy(runtime, project_name)).status == "deployed"  # its backup holds "one"
    docker("exec", container_of(project_name, "web"), "sh", "-c", "echo two > /data/keep")

    with pytest.raises(Exception, match="confirm"):
        await Deployer(runtime).rollback(project_name, restore_data=True)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"  # refused: nothing changed
    assert docker("exec", container_of(project_name, "web"), "cat", "/data/keep") == "two"

    report = await Deployer(runtime).rollback(project_name, restore_data=True, confirm=True)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.to_deployment == first.deployment_id
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert docker("exec", container_of(project_name, "web"), "cat", "/data/keep") == "one"
