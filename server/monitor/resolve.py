"""``stack`` arguments: a project name or a stack directory, managed or started by hand."""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import StackConflict, StackNotFound
from server.settings import Settings
from server.stacks import StackLocation, check_argument, discover, locate_stack


@dataclass(frozen=True)
class StackRef:
    name: str
    location: StackLocation | None
    """The stack directory under the root; None for a project found only on the engine."""


def resolve_stack(settings: Settings, raw: str) -> StackRef:
    """Resolve ``raw`` to a project name (and its directory when it lives under the root).

    A path (``myapp``, ``myapp/compose.yaml``, an absolute path inside the root) wins when it
    exists; otherwise ``raw`` is a project name, which need not be under the root: stacks started
    by hand elsewhere are found on the engine by Compose's project label.
    """
    check_argument(raw, "stack")
    root = settings.stacks_root
    if root.is_dir():
        candidate = root / raw
        if "/" in raw or candidate.is_dir():
            try:
                location = locate_stack(settings, raw)
                return StackRef(location.name, location)
            except StackNotFound:
                if "/" in raw:
                    raise
        stacks, _ = discover(settings)
        matches = [s for s in stacks if s.name == raw]
        if len(matches) > 1:
            raise StackConflict(
                f"stack name {raw!r} is claimed by {', '.join(m.directory.name for m in matches)}",
                next_step="pass the stack directory instead of the name",
            )
        if matches:
            return StackRef(raw, matches[0])
    return StackRef(raw, None)


def managed_locations(settings: Settings) -> dict[str, StackLocation]:
    stacks, _ = discover(settings)
    return {s.name: s for s in stacks}
