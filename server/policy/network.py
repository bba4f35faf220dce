"""port-conflict: a host port the stack publishes twice, or that something on the host holds."""

from __future__ import annotations

from collections.abc import Iterator

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.shape import Published, ips_overlap, published_ports, replicas


def _label(p: Published) -> str:
    ip = f"{p.host_ip}:" if p.host_ip else ""
    return f"{ip}{p.port}/{p.protocol}"


def stack_ports(ctx: LintContext) -> list[Published]:
    ports: list[Published] = []
    for name, svc in sorted(ctx.services.items()):
        if replicas(svc):
            ports.extend(published_ports(name, svc))
    return ports


def port_conflict(ctx: LintContext) -> Iterator[Finding]:
    ports = stack_ports(ctx)
    reported: set[tuple[str, int, str]] = set()
    for i, a in enumerate(ports):
        for b in ports[i + 1 :]:
            if a.port != b.port or a.protocol != b.protocol or not ips_overlap(a.host_ip, b.host_ip):
                continue
            key = (b.service, b.port, b.protocol)
            if key in reported:
                continue
            reported.add(key)
            same = a.service == b.service
            where = f"service {a.service!r} twice" if same else f"services {a.service!r} and {b.service!r}"
            yield finding(
                "port-conflict",
                f"host port {_label(b)} is published by {where}: the second container cannot start",
                service=b.service,
                line=ctx.stack.line_of(b.service, "ports"),
                evidence=[f"{a.service}: {_label(a)} -> {a.target}", f"{b.service}: {_label(b)} -> {b.target}"],
                fix="give each a different host port, or publish only one and reach the other over the network",
            )
    for name, svc in sorted(ctx.services.items()):
        n = replicas(svc)
        fixed = published_ports(name, svc)
        if n > 1 and fixed:
            yield finding(
                "port-conflict",
                f"service {name!r} runs {n} replicas but publishes fixed host port {_label(fixed[0])}: "
                "only one replica can bind it",
                service=name,
                line=ctx.stack.line_of(name, "ports"),
                fix="publish the container port only (\"8080\" without a host port) behind a proxy, or run 1 replica",
            )
    if ctx.facts is None:
        return
    for p in ports:
        for holder in ctx.facts.port_holders:
            if holder.port != p.port or holder.protocol != p.protocol or not ips_overlap(p.host_ip, holder.host_ip):
                continue
            yield finding(
                "port-conflict",
                f"host port {_label(p)} of service {p.service!r} is already bound by {holder.holder}",
                service=p.service,
                line=ctx.stack.line_of(p.service, "ports"),
                evidence=[f"bound: {holder.host_ip or '*'}:{holder.port}/{holder.protocol} by {holder.holder}"]
                + ([ctx.facts.ports_scope] if ctx.facts.ports_scope else []),
                fix=f"stop what holds port {p.port}, or publish the service on another host port",
            )
            break


RULES = [port_conflict]
