"""Shared fixtures.

Tests that need a real Docker engine use the ``docker_engine`` fixture: under CI=true a missing
engine is a failure, never a skip. Everything a test creates on the engine carries the label
``dsm.test=1`` and a ``dsmtest`` name prefix, and is removed afterwards.

`make test` runs 4 pytest-xdist workers against one engine, so an engine test must be parallel-safe:
names from ``project_name`` (projects, volumes, networks, containers, image tags, registry
repositories), host ports from ``tests.deploy_helpers.free_port`` (never a fixed one), no counting of
the engine's objects beyond its own project's, state under ``tmp_path`` (``settings``), environment
changes through ``monkeypatch`` only. A stack shared by the tests of one module (a module-scoped
fixture) keeps that module on one worker (see ``pytest_collection_modifyitems``).
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
    "tests/test_updates_engine.py::",
    "tests/test_approvals_engine.py::",
    "tests/test_drift_engine.py::",
    "tests/test_scale_engine.py::",
)

# Tests that assert how fast something answers (a bound of a few seconds on a subprocess, a lock, a
# server start): on 4 busy workers over 2 cores the bound measures the neighbours, not the code. They are
# marked `serial` and `make test` runs them after the parallel pass, alone (`-m serial`), with the same
# bounds. A new test with a wall-clock bound: add `@pytest.mark.serial` or its id here.
SERIAL = (
    # Zero failed requests while a service is replaced: the drain, the proxy's resolver and the
    # prober's timing are what they measure, on a host as quiet as the one they promise it for.
    "tests/test_update_under_load.py::test_rolling_update_behind_proxy_fails_no_request",
    "tests/test_bluegreen_engine.py::test_blue_green_switch_and_switch_back_under_load",
    "tests/test_rolling_engine.py::test_rolling_update_and_broken_release_under_load",
    "tests/test_update_session.py::test_supabase_update_over_stdio",
    "tests/test_children_reaped.py::test_sigkilled_servers_children_die_and_the_next_start_reaps_the_rest",
    "tests/test_containment_smoke.py::test_a_slow_drip_answer_is_cut_at_the_timeout",
    "tests/test_deploy_engine.py::test_healthy_deploy_then_unchanged_and_plan_ids",
    "tests/test_deploy_gate.py::test_gate_fails_fast_with_the_evidence_and_the_logs",
    "tests/test_logs_pages.py::test_a_page_of_20kb_lines_is_bounded_and_says_what_was_cut",
    "tests/test_logs_pages.py::test_a_catastrophic_grep_is_answered_within_2s_while_another_call_is_served",
    "tests/test_memory_concurrency.py::test_writes_persist_across_processes",
    "tests/test_memory_store.py::test_unreachable_qdrant_server_is_a_clear_error",
    "tests/test_memory_units.py::test_offline_without_model_never_blocks_a_search",
    "tests/test_monitor_watcher.py::test_unhealthy_restarted_within_interval_and_journaled",
    "tests/test_operations.py::test_second_begin_is_refused_naming_the_holder",
    "tests/test_operations.py::test_sigkilled_server_is_recovered_by_the_next_begin",
    "tests/test_operations.py::test_shutdown_waits_then_cancels",
    "tests/test_operations.py::test_a_lock_held_by_someone_unnamed_answers_busy_after_a_moment",
    "tests/test_operations_procs.py::test_stop_group_",
    "tests/test_operations_procs.py::test_wait_empty_is_bounded",
    "tests/test_operations_promises.py::test_busy_is_answered_at_once_with_the_holder",
    "tests/test_operations_promises.py::test_a_starting_holder_is_named_as_soon_as_it_names_itself",
    "tests/test_operations_promises.py::test_a_begin_during_recovery_is_refused_at_once_naming_the_recovery",
    "tests/test_operations_promises.py::test_recovery_stops_recorded_groups_newest_first_and_spares_reused_ones",
    "tests/test_operations_tools.py::test_sigterm_cancels_running_operations_which_roll_back",
    "tests/test_preflight_history.py::test_a_slow_memory_is_not_waited_for",
    "tests/test_preflight_host.py::test_image_availability_local_registry_absent_unreachable",
    "tests/test_preflight_host.py::test_a_registry_that_never_answers_is_not_a_hang",
    "tests/test_preflight_host.py::test_host_figures_match_the_kernel",
    "tests/test_preflight_host.py::test_top_containers_and_crediting_the_running_stack",
    "tests/test_process.py::test_timeout_kills_grandchildren",
    "tests/test_process.py::test_on_start_failure_kills_the_group",
    "tests/test_process_group.py::test_cancellation_kills_the_whole_group_and_propagates",
    "tests/test_process_group.py::test_sigterm_comes_first_and_the_grace_is_honoured",
    "tests/test_process_group.py::test_a_term_ignoring_child_is_killed_after_the_grace",
    "tests/test_process_group.py::test_capped_capture_keeps_draining_so_the_child_finishes",
    "tests/test_registry_config.py::test_a_registry_that_never_answers_is_bounded",
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
        if item.nodeid.startswith(SERIAL) and not item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.serial)
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
