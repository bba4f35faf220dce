"""check_resources: the host's capacity and load, the biggest containers, and whether a stack fits."""

from __future__ import annotations

from collections.abc import Mapping

from server.compose import ComposeRunner
from server.engine import Engine, RunningContainer
from server.models import Finding, sort_findings
from server.policy import LintContext, Usage, lint
from server.policy import resources as resource_rules
from server.policy.sizing import human_bytes
from server.preflight.facts import HostSnapshot, gather_facts
from server.preflight.progress import Progress, report_progress
from server.preflight.reports import (
    ContainerUsage,
    HostResources,
    ResourceReport,
    ResourceRequest,
    ServiceRequest,
)
from server.redact import Scrubber
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stackmodel import LoadedStack

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
        await report_progress(progress, 0, 2, "rendering the stack")
        try:
            stack = await load_stack(settings, compose, path=path, content=content, env=env)
            name = stack.name
        except StackRenderFailed as exc:
            render_findings, name = exc.findings, exc.name
    await report_progress(progress, 1, 2, "measuring the host")
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
    host = _host_resources(snap, engine.endpoint().describe())
    usages = [_container_usage(c, snap) for c in snap.containers]
    top_cpu = sorted((u for u in usages if u.cpu_percent is not None), key=lambda u: -(u.cpu_percent or 0))[:top]
    top_mem = sorted((u for u in usages if u.memory_bytes is not None), key=lambda u: -(u.memory_bytes or 0))[:top]
    await report_progress(progress, 2, 2, "done")
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


def _host_resources(snap: HostSnapshot, where: str) -> HostResources:
    f = snap.facts
    used = (
        round(100.0 * (1 - f.memory_available_bytes / f.memory_total_bytes), 1)
        if f.memory_available_bytes is not None and f.memory_total_bytes
        else None
    )
    return HostResources(
        engine=Scrubber()(where),  # a DOCKER_HOST URL may carry a password
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
