"""Gathering HostFacts: one look at the host, with every figure saying how it was measured.

Host figures come from the engine so a remote ``DOCKER_HOST`` is measured, not this process's
machine: CPU count, total memory and Docker's root dir from ``/info``. Free memory and disk are
not in the API, so they are read from /proc/meminfo and statvfs only when the engine provably
runs on this machine (a local socket, and the engine's MemTotal equals ours); otherwise memory
is estimated through the API and disk is reported unknown. Every figure says in ``source`` how
it was measured. Images, ports and container usage are gathered by their own modules.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from server.engine import Engine, RunningContainer
from server.policy import HostFacts, ImageFact, Usage
from server.preflight.images import fill_images
from server.preflight.parallel import run_parallel
from server.preflight.ports import port_holders
from server.preflight.usage import CPU_SAMPLE_S, fill_usage
from server.registry import RegistryView
from server.stackmodel import LoadedStack


@dataclass(frozen=True)
class HostSnapshot:
    """One look at the host: the facts rules read, plus what check_resources reports."""

    facts: HostFacts
    endpoint: str
    containers: list[RunningContainer]
    usage: dict[str, Usage]
    """By short container id."""
    docker_root_dir: str | None
    sources: dict[str, str]


async def gather_facts(
    engine: Engine, stack: LoadedStack | None, *, sample_cpu: bool = True, check_images: bool = True
) -> HostSnapshot:
    """Everything host-side the rules need, gathered in parallel. Raises DockerUnavailable.

    By default every running container is measured over a short window, and the host's CPU too:
    check_resources and validate_compose judge host pressure from this same sampling (the rule,
    policy.resources.host_load, sets the stack's own containers apart). ``sample_cpu=False``
    measures only the stack's own containers (memory, to credit it back).
    """
    info, containers, api_version = await _info_and_containers(engine)
    endpoint = engine.endpoint_url()
    local, local_why = _engine_is_local(endpoint, info)
    images: dict[str, ImageFact] = {}
    usage: dict[str, Usage] = {}
    host_cpu: list[float | None] = [None]
    own = [c for c in containers if stack is not None and c.summary.project == stack.name]
    # A remote engine's free memory is estimated from every container's usage.
    measured = containers if (sample_cpu or not local) else own

    async def measure() -> None:
        host_cpu[0] = await fill_usage(engine, measured, local, sample_cpu, usage)

    jobs: list[Callable[[], Awaitable[None]]] = [measure]
    if stack is not None and check_images:
        jobs.append(functools.partial(
            fill_images, engine, stack, images, view=RegistryView.from_info(info), engine_local=local))
    await run_parallel(jobs)
    holders = port_holders(stack, containers, local) if stack is not None else []
    cpus = int(info.get("NCPU") or 0) or None
    total = int(info.get("MemTotal") or 0) or None
    root_dir = str(info.get("DockerRootDir") or "") or None
    notes: list[str] = []
    sources = {"cpus": "engine /info NCPU", "memory_total_bytes": "engine /info MemTotal"}
    if local:
        available = _meminfo().get("MemAvailable")
        sources["memory_available_bytes"] = f"/proc/meminfo MemAvailable ({local_why})"
        disk_total, disk_free, sources["disk"] = _disk(root_dir)
        sources["cpu_used_percent"] = f"/proc/stat over {CPU_SAMPLE_S:g}s" if sample_cpu else "not sampled"
        sources["containers"] = "cgroup files of each container (docker stats where none were found)"
    else:
        used = sum(u.memory_bytes or 0 for u in usage.values())
        available = max(total - used, 0) if total else None
        sources["memory_available_bytes"] = (
            f"estimate: engine MemTotal minus what its running containers use ({local_why}; processes outside "
            "containers are not visible through the Docker API)"
        )
        disk_total = disk_free = None
        sources["disk"] = "unknown: a remote engine's free disk space is not available through the Docker API"
        if sample_cpu and cpus:
            host_cpu[0] = round(sum(u.cpu_percent or 0 for u in usage.values()) / cpus, 1)
        sources["cpu_used_percent"] = "sum of container CPU (docker stats) / NCPU: processes outside containers unseen"
        sources["containers"] = "docker stats, in parallel"
        notes.append(f"remote engine ({local_why}): host ports were checked against container ports only")
    own_usage: dict[str, Usage] = {}
    for c in own:
        u = usage.get(c.summary.id)
        if u is None or c.summary.service is None:
            continue
        prev = own_usage.get(c.summary.service) or Usage(memory_bytes=0, cpu_percent=0.0)
        own_usage[c.summary.service] = Usage(
            memory_bytes=(prev.memory_bytes or 0) + (u.memory_bytes or 0),
            cpu_percent=(prev.cpu_percent or 0) + (u.cpu_percent or 0),
        )
    facts = HostFacts(
        engine_local=local,
        cpus=cpus,
        memory_total_bytes=total,
        memory_available_bytes=available,
        disk_total_bytes=disk_total,
        disk_free_bytes=disk_free,
        images=images,
        port_holders=holders,
        ports_scope=(
            "checked: ports published by the engine's containers and listening sockets on this machine (/proc/net)"
            if local
            else "checked: ports published by the engine's containers only (remote engine: other processes on "
            "that host cannot be seen)"
        ),
        own_usage=own_usage,
        cpu_used_percent=host_cpu[0],
        memory_source=sources["memory_available_bytes"],
        notes=notes,
        api_version=api_version,
    )
    return HostSnapshot(
        facts=facts, endpoint=endpoint, containers=containers, usage=usage, docker_root_dir=root_dir, sources=sources
    )


async def _info_and_containers(engine: Engine) -> tuple[dict[str, Any], list[RunningContainer], str | None]:
    result: dict[str, Any] = {}

    async def info() -> None:
        result["info"] = await engine.info()

    async def containers() -> None:
        result["containers"] = await engine.running_containers()

    async def version() -> None:
        # The API version both sides speak (docker-py negotiates down to the engine's): what
        # decides whether a newer key such as healthcheck.start_interval is understood.
        result["api"] = str((await engine.version()).get("ApiVersion") or "") or None

    await run_parallel([info, containers, version])
    return result["info"], result["containers"], result.get("api")


def _engine_is_local(endpoint: str, info: dict[str, Any]) -> tuple[bool, str]:
    local_endpoint = endpoint.startswith("unix://") or any(
        endpoint.startswith(f"{scheme}://{host}")
        for scheme in ("tcp", "http", "https")
        for host in ("127.", "localhost", "[::1]")
    )
    if not local_endpoint:
        return False, f"engine at {endpoint} is remote"
    name = str(info.get("Name") or "")
    if not endpoint.startswith("unix://") and name and name != socket.gethostname():
        # A loopback port can lead anywhere: a tunnel, an engine in a container (its own network
        # namespace, disk and ports). Its host name says whether it is this machine's engine.
        return False, f"engine on a loopback port but on another host ({name!r}, not {socket.gethostname()!r})"
    ours = _meminfo().get("MemTotal")
    theirs = int(info.get("MemTotal") or 0)
    if ours is None or not theirs:
        return False, "cannot compare the engine's memory with this machine's"
    if abs(ours - theirs) > max(64 * 1024**2, theirs // 100):
        return False, "engine on a local socket but in another machine or VM (its MemTotal differs from ours)"
    return True, "engine on this machine: local socket, same MemTotal"


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    values[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return values


def _disk(root_dir: str | None) -> tuple[int | None, int | None, str]:
    if not root_dir:
        return None, None, "unknown: the engine did not report its root dir"
    try:
        st = os.statvfs(root_dir)
    except OSError as exc:
        return None, None, f"unknown: statvfs({root_dir}) failed: {exc.strerror}"
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, f"statvfs({root_dir}) on this machine"
