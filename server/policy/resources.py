"""Resource rules: limits, what the stack asks of the host, and whether the host has it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from server.models import Finding, Severity
from server.policy.catalog import finding
from server.policy.context import HostFacts, LintContext
from server.policy.shape import memory_reservation, replicas
from server.policy.sizing import human_bytes, limits_patch, propose
from server.stackview import cpu_limit, memory_limit

HEADROOM = 0.05
"""Share of host memory kept free: the operator treats more than 95% in use as critical."""
CRITICAL_PERCENT = 95.0


@dataclass(frozen=True)
class ServiceRequest:
    service: str
    replicas: int
    memory_bytes: int | None
    """Per replica: the reservation, else the limit, else None."""
    memory_source: str
    cpus: float | None
    """Per replica CPU limit (reservation when no limit)."""

    @property
    def total_memory(self) -> int:
        return (self.memory_bytes or 0) * self.replicas


def requests(ctx: LintContext) -> list[ServiceRequest]:
    out = []
    for name, svc in sorted(ctx.services.items()):
        n = replicas(svc)
        reservation = memory_reservation(svc)
        limit = memory_limit(svc)
        mem, source = (reservation, "reservation") if reservation else (limit, "limit") if limit else (None, "none")
        cpus = cpu_limit(svc)
        out.append(ServiceRequest(name, n, mem, source, cpus))
    return out


def no_resource_limits(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        mem = memory_limit(svc)
        cpus = cpu_limit(svc)
        if mem is not None and cpus is not None:
            continue
        n = replicas(svc)
        observed = ctx.facts.own_usage.get(name) if ctx.facts else None
        proposal = propose(svc.get("image"), observed.memory_bytes if observed else None, n, service=svc,
                           host_cpus=ctx.facts.cpus if ctx.facts else None)
        if mem is None:
            patch = limits_patch(
                name,
                memory=proposal.memory_bytes,
                reservation=proposal.reservation_bytes,
                cpus=proposal.cpus if cpus is None else None,
            )
            yield finding(
                "no-resource-limits",
                f"service {name!r} has no memory limit: one leak can push the whole host into the OOM killer; "
                f"proposed {human_bytes(proposal.memory_bytes)} ({proposal.basis})",
                service=name,
                line=ctx.stack.line_of(name, "deploy") or ctx.stack.line_of(name),
                fix=patch,
                evidence=[f"proposal basis: {proposal.basis}"]
                + ([f"cpu limit: none either (proposed {proposal.cpus:g})"] if cpus is None else []),
            )
        else:
            yield finding(
                "no-cpu-limit",
                "memory is limited but CPU is not: a busy service can starve its neighbours",
                service=name,
                line=ctx.stack.line_of(name, "deploy") or ctx.stack.line_of(name),
                fix=limits_patch(name, memory=None, reservation=None, cpus=proposal.cpus),
            )


def cpu_limit_exceeds_host(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is None or not ctx.facts.cpus:
        return
    for name, svc in sorted(ctx.services.items()):
        cpus = cpu_limit(svc)
        if cpus is not None and cpus > ctx.facts.cpus:
            yield finding(
                "cpu-limit-exceeds-host",
                f"service {name!r} asks for {cpus:g} CPUs but the host has {ctx.facts.cpus}; "
                "the engine refuses to create the container",
                service=name,
                line=ctx.stack.line_of(name, "deploy") or ctx.stack.line_of(name, "cpus"),
                fix=f"set the CPU limit to at most {ctx.facts.cpus}",
            )


def insufficient_resources(ctx: LintContext) -> Iterator[Finding]:
    facts = ctx.facts
    if facts is None or facts.memory_available_bytes is None or not facts.memory_total_bytes:
        return
    reqs = requests(ctx)
    requested = sum(r.total_memory for r in reqs)
    unknown = [r.service for r in reqs if r.memory_bytes is None and r.replicas]
    credit = sum(u.memory_bytes or 0 for u in facts.own_usage.values())
    headroom = int(facts.memory_total_bytes * HEADROOM)
    usable = facts.memory_available_bytes + credit - headroom
    if requested <= usable:
        return
    evidence = [
        f"requested: {human_bytes(requested)} (reservations, limits where no reservation, times replicas)",
        f"available now: {human_bytes(facts.memory_available_bytes)} ({facts.memory_source or 'engine host'})",
        f"credited back: {human_bytes(credit)} used by this stack's own running containers",
        f"headroom kept: {human_bytes(headroom)} (5% of {human_bytes(facts.memory_total_bytes)})",
    ]
    biggest = sorted((r for r in reqs if r.memory_bytes), key=lambda r: r.total_memory, reverse=True)[:3]
    evidence += [f"largest: {r.service} {human_bytes(r.total_memory)} ({r.memory_source})" for r in biggest]
    if unknown:
        evidence.append(f"not counted (no limit or reservation): {', '.join(unknown)}")
    yield finding(
        "insufficient-resources",
        f"the stack reserves {human_bytes(requested)} of memory but only {human_bytes(max(usable, 0))} can be "
        "given without pushing the host past 95% in use",
        evidence=evidence,
        fix="free memory first (check_resources lists the biggest containers; stop what is not needed), "
        "or lower the stack's reservations",
    )


def disk_space(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is not None:
        yield from host_disk(ctx.facts)


def host_pressure(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is not None:
        yield from host_load(ctx.facts)


def host_level(facts: HostFacts) -> list[Finding]:
    """The findings about the host alone (no stack): disk space and memory/CPU pressure."""
    return [*host_disk(facts), *host_load(facts)]


def host_disk(facts: HostFacts) -> Iterator[Finding]:
    if facts.disk_free_bytes is None or not facts.disk_total_bytes:
        return
    free_pct = 100.0 * facts.disk_free_bytes / facts.disk_total_bytes
    severity: Severity
    if free_pct < 5 or facts.disk_free_bytes < 2 * 1024**3:
        severity = "error"
    elif free_pct < 10:
        severity = "warning"
    else:
        return
    yield finding(
        "disk-space",
        f"Docker's root filesystem has {human_bytes(facts.disk_free_bytes)} free ({free_pct:.1f}%): "
        "pulls, logs and database writes may fail",
        severity=severity,
        evidence=[f"free {facts.disk_free_bytes} of {facts.disk_total_bytes} bytes"],
        fix="prune unused images and build cache (docker image prune, docker builder prune) "
        "or grow the disk; check log sizes",
    )


def host_load(facts: HostFacts) -> Iterator[Finding]:
    """Memory and CPU pressure of the REST of the host: the stack's own running containers
    (``own_usage``, which a deploy replaces) are set apart. check_resources and validate_compose
    both judge through here, from the same sampling (server.preflight.facts.gather_facts)."""
    own_memory = sum(u.memory_bytes or 0 for u in facts.own_usage.values())
    own_cpu = sum(u.cpu_percent or 0 for u in facts.own_usage.values())
    apart = [f"set apart: {human_bytes(own_memory)} and {own_cpu:g}% CPU used by this stack's own containers"] \
        if own_memory or own_cpu else []
    if facts.memory_available_bytes is not None and facts.memory_total_bytes:
        in_use = facts.memory_total_bytes - facts.memory_available_bytes - own_memory
        used = 100.0 * max(in_use, 0) / facts.memory_total_bytes
        if used > CRITICAL_PERCENT:
            yield finding(
                "host-pressure",
                f"host memory is {used:.1f}% in use by everything but this stack (critical above "
                f"{CRITICAL_PERCENT:g}%)",
                evidence=[f"available {human_bytes(facts.memory_available_bytes)} of "
                          f"{human_bytes(facts.memory_total_bytes)}", *apart],
                fix="find the biggest containers (check_resources top_memory) and stop or limit them",
            )
    if facts.cpu_used_percent is not None:
        rest = facts.cpu_used_percent - (own_cpu / facts.cpus if facts.cpus else 0.0)
        if rest > CRITICAL_PERCENT:
            # A quarter-second sample is a moment, not a state: it informs, it never blocks a deploy
            # nor turns a well-run stack's validation into warnings on a busy host.
            yield finding(
                "host-pressure",
                f"host CPU was {rest:.1f}% in use by everything but this stack over a short sample (critical "
                f"above {CRITICAL_PERCENT:g}%)",
                severity="info",
                evidence=[f"host CPU {facts.cpu_used_percent:g}% over the sample", *apart],
                fix="find the busiest containers (check_resources top_cpu); wait or throttle before deploying",
            )


RULES = [no_resource_limits, cpu_limit_exceeds_host, insufficient_resources, disk_space, host_pressure]
