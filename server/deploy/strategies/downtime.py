"""``planned_downtime`` (stop-first): databases, a single replica writing a volume, a fixed host
port, no healthcheck. The window is announced (progress, and a ``downtime`` phase in the report
and the journal) before anything stops; the transaction's backup (dumps included) is already
taken; the converging ``up`` then stops the old container and starts the new one, and the
transaction's health gate, smoke checks and verification judge it (a failure restores the data:
server/deploy/rollback.py)."""

from __future__ import annotations

from typing import ClassVar

from server.deploy.executor import RollContext, StrategyName
from server.deploy.strategies.update_config import seconds
from server.models import Finding
from server.stackmodel import LoadedStack


class PlannedDowntime:
    name: ClassVar[StrategyName] = "planned_downtime"

    def refuse(self, svc: str, stack: LoadedStack) -> Finding | None:
        return None

    async def roll(self, svc: str, ctx: RollContext) -> None:
        stack = ctx.change.stack
        running = await ctx.executor.fleet.containers(stack, svc, running=True)
        if not running:
            return  # nothing runs, nothing goes down
        stop_s = seconds(stack.services.get(svc, {}).get("stop_grace_period"), 10.0)
        window = stop_s + ctx.change.wait_s
        async with ctx.steps.phase("downtime", f"downtime: {svc} stops now (planned; back within {window:.0f}s "
                                               "at most, when its health gate passes)") as step:
            step.detail = (f"{svc}: stop-first, {len(running)} container(s); expected window at most {window:.0f}s "
                           f"(stop {stop_s:.0f}s + health gate {ctx.change.wait_s:.0f}s); backup taken before")
