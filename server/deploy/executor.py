"""The seam between the deploy transaction and whatever runs the containers.

The transaction (server/deploy/transaction.py) owns the order and the promises: pre-flight, plan,
lock, backup, execute, gate, smoke, verify, record, and on failure the one rollback. It knows
only this protocol; an ``Executor`` knows HOW a target applies a plan (Compose today:
server/deploy/compose_executor.py; Swarm and other engines plug in as other executors).

Inside the Compose executor each service is rolled by a ``Strategy``. Only ``recreate`` exists
yet (what ``up -d`` does); the plan names the strategy that will run, never one that will not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from server.deploy.health import GateResult, Watched
from server.deploy.report import DeployPlan, DeployReport
from server.deploy.steps import Run, StepLog
from server.models import Finding
from server.stackmodel import LoadedStack

if TYPE_CHECKING:
    from server.compose import ComposeRunner
    from server.engine import Engine
    from server.runtime import Runtime
    from server.settings import Settings

StrategyName = Literal["recreate", "rolling", "blue_green", "planned_downtime"]
OnWait = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Change:
    """What ``apply`` executes: the plan, on the services asked for (None: the whole stack)."""

    stack: LoadedStack
    plan: DeployPlan
    services: list[str] | None = None
    wait_s: float = 180.0
    op: Any = None
    """The journal's operation (child processes are recorded under it); None outside a transaction."""


@dataclass(frozen=True)
class Observed:
    """What runs now, as far as the transaction needs it."""

    ready: bool
    """Every asked-for service has a container and each one is ready (healthy, or done for a one-shot)."""
    services: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    """The version a rollback returns to, as the executor needs it."""

    stack: LoadedStack
    """The stack as it is being left (its directory is where the files go back)."""
    env: dict[str, str]
    target: str | None
    """Deployment id whose kept files go back (None: the backup's files)."""
    backup: Any
    pins: dict[str, str] = field(default_factory=dict)
    """service -> local image ref that ran (already tagged)."""
    originals: dict[str, str] = field(default_factory=dict)
    nothing_ran: bool = False
    """Nothing ran before the failed deploy: going back means removing its containers."""
    op: Any = None


@dataclass(frozen=True)
class Restored:
    """The old version's definition, back in place (not started yet: data goes first)."""

    stack: LoadedStack | None
    """The old version as its files render it, without our pins (None: nothing ran, nothing to start)."""
    pins: dict[str, str]
    notes: list[str]


@dataclass(frozen=True)
class Start:
    """Start (part of) a restored version: ``services`` None means all of it, orphans removed."""

    stack: LoadedStack
    env: dict[str, str]
    services: list[str] | None
    timeout_s: float
    what: str
    op: Any = None


class Executor(Protocol):
    async def observe(self, stack: LoadedStack, services: list[str] | None) -> Observed: ...

    async def apply(self, change: Change, steps: StepLog) -> None:
        """Bring the stack to the plan. Raises Blocked (nothing changed) or StepFailed."""

    async def gate(self, stack: LoadedStack, watched: list[Watched], timeout_s: float,
                   on_wait: OnWait) -> GateResult:
        """The health gate on the services the plan started."""

    async def restore(self, snapshot: Snapshot, steps: StepLog) -> Restored:
        """Put the old version's definition back (files, the images it ran pinned); when nothing
        ran before, remove the failed version's containers (never a volume)."""

    async def start(self, start: Start) -> None:
        """Start a restored version (or its databases alone: data first)."""


@dataclass
class RollContext:
    """What a strategy gets to roll one service."""

    change: Change
    steps: StepLog
    executor: Any


class Strategy(Protocol):
    name: ClassVar[StrategyName]

    def refuse(self, svc: str, stack: LoadedStack) -> Finding | None:
        """Why this strategy cannot run for ``svc`` here (None: it can)."""

    async def roll(self, svc: str, ctx: RollContext) -> None:
        """Bring ``svc`` to its new version before the executor's converging ``up``."""


class RollbackHost(Protocol):
    """What the rollback (server/deploy/rollback.py) needs of the transaction that calls it
    (server/deploy/transaction.py): named here so the rollback does not import the transaction."""

    runtime: Runtime
    settings: Settings
    executor: Executor

    @property
    def engine(self) -> Engine: ...

    @property
    def compose(self) -> ComposeRunner: ...

    def steps(self, run: Run) -> StepLog: ...

    async def tell(self, message: str, advance: bool = True) -> None: ...

    async def _ask(self, question: str) -> bool: ...

    async def _record_deployment(self, **fields: Any) -> str: ...

    def _report(self, run: Run, status: str, **extra: Any) -> DeployReport: ...
