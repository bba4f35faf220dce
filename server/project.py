"""One description of a Compose project, used for every Compose call on it.

``config`` (pre-flight), ``up``, ``ps``, ``pull``, ``logs`` and ``down`` must all see the same
project, or the checked project is not the deployed one. :class:`ComposeProject` is that
description, frozen: the stack directory, the project name (as Compose rendered it), the
environment the caller gave, the compose files ONLY when the user named one, and the profiles
Compose will activate. It renders the project flags; Compose does the rest as ``docker compose
up`` would in the stack directory: with no ``-f`` it finds compose.yaml + override itself and
reads ``COMPOSE_FILE``, ``COMPOSE_PROFILES``, ``COMPOSE_PROJECT_NAME`` and the other
``COMPOSE_*`` settings from the stack's ``.env`` and from ``env``.

Our own override, ``compose.dsm.yaml`` in the stack directory, is part of the project whenever it
exists (pre-flight and deploy alike); then ``-f`` spells out the user's files (as Compose would
have picked them) followed by it.

Calling Compose through it (``runner`` is :class:`server.compose.ComposeRunner`)::

    stack = await load_stack(settings, runner, path="myapp", env=env)   # screens, renders, names
    project = stack.project                     # or locate_stack(settings, path, env).project()
    await runner.run_project(project, ["pull"])
    await runner.run_project(project, ["up", "-d", "--wait"], timeout_s=600)
    await runner.run_project(project, ["ps", "--all", "--format", "json"])
    await runner.run_project(project, ["logs", "--no-color", "--tail", "200", "web"])
    await runner.run_project(project, ["down"])
    lock_name = project.name                    # the name Compose rendered: the deploy lock's key

Never add ``-f`` or ``--profile`` by hand next to ``args()``: that is how the deployed project
drifts from the checked one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

DSM_OVERRIDE_NAME = "compose.dsm.yaml"
"""Our override file in a stack directory: when it exists, every Compose call (pre-flight
included) merges it after the user's files, so what is checked is what is deployed."""


@dataclass(frozen=True)
class ComposeProject:
    """What Compose needs to find one project; ``args()`` gives the flags, ``env`` the environment."""

    directory: Path
    """The project directory (the stack directory); also the cwd of every Compose call."""
    name: str | None = None
    """The project name as Compose rendered it (``name`` of ``config --format json``); None before
    the first render, when Compose decides it (COMPOSE_PROJECT_NAME, ``name:``, directory)."""
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Variables the caller gave; Compose reads them before the stack's .env (they win)."""
    files: tuple[Path, ...] = ()
    """Compose files the USER named (a path to a file); empty: Compose picks them itself."""
    overrides: tuple[Path, ...] = ()
    """Our own override files (``compose.dsm.yaml``), merged after the user's files."""
    resolved_files: tuple[Path, ...] = ()
    """The user's files as Compose picks them (COMPOSE_FILE, else compose.yaml + override); only
    used to spell them out when ``overrides`` forces ``-f``."""
    profiles: tuple[str, ...] = ()
    """The profiles Compose activates (from COMPOSE_PROFILES in env or .env); informational:
    Compose reads the same setting itself, so ``args()`` does not repeat it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def args(self) -> list[str]:
        """The project flags for ``docker compose <args()> <command> ...``.

        No ``-f`` unless the user named a file or we add an override; with an override, the
        user's files are spelled out first in the order Compose would have picked them.
        """
        flags = ["--project-directory", str(self.directory)]
        files = (*(self.files or self.resolved_files), *self.overrides) if self.overrides else self.files
        for file in files:
            flags += ["-f", str(file)]
        if self.name:
            flags += ["-p", self.name]
        return flags

    def named(self, name: str) -> ComposeProject:
        """The same project with the name Compose rendered (so later calls and the lock agree)."""
        return replace(self, name=name)

    def with_profiles(self, profiles: tuple[str, ...]) -> ComposeProject:
        return replace(self, profiles=profiles)
