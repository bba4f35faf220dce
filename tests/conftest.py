"""Shared fixtures.

Tests that need a real Docker engine use the ``docker_engine`` fixture: under CI=true a missing
engine is a failure, never a skip. Everything a test creates on the engine carries the label
``dsm.test=1`` and a ``dsmtest`` name prefix, and is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from server.settings import Settings

if TYPE_CHECKING:
    from server.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
PROVISION_ENV = REPO / ".cache" / "provision.env"
TEST_LABEL = "dsm.test=1"


def provision_facts() -> dict[str, str]:
    """What scripts/provision.sh recorded (registry address, ...)."""
    facts: dict[str, str] = {}
    if PROVISION_ENV.is_file():
        for line in PROVISION_ENV.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                facts[key.strip()] = value.strip().strip('"')
    return facts


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stacks_root(tmp_path: Path) -> Path:
    root = tmp_path / "stacks"
    root.mkdir()
    return root


@pytest.fixture
def settings(stacks_root: Path, tmp_path: Path) -> Settings:
    return Settings(stacks_root=stacks_root, state_dir=tmp_path / "state")


def write_stack(root: Path, name: str, compose: str, env: str | None = None, file: str = "compose.yaml") -> Path:
    """Create ``root/name/compose.yaml`` (and ``.env``); returns the stack directory."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file).write_text(compose)
    if env is not None:
        (directory / ".env").write_text(env)
    return directory


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Require a working engine: fail under CI, skip (loudly) on a developer machine without one."""
    if _docker_ok():
        return
    message = "a Docker engine is required for this test: run `make test` (it provisions one) or start dockerd"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def registry(docker_engine: None) -> str:
    """host:port of the local test registry started by scripts/provision.sh."""
    address = provision_facts().get("DSM_TEST_REGISTRY") or os.environ.get("DSM_TEST_REGISTRY")
    if not address:
        message = "no local registry recorded in .cache/provision.env: run scripts/provision.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return address


@pytest.fixture
def project_name() -> Iterator[str]:
    """A unique Compose project name; its containers, networks and volumes are removed afterwards."""
    name = f"dsmtest{uuid.uuid4().hex[:8]}"
    yield name
    cleanup_project(name)


def cleanup_project(name: str) -> None:
    for kind, flt in (("container", f"label=com.docker.compose.project={name}"),
                      ("network", f"label=com.docker.compose.project={name}"),
                      ("volume", f"label=com.docker.compose.project={name}")):
        try:
            ids = subprocess.run(["docker", kind, "ls", "-q", "--filter", flt] if kind != "container"
                                 else ["docker", "ps", "-aq", "--filter", flt],
                                 capture_output=True, text=True, timeout=30).stdout.split()
            if ids:
                cmd = ["docker", "rm", "-f", *ids] if kind == "container" else ["docker", kind, "rm", *ids]
                subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass


@pytest.fixture
async def mcp_client(settings: Settings) -> AsyncIterator[object]:
    """An in-memory MCP client connected to a freshly built server."""
    from mcp import Client

    from server.app import build_server

    async with Client(build_server(settings)) as client:
        yield client


@pytest.fixture
def runtime(settings: Settings, docker_engine: None, project_name: str) -> Iterator[Runtime]:
    """A real Runtime over the engine for deploy tests; closed after, and the project's pinned images removed."""
    from tests.deploy_helpers import remove_pins, runtime_for

    rt = runtime_for(settings)
    yield rt
    rt.close()
    remove_pins(project_name)


# Fixtures that reach the engine: a test using any of them (directly or through another fixture)
# is a docker test whether or not its file says so, so `-m "not docker"` (make test-fast) never
# runs one and CI never skips one.
ENGINE_FIXTURES = frozenset({"docker_engine", "registry", "runtime"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)
