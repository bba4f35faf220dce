"""``DSM_ENGINES``: the Docker engines this server may use, parsed and checked at start-up.

``name=context-or-URL`` entries, comma-separated; ``(ro)`` after an entry makes that engine
read-only (observed, never changed)::

    DSM_ENGINES="local=unix:///var/run/docker.sock,nas=ssh://admin@nas.lan(ro),mini=mini-context"

The first entry is the default engine: stacks that do not say where they run (x-dsm ``engine``)
run there, and its state (journal, backups, pins, watcher) stays where it always was, directly
under DSM_STATE_DIR. Unset: the current engine alone (DOCKER_HOST, DOCKER_CONTEXT, the CLI's
current context), exactly the behaviour before several engines existed.

A value with ``://`` is an engine URL (unix, tcp, ssh, npipe); anything else names a docker
context (``docker context ls``), which must exist when the server starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import SettingsError

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""An engine's name: short, lower case, safe as a directory name (state_dir/engines/<name>)."""
_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # the docker CLI's own rule for context names
_SCHEMES = ("unix://", "tcp://", "ssh://", "npipe://")
_RO = "(ro)"


@dataclass(frozen=True)
class EngineSpec:
    """One entry of DSM_ENGINES, as written (resolved into an Endpoint by server.endpoint)."""

    name: str
    where: str
    """A URL (unix://, tcp://, ssh://, npipe://) or the name of a docker context."""
    read_only: bool = False

    @property
    def is_url(self) -> bool:
        return "://" in self.where

    def describe(self) -> str:
        return f"{self.name}={self.where}{_RO if self.read_only else ''}"


def parse_engines(raw: str) -> tuple[EngineSpec, ...]:
    """DSM_ENGINES into specs; raises SettingsError naming the bad entry. Empty: ``()``."""
    if not raw.strip():
        return ()
    specs: list[EngineSpec] = []
    for entry in raw.split(","):
        text = entry.strip()
        if not text:
            raise SettingsError(f"DSM_ENGINES={raw!r} has an empty entry", next_step="remove the stray comma")
        read_only = text.lower().endswith(_RO)
        if read_only:
            text = text[: -len(_RO)].rstrip()
        name, sep, where = (part.strip() for part in text.partition("="))
        if not sep or not where:
            raise SettingsError(f"DSM_ENGINES entry {entry.strip()!r} is not name=context-or-URL",
                                next_step="write e.g. DSM_ENGINES=local=unix:///var/run/docker.sock,nas=ssh://admin@nas")
        if not NAME.fullmatch(name):
            raise SettingsError(f"DSM_ENGINES entry {entry.strip()!r}: the name {name!r} must be lower case letters, "
                                "digits, - or _ (at most 32, starting with a letter or digit)")
        if "://" in where:
            if not where.startswith(_SCHEMES) or len(where) <= where.index("://") + 3:
                raise SettingsError(f"DSM_ENGINES entry {entry.strip()!r}: {where!r} is not an engine URL "
                                    f"({', '.join(s + '...' for s in _SCHEMES)})")
        elif not _CONTEXT.fullmatch(where):
            raise SettingsError(f"DSM_ENGINES entry {entry.strip()!r}: {where!r} is neither a URL nor a context name")
        if any(s.name == name for s in specs):
            raise SettingsError(f"DSM_ENGINES names the engine {name!r} twice")
        specs.append(EngineSpec(name, where, read_only))
    return tuple(specs)
