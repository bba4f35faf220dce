"""What Compose accepts and the engine refuses, proved on the real engine: each case renders
(``docker compose config`` is happy), validate_compose reports it, and ``docker compose up``
really fails with the engine's own words. Plus: one bad image reference is a finding for that
image while the rest of the host check runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.compose import ComposeRunner
from server.engine import Engine
from server.preflight.validation import validate
from server.settings import Settings
from tests.deploy_helpers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

WEB = "dsm-test/web:1.0"
LABELS = "    labels: {dsm.test: '1'}\n"

# (case, services block, the engine's refusal as `up` prints it)
REFUSED = [
    ("container-name", f"  a:\n    image: {WEB}\n{LABELS}    container_name: 'dsmtest bad name'\n",
     "Invalid container name"),
    ("reservation-above-limit", f"  a:\n    image: {WEB}\n{LABELS}    mem_limit: 64m\n    mem_reservation: 128m\n",
     "memory reservation"),
    ("memswap-below-limit", f"  a:\n    image: {WEB}\n{LABELS}    mem_limit: 64m\n    memswap_limit: 32m\n",
     "memoryswap limit"),
    ("ports-in-borrowed-netns",
     f"  a:\n    image: {WEB}\n{LABELS}    network_mode: 'service:b'\n    ports: ['127.0.0.1:18999:80']\n"
     f"  b:\n    image: {WEB}\n{LABELS}", "port publishing"),
    ("hostname-in-borrowed-netns",
     f"  a:\n    image: {WEB}\n{LABELS}    network_mode: 'service:b'\n    hostname: other\n"
     f"  b:\n    image: {WEB}\n{LABELS}", "hostname"),
]


@pytest.fixture
def engine(settings: Settings, docker_engine: None) -> Iterator[Engine]:
    e = Engine(settings)
    yield e
    e.close()


async def run_validate(settings: Settings, engine: Engine | None, content: str, check_host: bool) -> Any:
    def get() -> Engine:
        assert engine is not None
        return engine

    return await validate(settings, ComposeRunner(settings), get, content=content, check_host=check_host)


@pytest.mark.parametrize(("case", "services", "refusal"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_engine_refuses_and_we_say_so_first(
    settings: Settings, tmp_path: Path, project_name: str, docker_engine: None, case: str, services: str,
    refusal: str,
) -> None:
    content = f"name: {project_name}\nservices:\n{services}"
    report = await run_validate(settings, None, content, check_host=False)
    assert report.valid, report.findings  # Compose renders it
    refused = [f for f in report.findings if f.rule == "engine-refuses"]
    assert refused and all(f.severity == "error" and f.service == "a" for f in refused), report.findings
    assert not report.go
    directory = tmp_path / case
    directory.mkdir()
    (directory / "compose.yaml").write_text(content)
    up = subprocess.run(["docker", "compose", "--project-directory", str(directory), "up", "-d"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode != 0 and refusal.lower() in up.stderr.lower(), up.stderr


async def test_start_interval_needs_api_1_44_and_check_host(
    settings: Settings, engine: Engine, tmp_path: Path, project_name: str
) -> None:
    content = (f"name: {project_name}\nservices:\n  a:\n    image: {WEB}\n{LABELS}"
               "    healthcheck: {test: [CMD, 'true'], start_interval: 2s}\n")
    api = str((await engine.version())["ApiVersion"])
    report = await run_validate(settings, engine, content, check_host=True)
    found = [f for f in report.findings if f.rule == "engine-version-unsupported"]
    old = tuple(int(x) for x in api.split(".")) < (1, 44)
    assert bool(found) is old, (api, report.findings)
    if old:
        assert found[0].severity == "error" and api in found[0].message and found[0].service == "a"
        directory = tmp_path / "si"
        directory.mkdir()
        (directory / "compose.yaml").write_text(content)
        up = subprocess.run(["docker", "compose", "--project-directory", str(directory), "up", "-d"],
                            capture_output=True, text=True, timeout=120)
        assert up.returncode != 0 and "start_interval" in up.stderr
    # Without the host the version is unknown: no guess.
    lint_only = await run_validate(settings, None, content, check_host=False)
    assert not [f for f in lint_only.findings if f.rule == "engine-version-unsupported"]


async def test_one_bad_image_reference_leaves_the_rest_of_the_host_check(settings: Settings, engine: Engine) -> None:
    content = (
        "services:\n"
        f"  good:\n    image: {WEB}\n    ports: ['127.0.0.1:18997:80']\n"
        "  bad:\n    image: 'dsm-test/web:'\n"
        "  absent:\n    image: dsm-test/never-built-here:9.9\n"
    )
    report = await run_validate(settings, engine, content, check_host=True)
    rules = {(f.rule, f.service) for f in report.findings}
    assert report.host_checked and ("engine-unreachable", None) not in rules, report.findings
    assert ("engine-refuses", "bad") in rules
    # The other images were still checked: the local one is fine, the missing one is reported.
    assert not any(r[1] == "good" and r[0].startswith("image-un") for r in rules)
    assert any(r[1] == "absent" and r[0] in ("image-unavailable", "image-unverified") for r in rules), rules


async def test_a_port_range_wide_enough_for_the_replicas_is_no_conflict(
    settings: Settings, engine: Engine, tmp_path: Path, project_name: str
) -> None:
    port = free_port(2)  # two adjacent ports: one per replica
    content = (f"name: {project_name}\nservices:\n  a:\n    image: {WEB}\n{LABELS}"
               f"    ports: ['127.0.0.1:{port}-{port + 1}:80']\n    deploy: {{replicas: 2}}\n")
    report = await run_validate(settings, engine, content, check_host=True)
    assert report.host_checked and not [f for f in report.findings if f.rule == "port-conflict"], report.findings
    narrow = content.replace("replicas: 2", "replicas: 3")
    assert [f for f in (await run_validate(settings, engine, narrow, check_host=True)).findings
            if f.rule == "port-conflict"]
    # And the engine agrees: both replicas start, each on a port of the range.
    directory = tmp_path / "range"
    directory.mkdir()
    (directory / "compose.yaml").write_text(content)
    up = subprocess.run(["docker", "compose", "--project-directory", str(directory), "up", "-d"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    ps = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={project_name}",
                         "--format", "{{.Ports}}"], capture_output=True, text=True, timeout=30).stdout
    assert f"127.0.0.1:{port}->80/tcp" in ps and f"127.0.0.1:{port + 1}->80/tcp" in ps, ps
