"""The watcher's automatic rollback end to end: deploy_stack's core deploys v1 then a release
that breaks a few seconds after its (short) verification; the real ``docker-stack-mcp watch``
process rolls it back through the deploy pipeline's rollback on the real engine.

No stand-in anywhere: the watcher subprocess, the journal and locks under DSM_STATE_DIR, the
pipeline, Compose, the engine and the memory are the real ones. Before v2, the same fixture
checks the other side of ``watch_after_deploy_s``: a break after the window is restarted, not
rolled back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.operations.models import OperationRecord
from server.operations.views import DeploymentEntry
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import REPO
from tests.deploy_helpers import deploy, docker, free_port, get, write
from tests.helpers_monitor import alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

# restart "no": the engine's own restart policy stays out of it, so what heals the service is the watcher.
STACK = """\
name: {name}
x-dsm: {{verify_s: 0, watch_after_deploy_s: {window}}}
services:
  web:
    image: {image}
    init: true
    restart: "no"
    ports: ["127.0.0.1:{port}:80"]
    environment: {{WEB_CRASH_AFTER: "{crash_after}"}}
    labels: {{dsm.test: "1"}}
    mem_limit: 64m
    cpus: 0.5
"""
V1_WINDOW_S = 3
"""v1's files say: roll back only what breaks within 3 s of a deployment (the restart case below)."""
CRASH_AFTER_S = 6
"""v2 (dsm-test/web:2.0-broken) passes the health gate, then exits 1 this long after it started."""


def _watch(runtime: Runtime, project: str, alert_url: str) -> subprocess.Popen[bytes]:
    s = runtime.settings
    env = {**os.environ, "DSM_STACKS_ROOT": str(s.stacks_root), "DSM_STATE_DIR": str(s.state_dir),
           "DSM_LOG_LEVEL": "INFO", "DSM_ALERT_URLS": alert_url}
    if s.embedding_model_path is not None:
        env["DSM_EMBEDDING_MODEL_PATH"] = str(s.embedding_model_path)
    env.pop("DOCKER_HOST", None)
    return subprocess.Popen([sys.executable, "-m", "server.cli", "watch", "--stack", project, "--interval", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _webs(project: str) -> list[dict[str, Any]]:
    """The web containers of ``project``, newest first (Compose briefly keeps two while it recreates)."""
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.service=web").split()
    found = [dict(c) for c in json.loads(docker("inspect", *ids))] if ids else []
    return sorted(found, key=lambda c: str(c["Created"]), reverse=True)


def _web(project: str) -> dict[str, Any]:
    found = _webs(project)
    assert found, f"no web container in {project}"
    return found[0]


def _healthy(project: str) -> bool:
    c = _web(project)
    return c["State"]["Status"] == "running" and (c["State"].get("Health") or {}).get("Status") == "healthy"


def _ops(runtime: Runtime, project: str, kind: str) -> list[OperationRecord]:
    return runtime.operations().history(project, kinds=(kind,), limit=50)


def _watch_state(settings: Settings) -> dict[str, Any]:
    path = settings.state_dir / "watcher" / "state.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str, step: float = 0.3) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        await anyio.sleep(step)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_watcher_rolls_back_a_release_breaking_after_deploy_through_the_pipeline(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    started = time.monotonic()
    port = free_port()
    v1 = STACK.format(name=project_name, window=V1_WINDOW_S, image="dsm-test/web:1.0", port=port,
                      crash_after=CRASH_AFTER_S)
    v2 = STACK.format(name=project_name, window=120, image="dsm-test/web:2.0-broken", port=port,
                      crash_after=CRASH_AFTER_S)
    directory = write(stacks_root, project_name, v1)
    v1_image = docker("image", "inspect", "dsm-test/web:1.0", "--format", "{{.Id}}")

    with alert_receiver() as (url, alerts):
        watcher = _watch(runtime, project_name, url)
        try:
            first = await deploy(runtime, project_name)
            assert first.status == "deployed", first
            assert get(f"http://127.0.0.1:{port}/") == "web 1.0"

            # -- a break after watch_after_deploy_s: restarted (recreated), never rolled back -------------
            v1_op = _ops(runtime, project_name, "deploy")[0]
            await anyio.sleep(V1_WINDOW_S + 1.5)
            docker("kill", _web(project_name)["Id"])  # exit code 137, restart "no": stays down
            await _until(lambda: bool(_ops(runtime, project_name, "recovery")) and _healthy(project_name), 30,
                         "the watcher to recreate the killed v1 service")
            recovery = _ops(runtime, project_name, "recovery")
            assert len(recovery) == 1 and recovery[0].status == "done" and recovery[0].pid == watcher.pid
            assert recovery[0].result and recovery[0].result["action"] == "recreate"
            assert v1_op.operation_id not in (_watch_state(runtime.settings).get("rollbacks") or {})
            assert _ops(runtime, project_name, "rollback") == []
            assert get(f"http://127.0.0.1:{port}/") == "web 1.0"

            # -- v2: healthy at deploy time, crashes CRASH_AFTER_S later, inside its 120 s window ---------
            (directory / "compose.yaml").write_text(v2)
            second = await deploy(runtime, project_name, verify_s=0)
            assert second.status == "deployed", second
            v2_id = second.operation_id
            assert v2_id and get(f"http://127.0.0.1:{port}/") == "web 2.0"

            def rolled_back() -> bool:
                done = [r for r in _ops(runtime, project_name, "rollback") if not r.running]
                return bool(done) and _healthy(project_name)

            await _until(rolled_back, CRASH_AFTER_S + 40, "the watcher's automatic rollback")
            [rollback] = _ops(runtime, project_name, "rollback")
            assert rollback.status == "rolled_back", rollback
            assert rollback.pid == watcher.pid  # run by the watcher process, through the pipeline
            assert rollback.result and rollback.result["rollback"]["to_deployment"] == v1_op.operation_id
            reason = rollback.params["reason"]  # the journal says who rolled back, and why
            assert reason.startswith("watcher: web exited with code 1") and v2_id in reason
            assert rollback.result["rollback"]["why"] == reason
            assert DeploymentEntry.of(rollback).detail == reason[:300]  # what stack_history shows the agent
            assert {p["name"]: p["status"] for p in rollback.phases}["rollback_health"] == "ok"
            v2_op = _ops(runtime, project_name, "deploy")[0]
            assert v2_op.operation_id == v2_id and v2_op.ended_at and rollback.started_at > v2_op.ended_at

            # v1's files and image serve again, pinned until the next deploy
            assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
            assert (directory / "compose.yaml").read_text() == v1
            c = _web(project_name)
            assert c["Image"] == v1_image and c["Config"]["Image"].startswith(f"dsm-pin/{project_name}-web:")
            assert "dsm-pin/" in (directory / "compose.dsm.yaml").read_text()
            assert _watch_state(runtime.settings)["rollbacks"].keys() == {v2_id}

            def incident() -> bool:
                hits = runtime.memory().search_incidents(
                    "web exited after deployment automatic rollback", stack=project_name).results
                return any(h.service == "web" and "auto-rollback" in h.tags and h.title.endswith("rollback done")
                           and v1_op.operation_id in (h.resolution or "") and v2_id in h.symptoms for h in hits)

            await _until(incident, 20, "the incident of the automatic rollback in the memory", step=1.0)

            # -- once per deployment, and nothing restarted in a loop afterwards --------------------------
            ticks_from = time.monotonic()
            started_at = c["State"]["StartedAt"]
            await anyio.sleep(4)  # >= 3 more passes at --interval 1
            assert time.monotonic() - ticks_from >= 4
            assert len(_ops(runtime, project_name, "rollback")) == 1
            recovery = _ops(runtime, project_name, "recovery")
            assert len(recovery) == 1, [(r.started_at, r.params) for r in recovery]  # only v1's recreate
            [c] = _webs(project_name)
            assert c["State"]["StartedAt"] == started_at and c["RestartCount"] == 0 and _healthy(project_name)
            assert [a["title"] for a in alerts if "rolled back" in a.get("title", "")] == [
                f"{project_name}: rolled back"]
            assert not [a for a in alerts if "failed" in a.get("title", "")], alerts
        finally:
            watcher.send_signal(signal.SIGTERM)
            try:
                watcher.wait(20)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait(10)
                pytest.fail("docker-stack-mcp watch did not stop on SIGTERM within 20 s")
        stderr = watcher.stderr.read().decode() if watcher.stderr else ""
        assert watcher.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
    assert time.monotonic() - started < 60


async def test_watcher_rolls_back_a_release_crash_looping_under_the_engines_restart_policy(
        runtime: Runtime, stacks_root: Path, project_name: str) -> None:
    """The usual homelab setting, ``restart: unless-stopped``: the engine restarts the crashing
    release at once, so the watcher rarely sees it down; restarts since the deployment are the
    break that rolls it back (a restart storm alert alone would leave the bad release looping)."""
    started = time.monotonic()
    port = free_port()
    text = STACK.replace('restart: "no"', "restart: unless-stopped")
    v1 = text.format(name=project_name, window=120, image="dsm-test/web:1.0", port=port, crash_after=3)
    v2 = text.format(name=project_name, window=120, image="dsm-test/web:2.0-broken", port=port, crash_after=3)
    directory = write(stacks_root, project_name, v1)
    with alert_receiver() as (url, alerts):
        watcher = _watch(runtime, project_name, url)
        try:
            assert (await deploy(runtime, project_name)).status == "deployed"
            (directory / "compose.yaml").write_text(v2)
            second = await deploy(runtime, project_name, verify_s=0)
            assert second.status == "deployed", second

            def rolled_back() -> bool:
                done = [r for r in _ops(runtime, project_name, "rollback") if not r.running]
                return bool(done) and _healthy(project_name)

            await _until(rolled_back, 40, "the watcher's rollback of the crash-looping release")
            [rollback] = _ops(runtime, project_name, "rollback")
            assert rollback.status == "rolled_back" and rollback.pid == watcher.pid
            assert "restarted" in rollback.params["reason"] and str(second.operation_id) in rollback.params["reason"]
            assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
            [c] = _webs(project_name)
            await anyio.sleep(3)
            [after] = _webs(project_name)
            assert after["Id"] == c["Id"] and after["RestartCount"] == 0 and _healthy(project_name)
            assert len(_ops(runtime, project_name, "rollback")) == 1 and not _ops(runtime, project_name, "recovery")
            assert [a["title"] for a in alerts if "rolled back" in a.get("title", "")] == [
                f"{project_name}: rolled back"]
        finally:
            watcher.send_signal(signal.SIGTERM)
            try:
                watcher.wait(20)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait(10)
                pytest.fail("docker-stack-mcp watch did not stop on SIGTERM within 20 s")
        assert watcher.returncode == 0
    assert time.monotonic() - started < 60
