"""update_stack: resolve the new image references, write them where the user keeps them, and
run the same transaction as deploy_stack (backup, pull, up, gate, verify, rollback).

``to=digest`` keeps the tags: the transaction pulls every tag that moved in its registry.
``patch``/``minor``/``major`` take the newest tag of the same shape within that level
(server/updates/check.py); ``images`` names references outright. A dry run writes nothing: the
plan is the transaction's plan for the files as they are (a tag kept in .env given as an
interpolation value), with each updated service's entry saying what the update changes
(references with digests, release notes, where it is written), and its plan_id covers both. A
real call with that plan_id recomputes it the same way first. Files are written just before the
transaction and put back when it does not deploy. The transaction's backup is taken after the
write; the previous files are those the last deployment kept (what a rollback restores).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from server.deploy import planids
from server.deploy.report import DeployReport, Phase
from server.errors import DsmError
from server.models import Finding
from server.updates import files as edits_mod
from server.updates.check import candidates, check_refs, with_tag
from server.updates.versions import LEVELS

if TYPE_CHECKING:
    from server.runtime import Runtime
    from server.stackmodel import LoadedStack

log = logging.getLogger("docker_stack_mcp.updates")
TARGETS = ("digest", "patch", "minor", "major")
_NOTES_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.url",
                 "org.opencontainers.image.documentation")
MEMORY_WAIT_S = 2.0


@dataclass
class Target:
    service: str
    ref_from: str
    ref_to: str
    digest_from: str | None = None
    digest_to: str | None = None
    why: str = ""
    edit: edits_mod.Edit | None = None
    notes_link: str | None = None
    failed_before: str | None = None
    local_to: bool = True
    """The new reference is already on the host (else the deploy pulls it)."""


DeployCall = Callable[..., Awaitable[DeployReport]]


async def update_stack(runtime: Runtime, deploy: DeployCall, stack: str, *, services: list[str] | None = None,
                       images: dict[str, str] | None = None, to: str = "digest", strategy: str = "auto",
                       dry_run: bool = False, plan_id: str | None = None, confirm: bool = False,
                       maintenance_message: str | None = None, prune: bool = True) -> DeployReport:
    """``deploy`` is the bound ``Deployer(...).deploy``; ``prune``: the policy allows removing the
    replaced images after a successful update."""
    from server.stackload import load_stack

    if to not in TARGETS:
        raise DsmError(f"to must be one of {', '.join(TARGETS)}", state="nothing was changed")
    loaded = await load_stack(runtime.settings, runtime.compose(), path=stack, dsm_override=False)
    assert loaded.directory is not None
    images = dict(images or {})
    unknown = sorted((set(services or []) | set(images)) - set(loaded.services))
    if unknown:
        raise DsmError(f"unknown service(s) {', '.join(unknown)} in stack {loaded.name!r}",
                       state="nothing was changed", next_step="call inspect_stack for the service names")
    outside = sorted(set(images) - set(services)) if services else []
    if outside:
        raise DsmError(f"images names {', '.join(outside)}, not among services", state="nothing was changed",
                       next_step="add them to services, or leave services out")
    targets = await resolve(runtime, loaded, services, images, to)
    written: dict[tuple[str, str], edits_mod.Edit] = {}
    for edit in (t.edit for t in targets if t.edit):
        other = written.setdefault((str(edit.file), edit.key), edit)
        if other.value != edit.value:
            raise DsmError(f"{other.service} and {edit.service} share {edit.key} in {edit.file.name} but would "
                           f"update to {other.value!r} and {edit.value!r}", state="nothing was changed",
                           next_step="pass images for both with references that agree, or one service at a time")
    await _failed_before(runtime, loaded.name, targets)
    kwargs: dict[str, Any] = {"services": services, "confirm": confirm, "strategy": strategy}
    path = str(loaded.directory.relative_to(runtime.settings.stacks_root.resolve())) if _under_root(
        runtime, loaded) else stack
    changing = [t for t in targets if t.edit is not None]
    flagged = [t for t in targets if t.failed_before]

    if dry_run or (plan_id is not None and changing):
        # The plan for the files as they are, annotated with the update (nothing written): what a
        # dry run shows, and what a real call with its plan_id must still match.
        # A tag kept in .env is given as an interpolation value instead: the transaction plans (and
        # pre-flights) the new image for real; a literal image's change is annotated on the plan.
        overrides = {t.edit.key: t.edit.value for t in changing if t.edit and t.edit.kind == "env"}
        planned = _annotate(await deploy(path, dry_run=True, env=overrides or None, **kwargs), targets, to)
        if planned.status == "planned" and planned.plan is not None:
            planids.remember(runtime.settings, loaded.name, planned.plan.plan_id, "update_stack")
        if dry_run or planned.status != "planned":
            return planned
        now = planned.plan.plan_id if planned.plan else None
        if plan_id != now:
            assert plan_id is not None
            elsewhere = planids.mismatch(runtime.settings, loaded.name, plan_id)  # another stack's: not "changed"
            finding = Finding(rule="plan-other-stack" if elsewhere else "plan-changed", severity="error",
                              category="deploy", message=elsewhere or "the files, images, registry or running "
                              "state changed since this plan_id", evidence=[f"asked {plan_id}, now {now}"])
            return planned.model_copy(update={"status": "blocked", "findings": [*planned.findings, finding],
                                              "next_steps": ["review the new plan (dry_run=true) and update with "
                                                             "its plan_id; nothing was changed"]})
    if flagged and not confirm:
        refused = [Finding(rule="failed-before", severity="error", category="history", service=t.service,
                           message=f"{t.ref_to} ({t.digest_to}) failed a deployment of this stack before: "
                           f"{t.failed_before}") for t in flagged]
        return DeployReport(status="blocked", stack=loaded.name, findings=refused, next_steps=[
            "these images failed a deployment of this stack before: update to another version, or call again "
            "with confirm=true to retry them; nothing was changed"])
    if changing and not dry_run:
        from server.ownership import require_ours

        # Nothing is written into a directory whose project runs from elsewhere (the deploy's
        # pre-flight would refuse it anyway, after the write).
        await require_ours(runtime.engine(), loaded.name, loaded.directory, "update_stack")
        # The files are written before the transaction takes the stack's lock: not while another
        # operation (a deploy, its rollback restoring files) runs on them. The window left between
        # this look and the lock is the length of one write.
        holder = runtime.operations().running(loaded.name)
        if holder is not None:
            return DeployReport(status="busy", stack=loaded.name, operation_id=holder.operation_id, next_steps=[
                f"another {holder.kind} runs on this stack: poll operation_status('{holder.operation_id}') "
                "instead of retrying; nothing was changed"])
    announced = await _announce(runtime, loaded.name, maintenance_message) if maintenance_message else None
    replaced = await _running_ids(runtime, loaded.name, {t.service for t in targets}) if prune else set()
    before = edits_mod.apply_edits([t.edit for t in changing if t.edit]) if changing else {}
    # Measured before the deploy records its own baseline: our edits are not drift in its plan.
    own = edits_mod.own_edits(runtime.settings, loaded.name, loaded.directory, before) if before else set()
    try:
        report = await deploy(path, dry_run=False, plan_id=None if changing else plan_id, **kwargs)
    except anyio.get_cancelled_exc_class():
        # The transaction runs detached from this request and goes on with the files written: they
        # are its to keep (or to put back through its own rollback), not ours to pull from under it.
        raise
    except BaseException:
        edits_mod.restore(before)  # it raised: the transaction is over, and rolled back if it began
        raise
    report = _annotate(report, targets, to)
    if announced is not None:  # the report says whether the announcement went out, first of its phases
        report = report.model_copy(update={"phases": [announced, *report.phases]})
    if own and report.plan is not None and report.plan.drift:
        plan = report.plan.model_copy(update={"drift": edits_mod.drop_own(report.plan.drift, own)})
        report = report.model_copy(update={"plan": plan})
    if report.status not in ("deployed", "unchanged"):
        # A rollback already put the last good deployment's files back (pins listed in .env's
        # COMPOSE_FILE) and recorded them as the drift baseline: writing our copy over them would
        # drop its pins and read as a hand edit. Without a rollback nothing ran on the new files.
        if before and report.rollback is None:
            edits_mod.restore(before)
            report = report.model_copy(update={"next_steps": [
                *report.next_steps, "the files update_stack changed were put back as they were"]})
        return report
    if report.status == "deployed" and prune:
        report = await _prune(runtime, report, targets, replaced, loaded.name)
    return report


async def _running_ids(runtime: Runtime, stack: str, services: set[str]) -> set[str]:
    """The image ids the services' containers run before the update: what it replaces, and so
    the only candidates of its cleanup."""
    try:
        return {c.image_id for c in await runtime.engine().compose_containers(stack)
                if c.service in services and c.image_id}
    except Exception as exc:  # no cleanup candidates is a smaller cleanup, never a failed update
        log.info("update: images before the update not read (%s)", exc)
        return set()


async def resolve(runtime: Runtime, loaded: LoadedStack, services: list[str] | None, images: dict[str, str],
                  to: str) -> list[Target]:
    """Per service in scope: its reference now and the one to run, with digests where known."""
    from server.deploy.project import user_files

    assert loaded.directory is not None
    scope = set(services or loaded.services)
    refs = {ref: svcs for ref, svcs in candidates(loaded).items() if scope & set(svcs)}
    checked = {c.image: c for c in await check_refs(runtime.engine(), refs)} if refs else {}
    targets: list[Target] = []
    for name in sorted(scope):
        ref = str((loaded.services.get(name) or {}).get("image") or "")
        if not ref:
            continue
        check = checked.get(ref)
        target = Target(name, ref, ref, digest_from=check.local_digest if check else None)
        if name in images:
            target.ref_to, target.why = images[name], "reference given"
        elif to != "digest" and check is not None:
            allowed = LEVELS[: LEVELS.index(to) + 1]  # type: ignore[arg-type,unused-ignore]
            ordered = sorted(check.newer, key=lambda n: -LEVELS.index(n.level))  # major first: the newest
            best = next((n.tag for n in ordered if n.level in allowed), None)
            if best:
                target.ref_to, target.why = with_tag(ref, best), f"newest {to}-level tag of the same shape"
        if target.ref_to == ref:
            if check is not None:
                target.digest_to = check.registry_digest
                target.why = {"digest_moved": "same tag, newer digest in its registry",
                              "current": "same tag, already the registry's digest"}.get(
                    check.status, check.note or "")
            targets.append(target)
            continue
        target.edit = edits_mod.plan_edit(loaded.directory, user_files(loaded.directory), name, target.ref_to)
        target.digest_to = await _registry_digest(runtime, target.ref_to)
        target.local_to = await runtime.engine().image_attrs(target.ref_to) is not None
        target.notes_link = await _notes_link(runtime, target.ref_to)
        targets.append(target)
    return targets


async def _registry_digest(runtime: Runtime, ref: str) -> str | None:
    from server.registry import RegistryView

    engine = runtime.engine()
    answer = await engine.registry_digest(ref, RegistryView.from_info(await engine.info()), 6.0,
                                          direct=engine.endpoint().local or not ref.startswith(("127.", "localhost")))
    return answer.digest


async def _notes_link(runtime: Runtime, ref: str) -> str | None:
    """The release-notes link the image's OCI labels give (local image, else its registry config)."""
    from server.registry import RegistryView

    engine = runtime.engine()
    attrs = await engine.image_attrs(ref)
    labels = ((attrs or {}).get("Config") or {}).get("Labels") if attrs else None
    if labels is None:
        config = await engine.registry_image_config(ref, RegistryView.from_info(await engine.info()), 6.0)
        labels = (config.config or {}).get("Labels")
    return notes_link(labels or {})


def notes_link(labels: dict[str, Any]) -> str | None:
    """A GitHub source's releases page, else the image's url or documentation label (http(s) only)."""
    source = str(labels.get(_NOTES_LABELS[0]) or "")
    if source.startswith("https://github.com/"):
        return source.rstrip("/").removesuffix(".git") + "/releases"
    for key in _NOTES_LABELS:
        if str(labels.get(key) or "").startswith(("https://", "http://")):
            return str(labels[key])
    return None


async def _failed_before(runtime: Runtime, stack: str, targets: list[Target]) -> None:
    """Mark the targets whose digest failed a deployment of this stack before (the memory's incidents)."""
    # Only what changes: a service that keeps running its image is no retry of anything.
    wanted = {t.digest_to: t for t in targets if t.digest_to and (t.edit is not None or t.digest_to != t.digest_from)}
    if not wanted:
        return

    def look() -> list[dict[str, Any]]:
        return runtime.memory().failed_incidents_with(stack, set(wanted))

    try:
        with anyio.move_on_after(MEMORY_WAIT_S):
            for incident in await anyio.to_thread.run_sync(look, abandon_on_cancel=True):
                for digest in incident.get("digests") or []:
                    target = wanted.get(str(digest).rsplit("@", 1)[-1])
                    if target is not None and not target.failed_before:
                        target.failed_before = f"incident {incident['incident_id']} ({incident.get('outcome')})"
    except Exception as exc:  # the memory is advice: an update never fails for it
        log.info("update: past failures not checked (%s)", exc)


def _annotate(report: DeployReport, targets: list[Target], to: str) -> DeployReport:
    """The transaction's plan with what the update changes, per service, and a plan_id over both."""
    if report.plan is None:
        return report
    by_name = {t.service: t for t in targets}
    services = []
    for entry in report.plan.services:
        t = by_name.get(entry.service)
        if t is None:
            services.append(entry)
            continue
        update: dict[str, Any] = {
            "image_from": f"{t.ref_from}@{t.digest_from}" if t.digest_from else t.ref_from,
            "image_to": f"{t.ref_to}@{t.digest_to}" if t.digest_to else t.ref_to,
            "release_notes": t.notes_link,
        }
        if t.edit is not None:
            update["reason"] = f"update {t.why}: {t.edit.describe()}; " + entry.reason
            if entry.action == "unchanged":
                update["action"] = "recreate"
            update["pull"] = entry.pull or not t.local_to
        elif t.why:
            update["reason"] = f"{entry.reason}; {t.why}"
        if t.failed_before:
            update["reason"] = f"FAILED BEFORE ({t.failed_before}): {update.get('reason', entry.reason)}"
        services.append(entry.model_copy(update=update))
    edits = sorted(t.edit.describe() for t in targets if t.edit)
    plan_id = report.plan.plan_id
    if edits:
        plan_id = hashlib.sha256(json.dumps([plan_id, edits, to]).encode()).hexdigest()[:32]
    plan = report.plan.model_copy(update={"services": services, "plan_id": plan_id})
    findings = list(report.findings) + [Finding(
        rule="failed-before", severity="warning", category="history", service=t.service,
        message=f"{t.ref_to} ({t.digest_to}) failed a deployment of this stack before: {t.failed_before}",
        fix="update to another version, or confirm=true to retry this one") for t in targets if t.failed_before]
    update_fields: dict[str, Any] = {"plan": plan, "findings": findings}
    if report.status == "planned":  # the plan phase counted the files as they are, before the update's edits
        n = len(plan.changes)
        update_fields["phases"] = [p.model_copy(update={"detail": f"{n} change(s) with the update's edits"})
                                   if p.name == "plan" else p for p in report.phases]
    if report.status == "planned":
        update_fields["next_steps"] = [f"update_stack(stack, same arguments, plan_id='{plan_id}') applies this plan"]
        flagged = [t.service for t in targets if t.failed_before]
        if flagged:
            why = f"failed-before image(s) for {', '.join(flagged)}"
            update_fields["needs_confirm"] = f"{report.needs_confirm}; {why}" if report.needs_confirm else why
    return report.model_copy(update=update_fields)


async def _prune(runtime: Runtime, report: DeployReport, targets: list[Target], replaced: set[str],
                 stack: str) -> DeployReport:
    import time

    from server.updates.prune import prune_replaced

    started = time.monotonic()
    try:
        pruned = await prune_replaced(runtime.engine(), replaced,
                                      [t.ref_from for t in targets] + [t.ref_to for t in targets],
                                      runtime.settings.stacks_root, runtime.settings.state_dir, stack)
        phase = Phase(name="prune", status="ok", duration_s=round(time.monotonic() - started, 2),
                      detail=pruned.describe())
    except Exception as exc:  # the update is done; a prune that fails is a note
        phase = Phase(name="prune", status="failed", duration_s=round(time.monotonic() - started, 2),
                      detail=f"old images not removed: {str(exc)[:200]}")
    return report.model_copy(update={"phases": [*report.phases, phase]})


async def _announce(runtime: Runtime, stack: str, message: str) -> Phase:
    """The maintenance message to the alert URLs (DSM_ALERT_URLS), before anything changes; the
    ``announce`` phase says whether it went out. Its key is this announcement's own: an alert of
    the same stack an hour ago does not swallow it as a duplicate."""
    import time

    from server.monitor.alerts import Alert, Alerter

    started = time.monotonic()
    alerter = Alerter(runtime.settings)
    key = f"update:{stack}:maintenance:{time.time_ns()}"
    status: Literal["ok", "failed", "skipped"] = "failed"
    try:
        sent = await alerter.send(Alert(key=key, level="warning", title=f"{stack}: maintenance",
                                        what_broke=message[:500], stack=stack))
        if sent:
            status, detail = "ok", f"maintenance message sent to {len(alerter.urls)} alert URL(s)"
        elif not alerter.enabled:
            status, detail = "skipped", "not announced: no alert URLs (DSM_ALERT_URLS)"
        else:
            detail = "not announced: the alert URLs did not take it (rate limit or delivery; see the log)"
    except Exception as exc:  # an announcement never stops the update
        log.warning("maintenance message for %s not sent", stack, exc_info=True)
        detail = f"not announced: {type(exc).__name__}"
    return Phase(name="announce", status=status, duration_s=round(time.monotonic() - started, 2), detail=detail)


def _under_root(runtime: Runtime, loaded: LoadedStack) -> bool:
    assert loaded.directory is not None
    return loaded.directory.resolve().is_relative_to(runtime.settings.stacks_root.resolve())
