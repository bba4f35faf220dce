"""Views over every engine (DSM_ENGINES): list_stacks and stack_status ask each engine in
parallel (server.targets.Targets.each), name the engine of every result, and report an engine
that does not answer as unreachable without failing or delaying the others past a few seconds.

Only used with several engines; with one, the single-engine code paths run as they always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.errors import StackNotFound
from server.inventory import engine_named, group_by_project, tally
from server.models import StackEntry, StackList
from server.stacks import StackLocation, discover
from server.targets import UnknownEngine, Unreachable

if TYPE_CHECKING:
    from server.monitor.models import StatusReport
    from server.runtime import Runtime


async def list_every_engine(runtime: Runtime) -> StackList:
    """list_stacks over every engine: each stack counted on the engine it runs on (x-dsm engine,
    else the default), every other project listed with its engine."""
    targets = runtime.targets()
    settings = runtime.settings
    locations, problems = discover(settings)
    seen = await targets.each(lambda rt: rt.engine().compose_containers())
    homes: dict[str, list[StackLocation]] = {name: [] for name in targets.names}
    unplaced: list[StackLocation] = []
    for loc in locations:
        try:
            homes[targets.home(loc).target.name].append(loc)
        except UnknownEngine as exc:
            problems.append(f"{loc.name}: {exc.what}")
            unplaced.append(loc)
    entries: list[StackEntry] = []
    others = []
    engines: dict[str, str] = {}
    for rt, result in seen:
        name = rt.target.name
        if isinstance(result, Unreachable):
            problems.append(result.describe())
            engines[name] = f"{result.state}: {result.reason}"
            mine, _ = tally(settings, homes[name], {}, engine_ok=False, engine=name)
            entries += mine
            continue
        engines[name] = "reachable, read-only" if rt.target.read_only else "reachable"
        mine, theirs = tally(settings, homes[name], group_by_project(result), engine_ok=True, engine=name)
        entries += mine
        others += theirs
    entries += tally(settings, unplaced, {}, engine_ok=False)[0]
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    order = {loc.name: i for i, loc in enumerate(locations)}
    entries.sort(key=lambda e: order.get(e.name, 0))
    others.sort(key=lambda o: (o.name, o.engine or ""))
    return StackList(stacks_root=str(root), stacks=entries, other_projects=others, problems=problems,
                     engine=engine_named(runtime), engines=engines)


async def status_every_engine(runtime: Runtime, stack: str | None, with_stats: bool) -> StatusReport:
    """stack_status over every engine (``stack`` None) or over the engines ``stack`` is on."""
    from server.monitor.models import StatusReport
    from server.monitor.status import stack_status
    from server.targets import not_found_anywhere

    targets = runtime.targets()
    wanted = {rt.target.name for rt in await targets.where(stack)} if stack is not None else set(targets.names)

    async def one(rt: Runtime) -> StatusReport | None:
        if rt.target.name not in wanted:
            return None
        try:
            return await stack_status(rt, stack, with_stats)
        except StackNotFound:  # not on this engine
            return None

    stacks = []
    problems: list[str] = []
    for rt, result in await targets.each(one, timeout_s=30.0 if with_stats else 15.0):
        if isinstance(result, Unreachable):
            if rt.target.name in wanted:
                problems.append(result.describe())
        elif result is not None:
            stacks += [s.model_copy(update={"engine": rt.target.name}) for s in result.stacks]
            problems += [f"{rt.target.name}: {p}" for p in result.problems]
    if stack is not None and not stacks and not problems:
        raise not_found_anywhere(stack, sorted(wanted))
    return StatusReport(stacks=stacks, problems=problems)
