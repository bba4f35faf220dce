"""Targets: where things run (issue 19). One Target per engine of DSM_ENGINES, one Runtime each.

A Target's endpoint is resolved once by its Runtime's EndpointSource and shared by every adapter
of that Runtime (Compose, docker-py, registry reads, backups): nothing runs ``up`` on one engine
while another is checked. The default target (the first of DSM_ENGINES, or the current engine
when it is unset) is the server's own Runtime and keeps today's state paths; every other target's
Runtime keeps its state (journal, locks, backups, pins, watcher state) under
``state_dir/engines/<name>``, so two engines each running a project ``app`` never collide.

A stack says where it runs with x-dsm ``engine`` (else the default). Tools ask :meth:`Targets.for_stack`
for the Runtime of a stack; views over every engine go through :meth:`Targets.each`, which asks
the engines in parallel and turns one that does not answer within a few seconds into an
:class:`Unreachable` result instead of an error for all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from server.enginespec import EngineSpec
from server.errors import DockerUnavailable, DsmError, ReadOnlyMode, StackNotFound

if TYPE_CHECKING:
    from server.runtime import Runtime
    from server.settings import Settings
    from server.stacks import StackLocation

log = logging.getLogger("docker_stack_mcp.targets")

T = TypeVar("T")
IMPLICIT = "default"
"""The name of the one target when DSM_ENGINES is unset."""
ENGINE_TIMEOUT_S = 5.0
"""How long a view over every engine waits for one engine before calling it unreachable."""


@dataclass(frozen=True)
class Target:
    """One engine the server may use."""

    name: str
    spec: EngineSpec | None
    """Its DSM_ENGINES entry; None: the current engine (DOCKER_HOST, DOCKER_CONTEXT, current context)."""
    default: bool = True

    @property
    def read_only(self) -> bool:
        return self.spec is not None and self.spec.read_only

    def state_dir(self, root: Path) -> Path:
        """Where this target's state lives: the default target keeps the paths it always had."""
        return root if self.default else root / "engines" / self.name


def targets_of(settings: Settings) -> tuple[Target, ...]:
    if not settings.engines:
        return (Target(IMPLICIT, None),)
    return tuple(Target(spec.name, spec, default=i == 0) for i, spec in enumerate(settings.engines))


class EngineReadOnly(ReadOnlyMode):
    """The stack's engine is marked (ro) in DSM_ENGINES."""


class UnknownEngine(DsmError):
    """x-dsm ``engine`` names an engine DSM_ENGINES does not list."""


class EngineAmbiguous(DsmError):
    """A stack name runs on several engines and its files do not say which one is meant."""


@dataclass(frozen=True)
class Unreachable:
    """An engine that did not answer a view over every engine."""

    engine: str
    reason: str
    state: str = "unreachable"
    """unreachable (no answer), or error (it answered with a refusal: the view goes on without it)."""

    def describe(self) -> str:
        return f"engine {self.engine!r} {self.state}: {self.reason}"


def declared_engine(location: StackLocation) -> str | None:
    """x-dsm ``engine`` of the stack's files (the last file that sets it wins, as Compose merges
    top-level extensions); read from the screened source, so no Compose render is needed."""
    found: str | None = None
    for doc in location.documents:
        data = doc.data if doc is not None else None
        block = data.get("x-dsm") if isinstance(data, dict) else None
        if isinstance(block, dict) and block.get("engine") is not None:
            found = str(block["engine"])
    return found


class Targets:
    """The targets of one server and their Runtimes (the default one is the server's own)."""

    def __init__(self, root: Runtime) -> None:
        self._root = root
        self.targets = targets_of(root.root_settings)
        self._runtimes: dict[str, Runtime] = {root.target.name: root}

    @property
    def several(self) -> bool:
        return len(self.targets) > 1

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def runtime(self, name: str) -> Runtime:
        """The Runtime of engine ``name``; an unknown name is a clear error listing the known ones."""
        from server.runtime import Runtime

        target = next((t for t in self.targets if t.name == name), None)
        if target is None:
            raise UnknownEngine(
                f"engine {name!r} is not one of this server's engines ({', '.join(self.names)})",
                state="nothing was changed",
                next_step="fix x-dsm engine in the stack's compose file, or add the engine to DSM_ENGINES and restart",
            )
        if name not in self._runtimes:
            self._runtimes[name] = Runtime(self._root.root_settings, target=target, parent=self._root)
        return self._runtimes[name]

    def all(self) -> list[Runtime]:
        return [self.runtime(t.name) for t in self.targets]

    def opened(self) -> list[Runtime]:
        """The Runtimes made so far (for shutdown: a target never used has nothing to close)."""
        return list(self._runtimes.values())

    def home(self, location: StackLocation | None) -> Runtime:
        """Where a stack under the root runs: its x-dsm ``engine``, else the default."""
        declared = declared_engine(location) if location is not None else None
        return self.runtime(declared) if declared else self._root

    async def each(self, fn: Callable[[Runtime], Awaitable[T]],
                   timeout_s: float = ENGINE_TIMEOUT_S) -> list[tuple[Runtime, T | Unreachable]]:
        """``fn`` on every engine in parallel; an engine that fails to answer (DockerUnavailable,
        or no answer within ``timeout_s``) or refuses (another DsmError) gives an Unreachable,
        never an error for the others."""
        runtimes = self.all()
        results: dict[str, T | Unreachable] = {}

        async def one(rt: Runtime) -> None:
            name = rt.target.name
            try:
                with anyio.fail_after(timeout_s):
                    results[name] = await fn(rt)
            except TimeoutError:
                results[name] = Unreachable(name, f"no answer within {timeout_s:g} s")
            except DockerUnavailable as exc:
                results[name] = Unreachable(name, exc.what)
            except DsmError as exc:  # one engine's refusal never fails the view of the others
                results[name] = Unreachable(name, exc.what, state="error")

        async with anyio.create_task_group() as tg:
            for rt in runtimes:
                tg.start_soon(one, rt)
        return [(rt, results[rt.target.name]) for rt in runtimes]

    async def running(self, project: str) -> list[str]:
        """The reachable engines with containers of Compose project ``project``."""
        async def probe(rt: Runtime) -> bool:
            return bool(await rt.engine().compose_containers(project))

        return [rt.target.name for rt, found in await self.each(probe) if found is True]

    async def for_stack(self, stack: str, *, mutating: bool) -> Runtime:
        """The Runtime a tool on ``stack`` (a name or a path) acts through.

        Declared (x-dsm ``engine``): that engine. Otherwise the engine it runs on; a mutating tool
        on a stack that runs on an engine its files do not name is refused with the engines listed
        (it would start a second copy on the default). A read-only engine refuses mutating tools.
        """
        rt = self._root
        if not self.several and mutating:
            self._check_declared(stack)
        if self.several:
            from server.monitor.resolve import resolve_stack

            try:
                ref: Any = resolve_stack(self._root.settings, stack)
            except DsmError:
                ref = None  # the tool itself says what is wrong with the argument
            declared = declared_engine(ref.location) if ref is not None and ref.location is not None else None
            if declared:
                rt = self.runtime(declared)
            elif ref is not None:
                where = await self.running(ref.name)
                rt = self._pick(ref.name, where, mutating=mutating)
        if mutating and rt.target.read_only:
            raise EngineReadOnly(
                f"engine {rt.target.name!r} is read-only (rule engine-read-only: marked (ro) in DSM_ENGINES)",
                state="nothing was changed",
                next_step="observe it only; to change it, remove (ro) from its DSM_ENGINES entry and restart",
            )
        return rt

    def _check_declared(self, stack: str) -> None:
        """One engine: a stack whose files name another engine is not deployed here by mistake."""
        from server.monitor.resolve import resolve_stack

        try:
            ref = resolve_stack(self._root.settings, stack)
        except DsmError:
            return  # the tool itself says what is wrong with the argument
        declared = declared_engine(ref.location) if ref.location is not None else None
        if declared and declared != self._root.target.name:
            self.runtime(declared)  # raises UnknownEngine naming the engines there are

    def _pick(self, name: str, where: list[str], *, mutating: bool) -> Runtime:
        default = self._root.target.name
        if mutating and (len(where) > 1 or (where and where[0] != default)):
            raise EngineAmbiguous(
                f"stack {name!r} runs on {'several engines' if len(where) > 1 else 'another engine'} "
                f"({', '.join(where)}) and its files do not say which one is meant",
                state="nothing was changed",
                next_step="set x-dsm engine: <name> at the top level of the stack's compose file, then call again",
            )
        return self.runtime(where[0]) if len(where) == 1 else self._root

    async def where(self, stack: str) -> list[Runtime]:
        """Every engine a read-only view of ``stack`` covers: the declared one, else where it runs
        (the default when it runs nowhere reachable). Raises StackNotFound only via the callers."""
        if not self.several:
            return [self._root]
        from server.monitor.resolve import resolve_stack

        ref = resolve_stack(self._root.settings, stack)
        declared = declared_engine(ref.location) if ref.location is not None else None
        if declared:
            return [self.runtime(declared)]
        found = await self.running(ref.name)
        return [self.runtime(n) for n in found] or [self._root]


def not_found_anywhere(stack: str, engines: list[str]) -> StackNotFound:
    return StackNotFound(f"no containers of stack {stack!r} on any engine ({', '.join(engines)})",
                         state="the stack is not deployed (or was removed)",
                         next_step="call list_stacks to see stacks and their state")
