"""validate_compose: render the stack, lint it, optionally check the live host, build the go/no-go report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from server.compose import ComposeRunner, client_env
from server.engine import Engine
from server.errors import DockerUnavailable, EngineError
from server.models import Finding, sort_findings
from server.policy import LintContext, apply_policy, finding, run_rules
from server.preflight.facts import gather_facts
from server.preflight.progress import Progress, report_progress
from server.preflight.reports import ValidationReport
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stackmodel import LoadedStack

if TYPE_CHECKING:
    from server.memory.service import Memory


async def validate(
    settings: Settings,
    compose: ComposeRunner,
    engine: Callable[[], Engine],
    *,
    path: str | None = None,
    content: str | None = None,
    env: Mapping[str, str] | None = None,
    check_host: bool = True,
    progress: Progress | None = None,
    memory: Callable[[], Memory] | None = None,
) -> ValidationReport:
    """Render, lint and (optionally) check the host; never raises for problems of the stack itself."""
    total = 3 if check_host else 2
    await report_progress(progress, 0, total, "rendering with docker compose config")
    try:
        stack = await load_stack(settings, compose, path=path, content=content, env=env)
    except StackRenderFailed as exc:
        findings = sort_findings(exc.findings)
        return _validation(exc.name, path, valid=False, services=[], findings=findings, host_checked=False, notes=[])
    await report_progress(progress, 1, total, f"rendered {len(stack.services)} services; linting")
    # check_host=False never touches the engine (lints the files alone, with no daemon at all).
    return await validate_loaded(
        settings, stack, engine() if check_host else None, env=env, check_host=check_host, progress=progress,
        memory=memory,
    )


async def validate_loaded(
    settings: Settings,
    stack: LoadedStack,
    engine: Engine | None,
    *,
    env: Mapping[str, str] | None = None,
    check_host: bool = True,
    progress: Progress | None = None,
    memory: Callable[[], Memory] | None = None,
) -> ValidationReport:
    """Lint (and host-check) a stack that is already loaded: the deploy pipeline keeps the one
    LoadedStack it deploys instead of rendering twice. With ``memory``, a failed incident of this
    stack with an image it would run again is a ``failed-before`` warning (see preflight.history)."""
    total = 3 if check_host else 2
    ctx = source_context(stack, env=env)
    notes: list[str] = []
    extra: list[Finding] = []
    claims: list[Finding] = []  # not subject to x-dsm policy: a stack cannot waive another project's claim
    if check_host:
        assert engine is not None, "check_host needs the engine"
        try:
            facts = (await gather_facts(engine, stack)).facts
            ctx = dataclasses.replace(ctx, facts=facts)
            notes.extend(facts.notes)
            claims = await host_claims(engine, stack)
        except (DockerUnavailable, EngineError) as exc:
            extra.append(
                finding(
                    "engine-unreachable",
                    f"the host could not be checked: {exc.what}",
                    fix="start the Docker daemon or fix DOCKER_HOST / DOCKER_CONTEXT, then validate again "
                    "(check_host=false lints the file alone)",
                )
            )
        await report_progress(progress, 2, total, "host checked")
    else:
        from server.preflight.datadirs import shared_data_findings

        claims = shared_data_findings(stack, [])  # the stack's own databases, without the host
    from server.deploy.swarm import is_swarm

    linted = run_rules(ctx)
    if is_swarm(stack):  # x-dsm mode: swarm: what docker stack deploy and the swarm's nodes allow
        from server.preflight.swarm import SWARM_REPLACES, swarm_findings

        linted = [f for f in linted if f.rule not in SWARM_REPLACES]
        try:
            extra.extend(await swarm_findings(stack, engine if check_host else None))
        except Exception as exc:  # a CLI or engine error: said, not a crash of the whole pre-flight
            extra.append(finding("swarm-not-manager", f"the swarm could not be checked: {exc}"))
    findings = apply_policy(stack, [*linted, *extra])
    from server.safety.registries import registry_findings

    # Operator policy and what other projects claim: no x-dsm waiver applies to either.
    findings = sort_findings([*findings, *registry_findings(settings, stack), *claims])
    if memory is not None:
        from server.preflight.history import failed_before

        past = await failed_before(stack, engine, memory)
        if past:
            findings = sort_findings([*findings, *past])
    if stack.inactive:
        findings = sort_findings([*findings, *inactive_findings(stack, ctx)])
        notes.append(
            "not started by `up` (no active profile enables them), linted apart as warnings: "
            + ", ".join(f"{svc} (profile {', '.join(p)})" for svc, p in sorted(stack.inactive.items()))
        )
    await report_progress(progress, total, total, "done")
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    rel = str(stack.directory.relative_to(root)) if stack.directory and stack.directory.is_relative_to(root) else None
    return _validation(
        stack.name, rel, valid=True, services=sorted(stack.services), findings=findings,
        host_checked=check_host and not extra, notes=notes,
    )


async def host_claims(engine: Engine, stack: LoadedStack) -> list[Finding]:
    """What other projects on the host claim: the project name run from another directory, this
    directory under another name, a database's data directory (server.ownership, preflight.datadirs)."""
    from server.ownership import ownership_findings
    from server.preflight.datadirs import shared_data_findings

    rows = list(await engine.call(lambda c: c.api.containers(all=True), "list containers") or [])
    found = ownership_findings(rows, stack.name, stack.directory) if stack.directory is not None else []
    return found + shared_data_findings(stack, rows)


def _validation(
    name: str, path: str | None, *, valid: bool, services: list[str], findings: list[Finding],
    host_checked: bool, notes: list[str],
) -> ValidationReport:
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    infos = len(findings) - errors - warnings
    go = valid and errors == 0
    if not valid:
        summary = f"NO-GO: Compose cannot render the stack ({errors} error(s)); fix the findings first."
    elif go:
        summary = f"GO: {len(services)} service(s), no errors, {warnings} warning(s), {infos} info."
    else:
        rules = sorted({f.rule for f in findings if f.severity == "error"})
        summary = f"NO-GO: {errors} error(s) ({', '.join(rules)}), {warnings} warning(s), {infos} info."
    if valid and not host_checked:
        summary += " Host not checked."
    return ValidationReport(
        stack=name, path=path, valid=valid, go=go, host_checked=host_checked, services=services, summary=summary,
        errors=errors, warnings=warnings, infos=infos, findings=findings, notes=notes,
    )


def inactive_findings(stack: LoadedStack, ctx: LintContext) -> list[Finding]:
    """The lint pass over services behind inactive profiles: capped at warning, naming the profile."""
    if not stack.inactive_rendered:
        return [
            Finding(
                rule="compose-invalid",
                severity="warning",
                category="syntax",
                message="the services behind inactive profiles ("
                + ", ".join(sorted(stack.inactive))
                + ") could not be rendered with every profile enabled; enabling their profile will fail",
            )
        ]
    full = dataclasses.replace(stack, rendered=stack.inactive_rendered)
    # Host facts describe the active services only; the inactive pass lints the file.
    full_ctx = dataclasses.replace(ctx, stack=full, facts=None)
    out: list[Finding] = []
    for f in apply_policy(full, run_rules(full_ctx)):
        if f.service not in stack.inactive:
            continue
        profiles = ", ".join(repr(p) for p in stack.inactive[f.service])
        out.append(
            f.model_copy(
                update={
                    "severity": "warning" if f.severity == "error" else f.severity,
                    "message": f"[not started by `up`: enabled by profile {profiles}] {f.message}",
                }
            )
        )
    return out


def source_context(stack: LoadedStack, *, env: Mapping[str, str] | None) -> LintContext:
    """The lint context with the names Compose had a value for, for the unset-variable rule."""
    # What Compose interpolates from: its own environment (plus the two names it sets itself),
    # the given env, and the stack's .env.
    defined = set(client_env().keys()) | {"COMPOSE_PROJECT_NAME", "PWD"} | set(env or {}) | stack.dotenv_keys
    return LintContext(stack=stack, defined_variables=frozenset(defined))
