"""check_resources and validate_compose judge host pressure the same way, at the seam where both
read the host (server.preflight.facts.gather_facts): same sampling, the stack's own containers
set apart from the rest of the host. Never "error" in one and "go" in the other for one host."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from server.policy import Usage
from server.policy.context import HostFacts
from server.preflight import facts as facts_module
from server.preflight.facts import HostSnapshot
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio
GIB = 1024**3
REAL_DEFAULT = inspect.signature(facts_module.gather_facts).parameters["sample_cpu"].default

STACK = """\
name: pressure
services:
  web:
    image: dsm-test/web:1.0
    deploy: {resources: {limits: {memory: 64m, cpus: "0.5"}}}
    healthcheck: {test: ["CMD", "true"]}
"""


class _Endpoint:
    def describe(self) -> str:
        return "unix:///var/run/docker.sock"


class _Engine:
    def endpoint(self) -> _Endpoint:
        return _Endpoint()

    def endpoint_url(self) -> str:
        return "unix:///var/run/docker.sock"

    async def call(self, fn: Any, what: str) -> list[Any]:
        return []  # no container of any project (the pre-flight's ownership checks list them)


def _host(available: int, cpu: float, own: dict[str, Usage]) -> Any:
    """A fake gather_facts that, like the real one, has a CPU figure only when it samples."""

    async def gather(engine: Any, stack: Any, *, sample_cpu: bool = REAL_DEFAULT, check_images: bool = True
                     ) -> HostSnapshot:
        facts = HostFacts(engine_local=True, cpus=2, memory_total_bytes=8 * GIB, memory_available_bytes=available,
                          disk_total_bytes=100 * GIB, disk_free_bytes=50 * GIB, own_usage=own,
                          cpu_used_percent=cpu if sample_cpu else None)
        return HostSnapshot(facts=facts, endpoint="unix:///var/run/docker.sock", containers=[], usage={},
                            docker_root_dir="/var/lib/docker", sources={})

    return gather


async def _both(monkeypatch: pytest.MonkeyPatch, settings: Any, gather: Any) -> tuple[set[str], set[str]]:
    from server.compose import ComposeRunner
    from server.preflight import resources, validation
    from server.preflight.resources import check_resources
    from server.preflight.validation import validate_loaded
    from server.stackload import load_stack

    monkeypatch.setattr(resources, "gather_facts", gather)
    monkeypatch.setattr(validation, "gather_facts", gather)
    compose = ComposeRunner(settings)
    checked = await check_resources(settings, compose, _Engine(), path="pressure")  # type: ignore[arg-type]
    stack = await load_stack(settings, compose, path="pressure")
    validated = await validate_loaded(settings, stack, _Engine())  # type: ignore[arg-type]
    return ({f"{f.severity}:{f.message.split(' in use')[0]}" for f in checked.findings if f.rule == "host-pressure"},
            {f"{f.severity}:{f.message.split(' in use')[0]}" for f in validated.findings if f.rule == "host-pressure"})


async def test_busy_cpu_judged_alike(monkeypatch: pytest.MonkeyPatch, settings: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "pressure", STACK)
    checked, validated = await _both(monkeypatch, settings, _host(4 * GIB, 99.0, {}))
    assert checked == validated and checked  # both see the busy CPU; neither blocks on a short sample
    assert all(item.startswith("info:") for item in checked)


async def test_full_memory_judged_alike(monkeypatch: pytest.MonkeyPatch, settings: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "pressure", STACK)
    checked, validated = await _both(monkeypatch, settings, _host(GIB // 4, 10.0, {}))
    assert checked == validated and any(item.startswith("error:host memory") for item in checked)


async def test_own_stack_set_apart_in_both(monkeypatch: pytest.MonkeyPatch, settings: Any, stacks_root: Path) -> None:
    """The stack's own containers use the memory and CPU: the rest of the host is not under pressure."""
    write_stack(stacks_root, "pressure", STACK)
    own = {"web": Usage(memory_bytes=2 * GIB, cpu_percent=180.0)}
    checked, validated = await _both(monkeypatch, settings, _host(GIB // 4, 99.0, own))
    assert checked == validated == set()
