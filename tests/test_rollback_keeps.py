"""An explicit rollback replaces what differs from the target and leaves the rest running: a proxy
in front of the rolled-back service keeps its container (recreating it was an outage for nothing,
found by a newcomer: 40 of 133 requests failed), and the pin of the service it restarts names the
reference the target ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, container_of, deploy, docker, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def _stack(name: str, app_image: str) -> str:
    svc = "    init: true\n    restart: unless-stopped\n    labels: {dsm.test: '1'}\n    mem_limit: 64m\n"
    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n  proxy:\n    image: {WEB_10}\n{svc}"
            f"  app:\n    image: {app_image}\n{svc}")


async def test_explicit_rollback_leaves_the_unchanged_proxy_running(runtime: Runtime, stacks_root: Path,
                                                                   project_name: str) -> None:
    from server.deploy.pipeline import Deployer

    directory = write(stacks_root, project_name, _stack(project_name, WEB_10))
    assert (await deploy(runtime, project_name)).status == "deployed"
    (directory / "compose.yaml").write_text(_stack(project_name, WEB_11))
    assert (await deploy(runtime, project_name)).status == "deployed"
    proxy, app = container_of(project_name, "proxy"), container_of(project_name, "app")

    report = await Deployer(runtime).rollback(project_name)
    assert report.status == "rolled_back" and report.rollback and report.rollback.result == "restored", report
    assert container_of(project_name, "proxy") == proxy, "the unchanged proxy was recreated"
    assert container_of(project_name, "app") != app
    image = docker("inspect", "-f", "{{.Config.Image}}", container_of(project_name, "app")).strip()
    assert image == WEB_10 or image.startswith(f"dsm-pin/{project_name}-app:"), image
    pins = (directory / "compose.dsm.yaml").read_text().split("x-dsm-pins:")[-1]
    assert "proxy" not in pins, pins
    # What the pin stands for is the reference the target's files named, not another tag of the
    # same image id (the registry's copy of dsm-test/web:1.0 is one).
    assert f"original: {WEB_10}\n" in pins, pins
