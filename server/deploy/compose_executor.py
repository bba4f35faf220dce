"""ComposeExecutor: a plan executed by Docker Compose on the runtime's engine.

``apply``: ``pull`` of what the plan marks (healthchecks unknown at the pre-flight checked again
on the now-local images); ``planned_downtime`` announces its window; one ``up -d
--remove-orphans`` of everything but the services a strategy rolls itself (networks, volumes,
orphans, new services, one-shots such as migrations, ``recreate`` and ``planned_downtime``
services); then each such service rolled by its Strategy (server/deploy/strategies/, in
dependency order), its dependencies already in their new version. ``gate``: the
health gate on the plan's services. ``restore``/``start``: the rollback's file and pin restore,
and its ``up``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from server.compose import ComposeRunner, services_argv
from server.deploy import override, snapshots
from server.deploy.executor import (
    Change,
    Observed,
    OnWait,
    Restored,
    RollContext,
    Snapshot,
    Start,
    Strategy,
)
from server.deploy.health import GateResult, Watched, run_gate
from server.deploy.project import compose_project, fresh_project
from server.deploy.steps import Blocked, StepFailed, StepLog, brief, completed_dep, on_start, watched
from server.deploy.strategies.fleet import ComposeFleet
from server.deploy.strategies.registry import RECREATE, strategy_named
from server.deploy.strategies.rolling import RolloutFailed
from server.deploy.timeouts import deploy_up_timeout_s
from server.engine import Engine
from server.errors import DsmError
from server.models import Finding
from server.redact import Scrubber
from server.stackmodel import LoadedStack

log = logging.getLogger(__name__)

UP_ROLLED = frozenset({"recreate", "planned_downtime"})
"""Strategies whose services the converging ``up`` replaces (the others roll their service themselves)."""


class ComposeExecutor:
    def __init__(self, runtime: Any, strategies: dict[str, Strategy] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.strategies: dict[str, Strategy] = dict(strategies or {})
        """Per-service overrides (tests); otherwise the plan's strategy for the service runs."""
        self.fleet = ComposeFleet(self)
        self.untouched: set[str] = set()
        """Services whose rolling update failed before any old container stopped: a rollback
        leaves their running containers as they are (server/deploy/strategies/rolling.py)."""
        self.changed: set[str] | None = None
        """Services the deploy's plan changes (None: no deploy applied by this executor yet)."""

    @property
    def compose(self) -> ComposeRunner:
        return self.runtime.compose()  # type: ignore[no-any-return,unused-ignore]

    @property
    def engine(self) -> Engine:
        return self.runtime.engine()  # type: ignore[no-any-return,unused-ignore]

    def strategy(self, service: str, plan: Any = None) -> Strategy:
        if service in self.strategies:
            return self.strategies[service]
        named = next((s.strategy for s in (plan.services if plan is not None else []) if s.service == service), None)
        return strategy_named(named) if named else RECREATE

    # -- deploy ---------------------------------------------------------------------------------
    async def apply(self, change: Change, steps: StepLog) -> None:
        stack, plan = change.stack, change.plan
        assert stack.directory is not None
        scrub = Scrubber(stack.secret_values)
        pulls = sorted({s.service for s in plan.services if s.pull})
        async with steps.phase("pull", f"pull: {', '.join(pulls) or 'nothing missing'}") as step:
            if pulls:
                try:
                    await self.compose.run_project(compose_project(stack, with_override=False),
                                                   ["pull", "--quiet", *services_argv(pulls)], scrub=scrub,
                                                   what="docker compose pull")
                except DsmError as exc:
                    raise Blocked("pull", brief(exc), [Finding(
                        rule="image-unavailable", severity="error", category="images", message=brief(exc))]) from None
                missing = await missing_healthchecks(self.engine, stack, pulls)
                if missing:
                    raise Blocked("pull", "a service still has no healthcheck now that its image is local", missing)
            step.status, step.detail = ("ok", f"pulled {', '.join(pulls)}") if pulls else ("skipped", "all local")

        override.clear_pins(stack.directory)  # a deploy states its own images; a failure restores the pins
        ctx = RollContext(change, steps, self)
        self.untouched = set()
        self.changed = {s.service for s in plan.changes}
        changed = dependency_order(stack, [s.service for s in plan.changes if s.action == "recreate"])
        rolled = [n for n in changed if self.strategy(n, plan).name not in UP_ROLLED]
        for name in changed:  # planned_downtime announces its window before anything stops
            if name not in rolled:
                await self._roll(name, ctx, plan)
        async with steps.phase("up", "up: creating networks and volumes, starting containers") as step:
            # Everything but the services a strategy rolls itself: they (and their old containers)
            # must not be recreated by Compose. ``--no-deps`` only drops the edges to them.
            rest = [w.service for w in watched(stack, plan, change.services) if w.service not in rolled]
            argv = (["up", "-d", "--remove-orphans", *services_argv(change.services)] if not rolled else
                    ["up", "-d", "--remove-orphans", "--no-deps", *services_argv(rest)])
            if rolled and not rest:
                step.status, step.detail = "skipped", f"only {', '.join(rolled)} changed: rolled below"
            else:
                await self._up(change, argv, step)
                step.detail = ", ".join(f"{s.service} {s.action}" for s in plan.changes
                                        if s.service not in rolled)[:400]
        for name in rolled:  # after their dependencies are up in their new version (a migration, say)
            await self._roll(name, ctx, plan)

    async def _roll(self, name: str, ctx: RollContext, plan: Any) -> None:
        try:
            await self.strategy(name, plan).roll(name, ctx)
        except RolloutFailed as failed:
            if failed.untouched:
                self.untouched.add(name)
            raise
        except DsmError as exc:  # compose or the engine refused mid-roll: the one rollback path
            strategy = self.strategy(name, plan).name
            raise StepFailed(strategy, f"{strategy} of {name} failed: {brief(exc)}", name,
                             [ln for ln in getattr(exc, "stderr", "").splitlines()[-8:] if ln.strip()]) from None

    async def _up(self, change: Change, argv: list[str], step: Any) -> None:
        stack, plan = change.stack, change.plan
        try:
            await self.compose.run_project(compose_project(stack), argv, scrub=Scrubber(stack.secret_values),
                                           what="docker compose up",
                                           timeout_s=deploy_up_timeout_s(stack, plan, change.wait_s),
                                           **on_start(self.compose, change.op))
        except DsmError as exc:
            step.detail = brief(exc)
            stderr = [ln for ln in getattr(exc, "stderr", "").splitlines()[-8:] if ln.strip()]
            culprit = await self._diagnose(stack, watched(stack, plan, change.services))
            raise StepFailed("up", f"docker compose up failed: {brief(exc)}" + (
                f" ({culprit.service} {culprit.why})" if culprit else ""),
                culprit.service if culprit else None, [*(culprit.evidence if culprit else []), *stderr]) from None

    async def gate(self, stack: LoadedStack, watched: list[Watched], timeout_s: float, on_wait: OnWait) -> GateResult:
        return await run_gate(self.engine, stack.name, watched, timeout_s=timeout_s, on_wait=on_wait)

    async def observe(self, stack: LoadedStack, services: list[str] | None) -> Observed:
        from server.deploy.health import assess
        from server.engine import inspect_container

        containers = await self.engine.compose_containers(stack.name)
        wanted = set(services or stack.services)
        seen: set[str] = set()
        ready = True
        for c in containers:
            if c.service not in wanted:
                continue
            info = await inspect_container(self.engine, c.id)
            if info is None:
                return Observed(ready=False, services=frozenset(seen))
            a = assess(info, Watched(c.service or "", stack.service_settings_for(c.service or "").is_one_shot),
                       baseline_restarts=int(info.get("RestartCount") or 0), now=time.time())
            if a.verdict != "ready":
                ready = False
                break
            seen.add(c.service or "")
        return Observed(ready=ready and bool(seen), services=frozenset(seen))

    # -- rollback -------------------------------------------------------------------------------
    async def restore(self, snapshot: Snapshot, steps: StepLog) -> Restored:
        """The old version's files (the kept deployment's, else the backup's) and, once rendered,
        its images pinned in ``compose.dsm.yaml`` for the services those files define."""
        from server.stackload import load_stack

        stack = snapshot.stack
        assert stack.directory is not None
        notes = await snapshots.put_back(self.settings, self.runtime.backups(), snapshot)
        if snapshot.nothing_ran:  # back where it started is no containers (volumes kept)
            project = fresh_project(self.settings, stack.directory, stack.name, snapshot.env)
            await self.compose.run_project(project, ["down", "--remove-orphans"], scrub=Scrubber(stack.secret_values),
                                           what="docker compose down (rollback)", **on_start(self.compose, snapshot.op))
            return Restored(None, {}, [*notes, "nothing ran before: the new containers were removed, volumes kept"])
        old = await load_stack(self.settings, self.compose, path=str(stack.directory), env=snapshot.env,
                               dsm_override=False)
        pins = {s: ref for s, ref in snapshot.pins.items() if s in old.services}
        # Services whose old containers still run: those a strategy never stopped, and those the plan
        # did not change (a proxy in front of the failed service: recreating it is an outage).
        # An explicit rollback changed nothing yet: what already runs as the target defines it stays.
        kept = self.untouched | (set(pins) - self.changed if self.changed is not None else
                                 await self._as_defined(old))
        for name in sorted(kept & set(pins)):
            # Pinning would change their config hash and recreate them (downtime for nothing).
            # Unpinned is safe when the files' reference is the image they run.
            ran = await self.engine.image_attrs(pins[name])
            named = await self.engine.image_attrs(str(old.services[name].get("image") or ""))
            if ran and named and ran.get("Id") == named.get("Id"):
                del pins[name]
                notes.append(f"{name}: its running containers are already that version; left running as they are")
        override.write_pins(stack.directory, pins, originals={s: o for s, o in snapshot.originals.items() if o},
                            defined=old.services)
        notes.append(f"images pinned in compose.dsm.yaml: {', '.join(sorted(pins)) or 'none'}")
        return Restored(old, pins, notes)

    async def start(self, start: Start) -> None:
        stack = start.stack
        assert stack.directory is not None
        project = fresh_project(self.settings, stack.directory, stack.name, start.env)
        argv = ["up", "-d", "--remove-orphans"] if start.services is None else ["up", "-d", *start.services]
        await self.compose.run_project(project, argv, scrub=Scrubber(stack.secret_values), what=start.what,
                                       timeout_s=start.timeout_s, **on_start(self.compose, start.op))

    # -- helpers --------------------------------------------------------------------------------
    async def _as_defined(self, old: LoadedStack) -> set[str]:
        """Services whose every container runs, with the config hash the restored files give it
        (a proxy in front of the rolled-back service: recreating it would be an outage for nothing)."""
        from server.deploy.plan import HASH_LABEL, ONEOFF_LABEL, config_hashes

        try:
            hashes = await config_hashes(self.compose, compose_project(old), Scrubber(old.secret_values))
        except Exception:  # cannot tell: every service is started again, as before this shortcut
            log.debug("rollback: config hashes of the restored files unknown", exc_info=True)
            return set()
        running: dict[str, list[str]] = {}
        for c in await self.engine.compose_containers(old.name):
            if c.service and c.labels.get(ONEOFF_LABEL) != "True":
                running.setdefault(c.service, []).append(c.labels.get(HASH_LABEL, "") if c.running else "")
        return {s for s, seen in running.items() if s in hashes and all(h == hashes[s] for h in seen)}

    async def _diagnose(self, stack: LoadedStack, watched: list[Watched]) -> Any:
        """After a failed ``up``: the first container that the gate would fail, with its evidence."""
        from server.deploy.health import assess, log_tail
        from server.engine import inspect_container

        by_service = {w.service: w for w in watched}
        for c in await self.engine.compose_containers(stack.name):
            if c.service not in by_service:
                continue
            info = await inspect_container(self.engine, c.id)
            if info is None:
                continue
            a = assess(info, by_service[c.service or ""], baseline_restarts=0, now=time.time(), grace_s=0)
            if a.verdict == "failed":
                a.evidence.extend(await log_tail(self.engine, c.id))
                return a
        return None


def dependency_order(stack: LoadedStack, names: list[str]) -> list[str]:
    """``names`` with each service after those it depends on (a dependency rolls first)."""
    wanted, done, out = set(names), set(), []

    def visit(name: str, path: frozenset[str]) -> None:
        if name in done or name in path:
            return
        for dep in sorted(str(d) for d in (stack.services.get(name, {}).get("depends_on") or {})):
            visit(dep, path | {name})
        done.add(name)
        if name in wanted:
            out.append(name)

    for name in sorted(names):
        visit(name, frozenset())
    return out


async def missing_healthchecks(engine: Engine, stack: LoadedStack, pulled: list[str]) -> list[Finding]:
    """Services whose healthcheck was unknown before the pull and, the image now local, has none."""
    from server.policy import finding
    from server.policy.waivers import apply_policy
    from server.stackview import has_healthcheck

    raw = []
    for name in pulled:
        body = stack.services.get(name, {})
        if has_healthcheck(body) or stack.service_settings_for(name).is_one_shot or completed_dep(stack, name):
            continue
        attrs = await engine.image_attrs(str(body.get("image") or ""))
        if attrs and not ((attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test"):
            raw.append(finding(
                "missing-healthcheck", f"service {name!r} has no healthcheck: none in the compose file and "
                "none in the image just pulled; the deploy stops before up", service=name,
                line=stack.line_of(name), evidence=["the image was not local at the pre-flight"]))
    return [f for f in apply_policy(stack, raw) if f.severity == "error" and f.rule == "missing-healthcheck"]
