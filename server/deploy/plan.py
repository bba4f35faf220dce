"""The deployment plan: what happens to each service, computed without changing anything.

Compose decides to recreate a container when the service's config hash (``docker compose config
--hash``) differs from the container's ``com.docker.compose.config-hash`` label, or when the
image id differs from its ``com.docker.compose.image`` label. We ask the same questions up front,
so the plan says what ``up`` will do, per service, and the strategy that will run it with the rule
that chose it (server/deploy/strategies/select.py).

``plan_id`` is a sha256 over the files, the env given, the running state and the plan itself:
deploying with a plan_id applies exactly that plan or refuses when any of them moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.compose import ComposeRunner
from server.deploy.datamoves import data_moves
from server.deploy.project import OVERRIDE_NAME, compose_project, user_files
from server.deploy.report import Action, BackupPlan, DeployPlan, ServicePlan
from server.deploy.strategies.select import Choice, choose
from server.deploy.tags import check_tags, compared_refs
from server.engine import ContainerSummary, Engine, object_names
from server.models import Finding
from server.project import ComposeProject
from server.redact import Scrubber
from server.roles import ServiceRole, pin_originals, role_of_service, roles_for_stack
from server.stackmodel import LoadedStack
from server.stackview import has_healthcheck

HASH_LABEL = "com.docker.compose.config-hash"
IMAGE_LABEL = "com.docker.compose.image"
ONEOFF_LABEL = "com.docker.compose.oneoff"


@dataclass(frozen=True)
class PlanInputs:
    """What a plan was computed from; kept so the pipeline reuses it instead of asking twice."""

    hashes: dict[str, str]
    containers: list[ContainerSummary]
    local_images: dict[str, str | None]


async def config_hashes(compose: ComposeRunner, project: ComposeProject, scrub: Scrubber) -> dict[str, str]:
    """``service -> config hash`` for the services Compose would start (active profiles only)."""
    result = await compose.run_project(
        project,
        ["config", "--hash", "*"],
        timeout_s=60,
        scrub=scrub,
        what="docker compose config --hash",
    )
    hashes: dict[str, str] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes


def is_database(stack: LoadedStack, service: str, role: ServiceRole | None = None) -> bool:
    """A database by server.roles (x-dsm, the original image, what it runs): never by image name alone."""
    return (role or role_of_service(stack, service, originals=pin_originals(stack))).is_database


def strategy_for(stack: LoadedStack, service: str, role: ServiceRole | None = None, *, asked: str = "auto",
                 healthcheck: bool | None = True) -> Choice:
    """The strategy that WILL run for ``service`` and which rule decided (server/deploy/strategies/
    select.py): the call's ``asked`` strategy, else x-dsm update.strategy, else the rules."""
    settings = stack.service_settings_for(service)
    proxied = any(n != service and role_of_service(stack, n).role == "proxy" for n in stack.services)  # blue_green
    # A one-shot by x-dsm, or in all but name: another service waits for it to complete.
    awaited = any(isinstance(cfg, dict) and cfg.get("condition") == "service_completed_successfully"
                  for body in stack.services.values() for name, cfg in (body.get("depends_on") or {}).items()
                  if name == service)
    return choose(stack.services.get(service, {}), asked=asked, configured=settings.update.strategy,
                  database=is_database(stack, service, role), critical=settings.critical or stack.settings.critical,
                  healthcheck=healthcheck, proxied=proxied, one_shot=settings.is_one_shot or awaited,
                  # blue_green by auto: a service marked critical itself, never the proxy it would switch
                  critical_service=settings.critical and (role or role_of_service(stack, service)).role != "proxy")


def _healthcheck(body: dict[str, Any], attrs: dict[str, Any] | None) -> bool | None:
    """Whether the service has a healthcheck: the files', else the image's (None: unknown)."""
    if has_healthcheck(body):
        return True
    if isinstance(body.get("healthcheck"), dict) and body["healthcheck"].get("disable"):
        return False
    if attrs is None:
        return None
    test = ((attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test")
    return bool(test) and test != ["NONE"]


async def compute_plan(
    compose: ComposeRunner,
    engine: Engine,
    stack: LoadedStack,
    *,
    env: Mapping[str, str] | None,
    services: list[str] | None = None,
    scrub: Scrubber | None = None,
    strategy: str = "auto",
) -> tuple[DeployPlan, PlanInputs]:
    """The plan for deploying ``stack`` (the user's files, without our pins) as it stands now.
    ``strategy``: auto (per service, by the rules) or the one asked for every changed service;
    one that cannot run for a service is in ``blocked`` (the transaction changes nothing)."""
    assert stack.directory is not None
    scrub = scrub or Scrubber(stack.secret_values)
    hashes = await config_hashes(compose, compose_project(stack, with_override=False), scrub)
    containers = [c for c in await engine.compose_containers(stack.name) if c.labels.get(ONEOFF_LABEL) != "True"]
    by_service: dict[str, list[ContainerSummary]] = {}
    for c in containers:
        by_service.setdefault(c.service or "", []).append(c)
    local: dict[str, str | None] = {}
    images: dict[str, dict[str, Any] | None] = {}
    for name in hashes:
        ref = stack.services.get(name, {}).get("image")
        if ref and ref not in local:
            attrs = images[str(ref)] = await engine.image_attrs(str(ref))
            local[str(ref)] = attrs.get("Id") if attrs else None
    selected = set(services) if services else None
    # Tags re-pushed upstream: the registry's digest against the local image's (server.deploy.tags).
    tags = await check_tags(engine, compared_refs(stack, [n for n in hashes if selected is None or n in selected],
                                                  images))
    roles = await roles_for_stack(engine, stack, hashes)
    plans: list[ServicePlan] = []
    blocked: list[Finding] = []
    for name, want_hash in sorted(hashes.items()):
        body = stack.services.get(name, {})
        ref = str(body.get("image") or "") or None
        image_id = local.get(ref) if ref else None
        running = by_service.get(name, [])
        image_from = running[0].labels.get(IMAGE_LABEL) if running else None
        attrs = images.get(ref) if ref else None
        if attrs is None and image_from:  # not local yet (to be pulled): the running image's says
            attrs = await engine.image_attrs(image_from)
        tag = tags.get(ref) if ref else None
        moved = tag is not None and tag.moved
        pull = bool(ref) and (image_id is None or moved) and not body.get("build")
        one_shot = stack.service_settings_for(name).is_one_shot
        action: Action
        if selected is not None and name not in selected:
            action, reason = "unchanged", "not among the services asked for"
        elif not running:
            action, reason = "create", "no container yet"
        elif any(c.labels.get(HASH_LABEL) != want_hash for c in running):
            action, reason = "recreate", "its configuration changed"
        elif not one_shot and (detached := missing_networks(stack, name, running)):
            action, reason = "recreate", f"its container is not attached to {', '.join(detached)} as the files say"
        elif moved and tag is not None:
            action, reason = "recreate", (f"{ref} moved in its registry ({_short(tag.local_digest)} -> "
                                          f"{_short(tag.remote)}): pulled, then recreated")
        elif pull:
            action, reason = "recreate", f"{ref} is not local: pulled, then recreated if the image differs"
        elif image_id and image_from and image_id != image_from:
            action, reason = "recreate", f"the image changed ({image_from[7:19]} -> {image_id[7:19]})"
        elif not one_shot and not all(c.running for c in running):
            action, reason = "recreate", f"not running ({running[0].state})"
        else:
            action, reason = "unchanged", "same configuration and image as running"
        choice = strategy_for(stack, name, roles[name], asked=strategy if selected is None or name in selected
                              else "auto", healthcheck=_healthcheck(body, attrs))
        if choice.refused and action == "recreate":
            blocked.append(Finding(rule="strategy-refused", severity="error", category="deploy", service=name,
                                   message=f"{name}: {choice.refused}; nothing was changed",
                                   fix="deploy with strategy auto (the plan says what runs and why), or change "
                                       "what forbids it"))
        plans.append(ServicePlan(
            service=name, action=action, image_from=image_from, image_to=ref, pull=pull and action != "unchanged",
            # What the executor runs (server/deploy/strategies/), and the rule that chose it.
            # The rule only where a strategy runs (a recreate): the 12-service dry run stays in its budget.
            strategy=choice.strategy, strategy_reason=choice.reason if action == "recreate" else None,
            reason=reason,  # why this action
            digest_from=tag.local_digest if moved and tag else None, digest_to=tag.remote if moved and tag else None,
            registry_note=tag.note if tag else None,
        ))
    for name in sorted(set(by_service) - set(hashes)):
        if name and selected is None:
            plans.append(ServicePlan(
                service=name, action="remove", image_from=by_service[name][0].labels.get(IMAGE_LABEL),
                strategy="recreate", reason="no longer in the compose files (orphan; its volumes are kept)",
            ))
    volumes, networks = await _to_create(engine, stack)
    backup = BackupPlan(
        images=sorted(n for n, cs in by_service.items() if n and any(c.running for c in cs)),
        volumes=sorted(str((v or {}).get("name") or k) for k, v in (stack.rendered.get("volumes") or {}).items()
                       if not (v or {}).get("external")),
        dumps=sorted(n for n in hashes if roles[n].is_database and by_service.get(n)),
    )
    from server.monitor.driftcheck import check as drift_since_deploy  # issue 18: what this deploy overwrites

    where = getattr(engine, "settings", None)  # None: a test's engine double, without a state directory
    drift = [] if where is None else (await drift_since_deploy(where, engine, stack.name, stack.directory,
                                                               containers, services=selected)).for_plan()
    draft = DeployPlan(plan_id="", services=plans, volumes_to_create=volumes, networks_to_create=networks,
                       backup=backup, findings=data_moves(stack, roles, by_service, selected), drift=drift,
                       blocked=blocked)
    plan_id = _plan_id(stack, env, containers, draft)
    return draft.model_copy(update={"plan_id": plan_id}), PlanInputs(hashes, containers, local)


def missing_networks(stack: LoadedStack, service: str, running: list[ContainerSummary]) -> list[str]:
    """Networks the files give ``service`` that one of its containers is not attached to (a
    ``docker network disconnect`` leaves the config hash as it was: only this tells)."""
    body = stack.services.get(service) or {}
    if body.get("network_mode") or not running:
        return []
    declared = stack.rendered.get("networks") or {}
    wanted = {str((declared.get(key) or {}).get("name") or f"{stack.name}_{key}")
              for key in (body.get("networks") or {"default": None})}
    return sorted({net for c in running if c.networks is not None for net in wanted - set(c.networks)})


async def _to_create(engine: Engine, stack: LoadedStack) -> tuple[list[str], list[str]]:
    wanted_volumes = {str((v or {}).get("name") or k) for k, v in (stack.rendered.get("volumes") or {}).items()
                      if not (v or {}).get("external")}
    wanted_networks = {str((v or {}).get("name") or k) for k, v in (stack.rendered.get("networks") or {}).items()
                       if not (v or {}).get("external")}
    have_volumes = await object_names(engine, "volume") if wanted_volumes else set()
    have_networks = await object_names(engine, "network") if wanted_networks else set()
    return sorted(wanted_volumes - have_volumes), sorted(wanted_networks - have_networks)


def _plan_id(stack: LoadedStack, env: Mapping[str, str] | None, containers: list[ContainerSummary],
             plan: DeployPlan) -> str:
    assert stack.directory is not None
    files: dict[str, str] = {}
    for path in [*user_files(stack.directory), stack.directory / ".env", stack.directory / OVERRIDE_NAME]:
        if path.is_file():
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    state: list[Any] = sorted(
        (c.service or "", c.id, c.labels.get(HASH_LABEL, ""), c.labels.get(IMAGE_LABEL, ""), c.state)
        for c in containers
    )
    material = {
        "files": files,
        "env": hashlib.sha256(json.dumps(sorted((env or {}).items())).encode()).hexdigest(),
        "running": state,
        # A registry's passing silence (registry_note) is no reason to refuse a plan_id; a moved tag is.
        # Drift is read from the running state and files already hashed here (its `since` may sharpen).
        "plan": plan.model_dump(mode="json", exclude={"plan_id": True, "drift": True,
                                                      "services": {"__all__": {"registry_note"}}}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def _short(digest: str | None) -> str:
    return (digest or "?").removeprefix("sha256:")[:12]
