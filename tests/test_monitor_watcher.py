"""The watcher on the real engine: heals, budgets, pauses, survives engine drops and SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from server.monitor.alerts import Alerter
from server.monitor.watcher import Watcher
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import REPO, write_stack
from tests.helpers_monitor import SocketProxy, alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow]

SICKABLE = """\
name: {name}
services:
  web:
    image: dsm-test/web:1.0
    init: true
    tmpfs: [/tmp]
    healthcheck:
      test: ["CMD-SHELL", "test ! -f /tmp/sick && wget -qO- http://127.0.0.1/ >/dev/null || exit 1"]
      interval: 1s
      timeout: 2s
      retries: 2
    labels: {{dsm.test: "1"}}
    x-dsm:
      recovery: {{max_restarts: 3, window_s: 600, backoff_s: 3}}
"""

CRASHER = """\
name: {name}
services:
  crash:
    image: dsm-test/web:2.0-broken
    init: true
    restart: "no"
    environment: {{WEB_CRASH_AFTER: "1"}}
    labels: {{dsm.test: "1"}}
    x-dsm:
      recovery: {{max_restarts: 2, window_s: 600, backoff_s: 2}}
"""


def sh(*argv: str, cwd: Path | None = None, check: bool = True) -> str:
    return subprocess.run(list(argv), cwd=cwd, check=check, capture_output=True, text=True, timeout=120).stdout


def compose_up(directory: Path, wait: bool = True) -> None:
    sh("docker", "compose", "up", "-d", *(["--wait", "--wait-timeout", "60"] if wait else []), cwd=directory)


def container(project: str, service: str) -> dict[str, Any]:
    ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
             "--filter", f"label=com.docker.compose.service={service}").split()
    assert ids, f"no container for {project}/{service}"
    return json.loads(sh("docker", "inspect", ids[0]))[0]


def make_sick(project: str, service: str = "web") -> str:
    c = container(project, service)
    sh("docker", "exec", c["Id"], "touch", "/tmp/sick")
    return str(c["State"]["StartedAt"])


async def until(predicate: Callable[[], bool], timeout_s: float, what: str, step: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        await anyio.sleep(step)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def restarted_healthy(project: str, before: str) -> Callable[[], bool]:
    def check() -> bool:
        c = container(project, "web")
        return c["State"]["StartedAt"] != before and (c["State"].get("Health") or {}).get("Status") == "healthy"
    return check


def service_state(settings: Settings, stack: str, service: str) -> dict[str, Any]:
    path = settings.state_dir / "watcher" / "state.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return (data.get("services") or {}).get(f"{stack}/{service}") or {}


async def test_unhealthy_restarted_within_interval_and_journaled(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    """A stack started by hand with `docker compose up` is seen, diagnosed and healed."""
    from server.monitor.diagnose import diagnose_stack
    from server.monitor.status import stack_status

    directory = write_stack(stacks_root, "app", SICKABLE.format(name=project_name))
    compose_up(directory)
    runtime = Runtime(settings)
    status = await stack_status(runtime, "app")
    assert status.stacks[0].managed and status.stacks[0].services[0].health == "healthy"
    before = make_sick(project_name)
    await until(lambda: (container(project_name, "web")["State"].get("Health") or {}).get("Status") == "unhealthy",
                20, "the service to turn unhealthy")
    diagnosis = await diagnose_stack(runtime, project_name)
    unhealthy = [f for f in diagnosis.findings if f.rule == "unhealthy"]
    assert unhealthy and unhealthy[0].severity == "error" and not diagnosis.healthy
    assert any("exit 1" in e for e in unhealthy[0].evidence)

    watcher = Watcher(runtime, interval_s=2.0)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run, stop)
        # health interval 1 s; allow the restart itself and the next healthy probe
        took = await until(restarted_healthy(project_name, before), 20, "the watcher to restart it")

        def recorded() -> bool:
            hits = runtime.memory().search_incidents("web unhealthy watcher restart", stack=project_name).results
            return any(h.service == "web" and "restart" in h.title for h in hits)

        await until(recorded, 30, "the action recorded as an incident in the memory", step=1.0)
        stop.set()
    assert took < 20
    rec = service_state(settings, project_name, "web")
    assert rec["action"] == "restart" and len(rec["attempts"]) == 1
    history = runtime.operations().history(project_name, kinds=("recovery",))
    assert history and history[0].status == "done" and history[0].params["service"] == "web"
    after = await stack_status(runtime, project_name)
    assert after.stacks[0].services[0].watcher is not None
    assert after.stacks[0].services[0].watcher.action == "restart"
    assert (await diagnose_stack(runtime, project_name)).healthy
    runtime.close()


async def test_crash_loop_exhausts_budget_alerts_once_and_stops(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "crashy", CRASHER.format(name=project_name))
    compose_up(directory, wait=False)
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = Runtime(s)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run, stop)
            await until(lambda: service_state(s, project_name, "crash").get("exhausted") is True, 60,
                        "the budget to run out")
            await anyio.sleep(8)  # it must not try again, nor alert again
            stop.set()
        rec = service_state(s, project_name, "crash")
        assert len(rec["attempts"]) == 2 and rec["action"] == "gave-up"
        assert rec["attempts"][1] - rec["attempts"][0] >= 2.0  # backoff_s before the second attempt
        hits = runtime.memory().search_incidents("automatic recovery gave up", stack=project_name).results
        assert any("gave up" in h.title and h.service == "crash" for h in hits)
        gave_up = [r for r in runtime.operations().history(project_name, kinds=("recovery",), limit=10)
                   if r.status == "failed"]
        assert gave_up and gave_up[0].result and gave_up[0].result.get("action") == "gave-up"
        recreated = [r for r in runtime.operations().history(project_name, kinds=("recovery",), limit=10)
                     if r.status == "done"]
        assert len(recreated) == 2
        assert all("docker compose up --no-deps --force-recreate" in r.phases[-1]["detail"] for r in recreated)
        assert watcher.counters.restarts + watcher.counters.recreates == 2
        critical = [r for r in received if "stopped trying" in r.get("title", "")]
        assert len(critical) == 1, received
        assert "Tried: 2 automatic restarts" in critical[0]["message"]
        assert "diagnose_stack" in critical[0]["message"]
        assert container(project_name, "crash")["State"]["Status"] == "exited"
        from server.monitor.diagnose import diagnose_stack

        diagnosis = await diagnose_stack(runtime, project_name)
        rules = {f.rule: f for f in diagnosis.findings}
        assert "watcher-gave-up" in rules and rules["exited"].severity == "error"
        assert any("simulated crash" in e for e in rules["exited"].evidence)
        runtime.close()


async def test_leaves_stack_alone_during_operation_and_maintenance(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "held", SICKABLE.format(name=project_name))
    compose_up(directory)
    runtime = Runtime(settings)
    ops = runtime.operations()
    before = make_sick(project_name)
    await until(lambda: (container(project_name, "web")["State"].get("Health") or {}).get("Status") == "unhealthy",
                20, "unhealthy")
    watcher = Watcher(runtime, interval_s=1.0)
    op = ops.begin(project_name, "deploy", {})
    await watcher.tick()
    await anyio.sleep(2)
    assert container(project_name, "web")["State"]["StartedAt"] == before
    assert "left alone" in service_state(settings, project_name, "web")["seen"]
    op.end("deployed", {})
    ops.set_maintenance(project_name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300)), "test")
    await watcher.tick()
    await anyio.sleep(2)
    assert container(project_name, "web")["State"]["StartedAt"] == before
    assert "maintenance" in service_state(settings, project_name, "web")["seen"]
    ops.set_maintenance(project_name, None, "done")
    await watcher.tick()
    await until(restarted_healthy(project_name, before), 20, "the restart once released")
    runtime.close()


async def test_engine_connection_drop_reconnects_and_catches_up(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str, tmp_path: Path
) -> None:
    directory = write_stack(stacks_root, "flaky", SICKABLE.format(name=project_name))
    compose_up(directory)
    sock = str(tmp_path / "engine.sock")
    proxy = SocketProxy(sock)
    await proxy.start()
    s = dataclasses.replace(settings, docker_host=f"unix://{sock}")
    runtime = Runtime(s)
    watcher = Watcher(runtime, interval_s=1.0)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.run, stop)
        await until(lambda: watcher.counters.ticks >= 2, 20, "the watcher to run")
        await proxy.stop()
        before = make_sick(project_name)  # breaks while the watcher cannot see the engine
        await until(lambda: watcher.counters.engine_errors >= 1, 20, "the watcher to notice the drop")
        await anyio.sleep(4)
        assert container(project_name, "web")["State"]["StartedAt"] == before  # it could not act
        await proxy.start()
        await until(restarted_healthy(project_name, before), 30, "recovery after the engine came back")
        await until(lambda: watcher.counters.reconnects >= 1, 20, "the event stream to reconnect")
        stop.set()
    await proxy.stop()
    runtime.close()


def _watch_process(settings: Settings, project: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DSM_STACKS_ROOT": str(settings.stacks_root), "DSM_STATE_DIR": str(settings.state_dir),
           "DSM_LOG_LEVEL": "INFO"}
    env.pop("DOCKER_HOST", None)
    return subprocess.Popen([sys.executable, "-m", "server.cli", "watch", "--stack", project, "--interval", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkilled_watcher_restarted_keeps_budget_without_duplicates(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "killme", SICKABLE.format(name=project_name))
    compose_up(directory)
    first = _watch_process(settings, project_name)
    try:
        before = make_sick(project_name)
        await until(restarted_healthy(project_name, before), 30, "the first restart")
        restarts = container(project_name, "web")["State"]["StartedAt"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert len(service_state(settings, project_name, "web")["attempts"]) == 1
    second = _watch_process(settings, project_name)
    try:
        await anyio.sleep(6)  # the new watcher sees a healthy service and must not act again
        assert container(project_name, "web")["State"]["StartedAt"] == restarts
        assert len(service_state(settings, project_name, "web")["attempts"]) == 1
        before = make_sick(project_name)
        await until(restarted_healthy(project_name, before), 30, "the second restart (budget carried over)")
        assert len(service_state(settings, project_name, "web")["attempts"]) == 2
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(20)
        except subprocess.TimeoutExpired:
            second.kill()
            pytest.fail("watch did not stop on SIGTERM")
    assert second.returncode == 0, second.stderr.read().decode() if second.stderr else ""


async def test_breaking_soon_after_deploy_rolls_back_once(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service breaking within watch_after_deploy_s of a journaled deploy goes through the rollback
    seam (once per deployment); when the pipeline's rollback is unavailable the watcher says so in a
    critical alert and falls back to restarting."""
    from server.monitor import opsbridge

    directory = write_stack(stacks_root, "fresh", SICKABLE.format(name=project_name))
    compose_up(directory)
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = Runtime(s)
        op = runtime.operations().begin(project_name, "deploy", {})
        op.end("deployed", {"images": []})
        calls: list[str] = []

        async def fake_rollback(rt: Runtime, stack: str, reason: str) -> Any:
            calls.append(reason)
            return SimpleNamespace(status="rolled_back", rollback=SimpleNamespace(why=reason, to_deployment="op-x"))

        monkeypatch.setattr(opsbridge, "rollback", fake_rollback)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        before = make_sick(project_name)
        await until(lambda: (container(project_name, "web")["State"].get("Health") or {}).get("Status")
                    == "unhealthy", 20, "unhealthy")
        await watcher.tick()
        await anyio.sleep(1)
        assert len(calls) == 1 and op.id in calls[0] and "unhealthy" in calls[0]
        assert container(project_name, "web")["State"]["StartedAt"] == before  # rolled back, not restarted
        assert any(r["title"] == f"{project_name}: rolled back" for r in received)
        # one rollback per deployment: a service still broken afterwards is restarted as usual
        await watcher.tick()
        assert len(calls) == 1
        await until(restarted_healthy(project_name, before), 20, "restart after the rollback attempt")

        monkeypatch.undo()
        op2 = runtime.operations().begin(project_name, "deploy", {})
        op2.end("deployed", {"images": []})
        before = make_sick(project_name)
        await until(lambda: (container(project_name, "web")["State"].get("Health") or {}).get("Status")
                    == "unhealthy", 20, "unhealthy again")
        try:
            import server.deploy  # noqa: F401
            has_pipeline = True
        except ImportError:
            has_pipeline = False
        if not has_pipeline:
            await watcher.tick()
            failed = [r for r in received if "automatic rollback failed" in r["title"]]
            assert failed and "not available" in failed[0]["message"]
            await until(restarted_healthy(project_name, before), 30, "restart as the fallback")
        runtime.close()


THRESHOLDS = """\
name: {name}
x-dsm:
  watch: {{unavailable_s: 10, memory_percent: 80, critical_lines_per_min: 10, on_threshold: alert}}
services:
  noisy:
    image: dsm-test/busybox:1
    init: true
    mem_limit: 32m
    tmpfs: ["/scratch:size=40m"]
    command:
      - sh
      - -c
      - >-
        sleep 2; dd if=/dev/zero of=/scratch/fill bs=1M count=28 2>/dev/null;
        i=0; while [ $$i -lt 15 ]; do echo "FATAL: worker $$i lost its queue"; i=$$((i+1)); done;
        echo "could not connect to server: Connection refused (db:5432)"; sleep 600
    labels: {{dsm.test: "1"}}
  gone:
    image: dsm-test/busybox:1
    init: true
    restart: "no"
    command: ["sh", "-c", "exit 3"]
    labels: {{dsm.test: "1"}}
    x-dsm:
      recovery: {{max_restarts: 0}}
"""


async def test_thresholds_alert_per_policy_and_metrics(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    from urllib.request import urlopen

    from server.monitor.metrics import serve

    directory = write_stack(stacks_root, "limits", THRESHOLDS.format(name=project_name))
    compose_up(directory, wait=False)
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = Runtime(s)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        port = serve(watcher, 0)
        stop = anyio.Event()

        def titles() -> list[str]:
            return [r.get("title", "") for r in received]

        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run, stop)
            await until(lambda: any("critical log lines" in t for t in titles())
                        and any("database connection errors" in t for t in titles())
                        and any("memory at" in t for t in titles())
                        and any("gone unavailable" in t for t in titles()), 60, "all four threshold alerts")
            metrics = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            await anyio.sleep(3)
            stop.set()
        assert len([t for t in titles() if "critical log lines" in t]) == 1  # de-duplicated
        unavailable = next(r for r in received if "gone unavailable" in r["title"])
        assert unavailable["type"] == "failure" and "exit code 3" in unavailable["message"]
        assert service_state(s, project_name, "gone").get("attempts") in (None, [])  # max_restarts 0: no action
        assert service_state(s, project_name, "noisy")["peak_memory_bytes"] > 20 * 2**20
        assert "dsm_watcher_ticks_total" in metrics or "dsm_watcher_ticks " in metrics
        assert f'dsm_service_up{{seen="running",service="noisy",stack="{project_name}"}} 1.0' in metrics
        runtime.close()


RESTART_POLICY = """\
name: {name}
x-dsm:
  watch: {{critical_lines_per_min: 5, on_threshold: restart}}
services:
  panicky:
    image: dsm-test/busybox:1
    init: true
    volumes: ["mark:/data"]
    command:
      - sh
      - -c
      - >-
        if [ ! -f /data/seen ]; then touch /data/seen; sleep 2;
        i=0; while [ $$i -lt 12 ]; do echo "PANIC: shard $$i corrupt"; i=$$((i+1)); done; fi; sleep 600
    labels: {{dsm.test: "1"}}
volumes:
  mark: {{labels: {{dsm.test: "1"}}}}
"""


async def test_threshold_policy_restart_acts_once(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "panicky", RESTART_POLICY.format(name=project_name))
    compose_up(directory, wait=False)
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = Runtime(s)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        first = container(project_name, "panicky")["State"]["StartedAt"]
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run, stop)
            await until(lambda: container(project_name, "panicky")["State"]["StartedAt"] != first, 40,
                        "the policy restart")
            await anyio.sleep(8)  # quiet after the restart: no second action
            stop.set()
        rec = service_state(s, project_name, "panicky")
        assert len(rec["attempts"]) == 1 and rec["action"] == "restart"
        alert = next(r for r in received if "critical log lines" in r["title"])
        assert "a restart (per policy on_threshold: restart)" in alert["message"]
        runtime.close()


async def test_action_interrupted_by_a_kill_is_reissued_once_not_counted_twice(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    """The state a watcher SIGKILLed between recording an attempt and making it leaves behind."""
    from server.monitor.watchstate import WatchState

    directory = write_stack(stacks_root, "halfway", SICKABLE.format(name=project_name))
    compose_up(directory)
    before = make_sick(project_name)
    await until(lambda: (container(project_name, "web")["State"].get("Health") or {}).get("Status") == "unhealthy",
                20, "unhealthy")
    c = container(project_name, "web")
    key = f"{c['Id'][:12]}@{c['State']['StartedAt']}/{c['State']['FinishedAt']}"
    state = WatchState(settings)
    state.service(project_name, "web").update(attempts=[time.time() - 5], last_key=key, action="restart",
                                               outcome="pending", in_flight=True)
    state.save()
    runtime = Runtime(settings)
    watcher = Watcher(runtime, interval_s=1.0)
    await watcher.tick()  # recorded 5 s ago: the killed watcher's restart may still be under way
    await anyio.sleep(2)
    assert container(project_name, "web")["State"]["StartedAt"] == before
    rec = WatchState(settings)
    rec.service(project_name, "web")["attempts"] = [time.time() - 40]
    rec.save()
    watcher = Watcher(runtime, interval_s=1.0)
    await watcher.tick()  # 40 s and still not restarted: it never happened, issue it now
    await until(restarted_healthy(project_name, before), 20, "the re-issued restart")
    after = service_state(settings, project_name, "web")
    assert len(after["attempts"]) == 1 and "in_flight" not in after  # the same attempt, not a second one
    runtime.close()


STORM = """\
name: {name}
services:
  loop:
    image: dsm-test/busybox:1
    init: true
    restart: always
    command: ["sh", "-c", "sleep 1; echo 'fatal: config missing'; exit 2"]
    labels: {{dsm.test: "1"}}
    x-dsm:
      recovery: {{max_restarts: 2}}
"""


async def test_engine_restart_storm_alerts_once(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "storm", STORM.format(name=project_name))
    compose_up(directory, wait=False)
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        runtime = Runtime(s)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run, stop)
            await until(lambda: any("restart loop" in r.get("title", "") for r in received), 60, "the storm alert")
            await anyio.sleep(5)
            stop.set()
        storms = [r for r in received if "restart loop" in r.get("title", "")]
        assert len(storms) == 1 and "Do: run diagnose_stack" in storms[0]["message"]
        runtime.close()
