"""blue_green on the real engine, under continuous HTTP load through a real proxy (dsm-test/proxy:1,
HAProxy resolving ``web`` through Docker's DNS): the switch to a gated green copy and the way
home, then a green that breaks after the switch and the traffic moved back to the old copy."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from server.runtime import Runtime
from tests.conftest import cleanup_project
from tests.deploy_helpers import WEB_10, WEB_11, WEB_BROKEN, containers, deploy, free_port, write
from tests.load import steady_load
from tests.proxied_stack import proxied_stack, wait_serving, web_xdsm

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_blue_green_switch_and_switch_back_under_load(runtime: Runtime, stacks_root: Path,
                                                            project_name: str) -> None:
    port = free_port()
    green = f"{project_name}-green"
    fast = web_xdsm(drain_s=3, hook=True)  # the drain protocol: see tests/test_update_under_load.py

    def stack(image: str, extra: str = fast) -> str:
        return proxied_stack(project_name, image, port, web_extra=extra, check_path="/healthz")

    directory = write(stacks_root, project_name, stack(WEB_10))
    try:
        assert (await deploy(runtime, project_name)).status == "deployed"
        await wait_serving(port, "web 1.0")

        # Switch: green (web 1.1) gated, then the alias moves; blue retired; the service comes home.
        (directory / "compose.yaml").write_text(stack(WEB_11))
        async with steady_load("127.0.0.1", port, rate=40) as load:
            await anyio.sleep(1)
            report = await deploy(runtime, project_name, strategy="blue_green", wait_timeout_s=60)
            await anyio.sleep(2)
        assert report.status == "deployed", report
        assert [s.strategy for s in report.plan.services if s.service == "web"] == ["blue_green"]
        detail = next(p.detail for p in report.phases if p.name == "blue_green")
        assert "switched to green" in detail and "green removed" in detail, detail
        switch = load.summary()
        assert switch.failed == 0, (switch.errors, switch.line("blue_green"))
        assert set(switch.bodies) == {"web 1.0", "web 1.1"}
        assert {s.body for s in load.between(load.samples[-1].start - 1)} == {"web 1.1"}
        assert containers(green) == []
        assert {c["Image"] for c in containers(project_name) if "web" in c["Names"]} == {WEB_11}

        # Switch back: a green that passes its gate, then crashes while it is watched after the switch.
        crash = web_xdsm(drain_s=10, hook=True) + "    environment: {WEB_CRASH_AFTER: '6'}\n"
        (directory / "compose.yaml").write_text(stack(WEB_BROKEN, crash))
        async with steady_load("127.0.0.1", port, rate=40) as load:
            await anyio.sleep(1)
            report = await deploy(runtime, project_name, strategy="blue_green", wait_timeout_s=60)
            await anyio.sleep(2)
        assert report.status == "rolled_back", report
        assert report.rollback is not None and "moved back" in report.rollback.why, report.rollback
        back = load.summary()
        assert "web 1.1" in back.bodies and back.failed <= back.total // 20, (back.errors, back.line("switch back"))
        assert {s.body for s in load.between(load.samples[-1].start - 1)} == {"web 1.1"}
        assert containers(green) == []
        print(switch.line("blue_green"), switch.latency_line("blue_green"), back.line("switch back"))
    finally:
        cleanup_project(green)


async def test_auto_picks_blue_green_for_a_critical_service_behind_the_proxy(runtime: Runtime, stacks_root: Path,
                                                                             project_name: str) -> None:
    port = free_port()
    green = f"{project_name}-green"
    critical = "    x-dsm: {critical: true, drain_s: 1}\n"

    def stack(image: str) -> str:
        return proxied_stack(project_name, image, port, replicas=1, web_extra=critical)

    directory = write(stacks_root, project_name, stack(WEB_10))
    try:
        first = await deploy(runtime, project_name, confirm=True)  # critical: confirmed
        assert first.status == "deployed", first.next_steps
        await wait_serving(port, "web 1.0", streak=5)
        (directory / "compose.yaml").write_text(stack(WEB_11))
        planned = await deploy(runtime, project_name, dry_run=True)
        assert planned.plan is not None
        web = next(s for s in planned.plan.services if s.service == "web")
        proxy = next(s for s in planned.plan.services if s.service == "proxy")
        assert web.strategy == "blue_green" and "critical service behind" in (web.strategy_reason or ""), web
        assert proxy.strategy != "blue_green", proxy  # the proxy itself is never switched

        report = await deploy(runtime, project_name, confirm=True, wait_timeout_s=60)  # strategy auto
        assert report.status == "deployed", report
        assert any(p.name == "blue_green" and "switched to green" in p.detail for p in report.phases), report.phases
        await wait_serving(port, "web 1.1", streak=5)
        assert containers(green) == []
    finally:
        cleanup_project(green)
