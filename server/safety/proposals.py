"""What a person approves: a :class:`Proposal` (the plan's id and the question that shows it).

The question names the stack, what will change (services, images from -> to), whether data is
restored, the downtime the strategy implies, and the backup taken first. The ``plan_id`` is what
the approval is bound to: deploy_stack's own plan id (server/deploy/plan.py: files, env, running
state, the plan with digests); for the other acts a hash of the same kinds of things: the stack's
files, each container's id, config hash, image and state, and the act's resolved arguments (the
target deployment, the backup). Anything that moves between the question and the act changes it.

Only reads: computing a proposal never changes a stack.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.runtime import Runtime


def _now() -> float:
    from server.safety.approvals import now

    return now()


@dataclass(frozen=True)
class Proposal:
    plan_id: str
    question: str
    noop: bool = False
    """The act would change nothing (an unchanged deploy, a pre-flight that will block): no approval."""
    computed_at: float = field(default_factory=lambda: _now())
    """When the person was shown it: an answer later than the approval's lifetime is refused."""


async def deploy(runtime: Runtime, path: str, env: Mapping[str, str] | None, services: list[str] | None) -> Proposal:
    from server.deploy.plan import compute_plan
    from server.redact import Scrubber
    from server.stackload import StackRenderFailed, load_stack

    try:
        stack = await load_stack(runtime.settings, runtime.compose(), path=path, env=dict(env or {}),
                                 dsm_override=False)
    except StackRenderFailed:
        return Proposal(plan_id="", question="", noop=True)  # the deploy blocks at pre-flight: nothing to approve
    if stack.directory is None:
        return Proposal(plan_id="", question="", noop=True)
    plan, _ = await compute_plan(runtime.compose(), runtime.engine(), stack, env=dict(env or {}), services=services,
                                 scrub=Scrubber(stack.secret_values))
    return _planned("Deploy", stack.name, plan, await _running_refs(runtime, stack))


async def update(runtime: Runtime, stack: str, services: list[str] | None, images: dict[str, str] | None,
                 to: str, strategy: str) -> Proposal:
    """update_stack's own dry run (its plan_id covers the tags it will write): nothing is written."""
    from server.deploy.pipeline import Deployer
    from server.stacks import resolve_stack
    from server.updates.apply import update_stack as run_update

    report = await run_update(runtime, Deployer(runtime).deploy, stack, services=services, images=images, to=to,
                              strategy=strategy, dry_run=True, prune=False)
    if report.plan is None:  # blocked at pre-flight: nothing to approve, the real call blocks too
        return Proposal(plan_id="", question="", noop=True)
    location = resolve_stack(runtime.settings, stack)
    return _planned("Update", report.stack, report.plan, await _running_refs(runtime, location))


async def scale(runtime: Runtime, stack: str, service: str, change: Mapping[str, Any]) -> Proposal:
    from server.stacks import resolve_stack

    location = resolve_stack(runtime.settings, stack)
    running = await _running(runtime, location.name)
    asked = ", ".join(f"{k} {v}" for k, v in sorted(change.items()) if v is not None) or "a suggestion only"
    plan_id = _hash(runtime, location, running, {"service": service, "change": dict(change)})
    question = (f"Scale service {service!r} of stack {location.name!r} (plan {plan_id[:12]}): {asked}, kept in "
                "compose.dsm.yaml and applied by a deploy of that service (new replicas start; changed limits "
                "recreate its containers: a short outage each). Data: not restored, volumes kept. Backup taken "
                "first: files and images. Go ahead?")
    return Proposal(plan_id=plan_id, question=question, noop=all(v is None for v in change.values()))


def _planned(verb: str, name: str, plan: Any, running: dict[str, str]) -> Proposal:
    """The question for a deploy-shaped plan: each change with its images, the data, the backup."""
    changes = plan.changes
    lines = []
    for s in changes:
        before = running.get(s.service) or (s.image_from or "")[:19]
        images = f"{before} -> {s.image_to or '-'}" if before and before != s.image_to else (s.image_to or "")
        digests = f" (digest {_short(s.digest_from)} -> {_short(s.digest_to)})" if s.digest_to else ""
        lines.append(f"{s.service}: {s.action} {images}{digests}; downtime: {_downtime(s.action, s.strategy)}")
    data = "; ".join(f.message for f in plan.findings) or "nothing restored, volumes kept"
    b = plan.backup
    backup = (f"files, images of {', '.join(b.images) or 'none'}, volumes {', '.join(b.volumes) or 'none'}, "
              f"database dumps of {', '.join(b.dumps) or 'none'}")
    question = (f"{verb} stack {name!r} (plan {plan.plan_id[:12]}): " + ("; ".join(lines) or "no service changes")
                + f". Data: {data}. Backup taken first: {backup}. Go ahead?")
    return Proposal(plan_id=plan.plan_id, question=question, noop=not changes and not plan.findings)


async def rollback(runtime: Runtime, stack: str, to_deployment: str | None, restore_data: bool) -> Proposal:
    from server.deploy.targets import backup_after, targets
    from server.operations.views import images_of
    from server.stacks import resolve_stack

    location = resolve_stack(runtime.settings, stack)
    history = runtime.operations().history(location.name, limit=200)
    _, target = targets(history, to_deployment)
    running = await _running(runtime, location.name)
    if target is None:  # the rollback will refuse with its own advice; the policy has its say first
        plan_id = _hash(runtime, location, running, {"target": None, "restore_data": restore_data})
        return Proposal(plan_id=plan_id, question=f"Roll back stack {location.name!r} (plan {plan_id[:12]}): no "
                        "earlier successful deployment is recorded, so the rollback will refuse. Go ahead?")
    now = await _running_refs(runtime, location)
    wanted = {i.service: i.image or "?" for i in images_of(target.result or {})}
    lines = [f"{svc}: {now.get(svc) or '(not running)'} -> {img}" for svc, img in sorted(wanted.items())]
    data_from = backup_after(history, target) if restore_data else None
    data = (f"RESTORED from backup {data_from or '(the one taken when leaving it)'}: volumes and databases are "
            "overwritten, changes since are lost") if restore_data else "not restored (volumes kept as they are)"
    material = {"target": target.operation_id, "restore_data": restore_data, "data_from": data_from}
    plan_id = _hash(runtime, location, running, material)
    question = (f"Roll back stack {location.name!r} to deployment {target.operation_id} (plan {plan_id[:12]}): "
                + ("; ".join(lines) or "its recorded files") + f". Data: {data}. Downtime: services whose image or "
                "configuration differ are recreated (a short outage each). Backup taken first: the state being left "
                "(files, images, volumes, databases). Go ahead?")
    return Proposal(plan_id=plan_id, question=question)


async def control(runtime: Runtime, stack: str, action: str, services: list[str] | None) -> Proposal:
    from server.stacks import resolve_stack

    location = resolve_stack(runtime.settings, stack)
    running = await _running(runtime, location.name)
    acted = ", ".join(services) if services else "every service (" + ", ".join(
        sorted({r[0] for r in running}) or location.declared_services) + ")"
    effect = {
        "stop": "their containers stop: down until started again",
        "remove": "their containers are removed (volumes are kept): down until deployed again",
        "restart": "their containers restart: a short outage",
        "start": "their containers start",
    }.get(action, "no container is touched")
    plan_id = _hash(runtime, location, running, {"action": action, "services": sorted(services or [])})
    question = (f"{action} {acted} of stack {location.name!r} (plan {plan_id[:12]}): {effect}. Data: not restored, "
                "volumes kept. Backup taken first: none. Go ahead?")
    return Proposal(plan_id=plan_id, question=question)


async def restore(runtime: Runtime, stack: str, backup_id: str | None) -> Proposal:
    from server.backups import service

    location = service.resolve_stack(runtime, stack)
    manifest = service.pick(service.store_of(runtime), location.name, backup_id)
    running = await _running(runtime, location.name)
    plan_id = _hash(runtime, location, running, {"backup": manifest.backup_id})
    asked = service.restore_question(manifest, await service.is_critical(runtime, location))
    question = (f"{asked.removesuffix('?')} (plan {plan_id[:12]})? " if "?" in asked else asked) + (
        " Images and files are not changed. Backup taken first: none (backup_stack create takes one). Go ahead?")
    return Proposal(plan_id=plan_id, question=" ".join(question.split()))


async def _running_refs(runtime: Runtime, stack: Any) -> dict[str, str]:
    """``service -> image reference`` running now, a pin (dsm-pin/...) named by its original."""
    from server.roles import is_pin, pin_originals

    originals = pin_originals(stack)
    refs: dict[str, str] = {}
    for c in await runtime.engine().compose_containers(stack.name):
        if c.service and c.image:
            refs[c.service] = originals.get(c.service, c.image) if is_pin(c.image) else c.image
    return refs


async def _running(runtime: Runtime, project: str) -> list[tuple[str, str, str, str, str, str]]:
    from server.deploy.plan import HASH_LABEL, IMAGE_LABEL, ONEOFF_LABEL

    rows = await runtime.engine().compose_containers(project)
    return sorted((c.service or "", c.id, c.labels.get(HASH_LABEL, ""), c.labels.get(IMAGE_LABEL, c.image or ""),
                   c.image_id or "", c.state) for c in rows if c.labels.get(ONEOFF_LABEL) != "True")


def _hash(runtime: Runtime, location: Any, running: list[Any], material: dict[str, Any]) -> str:
    files: dict[str, str] = {}
    directory = getattr(location, "directory", None)
    if directory is not None:
        for path in sorted(directory.iterdir()):
            if path.is_file() and (path.suffix in (".yaml", ".yml") or path.name == ".env"):
                files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = json.dumps({"files": files, "running": running, "act": material}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _downtime(action: str, strategy: str) -> str:
    if action == "create":
        return "none (new)"
    if action == "remove":
        return "removed"
    if strategy in ("rolling", "blue_green"):
        return f"none expected ({strategy}: the new copy serves before the old one stops)"
    return f"a short outage while it is recreated ({strategy})"


def _short(digest: str | None) -> str:
    return (digest or "?").removeprefix("sha256:")[:12]
