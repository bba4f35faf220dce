"""The verification window's measures at their seams (server/deploy/verify.py): usage of a
container's limits from one stats sample, which containers have limits, sustained pressure and
log bursts at their edges, timestamps, and the window's verdicts over a fake engine driven by a
fake clock. The real-engine deploy tests hold the capability; these pin the arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from server.deploy import verify as verify_module
from server.deploy.health import Watched
from server.deploy.verify import _has_limit, _stamp, burst, sustained, usage_percent
from tests.deploy_fakes import STACK, FakeEngine
from tests.test_verify_promises import Clock


# -- usage of the limits ------------------------------------------------------------------------
def _cpu(total: float, pre_total: float, system: float, pre_system: float, online: int | None = 2) -> dict[str, Any]:
    cpu: dict[str, Any] = {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system}
    if online is not None:
        cpu["online_cpus"] = online
    return {"cpu_stats": cpu, "precpu_stats": {"cpu_usage": {"total_usage": pre_total},
                                                "system_cpu_usage": pre_system}}


def test_no_limits_no_percentages() -> None:
    assert usage_percent({"memory_stats": {"usage": 5}, **_cpu(2, 1, 2, 1)}, {"HostConfig": {}}) == (None, None)
    assert usage_percent({}, {}) == (None, None)


def test_memory_percent_of_the_limit_leaves_the_page_cache_out() -> None:
    info = {"HostConfig": {"Memory": 1000}}
    assert usage_percent({"memory_stats": {"usage": 600, "stats": {"inactive_file": 100}}}, info) == (50.0, None)
    assert usage_percent({"memory_stats": {"usage": 600, "stats": {"cache": 200}}}, info) == (40.0, None)
    # inactive_file wins over cache when both are there (cgroup v2 names it so)
    assert usage_percent({"memory_stats": {"usage": 600, "stats": {"inactive_file": 100, "cache": 500}}},
                         info) == (50.0, None)
    assert usage_percent({"memory_stats": {"usage": 100, "stats": {"cache": 300}}}, info) == (0.0, None)
    assert usage_percent({"memory_stats": {"usage": 250}}, info) == (25.0, None)
    assert usage_percent({}, info) == (0.0, None)


def test_cpu_percent_of_the_limit() -> None:
    # 20% of the host's time over 2 CPUs is 0.4 CPU; of a 0.5 CPU limit that is 80%.
    sample = _cpu(400, 200, 2000, 1000)
    assert usage_percent(sample, {"HostConfig": {"NanoCpus": 500_000_000}}) == (None, 80.0)
    assert usage_percent(sample, {"HostConfig": {"CpuQuota": 50000, "CpuPeriod": 100000}}) == (None, 80.0)
    assert usage_percent(sample, {"HostConfig": {"CpuQuota": 50000}}) == (None, 80.0)  # default period 100 ms
    assert usage_percent(sample, {"HostConfig": {"CpuQuota": 25000, "CpuPeriod": 50000}}) == (None, 80.0)
    assert usage_percent(sample, {"HostConfig": {"CpuQuota": -1}}) == (None, None)  # -1: unlimited
    assert usage_percent(_cpu(400, 200, 2000, 1000, online=None),
                         {"HostConfig": {"NanoCpus": 500_000_000}}) == (None, 40.0)  # one CPU when not said
    assert usage_percent(_cpu(400, 200, 1000, 1000), {"HostConfig": {"NanoCpus": 10**9}}) == (None, None)  # no time
    assert usage_percent(_cpu(100, 200, 2000, 1000), {"HostConfig": {"NanoCpus": 10**9}}) == (None, None)  # reset
    assert usage_percent(_cpu(200, 200, 2000, 1000), {"HostConfig": {"NanoCpus": 10**9}}) == (None, 0.0)  # idle
    both = usage_percent({**sample, "memory_stats": {"usage": 990}}, {"HostConfig": {"Memory": 1000,
                                                                                   "NanoCpus": 10**9}})
    assert both == (99.0, 40.0)
    no_pre = {"cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 1000, "online_cpus": 1}}
    assert usage_percent(no_pre, {"HostConfig": {"NanoCpus": 10**9}}) == (None, 30.0)


def test_which_containers_have_a_limit() -> None:
    infos = {"abc123full": {"HostConfig": {"Memory": 1}}, "def456full": {"HostConfig": {"NanoCpus": 1}},
             "ghi789full": {"HostConfig": {"CpuQuota": 1}}, "jkl000full": {"HostConfig": {"CpuQuota": 0}},
             "mno111full": {"HostConfig": {"CpuQuota": -1, "Memory": 0}}, "pqr222full": {}}
    assert [_has_limit(infos, s) for s in ("abc123", "def456", "ghi789", "jkl000", "mno111", "pqr222", "zzz")] == [
        True, True, True, False, False, False, False]


# -- edges of the measures ------------------------------------------------------------------------
def test_sustained_needs_enough_samples_above_the_line_over_a_long_enough_span() -> None:
    high = verify_module.PRESSURE_PCT + 1
    assert sustained([(0, high), (5, high), (10, high)], window_s=60)
    assert not sustained([(0, high), (5, high), (9.9, high)], window_s=60)  # 10 s span needed
    assert not sustained([(0, high), (10, high)], window_s=60)  # 3 samples needed
    assert sustained([(0, high), (1, high), (2, high)], window_s=4)  # a short window: half of it
    assert not sustained([(0, high), (1, high), (1.9, high)], window_s=4)
    at_line = verify_module.PRESSURE_PCT
    assert not sustained([(0, at_line), (5, at_line), (10, at_line)], window_s=60)  # above, not at
    assert not sustained([(0, high), (5, high), (8, 10.0), (10, high)], window_s=60)  # a dip restarts the run
    assert sustained([(0, 10.0), (5, high), (10, high), (15, high)], window_s=60)
    assert not sustained([], window_s=60)


def test_burst_is_more_than_the_rate_within_one_minute() -> None:
    n = verify_module.LOG_LINES_PER_MINUTE
    assert not burst([float(i) for i in range(n)])
    assert burst([float(i) for i in range(n + 1)])
    assert burst([60.0 * i / n for i in range(n + 1)])  # the first and the last exactly 60 s apart: one span
    assert not burst([61.0 * i / n for i in range(n + 1)])
    assert not burst([0.0, 100.0, 200.0])
    assert burst([5.0] * (n + 1)) and not burst([])
    assert burst([float(i) for i in range(3)], per_minute=2) and not burst([0.0, 1.0], per_minute=2)
    assert burst([50.0, *[float(i) for i in range(n)]])  # unsorted input


def test_log_timestamps() -> None:
    expected = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert _stamp("2026-01-02T03:04:05.123456789Z") == expected
    assert _stamp("2026-01-02T03:04:05Z") == expected
    assert _stamp("not-a-time") is None


# -- the window over a fake engine ----------------------------------------------------------------
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(verify_module, "time", SimpleNamespace(monotonic=clock.monotonic, time=clock.time))
    monkeypatch.setattr(verify_module, "anyio", SimpleNamespace(sleep=clock.sleep,
                                                                create_task_group=anyio.create_task_group))
    return clock


class StatsEngine(FakeEngine):
    def __init__(self, usage: list[float]) -> None:
        super().__init__([])
        self.usage = usage
        self.sampled: list[str] = []

    async def container_stats(self, cid: str) -> dict[str, Any] | None:
        self.sampled.append(cid)
        pct = self.usage[min(len(self.sampled) - 1, len(self.usage) - 1)]
        return {"memory_stats": {"usage": pct * 10}}


def _limited(engine: FakeEngine, service: str, memory: int | None = 1000) -> str:
    cid = engine.add(service)
    engine.infos[cid]["HostConfig"] = {"Memory": memory} if memory else {}
    return cid


@pytest.mark.anyio
async def test_sustained_memory_pressure_fails_the_window_naming_the_service(clock: Clock) -> None:
    engine = StatsEngine([99.0])
    _limited(engine, "api")
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                               window_s=60.0, dependencies=frozenset())
    assert not result.ok and result.failed_service == "api"
    assert result.failure == "api memory above 95% of its limit, sustained (99%, 99%, 99%)"
    assert result.evidence == [f"{STACK}-api-1: memory 99%, 99%, 99% of limit"]
    assert clock.now - 1000.0 == 10.0  # samples every 2 s: the 10 s span is reached at 10 s


@pytest.mark.anyio
async def test_pressure_that_eases_passes_and_unlimited_containers_are_not_sampled(clock: Clock) -> None:
    engine = StatsEngine([99.0, 99.0, 50.0, 99.0, 99.0])
    _limited(engine, "api")
    _limited(engine, "web", memory=None)
    told: list[str] = []

    async def tell(message: str) -> None:
        told.append(message)

    result = await verify_module.verify_window(engine, STACK, [Watched("api"), Watched("web")],  # type: ignore[arg-type]
                                               {"api", "web"}, window_s=7.0, dependencies=frozenset(), tell=tell)
    assert result.ok, result
    assert result.summary == "7s window passed: health held (8 checks), 0 critical log line(s), no sustained pressure"
    assert set(engine.sampled) == {"api-c0"} and len(engine.sampled) == 4  # at 0, 2, 4, 6 s
    assert told == ["verifying 0s/7s: health passing, 0 critical log line(s)",
                    "verifying 5s/7s: health passing, 0 critical log line(s)"]


@pytest.mark.anyio
async def test_no_window_and_a_container_that_fails_in_it(clock: Clock) -> None:
    engine = StatsEngine([10.0])
    none = await verify_module.verify_window(engine, STACK, [], set(), window_s=0,  # type: ignore[arg-type]
                                             dependencies=frozenset())
    assert none.ok and none.summary == "no verification window (verify_s=0)"
    cid = _limited(engine, "api")
    engine.later[cid] = [{**engine.infos[cid], "State": {**engine.infos[cid]["State"], "Status": "exited",
                                                          "ExitCode": 1}}]
    engine.logs[cid] = ["boom"]
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                               window_s=30.0, dependencies=frozenset())
    assert not result.ok and result.failed_service == "api"
    assert result.failure.endswith("during the verification window (1s in)") and "log: boom" in result.evidence


@pytest.mark.anyio
async def test_a_container_removed_while_the_window_reads_it_is_gone_not_an_error(clock: Clock) -> None:
    """A 409 "removal ... already in progress" from logs (a rollback replacing the container) is
    an evidence line, never an exception out of the verification window."""
    from docker.errors import APIError

    engine = StatsEngine([10.0])
    cid = _limited(engine, "api")
    engine.later[cid] = [{**engine.infos[cid], "State": {**engine.infos[cid]["State"], "Status": "exited",
                                                          "ExitCode": 1}}]
    response = type("R", (), {"status_code": 409, "reason": "Conflict"})()
    engine.log_errors[cid] = APIError("409 Client Error: Conflict", response=response,  # type: ignore[arg-type]
                                      explanation=f"removal of container {cid} is already in progress")
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                               window_s=30.0, dependencies=frozenset())
    assert not result.ok and result.failed_service == "api"
    assert f"log: (container {cid[:12]} is gone: removed while its logs were read)" in result.evidence


def test_more_edges_of_the_usage_arithmetic() -> None:
    assert usage_percent({"memory_stats": {"usage": 1}}, {"HostConfig": {"Memory": 1}}) == (100.0, None)  # 1 byte
    no_totals = {"cpu_stats": {"cpu_usage": {}, "system_cpu_usage": 2000, "online_cpus": 1},
                 "precpu_stats": {"cpu_usage": {}, "system_cpu_usage": 1000}}
    assert usage_percent(no_totals, {"HostConfig": {"NanoCpus": 10**9}}) == (None, 0.0)
    no_system = {"cpu_stats": {"cpu_usage": {"total_usage": 5}, "online_cpus": 1},
                 "precpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert usage_percent(no_system, {"HostConfig": {"NanoCpus": 10**9}}) == (None, None)
    one_tick = _cpu(1, 0, 1001, 1000, online=1)
    assert usage_percent(one_tick, {"HostConfig": {"NanoCpus": 10**9}}) == (None, 100.0)
    tiny_quota = usage_percent(_cpu(400, 200, 2000, 1000), {"HostConfig": {"CpuQuota": 1, "CpuPeriod": 100000}})
    assert tiny_quota[1] is not None and tiny_quota[1] > 1000


def test_burst_window_slides_one_line_at_a_time() -> None:
    assert burst([0.0, 30.0, 61.0, 62.0], per_minute=2)  # 30, 61, 62 fall within one minute


class PerContainer(FakeEngine):
    """Stats per container id: a list of samples, one per call (the last repeats), or None."""

    def __init__(self, stats: dict[str, list[dict[str, Any]] | None]) -> None:
        super().__init__([])
        self.stats = stats
        self.calls: dict[str, int] = {}

    async def container_stats(self, cid: str) -> dict[str, Any] | None:
        n = self.calls[cid] = self.calls.get(cid, 0) + 1
        series = self.stats.get(cid)
        return None if series is None else series[min(n, len(series)) - 1]


def _mem(pct: float) -> dict[str, Any]:
    return {"memory_stats": {"usage": pct * 10}}


def _cpu_pct(pct: float) -> dict[str, Any]:
    return _cpu(pct, 0, 100, 0, online=1)  # of a 1-CPU limit


async def _window(engine: FakeEngine, services: list[str], window_s: float = 60.0) -> Any:
    return await verify_module.verify_window(engine, STACK, [Watched(s) for s in services],  # type: ignore[arg-type]
                                             set(services), window_s=window_s, dependencies=frozenset())


@pytest.mark.anyio
async def test_cpu_pressure_alone_is_found(clock: Clock) -> None:
    engine = PerContainer({})
    cid = engine.add("api")
    engine.infos[cid]["HostConfig"] = {"NanoCpus": 10**9}  # a CPU limit, no memory limit
    engine.stats[cid] = [_cpu_pct(99.0)]
    result = await _window(engine, ["api"])
    assert result.ok is False and result.failure == "api cpu above 95% of its limit, sustained (99%, 99%, 99%)"


@pytest.mark.anyio
async def test_memory_and_cpu_are_separate_series(clock: Clock) -> None:
    engine = PerContainer({})
    cid = engine.add("api")
    engine.infos[cid]["HostConfig"] = {"Memory": 1000, "NanoCpus": 10**9}
    engine.stats[cid] = [{**_mem(99.0), **_cpu_pct(10.0)}]
    result = await _window(engine, ["api"])
    assert result.ok is False and result.failure.startswith("api memory above 95%")


@pytest.mark.anyio
async def test_containers_are_separate_series_and_one_without_stats_is_skipped(clock: Clock) -> None:
    engine = PerContainer({})
    quiet = engine.add("quiet")
    engine.infos[quiet]["HostConfig"] = {"Memory": 1000}
    engine.stats[quiet] = None  # no stats (gone between the listing and the sample)
    calm = engine.add("calm")
    engine.infos[calm]["HostConfig"] = {"Memory": 1000}
    engine.stats[calm] = [_mem(10.0)]
    hot = engine.add("hot")
    engine.infos[hot]["HostConfig"] = {"Memory": 1000}
    engine.stats[hot] = [_mem(96.0), _mem(97.0), _mem(50.0), _mem(98.0), _mem(99.0), _mem(96.0), _mem(97.0),
                         _mem(98.0), _mem(99.0)]
    result = await _window(engine, ["quiet", "calm", "hot"])
    assert result.ok is False and result.failed_service == "hot"
    assert result.failure == "hot memory above 95% of its limit, sustained (97%, 98%, 99%)"
    assert result.evidence == [f"{STACK}-hot-1: memory 97%, 98%, 99% of limit"]


@pytest.mark.anyio
async def test_a_burst_of_critical_lines_fails_with_the_last_ten_as_evidence(clock: Clock) -> None:
    engine = FakeEngine([])
    cid = engine.add("api")
    engine.add("api", oneoff=True, cid="run-1")  # a one-off `run` container is never judged
    engine.infos["run-1"]["State"]["Status"] = "exited"
    engine.infos["run-1"]["State"]["ExitCode"] = 1
    long_tail = "x" * 400
    engine.logs[cid] = [f"FATAL: could not connect to the database (attempt {i}) {long_tail}" for i in range(12)]
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                               window_s=30.0, dependencies=frozenset())
    assert result.ok is False and result.failed_service == "api"
    assert result.failure == ("api logged 12 critical lines (more than 10 a minute) during the verification window")
    assert len(result.evidence) == 10 and result.evidence[0].startswith("log: fatal: FATAL: could not "
                                                                          "connect to the database (attempt 2) ")
    assert all(len(e) == len("log: fatal: ") + 300 for e in result.evidence)  # each line cut at 300


@pytest.mark.anyio
async def test_refused_connections_count_only_when_they_name_a_dependency(clock: Clock) -> None:
    engine = FakeEngine([])
    cid = engine.add("api")
    engine.logs[cid] = [f"dial tcp db:5433: connect: connection refused ({i})" for i in range(12)]
    calm = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                             window_s=6.0, dependencies=frozenset({"cache"}))
    assert calm.ok and "0 critical log line(s)" in calm.summary
    loud = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                             window_s=6.0, dependencies=frozenset({"db"}))
    assert loud.ok is False and "12 critical lines" in loud.failure
    assert loud.evidence[-1].startswith("log: dependency-refused: dial tcp db:5433")


@pytest.mark.anyio
async def test_restarts_before_the_window_are_the_baseline_and_a_one_second_window_runs(clock: Clock) -> None:
    engine = FakeEngine([])
    engine.add("api", restarts=3)  # restarted before the window opened: not a failure in it
    result = await verify_module.verify_window(engine, STACK, [Watched("api")], {"api"},  # type: ignore[arg-type]
                                               window_s=1.0, dependencies=frozenset())
    assert result.ok and result.summary.startswith("1s window passed: health held (2 checks)")
