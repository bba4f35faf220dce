"""Promises of the verification window that a planted bug survived (issue 15): the last log scan
at the end of the window, and critical lines counted only in the new containers. A fake clock
drives the window, so the test takes milliseconds, not verify_s seconds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from server.deploy import verify as verify_module
from server.deploy.health import Watched
from tests.deploy_fakes import STACK, FakeEngine

pytestmark = pytest.mark.anyio


class Clock:
    """time.monotonic/time.time and anyio.sleep for the verify module, advanced only by sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(verify_module, "time", SimpleNamespace(monotonic=clock.monotonic, time=clock.time))
    monkeypatch.setattr(verify_module, "anyio", SimpleNamespace(sleep=clock.sleep,
                                                                create_task_group=anyio.create_task_group))
    return clock


class LateLogs(FakeEngine):
    """Critical lines appear only once the clock has passed ``after`` seconds into the window."""

    def __init__(self, clock: Clock, after: float) -> None:
        super().__init__([])
        self.clock, self.start, self.after = clock, clock.now, after
        self.scans: list[float] = []


def _logs_api(engine: LateLogs, lines: list[str]) -> None:
    original = engine.api.logs

    def logs(container_id: str, *, tail: int, **kwargs: Any) -> bytes:
        engine.scans.append(engine.clock.now - engine.start)
        engine.logs[container_id] = lines if engine.clock.now - engine.start >= engine.after else []
        return original(container_id, tail=tail, **kwargs)

    engine.api.logs = logs  # type: ignore[method-assign]


CRITICAL = [f"FATAL: could not connect to the database (attempt {i})" for i in range(12)]


async def test_lines_logged_after_the_last_periodic_scan_are_caught_by_the_final_scan(clock: Clock) -> None:
    # Scans run every 5 s (at 0 and 5 here); the lines arrive at 6 s, the window ends at 7 s: only
    # the scan at the end of the window can see them.
    engine = LateLogs(clock, after=6.0)
    engine.add("api")
    _logs_api(engine, CRITICAL)
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"}, window_s=7.0,  # type: ignore[arg-type]
                                               dependencies=frozenset({"api"}))
    assert not result.ok, result
    assert result.failed_service == "api" and "critical lines" in result.failure
    assert engine.scans[-1] >= 7.0, engine.scans


async def test_a_quiet_window_passes_and_scans_at_its_end(clock: Clock) -> None:
    engine = LateLogs(clock, after=60.0)
    engine.add("api")
    _logs_api(engine, CRITICAL)
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"}, window_s=7.0,  # type: ignore[arg-type]
                                               dependencies=frozenset({"api"}))
    assert result.ok, result
    assert engine.scans[0] == 0.0 and engine.scans[-1] >= 7.0


async def test_critical_lines_of_an_unchanged_service_do_not_fail_the_window(clock: Clock) -> None:
    engine = LateLogs(clock, after=0.0)
    engine.add("db")
    _logs_api(engine, CRITICAL)
    result = await verify_module.verify_window(engine, STACK, [Watched("db")], set(), window_s=7.0,  # type: ignore[arg-type]
                                               dependencies=frozenset({"db"}))
    assert result.ok, result
    assert engine.scans == []
