"""scale_service's input and answer (light: the tool module imports them at start-up)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field

from server.deploy.report import DeployStatus
from server.models import Frozen


@dataclasses.dataclass(frozen=True)
class Ask:
    replicas: int | None = None
    cpus: float | None = None
    memory: str | None = None
    reserve_cpus: float | None = None
    reserve_memory: str | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in dataclasses.astuple(self))


class Suggestion(Frozen):
    memory: str | None = Field(default=None, description="Memory limit to pass as memory.")
    reserve_memory: str | None = None
    cpus: float | None = None
    basis: str


class ScaleReport(Frozen):
    status: DeployStatus | Literal["suggested"]
    stack: str
    service: str
    changes: list[str] = Field(default_factory=list, description="What changes, from -> to.")
    resources: str = Field(default="", description="Whether the host has the memory and CPUs for it.")
    suggestion: Suggestion | None = None
    deploy: dict[str, Any] | None = Field(default=None, description="deploy_stack's report of the deploy that "
                                          "applied it.")
    next_steps: list[str] = Field(default_factory=list)
