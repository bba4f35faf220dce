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
