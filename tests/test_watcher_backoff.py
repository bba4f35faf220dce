"""The watcher's restart budget (README: max_restarts per window_s, the first at once, then
backoff_s doubling), at its seams with a fake clock: no engine, no sleeping."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from server.monitor import watcher as watcher_mod
from server.monitor.stackpolicy import stack_policy
from tests.test_monitor_units import location, observed


@pytest.mark.anyio
async def test_first_restart_at_once_then_backoff_doubles_then_gives_up(tmp_path: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from server.runtime import Runtime
    from server.settings import Settings

    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(watcher_mod, "time", SimpleNamespace(time=lambda: clock.now, monotonic=lambda: clock.now))
    watcher = watcher_mod.Watcher(Runtime(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state")), ["p"])
    acted: list[float] = []
    gave_up: list[float] = []

    async def act(*_: Any, **__: Any) -> None:
        acted.append(clock.now)

    async def give_up(*_: Any, **__: Any) -> None:
        gave_up.append(clock.now)

    monkeypatch.setattr(watcher, "_act", act)
    monkeypatch.setattr(watcher, "_give_up", give_up)
    loc = location("services:\n  web:\n    image: x\n"
                   "    x-dsm: {recovery: {max_restarts: 3, window_s: 600, backoff_s: 10}}\n", tmp_path)
    policy = stack_policy(loc)
    failures = 0

    async def fails_at(t: float) -> None:
        nonlocal failures
        failures += 1  # a new failure each time: the container ran again in between
        clock.now = t
        o = observed("web", "exited", exit_code=1)
        o.state.update(StartedAt=f"start-{failures}", FinishedAt=f"end-{failures}")
        await watcher._recover("p", o, "exited", policy, loc)

    await fails_at(1000.0)
    assert acted == [1000.0]  # the first restart at once
    await fails_at(1005.0)
    await fails_at(1009.9)
    assert acted == [1000.0]  # no second restart before backoff_s (10 s)
    await fails_at(1010.5)
    assert acted == [1000.0, 1010.5]
    await fails_at(1025.0)
    await fails_at(1030.0)
    assert acted == [1000.0, 1010.5]  # the wait doubled: 20 s after the second
    await fails_at(1031.0)
    assert acted == [1000.0, 1010.5, 1031.0]
    assert not gave_up
    await fails_at(1200.0)
    assert acted == [1000.0, 1010.5, 1031.0] and gave_up == [1200.0]  # max_restarts per window: spent
    await fails_at(1700.0)  # the window (600 s) moved past the first two attempts: restarts resume
    assert acted[-1] == 1700.0
    watcher.runtime.close()


def _watcher(tmp_path: Any) -> Any:
    from server.runtime import Runtime
    from server.settings import Settings

    return watcher_mod.Watcher(Runtime(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state")), ["p"])


@pytest.mark.anyio
async def test_what_the_budget_records_and_a_half_done_action_reissued_once(tmp_path: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(watcher_mod, "time", SimpleNamespace(time=lambda: clock.now, monotonic=lambda: clock.now))
    watcher = _watcher(tmp_path)
    acted: list[tuple[float, str, int]] = []

    async def act(stack: str, o: Any, kind: str, rec: dict[str, Any], location: Any, attempt: int,
                  attempts: list[float]) -> None:
        acted.append((clock.now, str(rec.get("action")), attempt))

    gave_up: list[int] = []

    async def give_up(stack: str, o: Any, kind: str, attempts: int, window_s: int) -> None:
        gave_up.append(attempts)

    monkeypatch.setattr(watcher, "_act", act)
    monkeypatch.setattr(watcher, "_give_up", give_up)
    loc = location("services:\n  web:\n    image: x\n"
                   "    x-dsm: {recovery: {max_restarts: 2, window_s: 600, backoff_s: 10}}\n", tmp_path)
    policy = stack_policy(loc)
    rec = watcher.state.service("p", "web")

    unhealthy = observed("web", "running", health="unhealthy")
    unhealthy.state.update(StartedAt="s1", FinishedAt="f1")
    await watcher._recover("p", unhealthy, "unhealthy", policy, loc)
    assert acted == [(1000.0, "restart", 1)]  # running: a restart
    assert rec["action"] == "restart" and rec["outcome"] == "pending" and rec["in_flight"] is True
    assert rec["attempts"] == [1000.0] and "next_attempt_at" not in rec
    key = rec["last_key"]
    assert key == f"{unhealthy.full_id[:12]}@s1/f1"

    clock.now = 1010.0  # the same failure seen again, the action still in flight but recent: nothing
    await watcher._recover("p", unhealthy, "unhealthy", policy, loc)
    assert len(acted) == 1
    clock.now = 1031.0  # in flight for more than 30 s (a watcher killed mid-action): issued again, not counted
    await watcher._recover("p", unhealthy, "unhealthy", policy, loc)
    assert acted[-1] == (1031.0, "restart", 1) and rec["attempts"] == [1000.0]
    rec.pop("in_flight")
    clock.now = 1100.0  # done, and the very same failure: not acted on twice
    await watcher._recover("p", unhealthy, "unhealthy", policy, loc)
    assert len(acted) == 2

    exited = observed("web", "exited", exit_code=1)
    exited.state.update(StartedAt="s2", FinishedAt="f2")
    clock.now = 1005.0 + 5.0  # within the backoff of the first attempt (10 s after 1000)
    rec["attempts"] = [1005.0]
    await watcher._recover("p", exited, "exited", policy, loc)
    assert len(acted) == 2 and rec["next_attempt_at"] == 1015.0
    clock.now = 1015.0  # exactly at the end of the backoff: acted on
    await watcher._recover("p", exited, "exited", policy, loc)
    assert acted[-1] == (1015.0, "recreate", 2) and "next_attempt_at" not in rec  # exited: a recreate
    assert rec["last_key"] == f"{exited.full_id[:12]}@s2/f2"

    third = observed("web", "exited", exit_code=1)
    third.state.update(StartedAt="s3", FinishedAt="f3")
    clock.now = 1200.0
    await watcher._recover("p", third, "exited", policy, loc)
    assert gave_up == [2] and rec["exhausted"] is True
    assert (rec["action"], rec["outcome"]) == ("gave-up", "unresolved") and watcher.counters.gave_up == 1
    await watcher._recover("p", third, "exited", policy, loc)
    assert gave_up == [2] and watcher.counters.gave_up == 1  # alerted once per budget
    forgotten: list[str] = []
    monkeypatch.setattr(watcher.alerter, "forget", lambda key: forgotten.append(key))
    clock.now = 1700.0  # the window moved on: the budget is back, its alert forgotten
    fourth = observed("web", "exited", exit_code=1)
    fourth.state.update(StartedAt="s4", FinishedAt="f4")
    await watcher._recover("p", fourth, "exited", policy, loc)
    assert acted[-1] == (1700.0, "recreate", 1) and "exhausted" not in rec and forgotten == ["budget:p/web"]
    watcher.runtime.close()


@pytest.mark.anyio
async def test_recovery_off_does_nothing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    watcher = _watcher(tmp_path)
    acted: list[int] = []

    async def act(*_: Any) -> None:
        acted.append(1)

    monkeypatch.setattr(watcher, "_act", act)
    loc = location("services:\n  web:\n    image: x\n    x-dsm: {recovery: {enabled: false}}\n", tmp_path)
    await watcher._recover("p", observed("web", "exited", exit_code=1), "exited", stack_policy(loc), loc)
    assert not acted and not watcher.state.service("p", "web").get("attempts")
    watcher.runtime.close()


def test_what_counts_as_broken() -> None:
    from server.monitor.watcher import _broken

    policy = stack_policy(None)
    assert _broken(observed("web", "exited", exit_code=3), policy) == "exited with code 3"
    assert _broken(observed("web", "dead", exit_code=1), policy) == "exited with code 1"
    assert _broken(observed("web", "exited", oom=True, exit_code=137), policy) == "oom-killed"
    assert _broken(observed("web", "exited", exit_code=0), policy) is None
    assert _broken(observed("web", "running", health="unhealthy"), policy) == "unhealthy"
    assert _broken(observed("web", "running", health="starting"), policy) is None
    run_once = observed("web", "exited", exit_code=1, labels={"com.docker.compose.oneoff": "True"})
    assert _broken(run_once, policy) is None  # a `docker compose run` container is not the service
    no_status = observed("web", "exited", exit_code=2)
    no_status.state.pop("Status")
    assert _broken(no_status, policy) == "exited with code 2"  # the summary's state when inspect has none


def test_what_counts_as_a_crash_loop(tmp_path: Any) -> None:
    watcher = _watcher(tmp_path)
    policy = stack_policy(None)
    since = 1_000_000.0
    looping = observed("web", "restarting")
    assert watcher._crash_looping("p", looping, policy, since) == "crashing (restarting under its restart policy)"
    no_status = observed("web", "restarting")
    no_status.state.pop("Status")
    assert watcher._crash_looping("p", no_status, policy, since) == "crashing (restarting under its restart policy)"
    one_off = observed("web", "restarting", labels={"com.docker.compose.oneoff": "True"})
    assert watcher._crash_looping("p", one_off, policy, since) is None
    fresh = observed("web")
    fresh.inspect.update(Created="1970-01-12T13:46:40Z", RestartCount=2)  # created exactly at `since`
    assert watcher._crash_looping("p", fresh, policy, since) == "restarted 2 time(s) by the engine since the deployment"
    watcher.state.service("p", "db")["engine_restarts"] = [since]  # seen exactly at `since`
    assert watcher._crash_looping("p", observed("db"), policy, since) == (
        "restarted 1 time(s) by the engine since the deployment")
    undated = observed("api")
    undated.inspect.update(RestartCount=4)  # no Created: not counted as the deployment's
    assert watcher._crash_looping("p", undated, policy, since) is None
    watcher.runtime.close()


@pytest.mark.anyio
async def test_the_budget_hands_the_right_things_to_its_actions(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=5000.0)
    monkeypatch.setattr(watcher_mod, "time", SimpleNamespace(time=lambda: clock.now, monotonic=lambda: clock.now))
    watcher = _watcher(tmp_path)
    loc = location("services:\n  web:\n    image: x\n"
                   "    x-dsm: {recovery: {max_restarts: 2, window_s: 600, backoff_s: 10}}\n", tmp_path)
    policy = stack_policy(loc)
    calls: list[tuple[Any, ...]] = []

    async def act(*args: Any) -> None:
        calls.append(("act", *args))

    async def give_up(*args: Any) -> None:
        calls.append(("give_up", *args))

    monkeypatch.setattr(watcher, "_act", act)
    monkeypatch.setattr(watcher, "_give_up", give_up)
    rec = watcher.state.service("p", "web")
    o = observed("web", "exited", exit_code=1)
    o.inspect["Id"] = "0123456789abcdef" * 4
    o.state.update(StartedAt="s1", FinishedAt="f1")
    rec["attempts"] = [5000.0 - 600.0, 5000.0 - 5.0]  # one exactly a window old: out of the budget
    await watcher._recover("p", o, "exited", policy, loc)
    assert rec["attempts"] == [4995.0] and not calls  # pruned, then deferred (backoff 10 s)
    clock.now = 5005.5
    await watcher._recover("p", o, "exited", policy, loc)
    assert len(calls) == 1
    _, stack, seen, kind, arec, aloc, attempt, attempts = calls[0]
    assert (stack, seen, kind, arec, aloc, attempt) == ("p", o, "exited", rec, loc, 2)
    assert attempts is rec["attempts"] and attempts == [4995.0, 5005.5]
    assert rec["last_key"] == "0123456789ab@s1/f1" and isinstance(rec["action_at"], str)
    clock.now = 5005.5 + 30.0  # in flight exactly 30 s: not yet re-issued
    await watcher._recover("p", o, "exited", policy, loc)
    assert len(calls) == 1
    clock.now += 0.5
    await watcher._recover("p", o, "exited", policy, loc)
    assert calls[-1][1:] == ("p", o, "exited", rec, loc, 2, rec["attempts"])
    rec.pop("in_flight")
    watcher.counters.gave_up = 5
    again = observed("web", "exited", exit_code=1)
    again.state.update(StartedAt="s2", FinishedAt="f2")
    await watcher._recover("p", again, "exited", policy, loc)
    assert calls[-1] == ("give_up", "p", again, "exited", 2, 600) and watcher.counters.gave_up == 6
    assert isinstance(rec["action_at"], str) and rec["action_at"] != ""
    watcher.runtime.close()


def test_inspect_state_wins_over_the_listing(tmp_path: Any) -> None:
    from server.monitor.watcher import _broken

    policy = stack_policy(None)
    listed_running = observed("web", "running")
    listed_running.state.update(Status="exited", ExitCode=4)  # the listing is older than the inspect
    assert _broken(listed_running, policy) == "exited with code 4"
    watcher = _watcher(tmp_path)
    restarting = observed("web", "running")
    restarting.state["Status"] = "restarting"
    assert watcher._crash_looping("p", restarting, policy, 0.0) == "crashing (restarting under its restart policy)"
    watcher.runtime.close()
