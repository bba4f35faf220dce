"""Host checks against the real engine: ports held by a socket or another stack's container, images
local / in the registry / absent / unreachable, baked healthchecks, and resource figures compared
with the kernel's. Everything created carries the label dsm.test=1 and is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.compose import ComposeRunner
from server.engine import Engine
from server.preflight.facts import gather_facts
from server.preflight.images import image_fact
from server.preflight.reports import ValidationReport
from server.preflight.resources import check_resources
from server.preflight.validation import validate
from server.settings import Settings
from tests.deploy_helpers import free_port
from tests.test_preflight_tools import FIXTURES, call, client  # noqa: F401  (fixture re-export)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

WEB = "dsm-test/web:1.0"


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) * 1024
    return out


def web_stack(name: str, port: int, image: str = WEB, extra: str = "") -> str:
    return (
        f"name: {name}\nservices:\n  web:\n    image: {image}\n    labels: {{dsm.test: '1'}}\n"
        f"    ports: ['127.0.0.1:{port}:80']\n    mem_limit: 64m\n    cpus: 0.5\n{extra}"
    )


@pytest.fixture
def engine(settings: Settings, docker_engine: None) -> Iterator[Engine]:
    e = Engine(settings)
    yield e
    e.close()


async def run_validate(settings: Settings, engine: Engine, content: str, **kw: Any) -> ValidationReport:
    return await validate(settings, ComposeRunner(settings), lambda: engine, content=content, **kw)


def rules(report: ValidationReport, severity: str | None = None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in report.findings:
        if severity is None or f.severity == severity:
            out.setdefault(f.rule, []).append(f)
    return out


@pytest.fixture
def running_stack(tmp_path: Path, project_name: str, docker_engine: None) -> Iterator[tuple[str, int]]:
    """A real Compose project (two web containers) holding a published port."""
    port = free_port()
    directory = tmp_path / "running"
    directory.mkdir()
    content = web_stack(project_name, port) + (
        "  side:\n    image: dsm-test/busybox:1\n    labels: {dsm.test: '1'}\n"
        "    command: [sh, -c, 'sleep 300']\n    mem_limit: 32m\n"
    )
    (directory / "compose.yaml").write_text(content)
    subprocess.run(["docker", "compose", "--project-directory", str(directory), "up", "-d", "--quiet-pull"],
                   check=True, capture_output=True, timeout=120)
    yield project_name, port


# ------------------------------------------------------------------------------ ports
async def test_port_held_by_a_listening_socket(settings: Settings, engine: Engine) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        report = await run_validate(settings, engine, web_stack("sockettest", port))
        f = rules(report)["port-conflict"][0]
        assert f.severity == "error" and f"pid {os.getpid()}" in f.message and str(port) in f.message
        assert any("/proc/net" in e for e in f.evidence)
        wildcard = web_stack("sockettest", port).replace(f"127.0.0.1:{port}:80", f"{port}:80")
        assert "port-conflict" in rules(await run_validate(settings, engine, wildcard))
    assert "port-conflict" not in rules(await run_validate(settings, engine, web_stack("sockettest", port)))


async def test_port_held_by_another_stack_but_not_by_our_own(
    settings: Settings, engine: Engine, running_stack: tuple[str, int]
) -> None:
    project, port = running_stack
    report = await run_validate(settings, engine, web_stack("intruder", port))
    f = rules(report)["port-conflict"][0]
    assert f"stack {project}" in f.message and f"{project}-web-1" in f.message
    # Re-deploying the running stack itself must not conflict with its own containers.
    own = await run_validate(settings, engine, web_stack(project, port))
    assert "port-conflict" not in rules(own), own.findings


# ------------------------------------------------------------------------------ images
@pytest.fixture
def registry_only_image(registry: str) -> Iterator[str]:
    """An image pushed to the test registry and then removed locally: only the registry has it."""
    ref = f"{registry}/dsmtest-{uuid.uuid4().hex[:8]}/web:1.0"
    subprocess.run(["docker", "tag", WEB, ref], check=True, timeout=30)
    try:
        subprocess.run(["docker", "push", ref], check=True, capture_output=True, timeout=120)
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=30)
    yield ref
    from tests.test_registry_config import delete_from_registry

    delete_from_registry(registry, ref)


async def test_image_availability_local_registry_absent_unreachable(
    settings: Settings, engine: Engine, registry: str, registry_only_image: str
) -> None:
    closed = free_port()
    content = (
        "services:\n"
        f"  local:\n    image: {WEB}\n"
        f"  remote:\n    image: {registry_only_image}\n"
        f"  absent:\n    image: {registry}/dsm-test/web:9.9-missing\n"
        f"  unreachable:\n    image: 127.0.0.1:{closed}/team/app:1.0\n"
    )
    started = time.monotonic()
    report = await run_validate(settings, engine, content)
    assert time.monotonic() - started < 10
    by = {(f.rule, f.service): f for f in report.findings if f.category == "images" and f.severity != "info"}
    assert set(by) == {("image-unavailable", "absent"), ("image-unverified", "unreachable")}, report.findings
    assert by[("image-unavailable", "absent")].severity == "error"
    assert "manifest unknown" in by[("image-unavailable", "absent")].evidence[0]
    unverified = by[("image-unverified", "unreachable")]
    assert unverified.severity == "warning" and "could not verify" in unverified.message
    assert not report.go


async def test_a_registry_that_never_answers_is_not_a_hang(engine: Engine) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        ref = f"127.0.0.1:{silent.getsockname()[1]}/team/app:1.0"
        started = time.monotonic()
        fact = await image_fact(engine, ref, timeout_s=1.0)
        elapsed = time.monotonic() - started
    assert fact.registry == "unreachable" and not fact.local and elapsed < 3.5, (fact, elapsed)


async def test_baked_healthcheck_counts_only_when_the_image_has_one(settings: Settings, engine: Engine) -> None:
    port = free_port()
    with_hc = await run_validate(settings, engine, web_stack("baked", port, image=WEB))
    assert "missing-healthcheck" not in rules(with_hc)
    without = await run_validate(settings, engine, web_stack("baked", port, image="dsm-test/web:1.0-nohc"))
    f = rules(without)["missing-healthcheck"][0]
    assert "none in the image" in f.message and "this host's copy" in f.message
    file_only = await run_validate(settings, engine, web_stack("baked", port, image=WEB), check_host=False)
    assert "missing-healthcheck" not in rules(file_only)
    assert rules(file_only)["healthcheck-unverified"][0].severity == "warning"


# ------------------------------------------------------------------------------ whole stacks
async def test_well_run_stack_on_the_host_has_no_errors_or_warnings(
    client: Any, stacks_root: Path, docker_engine: None  # noqa: F811
) -> None:
    shutil.copytree(FIXTURES / "wellrun", stacks_root / "wellrun")
    out = await call(client, "validate_compose", {"path": "wellrun", "env": {"WEB_PORT": str(free_port())}})
    assert out["host_checked"] and out["go"], out["findings"]
    assert out["errors"] == 0 and out["warnings"] == 0, out["findings"]


async def test_secrets_stay_out_of_host_checked_output(
    client: Any, stacks_root: Path, docker_engine: None  # noqa: F811
) -> None:
    directory = stacks_root / "leaky"
    directory.mkdir()
    (directory / ".env").write_text("DB_PASSWORD=dotenv-secret-5f1e2d\n")
    (directory / "compose.yaml").write_text(
        "services:\n  web:\n    image: 127.0.0.1:1/x/${DB_PASSWORD}:1\n    environment:\n"
        "      DB_PASSWORD: ${DB_PASSWORD}\n      API_TOKEN: literal-token-9c8b7a\n"
    )
    out = await call(client, "validate_compose", {"path": "leaky"})
    dumped = json.dumps(out)
    assert "dotenv-secret-5f1e2d" not in dumped and "literal-token-9c8b7a" not in dumped
    assert any(f["rule"] == "plaintext-secret" for f in out["findings"])


async def test_engine_unreachable_is_a_finding_not_a_crash(settings: Settings) -> None:
    from dataclasses import replace

    broken = replace(settings, docker_host="tcp://127.0.0.1:1")
    e = Engine(broken)
    report = await validate(broken, ComposeRunner(broken), lambda: e, content=web_stack("x", 1234))
    assert not report.go and not report.host_checked and "engine-unreachable" in rules(report, "error")
    assert "no-resource-limits" not in rules(report)  # the file was still linted


# ------------------------------------------------------------------------------ resources
async def test_host_figures_match_the_kernel(client: Any, docker_engine: None) -> None:  # noqa: F811
    started = time.monotonic()
    out = await call(client, "check_resources", {})
    elapsed = time.monotonic() - started
    kernel = meminfo()
    host = out["host"]
    info = json.loads(subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True, text=True,
                                     check=True, timeout=30).stdout)
    assert host["engine_local"] is True and host["cpus"] == info["NCPU"]
    assert host["memory_total_bytes"] == kernel["MemTotal"] == info["MemTotal"]
    assert abs(host["memory_available_bytes"] - kernel["MemAvailable"]) < max(256 * 1024**2, kernel["MemTotal"] // 50)
    st = os.statvfs(info["DockerRootDir"])
    assert host["disk_total_bytes"] == st.f_blocks * st.f_frsize
    assert abs(host["disk_free_bytes"] - st.f_bavail * st.f_frsize) < 512 * 1024**2
    assert host["docker_root_dir"] == info["DockerRootDir"]
    assert "/proc/meminfo" in host["source"]["memory_available_bytes"] and "statvfs" in host["source"]["disk"]
    assert 0 <= host["cpu_used_percent"] <= 100 and 0 <= host["memory_used_percent"] <= 100
    assert out["stack"] is None and out["requested"] is None and out["sufficient"] is None
    assert elapsed < 2.5, elapsed


async def test_top_containers_and_crediting_the_running_stack(
    settings: Settings, engine: Engine, running_stack: tuple[str, int]
) -> None:
    project, port = running_stack
    started = time.monotonic()
    report = await check_resources(
        settings, ComposeRunner(settings), engine, content=web_stack(project, port), top=1000
    )
    assert time.monotonic() - started < 2.5
    mine = [c for c in report.top_memory if c.project == project]
    assert {c.service for c in mine} == {"web", "side"} and all((c.memory_bytes or 0) > 0 for c in mine)
    assert {c.memory_limit_bytes for c in mine} == {64 * 1024**2, 32 * 1024**2}
    assert any(c.project == project for c in report.top_cpu)
    assert report.requested is not None and report.requested.memory_bytes == 64 * 1024**2
    assert report.requested.credited_bytes > 0 and report.sufficient is True
    assert report.requested.cpus == 0.5


async def test_a_stack_that_does_not_fit(client: Any, docker_engine: None) -> None:  # noqa: F811
    content = ("services:\n  big:\n    image: dsm-test/web:1.0\n    deploy:\n      resources:\n"
               "        limits: {memory: 4096g}\n        reservations: {memory: 2048g}\n")
    out = await call(client, "check_resources", {"content": content})
    assert out["sufficient"] is False and out["requested"]["memory_bytes"] == 2048 * 1024**3
    f = next(f for f in out["findings"] if f["rule"] == "insufficient-resources")
    assert f["severity"] == "error" and any("available now" in e for e in f["evidence"])
    assert "does NOT fit" in out["summary"]
    validated = await call(client, "validate_compose", {"content": content})
    assert "insufficient-resources" in {f["rule"] for f in validated["findings"] if f["severity"] == "error"}


async def test_remote_engine_is_measured_through_the_api(
    settings: Settings, engine: Engine, running_stack: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pretend the engine is remote: no /proc, no statvfs; memory estimated from container usage."""
    project, port = running_stack
    monkeypatch.setattr(Engine, "endpoint_url", lambda self: "tcp://192.0.2.10:2376")
    with socket.socket() as holder:  # a local listener a remote engine could never see
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        snap = await gather_facts(engine, None, sample_cpu=True)
        assert not snap.facts.engine_local and snap.facts.disk_free_bytes is None
        assert "estimate" in snap.sources["memory_available_bytes"] and "unknown" in snap.sources["disk"]
        assert snap.facts.memory_available_bytes is not None
        assert snap.facts.memory_total_bytes is not None
        assert snap.facts.memory_available_bytes < snap.facts.memory_total_bytes
        content = web_stack("remote", holder.getsockname()[1])
        report = await run_validate(settings, engine, content)
        assert "port-conflict" not in rules(report)
        assert any("remote engine" in n for n in report.notes)
    report = await run_validate(settings, engine, web_stack("remote", port))
    f = rules(report)["port-conflict"][0]
    assert project in f.message and any("containers only" in e for e in f.evidence)

