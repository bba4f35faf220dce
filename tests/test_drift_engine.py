"""Drift (issue 18) on the real engine: changes made behind the server's back since the last recorded
deployment, in stack_status, diagnose_stack and the deploy plan; none right after our own deploy or
rollback, none for a stack we never deployed; the watcher's single alert for a critical stack."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from server.monitor.alerts import Alerter
from server.monitor.watcher import Watcher
from server.runtime import Runtime
from server.settings import Settings
from tests.deploy_helpers import (
    WEB_BROKEN,
    container_of,
    deploy,
    docker,
    remove_pins,
    runtime_for,
    web_stack,
    write,
)
from tests.helpers_monitor import alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


async def drift_of(runtime: Runtime, stack: str) -> tuple[str | None, list[str]]:
    """stack_status's answer: what drift is compared with (or why not), and the changes."""
    from server.monitor.status import stack_status

    (status,) = (await stack_status(runtime, stack)).stacks
    return status.drift_since, status.drift


def compose(directory: Path, *args: str) -> str:
    return docker("compose", *args, cwd=directory)


async def test_drift_after_hand_changes_and_none_after_our_deploy_or_rollback(
    runtime: Runtime, stacks_root: Path, project_name: str
) -> None:
    from server.deploy.pipeline import Deployer
    from server.monitor.diagnose import diagnose_stack

    directory = write(stacks_root, project_name, web_stack(project_name, "dsm-test/web:${WEB_TAG}", volume=False),
                      env="WEB_TAG=1.0\n")
    # Started by hand: nothing recorded, so no drift, only the note.
    compose(directory, "up", "-d")
    assert await drift_of(runtime, project_name) == ("no deployment recorded", [])
    (directory / ".env").write_text("WEB_TAG=1.1\n")
    planned = await deploy(runtime, project_name, dry_run=True)
    assert planned.plan is not None and planned.plan.drift == ["not compared: no deployment recorded"]

    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first
    assert await drift_of(runtime, project_name) == (f"deployment {first.deployment_id}", [])  # no false drift
    clean = await deploy(runtime, project_name, dry_run=True)
    assert clean.plan is not None and clean.plan.drift == []

    # .env edited: a file drift, dated by its mtime; the containers have not moved.
    (directory / ".env").write_text("WEB_TAG=1.0\n")
    edited = os.stat(directory / ".env").st_mtime
    _, items = await drift_of(runtime, project_name)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(edited))
    assert items == [f"file files: .env edited since the deployment (since {when})"]
    # ... then `docker compose up -d` by hand: web runs another image since its container's creation.
    compose(directory, "up", "-d")
    since, items = await drift_of(runtime, project_name)
    assert since == f"deployment {first.deployment_id}" and len(items) == 2
    created = json.loads(docker("inspect", container_of(project_name, "web")))[0]["Created"][:19]
    (image,) = [i for i in items if i.startswith("image web: ")]
    assert "runs dsm-test/web:1.0" in image and "left dsm-test/web:1.1" in image and f"(since {created}" in image

    diagnosis = await diagnose_stack(runtime, project_name)
    hand = [f for f in diagnosis.findings if f.rule == "drift-since-deploy"]
    assert {f.service for f in hand} == {"web", None} and diagnosis.drift and first.deployment_id in diagnosis.drift
    assert not any(f.rule == "changed-since-deploy" for f in diagnosis.findings)  # the baseline supersedes it
    # The plan shows the drift it is about to overwrite.
    plan = (await deploy(runtime, project_name, dry_run=True)).plan
    assert plan is not None and sorted(i.split()[0] for i in plan.drift) == ["file", "image"]

    # Deploying files that describe what runs now: unchanged, and the hand change is no longer drift.
    second = await deploy(runtime, project_name)
    assert second.status == "unchanged", second
    assert await drift_of(runtime, project_name) == (f"deployment {second.deployment_id}", [])
    back = await Deployer(runtime).rollback(project_name, to_deployment=first.deployment_id, confirm=True)
    assert back.status == "rolled_back", back
    # A rollback is a recorded state too: what it left running and the files it put back.
    assert await drift_of(runtime, project_name) == (f"deployment {back.operation_id}", [])
    assert (directory / ".env").read_text().startswith("WEB_TAG=1.1\n")  # the files of that deployment
    # An automatic rollback (a release crashing at the gate) is a recorded state as well.
    crash = "    environment: {WEB_CRASH_AFTER: '0'}\n"
    (directory / "compose.yaml").write_text(web_stack(project_name, WEB_BROKEN, volume=False, extra=crash))
    failed = await deploy(runtime, project_name, wait_timeout_s=30)
    assert failed.status == "rolled_back", failed
    assert await drift_of(runtime, project_name) == (f"deployment {failed.operation_id}", [])


CRITICAL = """\
name: {name}
x-dsm: {{critical: true, verify_s: 0}}
services:
  web:
    image: dsm-test/web:1.0
    init: true
    labels: {{dsm.test: "1"}}
    mem_limit: 64m
"""


async def test_network_disconnect_and_scale_by_hand_alert_once_each(
    settings: Settings, docker_engine: None, stacks_root: Path, project_name: str
) -> None:
    from server.monitor.diagnose import diagnose_stack

    directory = write(stacks_root, project_name, CRITICAL.format(name=project_name))
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = runtime_for(s)
        try:
            report = await deploy(runtime, project_name, confirm=True)
            assert report.status == "deployed", report
            watcher = Watcher(runtime, [project_name], alerter=Alerter(s))
            await watcher.tick()
            assert not [r for r in received if "changed outside" in r.get("title", "")]

            network = f"{project_name}_default"
            web = container_of(project_name, "web")
            docker("network", "disconnect", network, web)
            _, items = await drift_of(runtime, project_name)
            assert len(items) == 1 and items[0].startswith(
                f"network web: {project_name}-web-1 was detached from {network} (since 20")
            diagnosis = await diagnose_stack(runtime, project_name)
            detached = [f for f in diagnosis.findings if f.rule == "network-detached"]
            assert detached and any("since deployment" in e for e in detached[0].evidence)
            assert not any(f.rule == "drift-since-deploy" for f in diagnosis.findings)  # told once, not twice

            for _ in range(3):  # alerted once, not every pass
                await watcher.tick()
            drifted = [r for r in received if "changed outside" in r.get("title", "")]
            assert len(drifted) == 1 and "detached from" in drifted[0]["message"], received

            # A new drift alerts again: a replica count changed by hand.
            compose(directory, "up", "-d", "--no-recreate", "--scale", "web=2")
            _, items = await drift_of(runtime, project_name)
            assert any(i.startswith("replicas web: 1 -> 2 container(s) (since 20") for i in items), items
            await watcher.tick()
            await watcher.tick()
            drifted = [r for r in received if "changed outside" in r.get("title", "")]
            assert len(drifted) == 2 and "1 -> 2 container(s)" in drifted[1]["message"]
            assert "detached" not in drifted[1]["message"]  # only what is new

            # Fixed drift clears; when it comes back it alerts again.
            compose(directory, "up", "-d", "--no-recreate", "--scale", "web=1")
            docker("network", "connect", network, web)
            assert (await drift_of(runtime, project_name))[1] == []
            await watcher.tick()
            assert not watcher.state.data["drift"][project_name].get("alerted")
            docker("network", "disconnect", network, web)
            await watcher.tick()
            drifted = [r for r in received if "changed outside" in r.get("title", "")]
            assert len(drifted) == 3 and "detached from" in drifted[2]["message"]
        finally:
            runtime.close()
            remove_pins(project_name)


async def test_image_drift_cause_names_what_drifted(runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    """A container replaced by hand with another image: diagnose_stack says so, not "files edited"."""
    from server.monitor.diagnose import diagnose_stack

    directory = write(stacks_root, project_name, web_stack(project_name, "dsm-test/web:1.0", volume=False))
    assert (await deploy(runtime, project_name)).status == "deployed"
    (directory / "hand.yaml").write_text("services:\n  web:\n    image: dsm-test/web:1.1\n")
    compose(directory, "-f", "compose.yaml", "-f", "hand.yaml", "up", "-d")
    diagnosis = await diagnose_stack(runtime, project_name)
    (found,) = [f for f in diagnosis.findings if f.rule == "image-drift"]
    assert found.likely_cause.startswith("the container was replaced by hand with another image"), found
    assert "files were edited" not in found.likely_cause
