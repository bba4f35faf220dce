"""Updates under continuous HTTP load through a real proxy (dsm-test/proxy:1: HAProxy resolving the
service through Docker's DNS, tests/proxied_stack.py), each drain the rolling strategy offers:

- the default drain: an old container leaves the service's DNS name but keeps its address until
  it is retired, so the proxy drops it at its next re-resolution and no connection is black-holed
  (leaving the network at once made ~17 requests per container wait out HAProxy's 2 s
  ``timeout connect``: bench/rolling_update.py);
- the x-dsm ``drain`` hook: it fails the proxy's health check (HAProxy logs the server DOWN);
- ``update_config.order: stop-first``: each old container is retired before its replacement is
  created (the engine's events say so), the other replica serving meanwhile.

The second test runs both on one stack (~70 s); the first ~40 s.

Every window: zero failed requests, none of them slowed by a connection into a vanished address.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, deploy, docker, free_port, phase, write
from tests.load import LoadProcess
from tests.proxied_stack import proxied_stack, wait_serving, web_xdsm

pytestmark = [pytest.mark.anyio, pytest.mark.docker]
# HAProxy's ``timeout connect`` is 2 s (scripts/images/proxy/haproxy.cfg): a request sent to an
# address that left the network waits it out, then is redispatched and answered (200, but ~2 s).
BLACK_HOLED_S = 1.9


def web_deploy(stop_first: bool = False) -> str:
    order = ", order: stop-first" if stop_first else ""
    return f"{{replicas: 2, update_config: {{parallelism: 1, monitor: 1s{order}}}}}"


async def roll_under_load(runtime: Runtime, project: str, port: int, samples: Path) -> tuple[Any, LoadProcess]:
    # The load runs in a process of its own: a stall of this test's event loop (the deployer's
    # work) must not show as the service's latency.
    load = LoadProcess("127.0.0.1", port, 40, samples)
    try:
        await anyio.sleep(1.5)
        report = await deploy(runtime, project, strategy="rolling", wait_timeout_s=60)
        await anyio.sleep(2)
    finally:
        load.stop()
    return report, load


def assert_served(report: Any, load: LoadProcess, versions: set[str], last: str) -> None:
    assert report.status == "deployed", report
    assert phase(report, "rolling").status == "ok", report.phases
    summary = load.summary()
    assert summary.total >= 150 and summary.failed == 0, (summary.errors, summary.line("rolling"))
    slow = [round(s.latency_s, 2) for s in load.samples if s.latency_s >= BLACK_HOLED_S]
    assert len(slow) <= 1, (slow, summary.latency_line("rolling"))  # one stall of a loaded host, not a burst
    assert set(summary.bodies) == versions
    tail = load.between(load.samples[-1].start - 1)     # the last second: the new version only
    assert {s.body for s in tail} == {last}


async def test_rolling_default_drain_behind_proxy_fails_and_stalls_no_request(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    port = free_port()

    def stack(image: str) -> str:
        return proxied_stack(project_name, image, port, web_extra=web_xdsm(3), deploy=web_deploy())

    directory = write(stacks_root, project_name, stack(WEB_10))
    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first
    await wait_serving(port, "web 1.0")

    (directory / "compose.yaml").write_text(stack(WEB_11))
    report, load = await roll_under_load(runtime, project_name, port, stacks_root.parent / "samples.jsonl")
    assert [(s.service, s.strategy) for s in report.plan.services if s.service == "web"] == [("web", "rolling")]
    assert_served(report, load, {"web 1.0", "web 1.1"}, "web 1.1")
    detail = phase(report, "rolling").detail
    assert detail.count("out of the service's DNS name") == 2 and "address" not in detail, detail


async def test_drain_hook_then_stop_first_behind_proxy(runtime: Runtime, stacks_root: Path,
                                                      project_name: str) -> None:
    port = free_port()

    def stack(image: str, stop_first: bool = False) -> str:
        return proxied_stack(project_name, image, port, web_extra=web_xdsm(3, hook=True), check_path="/healthz",
                             deploy=web_deploy(stop_first))

    directory = write(stacks_root, project_name, stack(WEB_10))
    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first
    await wait_serving(port, "web 1.0")

    # The hook (rm /www/healthz) fails HAProxy's check of the old containers: DOWN, then retired.
    (directory / "compose.yaml").write_text(stack(WEB_11))
    report, load = await roll_under_load(runtime, project_name, port, stacks_root.parent / "hook.jsonl")
    assert_served(report, load, {"web 1.0", "web 1.1"}, "web 1.1")
    assert phase(report, "rolling").detail.count("drain hook exit 0") == 2, phase(report, "rolling").detail
    proxy_log = docker("compose", "-p", project_name, "logs", "--no-color", "proxy", cwd=directory)
    assert proxy_log.count("is DOWN, reason: Layer7 wrong status") >= 2, proxy_log[-2000:]

    # stop-first: old out of traffic and removed, THEN its replacement created; one at a time. (With
    # the hook: after the start-first roll the network has a free address below an old container's,
    # where the default drain's re-join would move it: see fleet.out_of_traffic.)
    (directory / "compose.yaml").write_text(stack(WEB_10, stop_first=True))
    # Watched live: the engine replays only its last 256 events, fewer than the health checks
    # of a busy engine produce during the roll.
    events = stacks_root.parent / "events.txt"
    with events.open("w") as out:
        watcher = subprocess.Popen(["docker", "events", "--filter", "type=container",
                                    "--filter", f"label=com.docker.compose.project={project_name}",
                                    "--filter", "label=com.docker.compose.service=web", "--filter", "event=create",
                                    "--filter", "event=destroy", "--format", "{{.Action}}"],
                                   stdout=out, start_new_session=True)
        try:
            report, load = await roll_under_load(runtime, project_name, port, stacks_root.parent / "stop.jsonl")
        finally:
            watcher.terminate()
            watcher.wait(timeout=10)
    assert_served(report, load, {"web 1.0", "web 1.1"}, "web 1.0")
    order = events.read_text().split()
    assert order == ["destroy", "create", "destroy", "create"], (order, phase(report, "rolling").detail)
