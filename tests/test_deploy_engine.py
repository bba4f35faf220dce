"""deploy_stack / rollback on the real engine: healthy deploys, every failure mode rolled back,
blocked deploys that change nothing, hostile input. Uses the locally built test images."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from server.errors import DsmError
from server.runtime import Runtime
from tests.deploy_helpers import (
    POSTGRES,
    WEB_10,
    WEB_11,
    WEB_BROKEN,
    container_of,
    containers,
    deploy,
    docker,
    free_port,
    get,
    phase,
    web_service,
    web_stack,
    write,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_healthy_deploy_then_unchanged_and_plan_ids(runtime: Runtime, stacks_root: Path,
                                                          project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    planned = await deploy(runtime, project_name, dry_run=True)
    assert planned.status == "planned" and planned.plan is not None
    assert [(s.service, s.action) for s in planned.plan.services] == [("web", "create")]
    assert f"{project_name}_data" in planned.plan.volumes_to_create
    assert containers(project_name) == []  # a dry run changes nothing

    report = await deploy(runtime, project_name, plan_id=planned.plan.plan_id)
    assert report.status == "deployed", report
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert report.services[0].health == "healthy" and report.services[0].image_digest
    assert [p.name for p in report.phases][:4] == ["preflight", "plan", "backup", "pull"]

    t = time.monotonic()
    again = await deploy(runtime, project_name)
    assert again.status == "unchanged" and time.monotonic() - t < 10
    assert again.plan is not None and not again.plan.changes

    # A plan computed before the files changed is refused, and nothing moves.
    stale = await deploy(runtime, project_name, dry_run=True)
    assert stale.plan is not None
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    refused = await deploy(runtime, project_name, plan_id=stale.plan.plan_id)
    assert refused.status == "blocked" and refused.findings[-1].rule == "plan-changed"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_failing_healthcheck_rolls_back_with_data_intact(runtime: Runtime, stacks_root: Path,
                                                               project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    docker("exec", container_of(project_name, "web"), "sh", "-c", "echo precious > /data/keep")

    failing = "    healthcheck: {test: ['CMD', 'false'], interval: 1s, timeout: 1s, retries: 2}\n"
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port, extra=failing))
    report = await deploy(runtime, project_name, wait_timeout_s=30)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.result == "restored"
    assert "unhealthy" in report.rollback.why and phase(report, "health").status == "failed"
    assert report.incident_id and report.backup_id
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert docker("exec", container_of(project_name, "web"), "cat", "/data/keep") == "precious"
    # The previous files are back, the failed ones are kept with the backup, the pin is ours.
    assert WEB_10 in (directory / "compose.yaml").read_text()
    assert "COMPOSE_FILE=compose.yaml:compose.dsm.yaml" in (directory / ".env").read_text()
    kept = runtime.settings.state_dir / "backups" / project_name / report.backup_id / "failed-files" / "compose.yaml"
    assert WEB_11 in kept.read_text()
    # A plain `docker compose up` in the stack directory gives the rolled-back state.
    docker("compose", "up", "-d", cwd=directory)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"

    # The next successful deploy removes the pin and the COMPOSE_FILE entry we added.
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    assert not (directory / "compose.dsm.yaml").exists()
    assert "COMPOSE_FILE" not in (directory / ".env").read_text()
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"


async def test_crash_loop_is_caught_by_the_gate(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    crash = "    environment: {WEB_CRASH_AFTER: '0'}\n"
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_BROKEN, port, extra=crash))
    report = await deploy(runtime, project_name, wait_timeout_s=30)
    assert report.status == "rolled_back", report
    why = report.rollback.why if report.rollback else ""
    assert "restart loop" in why or "exited" in why or "restarting" in why
    assert any("simulated crash" in e for e in report.findings[-1].evidence)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_oom_kill_during_verification(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    # Serves (healthy) first, then a child process eats memory past the 64 MiB limit.
    hog = ("    command: ['sh', '-c', 'httpd -p 80 -h /www; sleep 3; a=x; while true; do a=$$a$$a; done']\n")
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_11, port, extra=hog))
    report = await deploy(runtime, project_name, verify_s=20)
    assert report.status == "rolled_back", report
    assert phase(report, "health").status == "ok" and phase(report, "verify").status == "failed"
    assert report.rollback is not None
    assert any(w in report.rollback.why for w in ("OOM", "memory", "restart", "exited")), report.rollback.why
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_port_held_by_another_process_blocks_and_changes_nothing(runtime: Runtime, stacks_root: Path,
                                                                       project_name: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
        report = await deploy(runtime, project_name)
    assert report.status == "blocked"
    assert "port-conflict" in {f.rule for f in report.findings}
    assert report.operation_id is None and report.backup_id is None
    assert containers(project_name) == []
    assert docker("volume", "ls", "-q", "--filter", f"name={project_name}") == ""


async def test_image_missing_from_registry_blocks(runtime: Runtime, stacks_root: Path, project_name: str,
                                                  registry: str) -> None:
    write(stacks_root, project_name, web_stack(project_name, f"{registry}/dsm-test/web:9.9-missing"))
    report = await deploy(runtime, project_name)
    assert report.status == "blocked"
    assert "image-unavailable" in {f.rule for f in report.findings}
    assert containers(project_name) == []


async def test_hostile_input_is_refused(runtime: Runtime, stacks_root: Path, project_name: str,
                                        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "compose.yaml").write_text(web_stack(project_name))
    for bad in ("../outside", str(outside), "--project-directory=/", "-f"):
        with pytest.raises(DsmError):
            await deploy(runtime, bad)
    pairs = zip("abcdefg", "bcdefgh", strict=True)
    bomb = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in pairs)
    write(stacks_root, project_name, bomb + "services:\n" + web_service())
    report = await deploy(runtime, project_name)
    assert report.status == "blocked" and report.findings[0].rule == "unsafe-yaml"
    write(stacks_root, project_name, web_stack(project_name))
    with pytest.raises(DsmError, match="unknown service"):
        await deploy(runtime, project_name, services=["--volumes"])
    assert containers(project_name) == []


async def test_failed_first_deploy_leaves_nothing_running_and_keeps_volumes(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    crash = "    environment: {WEB_CRASH_AFTER: '0'}\n"
    write(stacks_root, project_name, web_stack(project_name, WEB_BROKEN, extra=crash))
    report = await deploy(runtime, project_name, wait_timeout_s=30)
    assert report.status == "rolled_back", report
    assert report.rollback is not None and report.rollback.to_deployment is None
    assert "nothing ran before" in phase(report, "rollback").detail
    assert containers(project_name) == []
    assert docker("volume", "ls", "-q", "--filter", f"name={project_name}_data") == f"{project_name}_data"


async def test_sustained_memory_near_the_limit_fails_verification(runtime: Runtime, stacks_root: Path,
                                                                  project_name: str) -> None:
    """A release that holds ~98% of its memory limit (no OOM kill) through the window is rolled back.

    (CPU is judged the same way, but on a shared, saturated test host a container does not reliably
    get its CPU quota, so CPU pressure is unit-tested only: test_deploy_units.)"""
    port = free_port()
    directory = write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    # 194 MiB in one allocation (+1.4 MiB of perl) = 97.6% of 200 MiB, 4.6 MiB short of an OOM kill.
    hog = ("    entrypoint: ['perl', '-e', 'vec($$x, 194 * 1048576 - 1, 8) = 1; sleep 1000']\n"
           "    healthcheck: {test: ['CMD', 'true'], interval: 1s, retries: 2}\n"
           "    x-dsm: {role: web}\n")
    text = web_stack(project_name, POSTGRES, port, extra=hog).replace("mem_limit: 64m", "mem_limit: 200m")
    (directory / "compose.yaml").write_text(text)
    report = await deploy(runtime, project_name, verify_s=24)
    assert report.status == "rolled_back", [p.detail for p in report.phases]
    assert report.rollback is not None and "memory above 95% of its limit, sustained" in report.rollback.why
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


async def test_a_restart_from_before_the_deploy_is_not_a_restart_loop(runtime: Runtime, stacks_root: Path,
                                                                      project_name: str) -> None:
    """A service that crashed once, long ago, and was brought back by its restart policy keeps
    RestartCount=1; deploying another service of the stack must not read that as a loop."""
    port = free_port()
    side = web_service("side", WEB_10)
    text = web_stack(project_name, WEB_10, port).replace("volumes:\n  data:", side + "volumes:\n  data:")
    directory = write(stacks_root, project_name, text)
    assert (await deploy(runtime, project_name)).status == "deployed"
    sidecar = container_of(project_name, "side")
    docker("exec", sidecar, "kill", "1")  # the init process ends: the container exits, its policy restarts it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = docker("inspect", "-f", "{{.RestartCount}} {{.State.Health.Status}}", sidecar)
        if state == "1 healthy":
            break
        time.sleep(0.5)
    assert state == "1 healthy", state
    (directory / "compose.yaml").write_text(text.replace(f"image: {WEB_10}", f"image: {WEB_11}", 1))
    report = await deploy(runtime, project_name, wait_timeout_s=60)
    assert report.status == "deployed", report.rollback
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"
