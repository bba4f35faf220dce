"""``recreate``: stop the old container, start the new one (what ``docker compose up -d`` does).
Its roll is the Compose executor's converging ``up``: nothing to do per service beforehand."""

from __future__ import annotations

from typing import ClassVar

from server.deploy.executor import RollContext, StrategyName
from server.models import Finding
from server.stackmodel import LoadedStack


class Recreate:
    name: ClassVar[StrategyName] = "recreate"

    def refuse(self, svc: str, stack: LoadedStack) -> Finding | None:
        return None

    async def roll(self, svc: str, ctx: RollContext) -> None:
        return None


RECREATE = Recreate()
