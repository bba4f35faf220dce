"""The running stack against its model (the files as Compose renders them, our pins included).

Three differences, each a finding whose fix is the call that repairs it:

- a service of the model with no container (``deploy_stack`` with that service creates it);
- a container attached to none (error) or not all (warning) of the networks the model gives it,
  e.g. after ``docker network disconnect``: its config hash is unchanged, so only this tells
  (``deploy_stack`` recreates it: the plan shows it as ``recreate``);
- a container running another image than the model's (by id when the reference differs).

One-shot jobs (x-dsm, or awaited with ``service_completed_successfully``) and services scaled to
zero are not expected to have a running container.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from server.errors import DsmError
from server.models import Severity
from server.monitor import netcheck
from server.monitor.resolve import StackRef
from server.monitor.status import Observed
from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")


@dataclass(frozen=True)
class Drift:
    service: str
    rule: str
    severity: Severity
    message: str
    likely_cause: str
    fix: str
    evidence: list[str] = field(default_factory=list)


async def model_of(runtime: Runtime, ref: StackRef) -> dict[str, Any] | None:
    """``docker compose config --format json`` of the stack as deployed (None when unavailable)."""
    if ref.location is None:
        return None
    try:
        result = await runtime.compose().run_project(ref.location.project().named(ref.name),
                                                     ["config", "--format", "json"], timeout_s=30,
                                                     what="docker compose config")
        model = json.loads(result.stdout)
    except (DsmError, ValueError) as exc:
        log.debug("model of %s unavailable: %s", ref.name, exc)
        return None
    return model if isinstance(model, dict) else None


def deploy_call(runtime: Runtime, ref: StackRef, service: str) -> str:
    """The deploy_stack call that recreates one service, with the path as the tool takes it."""
    assert ref.location is not None
    root = runtime.settings.stacks_root.resolve()
    directory = ref.location.directory.resolve()
    path = str(directory.relative_to(root)) if directory.is_relative_to(root) else str(directory)
    return f"deploy_stack(path={path!r}, services=[{service!r}])"


def expected_networks(model: dict[str, Any], project: str, service: str) -> set[str] | None:
    body = (model.get("services") or {}).get(service) or {}
    if body.get("network_mode"):
        return None
    declared = model.get("networks") or {}
    return {str((declared.get(key) or {}).get("name") or f"{project}_{key}")
            for key in (body.get("networks") or {"default": None})}


def _scaled_to_zero(body: dict[str, Any]) -> bool:
    replicas = (body.get("deploy") or {}).get("replicas", body.get("scale"))
    return replicas is not None and int(replicas) == 0


async def compare(runtime: Runtime, ref: StackRef, model: dict[str, Any], observed: list[Observed],
                  one_shots: set[str], only: str | None = None) -> list[Drift]:
    from server.roles import awaited

    services = model.get("services") or {}
    by_service: dict[str, list[Observed]] = {}
    for o in observed:
        if o.labels.get("com.docker.compose.oneoff") != "True":
            by_service.setdefault(o.service, []).append(o)
    out: list[Drift] = []
    for name, body in sorted(services.items()):
        if only and name != only:
            continue
        body = body or {}
        job = name in one_shots or awaited(services, name)
        containers = by_service.get(name, [])
        fix = deploy_call(runtime, ref, name)
        if not containers:
            if not job and not _scaled_to_zero(body):
                out.append(Drift(name, "container-missing", "error", f"{name} has no container",
                                 likely_cause="it was removed by hand, or never created (a deploy stopped early)",
                                 fix=f"{fix} creates it", evidence=[f"model: service {name} ({body.get('image')})"]))
            continue
        wanted = None if job else expected_networks(model, ref.name, name)  # a finished job needs none
        for o in containers:
            have = set(netcheck.networks(o))
            missing = sorted((wanted or set()) - have)
            if wanted and missing:
                none = not (wanted & have)
                out.append(Drift(
                    name, "network-detached", "error" if none else "warning",
                    f"{o.summary.name} is attached to {'none' if none else 'not all'} of the networks the "
                    f"files give {name} (missing {', '.join(missing)})",
                    likely_cause="the container was disconnected from its network (docker network disconnect) "
                    "or its network was recreated under it",
                    fix=f"{fix} recreates it on its networks",
                    evidence=[f"model: {', '.join(sorted(wanted))}", f"attached: {', '.join(sorted(have)) or 'none'}"]))
        ref_image = str(body.get("image") or "")
        if not ref_image or body.get("build"):
            continue
        model_id: str | None = None
        for o in containers:
            running_ref = str((o.inspect.get("Config") or {}).get("Image") or "")
            if running_ref == ref_image:
                continue
            if model_id is None:
                attrs = await runtime.engine().image_attrs(ref_image)
                model_id = str((attrs or {}).get("Id") or "")
            if model_id and model_id == str(o.inspect.get("Image") or ""):
                continue
            out.append(Drift(
                name, "image-drift", "warning", f"{o.summary.name} runs {running_ref}, the files say {ref_image}",
                likely_cause="the container runs another image than its files name: it was replaced by hand, "
                "or the files were edited and not deployed",
                fix=f"{fix} recreates it from {ref_image} (or rollback if the files are wrong)",
                evidence=[f"model image {ref_image} ({model_id[7:19] if model_id else 'not local'})",
                          f"running {running_ref} ({str(o.inspect.get('Image') or '')[7:19]})"]))
    return out
