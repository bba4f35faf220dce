"""``rolling`` (start-first, zero downtime) for a service that can run two copies at once.

Per batch of ``update_config.parallelism`` containers: scale up beside the old containers (new
config, old ones untouched: ``up --no-deps --no-recreate --no-start --scale``, as docker-rollout
scales), start the new ones under their own names only, gate them by id (ready, then still ready
for ``monitor``), give them the service's name (they take traffic from then on; Docker's DNS
answered ``svc`` with a booting container before), then take as many old containers out of traffic
(server/deploy/strategies/fleet.py: the x-dsm ``drain`` hook, else off the networks), wait
x-dsm ``drain_s``, stop and remove them; ``delay`` between batches. ``order: stop-first``
retires the old batch before starting the new one. The executor's ``up`` ran before, without
this service (its dependencies, a migration say, are in their new version), so nothing but this
strategy replaces its containers.

A new container that fails its gate is removed; the old ones it was to replace were never
touched and keep serving. Then ``update_config.failure_action`` (server/deploy/strategies/
update_config.py): rollback (StepFailed: the transaction's rollback, which finds the untouched
old containers running and leaves them be), pause (StepFailed with ``pause``: no rollback) or
continue (the remaining batches are tried, then StepFailed naming every failing container).
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio

from server.deploy.executor import RollContext, StrategyName
from server.deploy.steps import StepFailed
from server.deploy.strategies.fleet import Failure
from server.deploy.strategies.select import replicas_of, rolling_refusal
from server.deploy.strategies.update_config import UpdateConfig, seconds
from server.models import Finding
from server.stackmodel import LoadedStack


class RolloutFailed(StepFailed):
    """A rolling update stopped on a failing new container; ``pause``: leave it there, no rollback."""

    def __init__(self, why: str, service: str, evidence: list[str], *, pause: bool = False,
                 untouched: list[str] | None = None) -> None:
        super().__init__("rolling", why, service, evidence)
        self.pause = pause
        self.untouched = untouched or []
        """Old containers never stopped: the rollback need not recreate them."""


class Rolling:
    name: ClassVar[StrategyName] = "rolling"

    def refuse(self, svc: str, stack: LoadedStack) -> Finding | None:
        why = rolling_refusal(stack.services.get(svc, {}), database=False, healthcheck=True)
        return None if why is None else Finding(rule="strategy-refused", severity="error", category="deploy",
                                                service=svc, message=f"rolling cannot run for {svc}: {why}")

    async def roll(self, svc: str, ctx: RollContext) -> None:
        stack, change = ctx.change.stack, ctx.change
        fleet = ctx.executor.fleet
        body: dict[str, Any] = stack.services.get(svc, {})
        settings = stack.service_settings_for(svc)
        # Every old container, a stopped one too: left behind, the converging up would scale the
        # service down by removing containers it picks.
        old = await fleet.containers(stack, svc)
        if not old:
            return  # none yet: the converging up creates it
        cfg = UpdateConfig.of(body)
        desired = replicas_of(body)
        size = cfg.batch(max(desired, 1))
        tolerated = int(cfg.max_failure_ratio * desired)
        stop_s = seconds(body.get("stop_grace_period"), 10.0)
        waiting, new, kept, failures, notes = list(old), [], [], [], []  # type: ignore[var-annotated]
        retried = done = 0

        async def tell(message: str) -> None:
            await ctx.steps.tell(message, False)

        async def retire(ids: list[str]) -> None:
            if not ids:
                return
            for cid in ids:  # every one out of traffic first, then one drain wait for all
                notes.append(await fleet.out_of_traffic(stack, cid, settings.drain))
            await tell(f"rolling {svc}: {len(ids)} old container(s) out of traffic, draining {settings.drain_s:.0f}s")
            await anyio.sleep(settings.drain_s)
            for cid in ids:
                await fleet.retire(cid, stop_s)

        async with ctx.steps.phase("rolling", f"rolling {svc}: {len(old)} -> {desired} container(s), "
                                              f"{size} at a time, {cfg.order}") as step:
            while done < desired:
                k = min(size, desired - done)
                leaving = waiting[:k]
                if cfg.order == "stop-first":
                    await retire(leaving)
                    waiting = waiting[len(leaving):]
                before = await fleet.containers(stack, svc)
                await fleet.scale(change, svc, len(before) + k)
                created = [c for c in await fleet.containers(stack, svc) if c not in before]
                for cid in created:  # off the service's DNS name until gated, then started
                    await fleet.hide(cid, svc)
                    await fleet.start(cid)
                failure = (Failure(svc, "docker compose created no new container", []) if not created else
                           await fleet.judge(svc, created, timeout_s=change.wait_s, monitor_s=cfg.monitor_s,
                                             tell=tell))
                if failure is None:
                    for cid in created:  # gated: now it takes traffic under the service's name
                        await fleet.reveal(cid, svc)
                if failure is not None:
                    await fleet.discard(created)
                    if retried < tolerated:  # max_failure_ratio: this share may fail once and be retried
                        retried += 1
                        notes.append(f"{failure.container} {failure.why}: retried (max_failure_ratio)")
                        continue
                    failures.append(failure)
                    if cfg.failure_action != "continue":
                        step.detail = self._detail(svc, new, failures, notes)
                        untouched = waiting if cfg.order == "start-first" else waiting[len(leaving):]
                        raise RolloutFailed(self._why(svc, failures, cfg, len(new)), svc, self._evidence(failures),
                                            pause=cfg.failure_action == "pause", untouched=list(untouched))
                    if cfg.order == "start-first":
                        kept.extend(leaving)  # their replacements failed: they keep serving
                        waiting = waiting[len(leaving):]
                    done += k
                    continue
                new.extend(created)
                done += k
                if cfg.order == "start-first":
                    await retire(leaving)
                    waiting = waiting[len(leaving):]
                if done < desired and cfg.delay_s:
                    await anyio.sleep(cfg.delay_s)
            await retire(waiting)  # scaled down meanwhile: the old containers beyond ``desired``
            step.detail = self._detail(svc, new, failures, notes)
            if failures:
                raise RolloutFailed(self._why(svc, failures, cfg, len(new)), svc, self._evidence(failures),
                                    untouched=kept)

    @staticmethod
    def _why(svc: str, failures: list[Failure], cfg: UpdateConfig, replaced: int) -> str:
        first = failures[0]
        tail = {"rollback": "the old containers it was to replace were never stopped and keep serving",
                "pause": "paused (update_config.failure_action: pause): no rollback, "
                         f"{replaced} container(s) already replaced",
                "continue": f"{len(failures)} batch(es) failed after trying every batch "
                            "(update_config.failure_action: continue)"}[cfg.failure_action]
        return f"{svc}: new container {first.container} {first.why}; removed, {tail}"

    @staticmethod
    def _evidence(failures: list[Failure]) -> list[str]:
        return [line for f in failures for line in [f"{f.container}: {f.why}", *f.evidence]][:20]

    @staticmethod
    def _detail(svc: str, new: list[str], failures: list[Failure], notes: list[str]) -> str:
        parts = [f"{svc}: {len(new)} new container(s) gated by id ({', '.join(c[:12] for c in new)})" if new
                 else f"{svc}: no new container passed its gate"]
        if failures:
            parts.append("failed: " + ", ".join(f"{f.container} {f.why}" for f in failures))
        return "; ".join([*parts, *notes])[:480]
