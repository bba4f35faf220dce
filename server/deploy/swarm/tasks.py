"""Swarm services and tasks, read once into plain records, and judged: the deploy's health gate,
stack_status and diagnose_stack all read a stack's tasks through here.

A task's state already includes its container's health: a task whose image has a healthcheck
stays ``starting`` until the check passes, and a failing check fails the task. So "converged" is:
every task Swarm wants running runs, with the service's current spec, as many as it asks for, and
the service's update (if any) has completed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from server.deploy.swarm.cli import NAMESPACE_LABEL

FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
ROLLED_BACK = frozenset({"rollback_started", "rollback_completed", "rollback_paused", "paused"})
PENDING_GRACE_S = 20.0
"""A task left pending with a scheduler error this long is stuck (no node can take it)."""


@dataclass(frozen=True)
class Task:
    id: str
    service: str  # the stack's service name (without the ``<stack>_`` prefix)
    slot: int | None
    node: str  # hostname ("" before it is scheduled)
    desired: str
    state: str
    error: str
    image: str
    current: bool  # runs the service's current spec
    age_s: float = 0.0


@dataclass(frozen=True)
class Service:
    name: str  # without the stack prefix
    full_name: str
    id: str
    replicas: int | None  # None: global
    image: str
    update_state: str | None
    update_message: str
    spec: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None


def short_name(full: str, stack: str) -> str:
    return full[len(stack) + 1:] if full.startswith(stack + "_") else full


def fingerprint(template: dict[str, Any]) -> str:
    """What makes a task the spec's: the fields a stack deploy changes (the API fills defaults into
    the rest differently for a task and for its service, so whole specs never compare equal)."""
    cs = template.get("ContainerSpec") or {}
    keep = {k: cs.get(k) for k in ("Image", "Env", "Args", "Command", "Mounts", "Healthcheck", "User", "Dir")}
    return json.dumps([keep, template.get("ForceUpdate") or 0], sort_keys=True)


def parse_services(raw: list[dict[str, Any]], stack: str) -> dict[str, Service]:
    out = {}
    for s in raw:
        spec = s.get("Spec") or {}
        full = str(spec.get("Name") or "")
        mode = spec.get("Mode") or {}
        replicas = (mode.get("Replicated") or {}).get("Replicas") if "Replicated" in mode else None
        status = s.get("UpdateStatus") or {}
        name = short_name(full, stack)
        out[name] = Service(name=name, full_name=full, id=str(s.get("ID") or ""),
                            replicas=int(replicas) if replicas is not None else None,
                            image=str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image") or ""),
                            update_state=status.get("State"), update_message=str(status.get("Message") or ""),
                            spec=spec, previous=s.get("PreviousSpec"))
    return out


def parse_tasks(raw: list[dict[str, Any]], services: dict[str, Service], nodes: dict[str, str],
                now: float | None = None) -> list[Task]:
    from datetime import datetime

    by_id = {s.id: s for s in services.values()}
    out = []
    for t in raw:
        svc = by_id.get(str(t.get("ServiceID") or ""))
        if svc is None:
            continue
        status = t.get("Status") or {}
        spec = t.get("Spec") or {}
        age = 0.0
        created = str(t.get("CreatedAt") or "")
        if now is not None and created:
            try:
                age = now - datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
            except ValueError:
                age = 0.0
        out.append(Task(
            id=str(t.get("ID") or "")[:12], service=svc.name, slot=t.get("Slot"),
            node=nodes.get(str(t.get("NodeID") or ""), str(t.get("NodeID") or "")[:12]),
            desired=str(t.get("DesiredState") or ""), state=str(status.get("State") or ""),
            error=str(status.get("Err") or ""), image=str((spec.get("ContainerSpec") or {}).get("Image") or ""),
            current=fingerprint(spec) == fingerprint((svc.spec or {}).get("TaskTemplate") or {}), age_s=age))
    return out


def node_names(raw_nodes: list[dict[str, Any]]) -> dict[str, str]:
    return {str(n.get("ID") or ""): str((n.get("Description") or {}).get("Hostname") or "") for n in raw_nodes}


@dataclass(frozen=True)
class Verdict:
    state: str  # "converged" | "waiting" | "failed"
    service: str | None = None
    why: str = ""
    evidence: list[str] = field(default_factory=list)


def describe(t: Task) -> str:
    return (f"{t.service}.{t.slot or ''} on node {t.node or '(unscheduled)'}: {t.state}"
            + (f" ({t.error})" if t.error else "") + f" [{t.image}]")


def judge(services: dict[str, Service], tasks: list[Task], watched: list[str], since_s: float,
          rolling_back: bool = False) -> Verdict:
    """The gate's judgement of ``watched`` services now. ``since_s``: seconds since the deploy
    began (a task of the new spec that failed within it is the deploy's failure). ``rolling_back``:
    a stack-level rollback waits for Swarm's own rollbacks to complete instead of failing on them."""
    waiting = []
    for name in watched:
        svc = services.get(name)
        if svc is None:
            waiting.append(f"{name}: no service yet")
            continue
        mine = [t for t in tasks if t.service == name]
        failed = [t for t in mine if t.current and t.state in FAILED_STATES and t.age_s <= since_s + 5]
        state = svc.update_state
        if rolling_back and state in ("rollback_completed", "completed"):
            state = None
        if state in ROLLED_BACK and not (rolling_back and state == "rollback_started"):
            bad = failed or [t for t in mine if t.state in FAILED_STATES and t.age_s <= since_s + 5]
            return Verdict("failed", name, f"Swarm {state.replace('_', ' ')} the update of {name}: "
                           f"{svc.update_message}" + (f"; {describe(bad[0])}" if bad else ""),
                           [describe(t) for t in bad[:6]])
        if failed:
            return Verdict("failed", name, f"task of the new {name} failed: {describe(failed[0])}",
                           [describe(t) for t in failed[:6]])
        stuck = [t for t in mine if t.desired == "running" and t.state == "pending" and t.error
                 and t.age_s >= PENDING_GRACE_S]
        if stuck:
            return Verdict("failed", name, f"{name} cannot be scheduled: {describe(stuck[0])}",
                           [describe(t) for t in stuck[:6]])
        running = [t for t in mine if t.desired == "running" and t.state == "running" and t.current]
        others = [t for t in mine if t.desired == "running" and not (t.state == "running" and t.current)]
        want = svc.replicas if svc.replicas is not None else len({t.node for t in mine if t.desired == "running"})
        updating = state not in (None, "completed")
        if len(running) < want or others or updating:
            waiting.append(f"{name} {len(running)}/{want} running" + (f", update {svc.update_state}" if updating
                                                                       else ""))
    if waiting:
        return Verdict("waiting", why="; ".join(waiting))
    return Verdict("converged")


def stack_namespace(labels: dict[str, str] | None) -> str | None:
    return (labels or {}).get(NAMESPACE_LABEL)
