"""stack_status and diagnose_stack for a Swarm stack: its tasks, each naming the node it runs (or
failed) on, read through the same StackCLI and task records as the deploy's gate
(server/deploy/swarm/tasks.py).

A swarm task's container carries no Compose project label, so the Compose view of such a stack is
empty; the two tools ask here before they answer "not deployed". An engine that is not a swarm
manager simply has no swarm stack (None).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from server.deploy.swarm.tasks import (
    FAILED_STATES,
    Service,
    Task,
    describe,
    judge,
    node_names,
    parse_services,
    parse_tasks,
)
from server.monitor.models import Diagnosis, DiagnosisFinding, ServiceStatus, StackStatus
from server.redact import scrub_seen

log = logging.getLogger("docker_stack_mcp.monitor")
RECENT_FAILURE_S = 900.0
"""A failed task this recent is shown (and diagnosed) next to the running ones."""


async def read_stack(runtime: Any, project: str) -> tuple[dict[str, Service], list[Task]] | None:
    from server.deploy.swarm.cli import StackCLI

    cli = StackCLI.for_runtime(runtime)
    try:
        raw = await cli.services(project)
        if not raw:
            return None
        services = parse_services(raw, project)
        tasks = parse_tasks(await cli.tasks(project), services, node_names(await cli.nodes()), now=time.time())
    except Exception as exc:  # not a manager, no CLI: no swarm stack of that name here
        log.debug("swarm view of %s unavailable: %s", project, exc)
        return None
    return services, tasks


def _shown(tasks: list[Task]) -> list[Task]:
    """Tasks Swarm wants running, and the latest recent failure of each slot."""
    out = [t for t in tasks if t.desired == "running"]
    seen: set[tuple[str, Any]] = set()
    for t in sorted((t for t in tasks if t.state in FAILED_STATES and t.age_s <= RECENT_FAILURE_S),
                    key=lambda t: t.age_s):
        if (t.service, t.slot) not in seen:
            seen.add((t.service, t.slot))
            out.append(t)
    return sorted(out, key=lambda t: (t.service, t.slot or 0, t.desired != "running"))


async def swarm_stack_status(runtime: Any, project: str) -> StackStatus | None:
    read = await read_stack(runtime, project)
    if read is None:
        return None
    services, tasks = read
    rows = [ServiceStatus(
        service=t.service, name=f"{project}_{t.service}.{t.slot or ''}", container_id=t.id, state=t.state,
        health=None, restarts=0, exit_code=None, oom_killed=False, started_at=None, memory_limit_bytes=None,
        ports=[], image=t.image, node=t.node or None, error=scrub_seen(t.error) or None) for t in _shown(tasks)]
    verdict = judge(services, tasks, sorted(services), since_s=0, rolling_back=True)  # rolled back = settled
    running = [r for r in rows if r.state == "running"]
    state = "running" if verdict.state == "converged" else ("degraded" if running else "stopped")
    return StackStatus(stack=project, managed=True, state=state, services=rows,
                       drift_since="swarm stack: drift is not compared for Swarm services")


async def swarm_diagnosis(runtime: Any, project: str, service: str | None) -> Diagnosis | None:
    read = await read_stack(runtime, project)
    if read is None:
        return None
    services, tasks = read
    findings: list[DiagnosisFinding] = []
    for name, svc in sorted(services.items()):
        if service is not None and name != service:
            continue
        mine = [t for t in tasks if t.service == name]
        failed = [t for t in mine if t.state in FAILED_STATES and t.age_s <= RECENT_FAILURE_S]
        pending = [t for t in mine if t.desired == "running" and t.state == "pending" and t.error]
        settled = judge(services, tasks, [name], since_s=0, rolling_back=True).state == "converged"
        if failed:
            nodes = sorted({t.node for t in failed if t.node})
            findings.append(DiagnosisFinding(  # history once the service runs again (rolled back, restarted)
                rule="task-failed", severity="warning" if settled else "error", category="swarm", service=name,
                message=scrub_seen(f"{len(failed)} task(s) of {name} failed recently on node(s) "
                                   f"{', '.join(nodes) or '?'}: {failed[0].error or failed[0].state}"),
                evidence=[scrub_seen(describe(t)) for t in failed[:10]],
                likely_cause=_cause(failed[0]),
                fix="docker service logs on the manager shows the task's output; rollback returns the stack"))
        if pending:
            findings.append(DiagnosisFinding(
                rule="task-unschedulable", severity="error", category="swarm", service=name,
                message=f"{len(pending)} task(s) of {name} cannot be placed: {pending[0].error}",
                evidence=[describe(t) for t in pending[:10]],
                likely_cause="no node meets the placement constraints, resources or free host port",
                fix="relax the placement or reservations, free the port, or add a node"))
        if svc.update_state and svc.update_state != "completed":
            findings.append(DiagnosisFinding(
                rule="update-" + svc.update_state.replace("_", "-"), severity="warning", category="swarm",
                service=name, message=f"update of {name}: {svc.update_state} ({svc.update_message})",
                likely_cause="Swarm's update_config acted on failing tasks (failure_action)"))
    healthy = not any(f.severity == "error" for f in findings)
    return Diagnosis(stack=project, healthy=healthy, findings=findings, similar_incidents=[],
                     next_steps=["nothing wrong found in the swarm tasks"] if healthy else [
                         "read the task errors (node named in each); fix and deploy_stack again, or rollback"])


def _cause(t: Task) -> str:
    err = t.error.lower()
    if "non-zero exit" in err:
        return "the container exited with an error (its command or configuration fails)"
    if "unhealthy" in err or "health" in err:
        return "the container's healthcheck failed"
    if "no such image" in err or "pull" in err:
        return "the node does not have the image and cannot pull it"
    return "see the task error"
