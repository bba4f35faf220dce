"""The health gate whose verdict decides between keeping a deploy and rolling it back: each rule
of :func:`assess` at its edges, and :func:`run_gate` over a fake engine (which containers count,
failing fast with the evidence, the timeout's verdict, a restart count that rises)."""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.deploy.health import Watched, _parse_time, assess, run_gate
from server.settings import Settings
from tests.deploy_fakes import STACK, FakeEngine

WEB, JOB = Watched("web"), Watched("job", one_shot=True)


NOW = 1_800_000_000.0


def info(status: str = "running", health: str | None = None, restarts: int | None = 0, exit_code: int = 0,
         oom: bool = False, started: str | None = None, started_ago: float = 100.0,
         logs: list[str] | None = None) -> dict[str, Any]:
    if started is None:  # as the engine writes it: nanoseconds, UTC
        started = datetime.fromtimestamp(NOW - started_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "StartedAt": started}
    if health:
        state["Health"] = {"Status": health, "Log": [{"Output": o} for o in (logs or [])]}
    return {"Name": "/p-web-1", "State": state, "RestartCount": restarts}


# (inspect, watched, baseline restarts, verdict, why, evidence, exit code reported)
RULES = [
    (info(health="healthy"), WEB, 0, "ready", "healthy", [], None),
    (info(health="healthy", oom=True), WEB, 0, "failed", "was killed for running out of memory (OOMKilled)",
     ["p-web-1: OOMKilled=true"], None),
    (info("exited", exit_code=137, oom=True), JOB, 0, "failed", "was killed for running out of memory (OOMKilled)",
     ["p-web-1: OOMKilled=true"], 137),
    (info(health="healthy", restarts=3, exit_code=2), WEB, 1, "failed",
     "is in a restart loop (2 restart(s), last exit code 2)", ["p-web-1: RestartCount=3, ExitCode=2"], None),
    (info(health="healthy", restarts=3), WEB, 3, "ready", "healthy", [], None),
    (info(health="healthy", restarts=None), WEB, 0, "ready", "healthy", [], None),
    (info("exited", exit_code=0), WEB, 0, "failed", "exited with code 0", ["p-web-1: exited, ExitCode=0"], 0),
    (info("dead", exit_code=0), WEB, 0, "failed", "exited with code 0", ["p-web-1: exited, ExitCode=0"], 0),
    (info("exited", exit_code=0), JOB, 0, "ready", "one-shot service completed (exit 0)", [], 0),
    (info("dead", exit_code=0), JOB, 0, "ready", "one-shot service completed (exit 0)", [], 0),
    (info("exited", exit_code=2), JOB, 0, "failed", "exited with code 2", ["p-web-1: exited, ExitCode=2"], 2),
    (info("restarting", exit_code=1), WEB, 0, "failed", "is restarting (last exit code 1)",
     ["p-web-1: restarting"], 1),
    (info("restarting", exit_code=1), JOB, 0, "failed", "is restarting (last exit code 1)",
     ["p-web-1: restarting"], 1),
    (info("created"), WEB, 0, "waiting", "is created", [], 0),
    (info("paused"), JOB, 0, "waiting", "is paused", [], 0),
    (info(), JOB, 0, "waiting", "one-shot service still running", [], None),
    (info(health="healthy"), JOB, 0, "waiting", "one-shot service still running", [], None),
    (info(health="starting"), WEB, 0, "waiting", "health: starting", [], None),
    (info(health="unhealthy", logs=["a", "  b  ", "", "c", "d" * 400]), WEB, 0, "failed",
     "is unhealthy (healthcheck failing)", ["p-web-1: health check output: c", f"p-web-1: health check output: "
                                            f"{'d' * 300}"], None),
    (info(health="unhealthy", logs=["x", "y", "z", "w"]), WEB, 0, "failed", "is unhealthy (healthcheck failing)",
     [f"p-web-1: health check output: {o}" for o in "yzw"], None),
    (info(health="unhealthy", logs=[""]), WEB, 0, "failed", "is unhealthy (healthcheck failing)",
     ["p-web-1: unhealthy"], None),
    (info(health="unhealthy"), WEB, 0, "failed", "is unhealthy (healthcheck failing)", ["p-web-1: unhealthy"], None),
    # No healthcheck (waived): ready once it stayed up the grace period (5 s).
    (info(started_ago=1), WEB, 0, "waiting", "no healthcheck: must stay up 5s", [], None),
    (info(started_ago=4.9), WEB, 0, "waiting", "no healthcheck: must stay up 5s", [], None),
    (info(started_ago=5), WEB, 0, "ready", "running for 5s (no healthcheck: waived)", [], None),
    (info(started_ago=100), WEB, 0, "ready", "running for 100s (no healthcheck: waived)", [], None),
    (info(started="0001-01-01T00:00:00Z"), WEB, 0, "waiting", "no healthcheck: must stay up 5s", [], None),
    (info(started=""), WEB, 0, "waiting", "no healthcheck: must stay up 5s", [], None),
]


@pytest.mark.parametrize(("inspect", "watched", "baseline", "verdict", "why", "evidence", "exit_code"), RULES)
def test_assess_rules(inspect: dict[str, Any], watched: Watched, baseline: int, verdict: str, why: str,
                      evidence: list[str], exit_code: int | None) -> None:
    a = assess(inspect, watched, baseline_restarts=baseline, now=NOW)
    assert (a.verdict, a.why, a.evidence, a.exit_code) == (verdict, why, evidence, exit_code)
    assert (a.service, a.container, a.state) == (watched.service, "p-web-1", inspect["State"]["Status"])
    assert a.health == (inspect["State"].get("Health") or {}).get("Status")


def test_assess_grace_edges() -> None:
    now = NOW
    started = "2027-01-15T07:59:50.000000000Z"  # NOW - 10 s
    assert _parse_time(started) == NOW - 10
    assert assess(info(started=started), WEB, baseline_restarts=0, now=now, grace_s=10).verdict == "ready"
    assert assess(info(started=started), WEB, baseline_restarts=0, now=now, grace_s=10.5).verdict == "waiting"
    assert assess(info(started=""), WEB, baseline_restarts=0, now=now, grace_s=0).verdict == "ready"
    assert assess(info(started=""), WEB, baseline_restarts=0, now=now, grace_s=0.1).why == \
        "no healthcheck: must stay up 0s"
    bare = {"State": {"Status": "running"}}
    a = assess(bare, WEB, baseline_restarts=0, now=now, grace_s=0)
    assert (a.verdict, a.container, a.state) == ("ready", "", "running")
    assert assess({}, WEB, baseline_restarts=0, now=now).why == "is unknown"


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()),
    ("2026-01-02T03:04:05.123456789Z", datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC).timestamp()),
    ("2026-01-02T03:04:05.5+01:00", datetime(2026, 1, 2, 2, 4, 5, 500000, tzinfo=UTC).timestamp()),
    ("2026-01-02T03:04:05.123Z", datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC).timestamp()),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    (None, None),
    ("soon", None),
])
def test_parse_time(text: str | None, expected: float | None) -> None:
    got = _parse_time(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.fixture
def engine(settings: Settings, stacks_root: Path) -> FakeEngine:
    return FakeEngine([])



@pytest.mark.anyio
async def test_gate_passes_when_every_watched_service_is_ready(engine: FakeEngine) -> None:
    engine.add("web")
    engine.add("job", status="exited", health=None)
    gate = await run_gate(engine, STACK, [WEB, JOB], timeout_s=5)  # type: ignore[arg-type]
    assert gate.ok and gate.failure == "" and gate.failed_service is None
    assert sorted((a.service, a.verdict) for a in gate.assessments) == [("job", "ready"), ("web", "ready")]
    assert gate.duration_s < 3 and engine.inspected == {c.id for c in engine.containers}


@pytest.mark.anyio
async def test_gate_fails_fast_with_the_evidence_and_the_logs(engine: FakeEngine) -> None:
    engine.add("db")
    cid = engine.add("web", health="unhealthy")
    engine.logs[cid] = [f"old {i}" for i in range(20)] + ["listening", "  at app.main(App.java:3)", "x" * 400]
    started = time.monotonic()
    gate = await run_gate(engine, STACK, [Watched("db"), WEB], timeout_s=30)  # type: ignore[arg-type]
    assert not gate.ok and time.monotonic() - started < 5  # at once, not at the 30 s timeout
    assert gate.failure == "web is unhealthy (healthcheck failing)" and gate.failed_service == "web"
    # The last 15 log lines, stack-trace indentation kept, each cut at 300 characters.
    assert gate.evidence == ["unit-web-1: health check output: web probe",
                             *[f"log: old {i}" for i in range(8, 20)], "log: listening",
                             "log:   at app.main(App.java:3)", f"log: {'x' * 300}"]
    assert gate.ok is False and 0 <= gate.duration_s < 5
    assert [(a.service, a.verdict) for a in gate.assessments] == [("db", "ready"), ("web", "failed")]


@pytest.mark.anyio
async def test_gate_ignores_one_off_and_unwatched_containers(engine: FakeEngine) -> None:
    engine.add("web")
    engine.add("web", status="exited", exit_code=1, health=None, oneoff=True)  # `compose run` leftovers
    engine.add("other", status="exited", exit_code=1, health=None)
    gate = await run_gate(engine, STACK, [WEB], timeout_s=5)  # type: ignore[arg-type]
    assert gate.ok and [a.service for a in gate.assessments] == ["web"]


@pytest.mark.anyio
async def test_gate_times_out_naming_what_it_waited_for(engine: FakeEngine) -> None:
    gone = engine.add("d")
    del engine.infos[gone]  # removed between the listing and the inspect
    engine.add("web", health="starting")
    engine.add("ok")
    engine.add("a", health="starting")
    engine.add("b", health="starting")
    engine.add("c", health="starting")
    watched = [WEB, Watched("db"), Watched("a"), Watched("b"), Watched("c"), Watched("d"), Watched("ok")]
    gate = await run_gate(engine, STACK, watched, timeout_s=0.3)  # type: ignore[arg-type]
    assert not gate.ok and gate.failed_service == "web"
    assert gate.failure == ("not ready within 0s: web health: starting, a health: starting, b health: starting, "
                            "c health: starting, d no container yet, db no container yet")
    assert gate.evidence == ["web: health: starting", "a: health: starting", "b: health: starting"]
    assert gate.ok is False and len(gate.assessments) == 7
    absent = gate.assessments[-1]
    assert (absent.service, absent.container, absent.verdict, absent.state, absent.health, absent.why) == (
        "db", "", "waiting", "absent", None, "no container yet")
    assert gate.duration_s >= 0.3


@pytest.mark.anyio
async def test_gate_reports_progress_while_it_waits(engine: FakeEngine) -> None:
    engine.add("web", health="starting")
    engine.add("api", health=None, started_ago=0)
    engine.add("ok")
    messages: list[str] = []

    async def on_wait(message: str) -> None:
        messages.append(message)

    watched = [WEB, Watched("api"), Watched("ok")]
    gate = await run_gate(engine, STACK, watched, timeout_s=3.5, on_wait=on_wait, grace_s=60)  # type: ignore[arg-type]
    assert not gate.ok
    # Every 2 s, not at every poll: one message within 3.5 s.
    assert len(messages) == 1 and re.fullmatch(
        r"waiting on health \(2s/4s\): web \(health: starting\), api \(no healthcheck: must stay up 60s\)",
        messages[0]), messages


@pytest.mark.anyio
async def test_gate_waits_for_a_container_to_become_ready(engine: FakeEngine) -> None:
    cid = engine.add("web", health="starting")
    ready = copy.deepcopy(engine.infos[cid])
    ready["State"]["Health"]["Status"] = "healthy"
    engine.later[cid] = [ready]
    gate = await run_gate(engine, STACK, [WEB], timeout_s=5)  # type: ignore[arg-type]
    assert gate.ok and 0.2 <= gate.duration_s < 10  # one poll interval (0.25 s) later


@pytest.mark.anyio
async def test_gate_fails_when_the_restart_count_rises(engine: FakeEngine) -> None:
    cid = engine.add("web", health="starting", restarts=0)
    again = copy.deepcopy(engine.infos[cid])
    again["RestartCount"] = 1
    engine.later[cid] = [again]
    gate = await run_gate(engine, STACK, [WEB], timeout_s=5)  # type: ignore[arg-type]
    assert not gate.ok and gate.failure.startswith("web is in a restart loop (1 restart(s)")


@pytest.mark.anyio
async def test_a_restart_long_before_the_deploy_is_not_a_restart_loop(engine: FakeEngine) -> None:
    # A database that crashed and was restarted by its policy last month keeps RestartCount=1;
    # an unrelated deploy of the stack must not read that as a loop and roll back.
    engine.add("db", restarts=1)
    engine.add("web")
    gate = await run_gate(engine, STACK, [Watched("db"), WEB], timeout_s=5)  # type: ignore[arg-type]
    assert gate.ok, gate.failure


@pytest.mark.anyio
async def test_gate_grace_is_the_callers(engine: FakeEngine) -> None:
    engine.add("web", health=None, started_ago=1)  # up 1 s, no healthcheck
    gate = await run_gate(engine, STACK, [WEB], timeout_s=3, grace_s=0.5)  # type: ignore[arg-type]
    assert gate.ok and gate.duration_s < 2, gate.failure


def _removing(cid: str) -> Exception:
    from docker.errors import APIError

    response = type("R", (), {"status_code": 409, "reason": "Conflict"})()
    return APIError("409 Client Error: Conflict", response=response,  # type: ignore[arg-type]
                    explanation=f"removal of container {cid} is already in progress")


@pytest.mark.anyio
@pytest.mark.parametrize("error", ["removing", "not-found"])
async def test_gate_reads_a_container_removed_meanwhile_as_gone(engine: FakeEngine, error: str) -> None:
    """A rollback replaces containers while the gate reads them: their logs answer 409 or NotFound.
    That is evidence ("gone"), never an exception that fails the gate (and with it the rollback)."""
    from docker.errors import NotFound

    cid = engine.add("web", health="unhealthy")
    engine.log_errors[cid] = _removing(cid) if error == "removing" else NotFound("no such container")
    gate = await run_gate(engine, STACK, [WEB], timeout_s=5)  # type: ignore[arg-type]
    assert not gate.ok and gate.failed_service == "web"
    assert gate.evidence[-1] == f"log: (container {cid[:12]} is gone: removed while its logs were read)"


@pytest.mark.anyio
async def test_gate_inspect_of_a_container_being_removed_is_gone(engine: FakeEngine) -> None:
    going = engine.add("web")
    engine.read_errors[going] = _removing(going)
    engine.add("web", cid="web-new")
    gate = await run_gate(engine, STACK, [WEB], timeout_s=5)  # type: ignore[arg-type]
    assert gate.ok and len(gate.assessments) == 1


def test_only_gone_or_going_counts_as_vanished() -> None:
    from docker.errors import APIError, NotFound

    from server.engine import vanished

    assert vanished(_removing("abc")) and vanished(NotFound("no such container"))
    assert not vanished(APIError("500 Server Error", explanation="something else broke"))
