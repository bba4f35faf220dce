"""Pure parts of the monitor: policy from x-dsm, dependency order, what counts as broken, time parsing."""

from __future__ import annotations

from typing import Any

import pytest

from server.engine import ContainerSummary
from server.monitor.logs import BadArgument, _ns, parse_time
from server.monitor.stackpolicy import stack_policy
from server.monitor.status import Observed
from server.monitor.watcher import _broken, _dependency_order, _slug
from server.monitor.watchstate import iso_to_epoch
from server.stacks import StackLocation
from server.yamlsafe import load_yaml


def observed(service: str, status: str = "running", health: str | None = None, exit_code: int = 0,
             depends: str = "", oom: bool = False, labels: dict[str, str] | None = None) -> Observed:
    all_labels = {"com.docker.compose.project": "p", "com.docker.compose.service": service,
                  "com.docker.compose.depends_on": depends, **(labels or {})}
    summary = ContainerSummary(id=service[:12], name=f"p-{service}-1", project="p", service=service, state=status,
                               status="", health=health, image="img", labels=all_labels)
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom}
    if health:
        state["Health"] = {"Status": health}
    return Observed(summary, {"Id": service, "State": state, "Config": {"Labels": all_labels}})


def location(text: str, tmp_path: Any) -> StackLocation:
    return StackLocation(directory=tmp_path, files=[tmp_path / "compose.yaml"], name="p",
                         documents=(load_yaml(text, "compose.yaml"),))


def test_policy_reads_xdsm_and_labels(tmp_path: Any) -> None:
    loc = location("x-dsm: {watch_after_deploy_s: 120, watch: {on_threshold: restart, memory_percent: 90}}\n"
                   "services:\n  db:\n    image: x\n    x-dsm: {recovery: {max_restarts: 5, backoff_s: 1}}\n", tmp_path)
    policy = stack_policy(loc, {"job": {"dsm.one-shot": "true"}, "db": {"dsm.critical": "true"}})
    assert policy.settings.watch_after_deploy_s == 120 and policy.settings.watch.on_threshold == "restart"
    assert policy.service("db").recovery.max_restarts == 5 and policy.service("db").recovery.backoff_s == 1
    assert policy.service("db").critical and policy.critical
    assert policy.service("job").is_one_shot
    assert policy.service("other").recovery.max_restarts == 3  # defaults for anything unnamed


def test_invalid_xdsm_falls_back_to_defaults(tmp_path: Any) -> None:
    loc = location("x-dsm: {watch: {on_threshold: explode}}\nservices:\n  a:\n    image: x\n", tmp_path)
    assert stack_policy(loc).settings.watch.on_threshold == "alert"
    assert stack_policy(None).settings.watch_after_deploy_s == 600


def test_dependency_order_puts_dependencies_first() -> None:
    web = observed("web", depends="api:service_healthy:false")
    api = observed("api", depends="db:service_started:false,cache:service_started:false")
    db, cache = observed("db"), observed("cache")
    order = [o.service for o in _dependency_order([web, api, db, cache])]
    assert order.index("db") < order.index("api") < order.index("web")
    assert order.index("cache") < order.index("api")
    loop_a, loop_b = observed("a", depends="b:x:false"), observed("b", depends="a:x:false")
    assert sorted(o.service for o in _dependency_order([loop_a, loop_b])) == ["a", "b"]  # a cycle terminates


def test_what_counts_as_broken() -> None:
    policy = stack_policy(None, {"job": {"dsm.one-shot": "true"}})
    assert _broken(observed("a", health="unhealthy"), policy) == "unhealthy"
    assert _broken(observed("a", health="starting"), policy) is None
    assert _broken(observed("a", "exited", exit_code=2), policy) == "exited with code 2"
    assert _broken(observed("a", "exited", exit_code=0), policy) is None  # stopped on purpose
    assert _broken(observed("a", "exited", exit_code=137, oom=True), policy) == "oom-killed"
    assert _broken(observed("job", "exited", exit_code=1), policy) is None  # one-shot jobs are not healed
    assert _slug("exited with code 1") == "exited-with-code-1"


def test_time_parsing() -> None:
    assert iso_to_epoch("2026-12-04T16:30:01.5Z") == pytest.approx(1796401801.5)
    assert iso_to_epoch("0001-01-01T00:00:00Z") is None and iso_to_epoch("garbage") is None
    assert _ns("2026-12-04T16:30:01.000000002Z") - _ns("2026-12-04T16:30:01.000000001Z") == 1
    ago = parse_time("15m", "since")
    assert ago is not None and ago < iso_to_epoch("2099-01-01T00:00:00Z")  # type: ignore[operator]
    with pytest.raises(BadArgument):
        parse_time("yesterday", "since")


def test_stack_state_ignores_finished_one_shot_jobs() -> None:
    from server.monitor.models import ServiceStatus
    from server.monitor.status import _stack_state

    def svc(name: str, state: str, health: str | None = None, code: int | None = None) -> ServiceStatus:
        return ServiceStatus(service=name, name=name, container_id=name, state=state, health=health, restarts=0,
                             exit_code=code, oom_killed=False, started_at=None, memory_limit_bytes=None, ports=[],
                             image=None)

    assert _stack_state([svc("a", "running", "healthy"), svc("b", "running")]) == "running"
    assert _stack_state([svc("a", "running", "unhealthy")]) == "degraded"
    assert _stack_state([svc("a", "exited", code=0)]) == "stopped"


@pytest.mark.anyio
async def test_read_only_mode_publishes_the_views_not_stack_control(tmp_path: Any) -> None:
    from server.app import build_server
    from server.settings import Settings

    names = {t.name for t in await build_server(Settings(stacks_root=tmp_path, state_dir=tmp_path / "s",
                                                         read_only=True)).list_tools()}
    assert {"stack_status", "stack_logs", "diagnose_stack"} <= names and "stack_control" not in names
    names = {t.name for t in await build_server(Settings(stacks_root=tmp_path, state_dir=tmp_path / "s")).list_tools()}
    assert "stack_control" in names


@pytest.mark.anyio
async def test_auto_rollback_reads_the_pipeline_report(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollback seam answers with the pipeline's report: only ``rolled_back`` counts as done; a
    failed rollback alerts critical and leaves the stack to the restarts; a busy stack is asked
    again on the next pass; each outcome is recorded as an incident (once per deployment)."""
    from types import SimpleNamespace

    from server.monitor import opsbridge
    from server.monitor.watcher import Watcher
    from server.runtime import Runtime
    from server.settings import Settings

    runtime = Runtime(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state"))
    op = runtime.operations().begin("p", "deploy", {})
    op.end("deployed", {"images": []})
    answers = ["busy", "failed"]
    calls: list[str] = []

    async def fake_rollback(rt: Runtime, stack: str, reason: str) -> Any:
        calls.append(reason)
        status = answers.pop(0)
        return SimpleNamespace(status=status, rollback=None if status == "busy" else SimpleNamespace(
            why=reason, to_deployment="op-20260101T000000Z-00000000"))

    incidents: list[dict[str, Any]] = []
    alerts: list[Any] = []

    async def record_incident(**kw: Any) -> str:
        incidents.append(kw)
        return "i"

    async def alert(stack: str, a: Any) -> None:
        alerts.append(a)

    async def tail(o: Any, n: int) -> list[str]:
        return ["fatal: simulated crash"]

    monkeypatch.setattr(opsbridge, "rollback", fake_rollback)
    watcher = Watcher(runtime, ["p"])
    watcher.recorder = SimpleNamespace(record_incident=record_incident)  # type: ignore[assignment]
    monkeypatch.setattr(watcher, "_alert", alert)
    monkeypatch.setattr(watcher, "_tail", tail)
    pending: list[Any] = []
    monkeypatch.setattr(watcher, "_background", pending.append)  # memory writes, awaited here in order

    async def settle() -> None:
        while pending:
            await pending.pop(0)
    broken = [(observed("web", "exited", exit_code=1), "exited with code 1")]
    policy = stack_policy(None)

    assert not await watcher._rollback_if_fresh_deploy("p", policy, broken, [])  # busy: nothing done, no noise
    await settle()
    assert len(calls) == 1 and op.id in calls[0] and calls[0].startswith("watcher: web exited with code 1")
    assert not incidents and not alerts and op.id not in watcher.state.data["rollbacks"]

    assert not await watcher._rollback_if_fresh_deploy("p", policy, broken, [])  # asked again; the rollback failed
    await settle()
    assert len(calls) == 2 and watcher.counters.rollbacks == 0
    assert [a.level for a in alerts] == ["critical"] and "the rollback ended failed" in alerts[0].what_was_tried
    assert incidents[0]["outcome"] == "unresolved" and incidents[0]["log_lines"] == ["fatal: simulated crash"]

    assert not await watcher._rollback_if_fresh_deploy("p", policy, broken, [])  # once per deployment
    await settle()
    assert len(calls) == 2 and len(incidents) == 1
    runtime.close()


def test_crash_loop_since_a_deployment_counts_as_broken(tmp_path: Any) -> None:
    """restart: unless-stopped hides a crash loop (running again at once): restarts of a container
    the deployment created, or restarts the watcher saw since it, are the break; older ones are not."""
    from server.monitor.watcher import Watcher
    from server.runtime import Runtime
    from server.settings import Settings

    watcher = Watcher(Runtime(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state")), ["p"])
    policy = stack_policy(None, {"job": {"dsm.one-shot": "true"}})
    since = iso_to_epoch("2026-12-04T18:00:00Z") or 0.0

    def container(service: str, created: str, restarts: int, status: str = "running") -> Observed:
        o = observed(service, status)
        o.inspect.update(Created=created, RestartCount=restarts)
        return o

    new = "2026-12-04T18:00:01.123456789Z"
    assert watcher._crash_looping("p", container("web", new, 2), policy, since) == (
        "restarted 2 time(s) by the engine since the deployment")
    assert watcher._crash_looping("p", container("web", new, 0), policy, since) is None
    old = container("db", "2026-12-01T00:00:00Z", 5)
    assert watcher._crash_looping("p", old, policy, since) is None  # restarted long before this deployment
    watcher.state.service("p", "db")["engine_restarts"] = [since - 60, since + 30]
    assert watcher._crash_looping("p", old, policy, since) == "restarted 1 time(s) by the engine since the deployment"
    assert watcher._crash_looping("p", container("api", "2026-12-01T00:00:00Z", 0, "restarting"), policy, since)
    assert watcher._crash_looping("p", container("job", new, 3), policy, since) is None  # one-shots are not healed


def test_fresh_deployment_is_the_newest_change_not_a_rollback_or_a_no_op(tmp_path: Any) -> None:
    """An unchanged redeploy does not hide the release it left running; a rollback (by hand or by
    the watcher) after a deploy means no automatic rollback (it would go one release further back)."""
    from server.monitor import opsbridge
    from server.runtime import Runtime
    from server.settings import Settings

    runtime = Runtime(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state"))
    ops = runtime.operations()

    def op(kind: str, status: str) -> str:
        o = ops.begin("p", kind, {})  # type: ignore[arg-type]
        o.end(status, {})  # type: ignore[arg-type]
        return o.id

    assert opsbridge.last_deployment(runtime, "p") is None
    op("deploy", "deployed")
    v2 = op("deploy", "deployed")
    op("deploy", "unchanged")
    last = opsbridge.last_deployment(runtime, "p")
    assert last.operation_id == v2 and last.kind == "deploy" and last.status == "deployed"
    back = op("rollback", "rolled_back")
    op("deploy", "unchanged")
    last = opsbridge.last_deployment(runtime, "p")
    assert last.operation_id == back and last.kind == "rollback"
    v3 = op("deploy", "deployed")
    assert opsbridge.last_deployment(runtime, "p").operation_id == v3
    runtime.close()


def test_status_shows_health_only_while_a_container_runs() -> None:
    from server.monitor.status import _service

    assert _service(observed("api", health="healthy"), None, None).health == "healthy"
    # A one-shot that exited 0 keeps its last probe result in the engine: not shown as unhealthy.
    done = _service(observed("migrate", status="exited", health="unhealthy"), None, None)
    assert done.health is None and done.exit_code == 0
