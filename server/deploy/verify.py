"""The verification window: the operator's rollback triggers, watched for ``verify_s`` seconds.

During the window, every second: the health gate's judgement of every container (exit, unhealthy,
restart, OOM kill). Every 5 s: the new containers' logs are scanned for critical lines, and a
progress message goes out. Every few seconds: memory and CPU against each container's limit.

Triggers (any one fails the deployment):
- health failing (as the gate judges it);
- more than 10 critical log lines within any 60 s in the new containers (:data:`CRITICAL_PATTERNS`);
- memory or CPU above 95% of the container's limit in 3 consecutive samples spanning at least
  min(10 s, half the window): sustained, not one sample. Containers without a limit are skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from server.deploy.health import Watched, assess, log_tail
from server.engine import Engine, container_logs, inspect_container

LOG_LINES_PER_MINUTE = 10
PRESSURE_PCT = 95.0
PRESSURE_SAMPLES = 3

# The documented critical-line pattern set (tests/test_deploy_units.py pins each family).
CRITICAL_PATTERNS: dict[str, re.Pattern[str]] = {
    "panic": re.compile(r"\bpanic(?:ked)?[:!(]|\bpanicked at\b|goroutine \d+ \[running\]", re.I),
    "fatal": re.compile(r"\bfatal(?: error)?\b[:!]|\bFATAL\b|\bCRITICAL\b"),
    "traceback": re.compile(r"Traceback \(most recent call last\)|Exception in thread|Unhandled(?:Promise)? ?"
                            r"(?:exception|rejection)|^\s+at [\w$.<>]+\([\w.]+:\d+\)", re.I),
    "out-of-memory": re.compile(r"out of memory|OutOfMemoryError|Cannot allocate memory|oom-kill|"
                                r"JavaScript heap out of memory", re.I),
    "database-connection": re.compile(
        r"could not connect to (?:the )?(?:database|server)|database connection (?:failed|error|refused)|"
        r"connection to (?:the )?database|password authentication failed|too many (?:clients|connections)|"
        r"OperationalError|SQLSTATE\[HY000\] \[200[0-9]\]|MongoNetworkError|Access denied for user|"
        r"the database system is (?:starting up|shutting down)|ECONNREFUSED[^\n]*:(?:5432|3306|27017|6379)\b",
        re.I,
    ),
}
_REFUSED = re.compile(r"connection refused|ECONNREFUSED|connect: connection refused|failed to connect", re.I)


def critical_kind(line: str, dependencies: frozenset[str] = frozenset()) -> str | None:
    """The pattern family a log line belongs to, or None. ``dependencies``: the stack's service
    names; 'connection refused' counts only when it names one of them (our own dependency)."""
    for kind, pattern in CRITICAL_PATTERNS.items():
        if pattern.search(line):
            return kind
    if _REFUSED.search(line) and any(re.search(rf"\b{re.escape(d)}\b", line) for d in dependencies):
        return "dependency-refused"
    return None


def burst(times: list[float], per_minute: int = LOG_LINES_PER_MINUTE) -> bool:
    """True when more than ``per_minute`` of the timestamps fall within one 60 s span."""
    ordered = sorted(times)
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > 60:
            start += 1
        if end - start + 1 > per_minute:
            return True
    return False


def sustained(samples: list[tuple[float, float]], window_s: float) -> bool:
    """``samples`` (time, percent of limit), oldest first: the last run above the line is long enough."""
    run: list[float] = []
    for at, pct in samples:
        run = [*run, at] if pct > PRESSURE_PCT else []
    need_span = min(10.0, window_s / 2)
    return len(run) >= PRESSURE_SAMPLES and run[-1] - run[0] >= need_span


@dataclass
class VerifyResult:
    ok: bool
    failure: str = ""
    failed_service: str | None = None
    evidence: list[str] = field(default_factory=list)
    summary: str = ""


def usage_percent(stats: dict[str, Any], info: dict[str, Any]) -> tuple[float | None, float | None]:
    """(memory % of limit, CPU % of limit) from one stats sample; None where no limit is set."""
    host = info.get("HostConfig") or {}
    mem_pct = None
    if int(host.get("Memory") or 0) > 0:
        mem = stats.get("memory_stats") or {}
        usage = float(mem.get("usage") or 0)
        cache = float((mem.get("stats") or {}).get("inactive_file") or (mem.get("stats") or {}).get("cache") or 0)
        mem_pct = 100.0 * max(usage - cache, 0) / float(host["Memory"])
    cpu_pct = None
    limit = (host.get("NanoCpus") or 0) / 1e9 or (
        (host.get("CpuQuota") or 0) / (host.get("CpuPeriod") or 100000) if (host.get("CpuQuota") or 0) > 0 else 0)
    if limit:
        cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
        d_cpu = float((cpu.get("cpu_usage") or {}).get("total_usage", 0)) - float(
            (pre.get("cpu_usage") or {}).get("total_usage", 0))
        d_sys = float(cpu.get("system_cpu_usage") or 0) - float(pre.get("system_cpu_usage") or 0)
        online = float(cpu.get("online_cpus") or 1)
        if d_sys > 0 and d_cpu >= 0:
            cpu_pct = 100.0 * (d_cpu / d_sys) * online / limit
    return mem_pct, cpu_pct


async def verify_window(
    engine: Engine,
    project: str,
    watched: list[Watched],
    new_services: set[str],
    *,
    window_s: float,
    dependencies: frozenset[str],
    tell: Callable[[str], Awaitable[None]] | None = None,
) -> VerifyResult:
    """Watch the stack for ``window_s`` seconds; fail on the first trigger."""
    if window_s <= 0:
        return VerifyResult(True, summary="no verification window (verify_s=0)")
    by_service = {w.service: w for w in watched}
    started_wall = time.time()
    started = time.monotonic()
    baseline: dict[str, int] = {}
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {}
    critical: dict[str, list[tuple[float, str]]] = {}
    next_logs = next_stats = 0.0
    checks = 0
    while True:
        elapsed = time.monotonic() - started
        containers = [c for c in await engine.compose_containers(project)
                      if c.service in by_service and c.labels.get("com.docker.compose.oneoff") != "True"]
        infos: dict[str, dict[str, Any]] = {}
        for c in containers:
            info = await inspect_container(engine, c.id)
            if info is None:
                continue
            key = str(info["Id"])
            infos[key] = info
            baseline.setdefault(key, int(info.get("RestartCount") or 0))
            a = assess(info, by_service[c.service or ""], baseline_restarts=baseline[key], now=time.time(), grace_s=0)
            if a.verdict == "failed":
                return VerifyResult(False, f"{a.service} {a.why} during the verification window ({elapsed:.0f}s in)",
                                    a.service, [*a.evidence, *await log_tail(engine, key)])
        checks += 1
        if elapsed >= next_stats:
            next_stats = elapsed + 2.0
            failure = await _pressure(engine, containers, infos, samples, window_s)
            if failure:
                return failure
        if elapsed >= next_logs or elapsed >= window_s:
            next_logs = elapsed + 5.0
            for c in containers:
                if c.service not in new_services:
                    continue
                lines = await container_logs(engine, c.id, since=started_wall - 1, tail=2000)
                found = []
                for raw in lines:
                    stamp, _, line = raw.partition(" ")
                    kind = critical_kind(line, dependencies)
                    if kind:
                        found.append((_stamp(stamp) or time.time(), f"{kind}: {line.strip()[:300]}"))
                critical[c.service or ""] = found
                if burst([t for t, _ in found]):
                    return VerifyResult(
                        False, f"{c.service} logged {len(found)} critical lines (more than {LOG_LINES_PER_MINUTE} "
                        "a minute) during the verification window", c.service, [f"log: {x}" for _, x in found[-10:]])
            if tell and elapsed < window_s:
                total = sum(len(v) for v in critical.values())
                await tell(f"verifying {elapsed:.0f}s/{window_s:.0f}s: health passing, {total} critical log line(s)")
        if elapsed >= window_s:
            total = sum(len(v) for v in critical.values())
            return VerifyResult(True, summary=f"{window_s:.0f}s window passed: health held ({checks} checks), "
                                f"{total} critical log line(s), no sustained pressure")
        await anyio.sleep(1.0)


async def _pressure(engine: Engine, containers: list[Any], infos: dict[str, dict[str, Any]],
                    samples: dict[str, dict[str, list[tuple[float, float]]]], window_s: float) -> VerifyResult | None:
    limited = [c for c in containers if c.running and _has_limit(infos, c.id)]
    if not limited:
        return None
    results: dict[str, dict[str, Any] | None] = {}

    async def sample(cid: str) -> None:
        results[cid] = await engine.container_stats(cid)

    async with anyio.create_task_group() as tg:
        for c in limited:
            tg.start_soon(sample, c.id)
    now = time.monotonic()
    for c in limited:
        stats = results.get(c.id)
        info = next((i for k, i in infos.items() if k.startswith(c.id)), None)
        if not stats or not info:
            continue
        mem, cpu = usage_percent(stats, info)
        for what, pct in (("memory", mem), ("cpu", cpu)):
            if pct is None:
                continue
            series = samples.setdefault(c.id, {}).setdefault(what, [])
            series.append((now, pct))
            if sustained(series, window_s):
                recent = ", ".join(f"{p:.0f}%" for _, p in series[-PRESSURE_SAMPLES:])
                return VerifyResult(False, f"{c.service} {what} above {PRESSURE_PCT:.0f}% of its limit, sustained "
                                    f"({recent})", c.service, [f"{c.name}: {what} {recent} of limit"])
    return None


def _has_limit(infos: dict[str, dict[str, Any]], short_id: str) -> bool:
    info = next((i for k, i in infos.items() if k.startswith(short_id)), None)
    host = (info or {}).get("HostConfig") or {}
    return bool(host.get("Memory") or host.get("NanoCpus") or (host.get("CpuQuota") or 0) > 0)


def _stamp(text: str) -> float | None:
    try:
        head = text.split(".")[0].rstrip("Z")
        return datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
