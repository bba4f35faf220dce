"""One endpoint on the real engine: with DOCKER_CONTEXT set, pre-flight, the plan, the backup,
Compose and the health gate all act on the context's engine, never one on another's.

The context lives in a temporary DOCKER_CONFIG; the environment is changed only around the
deploy itself, so the tests' own `docker` calls (and the project cleanup) reach the local engine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from server.settings import Settings
from tests.deploy_helpers import WEB_10, deploy, free_port, get, phase, remove_pins, runtime_for, web_stack, write
from tests.test_endpoint import make_context, use_context

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

LOCAL = "unix:///var/run/docker.sock"


def local_docker(*args: str) -> str:
    """The test's own look at the local engine, whatever the deploy's environment said."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_HOST")}
    env["DOCKER_HOST"] = os.environ.get("DSM_TEST_DOCKER_HOST") or LOCAL
    out = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def project_objects(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": local_docker("ps", "-aq", "--filter", label).split(),
        "networks": local_docker("network", "ls", "-q", "--filter", label).split(),
        "volumes": local_docker("volume", "ls", "-q", "--filter", label).split()
        + local_docker("volume", "ls", "-q", "--filter", f"name={project}_").split(),
    }


@contextmanager
def environment(monkeypatch: pytest.MonkeyPatch, **values: str) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.delenv("DOCKER_HOST", raising=False)
        for key, value in values.items():
            patch.setenv(key, value)
        yield


async def test_a_context_on_an_unreachable_engine_blocks_the_deploy_and_creates_nothing(
    settings: Settings, stacks_root: Path, project_name: str, docker_engine: None, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "docker-config"
    make_context(config, "away", "unix:///nonexistent.sock")
    write(stacks_root, project_name, web_stack(project_name, WEB_10, free_port()))
    runtime = runtime_for(replace(settings, docker_host=None, docker_context="away"))
    try:
        with environment(monkeypatch, DOCKER_CONFIG=str(config), DOCKER_CONTEXT="away"):
            report = await deploy(runtime, project_name, wait_timeout_s=20)
    finally:
        runtime.close()
    assert report.status == "blocked", report
    assert phase(report, "preflight").status == "blocked" and phase(report, "up") is None
    unreachable = [f for f in report.findings if f.rule == "engine-unreachable"]
    assert unreachable and "context 'away'" in unreachable[0].message, report.findings
    assert "unix:///nonexistent.sock" in unreachable[0].message
    assert project_objects(project_name) == {"containers": [], "networks": [], "volumes": []}


async def test_every_adapter_follows_docker_context_over_the_current_context(
    settings: Settings, stacks_root: Path, project_name: str, docker_engine: None, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The CLI's current context is dead, DOCKER_CONTEXT names the live engine: the docker CLI (and
    # Compose) use DOCKER_CONTEXT. docker-py used to read currentContext alone and checked a dead
    # engine (or, the other way round, the local one while Compose ran elsewhere).
    config = tmp_path / "docker-config"
    make_context(config, "live", os.environ.get("DSM_TEST_DOCKER_HOST") or LOCAL)
    make_context(config, "dead", "unix:///nonexistent.sock")
    use_context(config, "dead")
    port = free_port()
    write(stacks_root, project_name, web_stack(project_name, WEB_10, port))
    runtime = runtime_for(replace(settings, docker_host=None, docker_context="live"))
    try:
        with environment(monkeypatch, DOCKER_CONFIG=str(config), DOCKER_CONTEXT="live"):
            report = await deploy(runtime, project_name, wait_timeout_s=60)
        assert report.status == "deployed", report
        assert runtime.endpoint().name == "live" and runtime.endpoint().source == "DOCKER_CONTEXT"
        assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
        assert len(project_objects(project_name)["containers"]) == 1
    finally:
        runtime.close()
        remove_pins(project_name)
