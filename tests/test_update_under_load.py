"""Updates under continuous HTTP load through a real proxy (dsm-test/proxy:1: HAProxy resolving the
service through Docker's DNS, tests/proxied_stack.py): the rolling update of a 2-replica
stateless service drops no request, and the proxy ends on the new version only."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, deploy, free_port, write
from tests.load import steady_load
from tests.proxied_stack import proxied_stack, wait_serving, web_xdsm

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_rolling_update_behind_proxy_fails_no_request(runtime: Runtime, stacks_root: Path,
                                                             project_name: str) -> None:
    # The drain protocol a zero-downtime service offers its proxy: the x-dsm drain hook fails the
    # proxy's health check (/healthz) while / is still served, so the proxy stops sending new
    # requests before the container stops. (Without a hook the old container leaves the network:
    # a request in flight on it then hangs, and HAProxy keeps its address 1-2 s: bench/rolling_update.py.)
    port = free_port()
    fast = web_xdsm(drain_s=4, hook=True)

    def stack(image: str) -> str:
        return proxied_stack(project_name, image, port, web_extra=fast, check_path="/healthz")

    directory = write(stacks_root, project_name, stack(WEB_10))
    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first
    await wait_serving(port, "web 1.0")

    (directory / "compose.yaml").write_text(stack(WEB_11))
    async with steady_load("127.0.0.1", port, rate=40) as load:
        await anyio.sleep(1)
        report = await deploy(runtime, project_name, strategy="rolling", wait_timeout_s=60)
        await anyio.sleep(2)
    assert report.status == "deployed", report
    assert [(s.service, s.strategy) for s in report.plan.services if s.service == "web"] == [("web", "rolling")]
    summary = load.summary()
    assert summary.total >= 200
    assert summary.failed == 0, (summary.errors, summary.line("rolling"))
    assert set(summary.bodies) == {"web 1.0", "web 1.1"}  # both served during the update
    tail = load.between(load.samples[-1].start - 1)     # the last second: the new version only
    assert {s.body for s in tail} == {"web 1.1"}

