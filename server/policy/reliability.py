"""Reliability rules: healthchecks, dependency order, restart policies, fixed names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.probes import healthcheck_patch
from server.stackview import has_healthcheck


def _disabled(service: dict[str, Any]) -> bool:
    hc = service.get("healthcheck")
    return isinstance(hc, dict) and (bool(hc.get("disable")) or hc.get("test") == ["NONE"])


def effective_healthcheck(ctx: LintContext, service: dict[str, Any]) -> tuple[bool | None, str]:
    """(has one?, where from). None means unknown: the image's own config was not read.

    A ``healthcheck:`` block without ``test`` (``{disable: false}``, or only ``interval``) keeps
    the image's own test, as the engine does, so the image decides.
    """
    if has_healthcheck(service):
        return True, "declared in the compose file"
    if _disabled(service):
        return False, "disabled in the compose file (healthcheck: disable / NONE)"
    image = service.get("image")
    if not image:
        return None, "none in the compose file; the image is built from the stack's Dockerfile, not inspected"
    if ctx.facts is None:
        return None, "none in the compose file; the image's own config was not read (check_host is off)"
    fact = ctx.facts.images.get(image)
    if fact is None or fact.healthcheck is None:
        detail = f": {fact.detail}" if fact is not None and fact.detail else ""
        return None, ("none in the compose file; the image is not on this host and its config could not be read "
                      f"from its registry{detail}")
    where = "this host's copy of the image" if fact.config_source == "local" else "the image's config in its registry"
    if fact.healthcheck:
        return True, f"the image's own HEALTHCHECK (read from {where})"
    return False, f"none in the compose file and none in the image (read from {where})"


def missing_healthcheck(ctx: LintContext) -> Iterator[Finding]:
    """missing-healthcheck when the image is known to have none; healthcheck-unverified when unknown."""
    one_shots = ctx.one_shots
    waiters: dict[str, list[str]] = {}
    for name, svc in ctx.services.items():
        for dep, cfg in (svc.get("depends_on") or {}).items():
            if (cfg or {}).get("condition") == "service_healthy":
                waiters.setdefault(dep, []).append(name)
    for name, svc in sorted(ctx.services.items()):
        if name in one_shots:
            continue
        has, why = effective_healthcheck(ctx, svc)
        if has:
            continue
        line = ctx.stack.line_of(name, "healthcheck") or ctx.stack.line_of(name)
        exempt = "one-shot services (x-dsm one-shot: true, or awaited with service_completed_successfully) are exempt"
        waiting = [f"{w} waits for it with condition service_healthy" for w in sorted(waiters.get(name, []))]
        if has is None:
            yield finding(
                "healthcheck-unverified",
                f"service {name!r} declares no healthcheck and whether its image brings one is unknown ({why}); "
                "many images ship their own HEALTHCHECK",
                service=name,
                line=line,
                fix="# only if the image has no HEALTHCHECK of its own (validate with check_host reads it):\n"
                + healthcheck_patch(name, svc),
                evidence=[why, *waiting, "the image's config is read locally (image inspect) or from its registry "
                          "without pulling when check_host is on", exempt],
            )
            continue
        yield finding(
            "missing-healthcheck",
            f"service {name!r} runs long but has no healthcheck ({why}); a deployment cannot tell "
            "'started' from 'working' and auto-recovery cannot see it fail",
            service=name,
            line=line,
            fix=healthcheck_patch(name, svc),
            evidence=[why, *waiting, exempt],
        )


def dependency_without_healthcheck(ctx: LintContext) -> Iterator[Finding]:
    services = ctx.services
    for name, svc in sorted(services.items()):
        for dep, cfg in sorted((svc.get("depends_on") or {}).items()):
            if (cfg or {}).get("condition") != "service_healthy" or dep not in services:
                continue
            has, why = effective_healthcheck(ctx, services[dep])
            if has is not False:  # unknown: healthcheck-unverified on the dependency says so, as a warning
                continue
            yield finding(
                "dependency-without-healthcheck",
                f"service {name!r} waits for {dep!r} to be healthy, but {dep!r} has no healthcheck ({why}); "
                "`docker compose up` will fail",
                service=name,
                line=ctx.stack.line_of(name, "depends_on", dep),
                fix=f"add a healthcheck to {dep!r}, or wait with condition: service_started",
                evidence=[f"{name} -> {dep}: condition service_healthy"],
            )


def no_restart_policy(ctx: LintContext) -> Iterator[Finding]:
    one_shots = ctx.one_shots
    for name, svc in sorted(ctx.services.items()):
        if name in one_shots:
            continue
        restart = str(svc.get("restart") or "")
        deploy_policy = ((svc.get("deploy") or {}).get("restart_policy") or {}).get("condition")
        if restart in ("", "no") and deploy_policy in (None, "none"):
            yield finding(
                "no-restart-policy",
                "no restart policy: after a crash or a host reboot the service stays down",
                service=name,
                line=ctx.stack.line_of(name, "restart"),
                fix="restart: unless-stopped",
            )


def fixed_container_name(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if svc.get("container_name"):
            yield finding(
                "fixed-container-name",
                "container_name is fixed: the service cannot be scaled and start-first (zero-downtime) "
                "updates cannot run a second container beside the first",
                service=name,
                line=ctx.stack.line_of(name, "container_name"),
                fix="remove container_name; Compose names containers <project>-<service>-<n>",
            )


def dependency_cycle(ctx: LintContext) -> Iterator[Finding]:
    """Compose refuses cycles itself; this catches any path it lets through (defence in depth)."""
    graph: dict[str, set[str]] = {}
    for name, svc in ctx.services.items():
        edges = set((svc.get("depends_on") or {}).keys())
        for link in svc.get("links") or []:
            edges.add(str(link).split(":")[0])
        for key in ("network_mode", "ipc", "pid"):
            value = str(svc.get(key) or "")
            if value.startswith("service:"):
                edges.add(value.split(":", 1)[1])
        for vf in svc.get("volumes_from") or []:
            vf = str(vf)
            if not vf.startswith("container:"):
                edges.add(vf.split(":")[0])
        graph[name] = {e for e in edges if e in ctx.services}
    seen: set[frozenset[str]] = set()
    for cycle in _cycles(graph):
        members = frozenset(cycle)
        if members in seen:
            continue
        seen.add(members)
        path = " -> ".join([*cycle, cycle[0]])
        yield finding(
            "dependency-cycle",
            f"dependency cycle: {path}; none of these services can start first",
            service=cycle[0],
            line=ctx.stack.line_of(cycle[0], "depends_on"),
            fix="break the cycle: remove one depends_on (or links/network_mode/volumes_from) edge",
            evidence=[path],
        )


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle per strongly connected component that has one (iterative DFS, sorted order)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if state.get(child) == 1:
                yield path[path.index(child) :]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))


RULES = [missing_healthcheck, dependency_without_healthcheck, no_restart_policy, fixed_container_name, dependency_cycle]
