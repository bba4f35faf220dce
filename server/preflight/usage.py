"""CPU and memory usage of running containers, and the host's CPU load.

From cgroup files when the engine is local (microseconds, two readings 0.25 s apart for CPU),
else ``docker stats`` in parallel (about a second each on the engine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

from server.engine import Engine, RunningContainer
from server.errors import EngineError
from server.policy import Usage
from server.preflight.parallel import run_for_each

CPU_SAMPLE_S = 0.25


async def fill_usage(
    engine: Engine, containers: list[RunningContainer], local: bool, sample_cpu: bool, out: dict[str, Usage]
) -> float | None:
    """Fill ``out`` with each container's usage; return the host's CPU % when sampled locally."""
    host_cpu = None
    rest = containers
    if local:
        first = _cgroup_usage(containers, sample_cpu)
        found = first
        if sample_cpu:
            stat0 = _proc_stat()
            await anyio.sleep(CPU_SAMPLE_S)
            found = _cgroup_usage(containers, sample_cpu, first=first)
            host_cpu = _cpu_percent(stat0, _proc_stat())
        out.update({cid: u for cid, (u, _) in found.items()})
        rest = [c for c in containers if c.summary.id not in found]
    if not rest:
        return host_cpu

    async def one(c: RunningContainer) -> None:
        try:
            stats = await engine.container_stats(c.full_id, one_shot=not sample_cpu)
        except EngineError:
            return
        if stats:
            out[c.summary.id] = usage_from_stats(stats)

    await run_for_each(one, rest)
    return host_cpu


def _proc_stat() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def _cpu_percent(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    if a is None or b is None or b[1] <= a[1]:
        return None
    return round(100.0 * (b[0] - a[0]) / (b[1] - a[1]), 1)


_CgroupReading = tuple[Usage, tuple[int, int] | None]


def _cgroup_usage(
    containers: list[RunningContainer], sample_cpu: bool, first: dict[str, _CgroupReading] | None = None
) -> dict[str, _CgroupReading]:
    """Memory (and CPU nanoseconds, wall nanoseconds) per container from cgroup v1 or v2 files."""
    out: dict[str, _CgroupReading] = {}
    for c in containers:
        paths = _cgroup_paths(c.full_id)
        if paths is None:
            continue
        mem_dir, cpu_dir, v2 = paths
        memory = _memory_usage(mem_dir, v2)
        limit = _memory_limit(mem_dir, v2)
        cpu_ns = _cpu_ns(cpu_dir, v2) if sample_cpu else None
        now = time.monotonic_ns()
        cpu_pct = None
        if first is not None and c.summary.id in first and cpu_ns is not None:
            prev = first[c.summary.id][1]
            if prev is not None and now > prev[1]:
                cpu_pct = round(100.0 * (cpu_ns - prev[0]) / (now - prev[1]), 1)
        out[c.summary.id] = (
            Usage(memory_bytes=memory, cpu_percent=cpu_pct, memory_limit_bytes=limit),
            (cpu_ns, now) if cpu_ns is not None else None,
        )
    return out


def _cgroup_paths(full_id: str) -> tuple[Path, Path, bool] | None:
    base = Path("/sys/fs/cgroup")
    for rel in (f"system.slice/docker-{full_id}.scope", f"docker/{full_id}", f"docker.slice/docker-{full_id}.scope"):
        if (base / rel / "memory.current").exists():
            return base / rel, base / rel, True
        if (base / "memory" / rel / "memory.usage_in_bytes").exists():
            for cpu_ctl in ("cpuacct", "cpu,cpuacct", "cpu"):
                if (base / cpu_ctl / rel / "cpuacct.usage").exists():
                    return base / "memory" / rel, base / cpu_ctl / rel, False
            return base / "memory" / rel, base / "memory" / rel, False
    return None


def _memory_usage(directory: Path, v2: bool) -> int | None:
    try:
        usage = int((directory / ("memory.current" if v2 else "memory.usage_in_bytes")).read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines() if " " in line)
    except (OSError, ValueError):
        return None
    inactive = int(stat.get("inactive_file" if v2 else "total_inactive_file", 0))
    return max(usage - inactive, 0)


def _memory_limit(directory: Path, v2: bool) -> int | None:
    try:
        raw = (directory / ("memory.max" if v2 else "memory.limit_in_bytes")).read_text().strip()
        value = int(raw)
    except (OSError, ValueError):  # "max" on v2 means unlimited
        return None
    return value if value < 2**60 else None


def _cpu_ns(directory: Path, v2: bool) -> int | None:
    try:
        if v2:
            for line in (directory / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) * 1000
            return None
        return int((directory / "cpuacct.usage").read_text())
    except (OSError, ValueError):
        return None


def usage_from_stats(stats: dict[str, Any]) -> Usage:
    """Memory and CPU from one ``docker stats`` sample, computed as the docker CLI does."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    inner = mem.get("stats") or {}
    inactive = inner.get("inactive_file", inner.get("total_inactive_file", 0))
    memory = max(int(usage) - int(inactive or 0), 0) if usage is not None else None
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_pct = None
    try:
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
        if system > 0 and delta >= 0:
            cpu_pct = round(100.0 * delta / system * online, 1)
    except (KeyError, TypeError):
        pass
    limit = mem.get("limit")
    return Usage(memory_bytes=memory, cpu_percent=cpu_pct, memory_limit_bytes=int(limit) if limit else None)


def memory_peak(full_id: str) -> int | None:
    """A container's peak memory since it started (cgroup v2 ``memory.peak``, v1
    ``memory.max_usage_in_bytes``; page cache included); None when the engine is not local or the
    kernel does not keep it. scale_service sizes a limit from it."""
    paths = _cgroup_paths(full_id)
    if paths is None:
        return None
    mem_dir, _, v2 = paths
    try:
        return int((mem_dir / ("memory.peak" if v2 else "memory.max_usage_in_bytes")).read_text())
    except (OSError, ValueError):
        return None
