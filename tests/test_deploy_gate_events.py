"""The health gate's event wake-up on the real engine: a change to one of the project's containers
wakes the gate at once; without engine events the gate still decides by polling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, deploy, docker, phase, web_stack, write

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def test_a_container_event_of_the_project_wakes_the_gate(runtime: Runtime, project_name: str) -> None:
    from server.deploy.health import _Waker

    waker = _Waker()
    await waker.start(runtime.engine(), project_name)
    try:
        other = _Waker()  # another project's waker hears nothing of ours
        await other.start(runtime.engine(), project_name + "x")
        await anyio.to_thread.run_sync(lambda: docker(
            "run", "-d", "--init", "--label", "dsm.test=1", "--label", f"com.docker.compose.project={project_name}",
            "--name", f"{project_name}-probe", WEB_10))
        with anyio.fail_after(30):
            await waker._event.wait()  # the start event arrived without any poll
        assert not other._event.is_set()
        other.close()
    finally:
        waker.close()


async def test_without_engine_events_the_gate_still_decides_by_polling(
        runtime: Runtime, stacks_root: Path, project_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import server.deploy.health as health

    def refused(*_: Any, **__: Any) -> Any:
        raise RuntimeError("no events here")

    monkeypatch.setattr(health, "events_iter", refused)
    write(stacks_root, project_name, web_stack(project_name, WEB_10))
    report = await deploy(runtime, project_name)
    assert report.status == "deployed", report
    assert phase(report, "health").status == "ok" and report.services[0].health == "healthy"
