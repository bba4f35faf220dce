"""Host pre-flight: what validate_compose and check_resources know about the live host.

The lint rules (:mod:`server.policy`) are pure; this module gathers the facts they need and
builds the two reports. Host figures come from the engine so a remote ``DOCKER_HOST`` is
measured, not this process's machine: CPU count, total memory and Docker's root dir from
``/info``. Free memory and disk are not in the API, so they are read from /proc/meminfo and
statvfs only when the engine provably runs on this machine (a local socket, and the engine's
MemTotal equals ours); otherwise memory is estimated through the API and disk is reported
unknown. Every figure says in ``source`` how it was measured.

Container usage: from cgroup files when local (microseconds, two readings 0.25 s apart for
CPU), else ``docker stats`` in parallel (about a second each on the engine).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from server.compose import ComposeRunner, client_env
from server.engine import Engine, RegistryState, RunningContainer
from server.errors import DockerUnavailable, EngineError, UnsafeYaml
from server.models import Finding, Frozen, sort_findings
from server.policy import (
    HostFacts,
    ImageFact,
    LintContext,
    PortHolder,
    Usage,
    apply_policy,
    finding,
    lint,
    run_rules,
)
from server.policy import resources as resource_rules
from server.policy.network import stack_ports
from server.policy.shape import ips_overlap
from server.policy.sizing import human_bytes
from server.redact import Scrubber
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stackmodel import LoadedStack
from server.stacks import read_dotenv
from server.yamlsafe import load_yaml, read_text_capped

log = logging.getLogger("docker_stack_mcp.preflight")

Progress = Callable[[float, float, str], Awaitable[None]]
REGISTRY_TIMEOUT_S = 4.0
"""How long one registry may take to say whether it has an image before we say 'could not verify'."""
CPU_SAMPLE_S = 0.25
_PARALLEL = 16


# ------------------------------------------------------------------------------------ reports
class ValidationReport(Frozen):
    stack: str = Field(description="Compose project name (or 'inline').")
    path: str | None = Field(description="Stack directory relative to the stacks root; null for inline content.")
    valid: bool = Field(description="Compose accepts the model (it renders).")
    go: bool = Field(description="No error findings: a deployment may proceed.")
    host_checked: bool = Field(description="The live host was checked (ports, images, memory, disk).")
    services: list[str]
    summary: str
    errors: int
    warnings: int
    infos: int
    findings: list[Finding] = Field(description="Errors first. Each has rule, severity, line, fix, evidence.")
    notes: list[str] = Field(default_factory=list, description="What could not be checked, and why.")


class HostResources(Frozen):
    engine: str = Field(description="The engine endpoint measured.")
    engine_local: bool = Field(description="The engine runs on this machine (figures read from its kernel).")
    cpus: int | None
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    memory_used_percent: float | None
    cpu_used_percent: float | None = Field(description="Whole host, 0-100, sampled over 0.25 s.")
    disk_total_bytes: int | None
    disk_free_bytes: int | None = Field(description="Of the filesystem holding Docker's root dir.")
    docker_root_dir: str | None
    source: dict[str, str] = Field(description="How each figure was measured.")


class ContainerUsage(Frozen):
    name: str
    project: str | None
    service: str | None
    cpu_percent: float | None = Field(description="100 = one full CPU (as docker stats counts).")
    memory_bytes: int | None
    memory_limit_bytes: int | None


class ServiceRequest(Frozen):
    service: str
    replicas: int
    memory_bytes: int | None = Field(description="Per replica: the reservation, else the limit, else null.")
    memory_source: str = Field(description="reservation | limit | none")
    cpus: float | None


class ResourceRequest(Frozen):
    memory_bytes: int = Field(description="Total over services and replicas.")
    cpus: float = Field(description="Sum of CPU limits times replicas (may exceed the host: limits overcommit).")
    credited_bytes: int = Field(description="Memory the stack's own running containers use now (freed by a redeploy).")
    services: list[ServiceRequest]
    unknown_services: list[str] = Field(description="Services with neither a limit nor a reservation: not counted.")


class ResourceReport(Frozen):
    host: HostResources
    containers_running: int
    top_cpu: list[ContainerUsage]
    top_memory: list[ContainerUsage]
    stack: str | None
    requested: ResourceRequest | None = Field(description="What the stack asks for; null without a stack.")
    sufficient: bool | None = Field(
        description="The stack fits with 5% headroom; null without a stack, or when no service of it declares "
        "memory (nothing to measure: see no-resource-limits)."
    )
    findings: list[Finding]
    summary: str


# ----------------------------------------------------------------------------- validate_compose
async def validate(
    settings: Settings,
    compose: ComposeRunner,
    engine: Callable[[], Engine],
    *,
    path: str | None = None,
    content: str | None = None,
    env: Mapping[str, str] | None = None,
    check_host: bool = True,
    progress: Progress | None = None,
) -> ValidationReport:
    """Render, lint and (optionally) check the host; never raises for problems of the stack itself."""
    total = 3 if check_host else 2
    await _tell(progress, 0, total, "rendering with docker compose config")
    try:
        stack = await load_stack(settings, compose, path=path, content=content, env=env)
    except StackRenderFailed as exc:
        findings = sort_findings(exc.findings)
        return _validation(exc.name, path, valid=False, services=[], findings=findings, host_checked=False, notes=[])
    await _tell(progress, 1, total, f"rendered {len(stack.services)} services; linting")
    ctx = source_context(stack, content=content, env=env)
    notes: list[str] = []
    extra: list[Finding] = []
    if check_host:
        try:
            facts = (await gather_facts(engine(), stack)).facts
            ctx = dataclasses.replace(ctx, facts=facts)
            notes.extend(facts.notes)
        except (DockerUnavailable, EngineError) as exc:
            extra.append(
                finding(
                    "engine-unreachable",
                    f"the host could not be checked: {exc.what}",
                    fix="start the Docker daemon or fix DOCKER_HOST, then validate again (check_host=false lints "
                    "the file alone)",
                )
            )
        await _tell(progress, 2, total, "host checked")
    findings = apply_policy(stack, [*run_rules(ctx), *extra])
    await _tell(progress, total, total, "done")
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    rel = str(stack.directory.relative_to(root)) if stack.directory and stack.directory.is_relative_to(root) else None
    return _validation(
        stack.name, rel, valid=True, services=sorted(stack.services), findings=findings,
        host_checked=check_host and not extra, notes=notes,
    )


def _validation(
    name: str, path: str | None, *, valid: bool, services: list[str], findings: list[Finding],
    host_checked: bool, notes: list[str],
) -> ValidationReport:
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    infos = len(findings) - errors - warnings
    go = valid and errors == 0
    if not valid:
        summary = f"NO-GO: Compose cannot render the stack ({errors} error(s)); fix the findings first."
    elif go:
        summary = f"GO: {len(services)} service(s), no errors, {warnings} warning(s), {infos} info."
    else:
        rules = sorted({f.rule for f in findings if f.severity == "error"})
        summary = f"NO-GO: {errors} error(s) ({', '.join(rules)}), {warnings} warning(s), {infos} info."
    if valid and not host_checked:
        summary += " Host not checked."
    return ValidationReport(
        stack=name, path=path, valid=valid, go=go, host_checked=host_checked, services=services, summary=summary,
        errors=errors, warnings=warnings, infos=infos, findings=findings, notes=notes,
    )


def source_context(stack: LoadedStack, *, content: str | None, env: Mapping[str, str] | None) -> LintContext:
    """The stack as written: raw services (main file, then override merged over it) and the main text."""
    texts: list[str] = []
    if content is not None:
        texts = [content]
    else:
        for file in stack.files:
            try:
                texts.append(read_text_capped(file, 64 * 1024 * 1024))
            except UnsafeYaml:
                continue
    # One file without merge keys: the rules read the main text at the lines the first parse
    # recorded, which saves parsing the file a second time on every validation.
    parse = len(texts) > 1 or any("<<" in text for text in texts)
    services: dict[str, dict[str, Any]] = {}
    for index, text in enumerate(texts if parse else []):
        try:
            data = load_yaml(text, f"source {index}", max_bytes=len(text.encode()) + 1).data
        except UnsafeYaml:  # screened once already; a file changed under us is not worth failing for
            continue
        raw = data.get("services") if isinstance(data, dict) else None
        for name, body in raw.items() if isinstance(raw, dict) else []:
            if not isinstance(body, dict):
                continue
            merged = {**services.get(str(name), {}), **body}
            before = services.get(str(name), {}).get("environment")
            if isinstance(before, dict) and isinstance(body.get("environment"), dict):
                merged["environment"] = {**before, **body["environment"]}
            services[str(name)] = merged
    # What Compose interpolates from: its own environment (plus the two names it sets itself),
    # the given env, and the stack's .env.
    defined = set(client_env().keys()) | {"COMPOSE_PROJECT_NAME", "PWD"} | set(env or {})
    if stack.directory is not None:
        defined |= set(read_dotenv(stack.directory))
    return LintContext(
        stack=stack,
        source_services=services if parse else None,
        source_text=texts[0] if texts else "",
        defined_variables=frozenset(defined),
    )


# ------------------------------------------------------------------------------ check_resources
RESOURCE_RULES = [
    resource_rules.no_resource_limits,
    resource_rules.cpu_limit_exceeds_host,
    resource_rules.insufficient_resources,
    resource_rules.disk_space,
    resource_rules.host_pressure,
]


async def check_resources(
    settings: Settings,
    compose: ComposeRunner,
    engine: Engine,
    *,
    path: str | None = None,
    content: str | None = None,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    top: int = 5,
) -> ResourceReport:
    """The host's capacity and load, the biggest containers, and (with a stack) whether it fits."""
    stack: LoadedStack | None = None
    render_findings: list[Finding] = []
    name: str | None = None
    if path is not None or content is not None:
        await _tell(progress, 0, 2, "rendering the stack")
        try:
            stack = await load_stack(settings, compose, path=path, content=content, env=env)
            name = stack.name
        except StackRenderFailed as exc:
            render_findings, name = exc.findings, exc.name
    await _tell(progress, 1, 2, "measuring the host")
    snap = await gather_facts(engine, stack, sample_cpu=True, check_images=False)
    facts = snap.facts
    requested: ResourceRequest | None = None
    sufficient: bool | None = None
    if stack is not None:
        ctx = LintContext(stack=stack, facts=facts)
        findings = lint(ctx, RESOURCE_RULES)
        reqs = resource_rules.requests(ctx)
        requested = ResourceRequest(
            memory_bytes=sum(r.total_memory for r in reqs),
            cpus=round(sum((r.cpus or 0) * r.replicas for r in reqs), 2),
            credited_bytes=sum(u.memory_bytes or 0 for u in facts.own_usage.values()),
            services=[
                ServiceRequest(service=r.service, replicas=r.replicas, memory_bytes=r.memory_bytes,
                               memory_source=r.memory_source, cpus=r.cpus)
                for r in reqs
            ],
            unknown_services=[r.service for r in reqs if r.memory_bytes is None and r.replicas],
        )
        if facts.memory_available_bytes is not None and (requested.memory_bytes or not requested.unknown_services):
            sufficient = not any(f.rule == "insufficient-resources" and f.severity == "error" for f in findings)
    else:
        findings = sort_findings([*render_findings, *resource_rules.host_level(facts)])
    host = _host_resources(snap)
    usages = [_container_usage(c, snap) for c in snap.containers]
    top_cpu = sorted((u for u in usages if u.cpu_percent is not None), key=lambda u: -(u.cpu_percent or 0))[:top]
    top_mem = sorted((u for u in usages if u.memory_bytes is not None), key=lambda u: -(u.memory_bytes or 0))[:top]
    await _tell(progress, 2, 2, "done")
    return ResourceReport(
        host=host,
        containers_running=len(snap.containers),
        top_cpu=top_cpu,
        top_memory=top_mem,
        stack=name,
        requested=requested,
        sufficient=sufficient,
        findings=findings,
        summary=_resource_summary(host, name, requested, sufficient, findings),
    )


def _host_resources(snap: HostSnapshot) -> HostResources:
    f = snap.facts
    used = (
        round(100.0 * (1 - f.memory_available_bytes / f.memory_total_bytes), 1)
        if f.memory_available_bytes is not None and f.memory_total_bytes
        else None
    )
    return HostResources(
        engine=Scrubber()(snap.endpoint),  # a DOCKER_HOST URL may carry a password
        engine_local=f.engine_local,
        cpus=f.cpus,
        memory_total_bytes=f.memory_total_bytes,
        memory_available_bytes=f.memory_available_bytes,
        memory_used_percent=used,
        cpu_used_percent=f.cpu_used_percent,
        disk_total_bytes=f.disk_total_bytes,
        disk_free_bytes=f.disk_free_bytes,
        docker_root_dir=snap.docker_root_dir,
        source=snap.sources,
    )


def _container_usage(c: RunningContainer, snap: HostSnapshot) -> ContainerUsage:
    u = snap.usage.get(c.summary.id) or Usage(memory_bytes=None)
    limit = u.memory_limit_bytes
    if limit is not None and snap.facts.memory_total_bytes and limit >= snap.facts.memory_total_bytes:
        limit = None  # docker stats reports the host's memory as the limit of an unlimited container
    return ContainerUsage(
        name=c.summary.name,
        project=c.summary.project,
        service=c.summary.service,
        cpu_percent=u.cpu_percent,
        memory_bytes=u.memory_bytes,
        memory_limit_bytes=limit,
    )


def _resource_summary(
    host: HostResources, stack: str | None, requested: ResourceRequest | None, sufficient: bool | None,
    findings: list[Finding],
) -> str:
    parts = [f"host: {host.cpus or '?'} CPUs"]
    if host.cpu_used_percent is not None:
        parts[-1] += f" ({host.cpu_used_percent:g}% busy)"
    if host.memory_available_bytes is not None and host.memory_total_bytes:
        parts.append(
            f"memory {human_bytes(host.memory_available_bytes)} free of {human_bytes(host.memory_total_bytes)} "
            f"({host.memory_used_percent:g}% used)"
        )
    if host.disk_free_bytes is not None and host.disk_total_bytes:
        parts.append(f"disk {human_bytes(host.disk_free_bytes)} free of {human_bytes(host.disk_total_bytes)}")
    text = "; ".join(parts) + "."
    if requested is not None:
        verdict = {True: "fits", False: "does NOT fit", None: "cannot be judged"}[sufficient]
        text += f" Stack {stack!r} reserves {human_bytes(requested.memory_bytes)}: {verdict}."
        if requested.unknown_services:
            text += f" {len(requested.unknown_services)} service(s) without limits are not counted."
    elif stack is not None:
        text += f" Stack {stack!r} could not be rendered: see findings."
    errors = [f.rule for f in findings if f.severity == "error"]
    if errors:
        text += f" Errors: {', '.join(sorted(set(errors)))}."
    return text


# ------------------------------------------------------------------------------- host facts
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
    engine: Engine, stack: LoadedStack | None, *, sample_cpu: bool = False, check_images: bool = True
) -> HostSnapshot:
    """Everything host-side the rules need, gathered in parallel. Raises DockerUnavailable.

    Without ``sample_cpu`` only the stack's own containers are measured (memory, to credit it
    back); with it every running container is, over a short window, and the host's CPU too.
    """
    info, containers = await _info_and_containers(engine)
    endpoint = engine.endpoint_url()
    local, local_why = _engine_is_local(endpoint, info)
    images: dict[str, ImageFact] = {}
    usage: dict[str, Usage] = {}
    host_cpu: list[float | None] = [None]
    own = [c for c in containers if stack is not None and c.summary.project == stack.name]
    # A remote engine's free memory is estimated from every container's usage.
    measured = containers if (sample_cpu or not local) else own

    async def measure() -> None:
        host_cpu[0] = await _fill_usage(engine, measured, local, sample_cpu, usage)

    jobs: list[Callable[[], Awaitable[None]]] = [measure]
    if stack is not None and check_images:
        jobs.append(functools.partial(_fill_images, engine, stack, images))
    await run_parallel(jobs)
    holders = _port_holders(stack, containers, local) if stack is not None else []
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
    )
    return HostSnapshot(
        facts=facts, endpoint=endpoint, containers=containers, usage=usage, docker_root_dir=root_dir, sources=sources
    )


async def _info_and_containers(engine: Engine) -> tuple[dict[str, Any], list[RunningContainer]]:
    result: dict[str, Any] = {}

    async def info() -> None:
        result["info"] = await engine.info()

    async def containers() -> None:
        result["containers"] = await engine.running_containers()

    await run_parallel([info, containers])
    return result["info"], result["containers"]


def _engine_is_local(endpoint: str, info: dict[str, Any]) -> tuple[bool, str]:
    local_endpoint = endpoint.startswith("unix://") or any(
        endpoint.startswith(f"{scheme}://{host}")
        for scheme in ("tcp", "http", "https")
        for host in ("127.", "localhost", "[::1]")
    )
    if not local_endpoint:
        return False, f"engine at {endpoint} is remote"
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


# -------------------------------------------------------------------------------- images
async def _fill_images(engine: Engine, stack: LoadedStack, out: dict[str, ImageFact]) -> None:
    refs: dict[str, bool] = {}
    for svc in stack.services.values():
        image = (svc or {}).get("image")
        if image:
            refs[str(image)] = refs.get(str(image), False) or "build" in (svc or {})
    limiter = anyio.CapacityLimiter(_PARALLEL)

    async def one(ref: str, built: bool) -> None:
        async with limiter:
            out[ref] = await image_fact(engine, ref, check_registry=not built)

    await run_parallel([functools.partial(one, ref, built) for ref, built in refs.items()])


async def image_fact(engine: Engine, ref: str, *, check_registry: bool = True,
                     timeout_s: float = REGISTRY_TIMEOUT_S) -> ImageFact:
    attrs = await engine.image_attrs(ref)
    if attrs is not None:
        config = attrs.get("Config") or {}
        test = (config.get("Healthcheck") or {}).get("Test") or []
        return ImageFact(
            ref=ref, local=True, healthcheck=bool(test) and test[0] != "NONE", user=str(config.get("User") or "")
        )
    if not check_registry:
        return ImageFact(ref=ref, local=False, detail="built by Compose from the stack's build context")
    state: RegistryState = "unreachable"
    detail = f"could not verify: the registry did not answer within {timeout_s:g}s"
    with anyio.move_on_after(timeout_s + 1):
        state, detail = await engine.registry_state(ref, timeout_s)
    return ImageFact(ref=ref, local=False, registry=state, detail=detail)


# --------------------------------------------------------------------------------- ports
def _port_holders(stack: LoadedStack, containers: list[RunningContainer], local: bool) -> list[PortHolder]:
    wanted = stack_ports(LintContext(stack=stack))
    if not wanted:
        return []
    holders: list[PortHolder] = []
    own_ports: set[tuple[str, int]] = set()
    taken: set[tuple[str, int]] = set()
    for c in containers:
        for p in c.summary.ports:
            if not p.get("PublicPort"):
                continue
            proto, port, ip = str(p.get("Type") or "tcp"), int(p["PublicPort"]), str(p.get("IP") or "")
            taken.add((proto, port))
            if c.summary.project == stack.name:
                own_ports.add((proto, port))
                continue
            if any(w.port == port and w.protocol == proto and ips_overlap(w.host_ip, ip) for w in wanted):
                who = f"container {c.summary.name}" + (f" (stack {c.summary.project})" if c.summary.project else "")
                holders.append(PortHolder(protocol=proto, port=port, host_ip=ip, holder=who, kind="container"))
    if not local:
        return _dedupe(holders)
    listeners = _listeners()
    for w in wanted:
        key = (w.protocol, w.port)
        if key in taken:  # a container publishes it: named above, or it is our own
            continue
        for ip, inode in listeners.get(key, []):
            if ips_overlap(w.host_ip, ip):
                holders.append(
                    PortHolder(protocol=w.protocol, port=w.port, host_ip=ip, holder=_process_of(inode), kind="process")
                )
                break
    return _dedupe(holders)


def _dedupe(holders: list[PortHolder]) -> list[PortHolder]:
    seen: set[tuple[str, int, str]] = set()
    out = []
    for h in holders:
        key = (h.protocol, h.port, h.holder)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def _listeners() -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Listening TCP and bound UDP sockets of this machine: (proto, port) -> [(ip, inode)]."""
    out: dict[tuple[str, int], list[tuple[str, int]]] = {}
    tables = (("tcp", "tcp", "0A"), ("tcp", "tcp6", "0A"), ("udp", "udp", "07"), ("udp", "udp6", "07"))
    for proto, file, state in tables:
        try:
            lines = Path(f"/proc/net/{file}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != state:
                continue
            ip_hex, _, port_hex = parts[1].partition(":")
            out.setdefault((proto, int(port_hex, 16)), []).append((_ip(ip_hex), int(parts[9])))
    return out


def _ip(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def _process_of(inode: int) -> str:
    """The process holding a socket inode (root sees all; otherwise only our own)."""
    target = f"socket:[{inode}]"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == target:
                    name = (pid_dir / "comm").read_text().strip()
                    return f"process {name} (pid {pid_dir.name})"
        except OSError:
            continue
    return "a process this server cannot see (another user's or another namespace's)"


# --------------------------------------------------------------------------------- usage
async def _fill_usage(
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
    limiter = anyio.CapacityLimiter(_PARALLEL)

    async def one(c: RunningContainer) -> None:
        async with limiter:
            try:
                stats = await engine.container_stats(c.full_id, one_shot=not sample_cpu)
            except EngineError:
                return
        if stats:
            out[c.summary.id] = usage_from_stats(stats)

    await run_parallel([functools.partial(one, c) for c in rest])
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


async def run_parallel(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` concurrently; re-raise the first failure as itself (not an ExceptionGroup),
    so DockerUnavailable reaches the caller as the error it is. Cancellation passes through."""
    failures: list[Exception] = []

    async def guarded(job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except Exception as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(guarded, job)
    if failures:
        raise failures[0]


async def _tell(progress: Progress | None, done: float, total: float, message: str) -> None:
    if progress is not None:
        await progress(done, total, message)
