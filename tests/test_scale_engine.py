"""scale_service on the real engine: replicas up and down and limits, kept by the next deploy_stack
and by a plain `docker compose up`; the refusals (container_name, fixed host port, memory the host
has not got) change nothing; the tool through an in-memory MCP client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.deploy.override import pinned_images
from server.errors import ConfirmationRequired, DsmError
from server.runtime import Runtime
from server.scale import scale_service
from server.scale_models import Ask
from tests.deploy_helpers import WEB_10, containers, deploy, docker, free_port, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def stack_text(name: str, extra: str = "", volume: bool = False) -> str:
    """A web service with no host port (two copies can run), verify window 0."""
    vol = "    volumes: [data:/data]\n" if volume else ""
    tail = "volumes:\n  data: {}\n" if volume else ""
    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n  web:\n    image: {WEB_10}\n    init: true\n"
            f"    mem_limit: 64m\n    cpus: 0.5\n    ports: ['80']\n{vol}{extra}{tail}")


SMALL = f"    image: {WEB_10}\n    init: true\n    mem_limit: 32m\n    cpus: 0.25\n"


def running(project: str, service: str = "web") -> list[str]:
    return sorted(c["ID"] for c in containers(project)
                  if f"com.docker.compose.service={service}" in c["Labels"] and c["State"] == "running")


def limits(container: str) -> tuple[int, int]:
    host = json.loads(docker("inspect", container))[0]["HostConfig"]
    return int(host["Memory"]), int(host["NanoCpus"])


def override_of(directory: Path) -> str:
    path = directory / "compose.dsm.yaml"
    return path.read_text() if path.is_file() else ""


def entry(directory: Path, service: str = "web") -> dict[str, object]:
    from server.deploy.override import scale_entry

    return scale_entry(directory, service)


async def test_scale_up_down_and_limits_survive_deploy_and_plain_up(runtime: Runtime, stacks_root: Path,
                                                                    project_name: str) -> None:
    directory = write(stacks_root, project_name, stack_text(project_name))
    assert (await deploy(runtime, project_name)).status == "deployed"
    assert len(running(project_name)) == 1

    planned = await scale_service(runtime, project_name, "web", Ask(replicas=3), dry_run=True)
    assert planned.status == "planned" and planned.changes == ["replicas 1 -> 3"]
    assert planned.suggestion is not None and planned.suggestion.memory  # measured from the running container
    assert override_of(directory) == "" and len(running(project_name)) == 1  # a dry run writes nothing

    up = await scale_service(runtime, project_name, "web", Ask(replicas=3, memory="96m", cpus=0.25))
    assert up.status == "deployed", up
    assert up.deploy is not None and up.deploy["backup_id"]
    [plan_phase] = [p for p in up.deploy["phases"] if p["name"] == "plan"]
    assert plan_phase["detail"].startswith("1 change: web scaled"), plan_phase  # never "0 change(s)"
    assert len(running(project_name)) == 3
    assert {limits(c) for c in running(project_name)} == {(96 * 1024**2, 250_000_000)}
    # Spelled as the file spells it (mem_limit, cpus): Compose refuses two spellings of one setting.
    assert entry(directory) == {"scale": 3, "mem_limit": "96m", "cpus": 0.25}

    # The next deploy_stack keeps them (the plan sees them: nothing to do) ...
    again = await deploy(runtime, project_name)
    assert again.status == "unchanged", again
    assert len(running(project_name)) == 3
    # ... and so does a plain `docker compose up` of the files plus ours.
    docker("compose", "-f", "compose.yaml", "-f", "compose.dsm.yaml", "up", "-d", cwd=directory)
    assert len(running(project_name)) == 3
    assert {limits(c) for c in running(project_name)} == {(96 * 1024**2, 250_000_000)}

    down = await scale_service(runtime, project_name, "web", Ask(replicas=1))
    assert down.status == "deployed", down
    assert len(running(project_name)) == 1
    assert (await deploy(runtime, project_name)).status == "unchanged"
    docker("compose", "up", "-d", cwd=directory)  # COMPOSE_FILE in .env lists ours
    assert len(running(project_name)) == 1 and limits(running(project_name)[0]) == (96 * 1024**2, 250_000_000)


async def test_refusals_change_nothing(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()
    directory = write(stacks_root, project_name, stack_text(
        project_name, volume=True, extra=f"  fixed:\n{SMALL}    ports: ['127.0.0.1:{port}:80']\n"
        "    x-dsm: {critical: true}\n"
        f"  named:\n{SMALL}    container_name: {project_name}-named\n"))
    first = await deploy(runtime, project_name, confirm=True)
    assert first.status == "deployed", first.findings
    env_before = (directory / ".env").read_text() if (directory / ".env").is_file() else ""
    ids = {s: running(project_name, s) for s in ("web", "fixed", "named")}

    with pytest.raises(DsmError, match="rule container-name"):
        await scale_service(runtime, project_name, "named", Ask(replicas=2))
    with pytest.raises(DsmError, match="rule fixed-host-port"):
        await scale_service(runtime, project_name, "fixed", Ask(replicas=2))
    with pytest.raises(ConfirmationRequired, match="two writers"):
        await scale_service(runtime, project_name, "web", Ask(replicas=2))
    total = int(docker("info", "--format", "{{.MemTotal}}"))
    with pytest.raises(DsmError, match="rule insufficient-resources") as refused:
        await scale_service(runtime, project_name, "web", Ask(replicas=3, memory=f"{total // 2 // 1024**2}m"),
                            confirm=True)
    assert "does not fit" in str(refused.value) and refused.value.state == "nothing was changed"
    # A critical service is not scaled without the user's yes (no client to ask here, no confirm).
    unconfirmed = await scale_service(runtime, project_name, "fixed", Ask(replicas=0))  # recreates nothing
    assert unconfirmed.status == "blocked" and "critical" in unconfirmed.next_steps[0]
    assert override_of(directory) == ""
    assert ((directory / ".env").read_text() if (directory / ".env").is_file() else "") == env_before
    assert {s: running(project_name, s) for s in ids} == ids


async def test_the_tool_over_mcp(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    from mcp import Client

    from server.app import build_server

    directory = write(stacks_root, project_name, stack_text(project_name))
    assert (await deploy(runtime, project_name)).status == "deployed"
    async with Client(build_server(runtime.settings, runtime)) as client:
        suggested = await client.call_tool("scale_service", {"stack": project_name, "service": "web"})
        assert not suggested.is_error, suggested.content
        assert suggested.structured_content["status"] == "suggested"
        assert suggested.structured_content["suggestion"]["memory"].endswith("m")
        result = await client.call_tool("scale_service", {"stack": project_name, "service": "web", "replicas": 2})
        assert not result.is_error, result.content
        assert result.structured_content["status"] == "deployed"
        assert result.structured_content["changes"] == ["replicas 1 -> 2"]
        bad = await client.call_tool("scale_service", {"stack": project_name, "service": "web", "memory": "lots"})
        assert bad.is_error
    assert len(running(project_name)) == 2 and entry(directory) == {"scale": 2}


async def test_a_failing_scale_rolls_back_to_the_previous_files(runtime: Runtime, stacks_root: Path,
                                                                 project_name: str) -> None:
    """Each container marks itself alive in the shared volume; one is healthy only while no other
    was alive in the last 3 s. Scaling to 2 fails the gate; the rollback leaves one healthy
    container and the files as they were. Five retries: the container the rollback starts sees the
    removed twin's mark for up to 3 s, which must not make it unhealthy before the mark ages."""
    probe = ("touch /data/alive-$$HOSTNAME; now=$$(date +%s); n=0; for f in /data/alive-*; do "
             "[ $$((now - $$(stat -c %Y $$f))) -le 3 ] && n=$$((n+1)); done; [ $$n -le 1 ]")
    check = f"    healthcheck: {{test: ['CMD-SHELL', '{probe}'], interval: 1s, timeout: 2s, retries: 5}}\n"
    directory = write(stacks_root, project_name, stack_text(project_name, extra=check, volume=True))
    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first
    before = running(project_name)
    env_before = (directory / ".env").read_bytes() if (directory / ".env").is_file() else None

    failed = await scale_service(runtime, project_name, "web", Ask(replicas=2), confirm=True, wait_timeout_s=20)
    assert failed.status == "rolled_back", failed
    assert failed.deploy is not None and failed.deploy["rollback"]["result"] == "restored", failed.deploy
    assert len(running(project_name)) == 1 and before
    assert entry(directory) == {}  # the previous entry (none) is back; the rollback pins the image it restarted
    # What the rollback itself does: the image it restarted is pinned (hence COMPOSE_FILE in .env).
    assert env_before is None and pinned_images(directory) == {"web": pinned_images(directory)["web"]}
    # Under those pins a scale is refused, and its dry run says so first (it said "planned" before).
    for dry_run in (True, False):
        with pytest.raises(DsmError, match="pinned by a rollback"):
            await scale_service(runtime, project_name, "web", Ask(replicas=2), dry_run=dry_run, confirm=True)
    assert entry(directory) == {} and len(running(project_name)) == 1
