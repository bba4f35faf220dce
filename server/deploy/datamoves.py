"""Data moves: a database whose data volume the new files rename, replace or drop.

Compose would happily start such a database on a new, empty volume and the health gate would
pass (an empty database is a healthy one): the rows are not lost, they sit in the old volume,
but the application now runs without them. So the plan says so before anything runs, as an
error finding that a deploy needs ``confirm=true`` to go past. The old volume is never removed
(we never run ``down -v``; ``--remove-orphans`` keeps volumes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server.engine import ContainerSummary
from server.models import Finding
from server.roles import ServiceRole
from server.stackmodel import LoadedStack

RULE = "data-volume-moved"
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")


def _engine_name(stack: LoadedStack, source: str) -> str:
    top = (stack.rendered.get("volumes") or {}).get(source) or {}
    return str(top.get("name") or f"{stack.name}_{source}")


def data_moves(stack: LoadedStack, roles: Mapping[str, ServiceRole], by_service: Mapping[str, list[ContainerSummary]],
               services: set[str] | None = None) -> list[Finding]:
    """One finding per named volume a database's container mounts now that the new files do not
    mount at the same path (renamed, replaced by a bind/anonymous/tmpfs mount, or dropped)."""
    findings: list[Finding] = []
    for name in sorted(roles):
        role = roles[name]
        if not role.is_database or (services is not None and name not in services):
            continue
        running = by_service.get(name) or []
        if not running:
            continue
        new: dict[str, dict[str, Any]] = {}
        for mount in (stack.services.get(name) or {}).get("volumes") or []:
            if isinstance(mount, dict) and mount.get("target"):
                new[str(mount["target"]).rstrip("/") or "/"] = mount
        old = running[0].volumes
        for volume, target in sorted(old.items()):
            if _ANONYMOUS.match(volume):
                continue  # Compose carries anonymous volumes over to the recreated container
            path = str(target).rstrip("/") or "/"
            mount = new.get(path)
            if mount is None:
                change, now = "dropped", f"nothing is mounted at {path} any more"
            elif mount.get("type") == "volume" and mount.get("source"):
                moved_to = _engine_name(stack, str(mount["source"]))
                if moved_to == volume:
                    continue
                change, now = "renamed", f"{path} is now volume {moved_to}"
            else:
                change, now = "replaced", f"{path} is now a {mount.get('type') or 'different'} mount"
            findings.append(Finding(
                rule=RULE, severity="error", category="data", service=name,
                message=(f"database {name!r} ({role.kind or 'database'}): its data volume {volume} is {change} in "
                         f"the new files ({now}); it would start on an EMPTY data directory. The old volume keeps "
                         "the data and is never removed"),
                evidence=[f"running: {volume} at {target}", f"new files: {now}", f"role: {role.reason}"],
                fix=(f"mount volume {volume} at {path} again (top-level volumes: {{<key>: {{name: {volume}}}}} keeps "
                     "the engine name), or move the data first; deploy with confirm=true if an empty database is "
                     "what you want"),
            ))
    return findings
