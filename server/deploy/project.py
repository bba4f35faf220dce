"""The one place that says which Compose project every deploy-time Compose call acts on.

Built on :class:`server.project.ComposeProject` (issue 7: one description of the project for every
Compose call, COMPOSE_FILE / COMPOSE_PROFILES from .env honoured). The deploy loads the stack
without our override (a deploy states its own images, see ``load_stack(dsm_override=False)``);
``compose_project`` then adds ``compose.dsm.yaml`` back when it exists at call time (after a
rollback wrote its pins), or spells the user's files out with ``-f`` when it must stay out (so
Compose does not pick it up from COMPOSE_FILE in .env either). A file without pins holds only
scale_service's replicas and limits, which every deploy keeps: it is never left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from server.project import DSM_OVERRIDE_NAME, ComposeProject
from server.settings import Settings
from server.stackmodel import LoadedStack
from server.stacks import compose_files, locate_stack, read_dotenv

OVERRIDE_NAME = DSM_OVERRIDE_NAME


def holds_pins(directory: Path) -> bool:
    from server.deploy.override import holds_pins as pinned  # override imports this module

    return pinned(directory)


def user_files(directory: Path) -> list[Path]:
    """The stack's own compose files, in merge order, without ours (COMPOSE_FILE honoured)."""
    files = compose_files(directory, None, read_dotenv(directory))
    return [f for f in files if f.name != OVERRIDE_NAME]


def compose_project(stack: LoadedStack, *, with_override: bool = True) -> ComposeProject:
    """The stack's project for ``up``, ``pull``, ``config --hash``, ``down`` and ``exec``.

    ``with_override=False`` (the deploy's plan and pull) leaves ``compose.dsm.yaml`` out only while
    it pins images: its replicas and limits are part of what a deploy runs."""
    assert stack.directory is not None
    base = stack.project or ComposeProject(directory=stack.directory, name=stack.name)
    base = base if base.name else base.named(stack.name)
    override = stack.directory / OVERRIDE_NAME
    user = tuple(base.files or base.resolved_files or user_files(stack.directory))
    # Without pins the file holds only scale_service's replicas and limits: a deploy keeps those.
    if override.is_file() and (with_override or not holds_pins(stack.directory)):
        return dataclasses.replace(base, overrides=(override,), resolved_files=user)
    # Spelled out: with no -f, Compose would read COMPOSE_FILE from .env, which lists our file.
    return dataclasses.replace(base, files=user, overrides=())


def fresh_project(settings: Settings, directory: Path, name: str, env: Mapping[str, str] | None = None
                  ) -> ComposeProject:
    """The project as the files on disk describe it NOW (after a rollback put files back)."""
    return locate_stack(settings, str(directory), env or {}).project().named(name)
