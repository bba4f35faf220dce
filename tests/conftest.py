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


# `make test` runs the suite on 4 pytest-xdist workers (--dist loadgroup --no-loadscope-reorder): the
# engine tests mostly wait on containers, so four overlap well on 2 cores. The scheduler hands out tests
# in collection order, a few at a time, so the order below is the schedule: the longest scenarios first
# (one of them alone takes ~3 minutes; started last it would be the whole tail), then the other engine
# tests, then the CPU-bound tier that fills the end. Prefixes of node ids; a renamed test only loses its
# head start.
LONG_FIRST = (
    "tests/test_demo.py::",
    "tests/test_deploy_sessions.py::test_worked_examples_over_stdio",
    "tests/test_rollback_data.py::",
    "tests/test_deploy_checks.py::test_supabase_shaped_stack_deployed_broken_rolled_back",
    "tests/test_rollback_hooks.py::",
    "tests/test_deploy_database.py::",
    "tests/test_monitor_rollback_e2e.py::",
)


def _shares_state_across_tests(item: pytest.Item) -> bool:
    """Whether the test uses a fixture its test module shares between tests (module, class or session
    scope, defined in a test module rather than here): such a module runs whole on one xdist worker, so
    the shared stack, index or pushed image is built once, not once per worker."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for defs in info.name2fixturedefs.values():
        for fixturedef in defs:
            module = getattr(getattr(fixturedef, "func", None), "__module__", "") or ""
            if fixturedef.scope != "function" and module.startswith("tests.") and module != __name__:
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)
    grouped = {item.nodeid.split("::")[0] for item in items if _shares_state_across_tests(item)}
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        own = 0 if item.nodeid.startswith(LONG_FIRST) else 1 if item.get_closest_marker("docker") else 2
        key = module if module in grouped else item.nodeid
        rank[key] = min(rank.get(key, own), own)  # a grouped module keeps its tests together, ranked by its first
        if module in grouped and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(module))
    position = {id(item): n for n, item in enumerate(items)}

    def order(item: pytest.Item) -> tuple[int, int]:
        module = item.nodeid.split("::")[0]
        return rank[module if module in grouped else item.nodeid], position[id(item)]

    items.sort(key=order)
