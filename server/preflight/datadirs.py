"""One database server per data directory: two database containers on one host directory is an error.

Two PostgreSQL (or MySQL, MongoDB...) servers writing one bind-mounted data directory corrupt it,
whichever projects they belong to: a second copy of a stack under another project name, two
services of one stack, or a container started by hand. A service is a database when its image's
family says so (server.policy.families) or ``x-dsm role: database`` / the ``dsm.role`` label does.
Containers that ``up`` replaces (this project, started from this directory) are not a conflict.
Named volumes are per project and never shared by accident; only bind mounts are compared, and
a directory inside another counts as the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from server.models import Finding
from server.ownership import PROJECT_LABEL, WORKING_DIR_LABEL, same_directory
from server.policy.families import family_of
from server.stackmodel import LoadedStack


def _is_database(image: str | None, role: str | None) -> bool:
    return role == "database" or family_of(image).kind == "database"


def _norm(source: str) -> Path:
    path = Path(source)
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def stack_data_dirs(stack: LoadedStack) -> dict[str, list[Path]]:
    """Database services of the stack -> the host directories they bind-mount."""
    out: dict[str, list[Path]] = {}
    for svc, body in stack.services.items():
        body = body or {}
        if not _is_database(str(body.get("image") or "") or None, stack.service_settings_for(svc).role):
            continue
        for volume in body.get("volumes") or []:
            if isinstance(volume, dict) and volume.get("type") == "bind" and volume.get("source"):
                out.setdefault(svc, []).append(_norm(str(volume["source"])))
    return out


def _running_databases(rows: Iterable[Mapping[str, Any]], stack: LoadedStack) -> list[tuple[str, str, Path]]:
    """(container, project or '-', bind source) of running database containers that ``up`` keeps."""
    found: list[tuple[str, str, Path]] = []
    for row in rows:
        if row.get("State") != "running":
            continue
        labels = dict(row.get("Labels") or {})
        project = labels.get(PROJECT_LABEL)
        if project == stack.name and stack.directory is not None and same_directory(
                labels.get(WORKING_DIR_LABEL), stack.directory):
            continue  # ours: `up` recreates or removes it
        if not _is_database(row.get("Image"), labels.get("dsm.role")):
            continue
        names = row.get("Names") or []
        name = str(names[0]).lstrip("/") if names else str(row.get("Id", ""))[:12]
        for mount in row.get("Mounts") or []:
            if mount.get("Type") == "bind" and mount.get("Source"):
                found.append((name, project or "-", _norm(str(mount["Source"]))))
    return found


def shared_data_findings(stack: LoadedStack, rows: Iterable[Mapping[str, Any]]) -> list[Finding]:
    ours = stack_data_dirs(stack)
    found: list[Finding] = []
    services = sorted(ours)
    for i, svc in enumerate(services):
        for other in services[i + 1:]:
            for a in ours[svc]:
                for b in ours[other]:
                    if _overlap(a, b):
                        found.append(_finding(svc, a, f"service {other!r} of this stack mounts {b}"))
    running = _running_databases(rows, stack)
    for svc in services:
        for a in ours[svc]:
            for name, project, b in running:
                if _overlap(a, b):
                    owner = f"project {project!r}" if project != "-" else "no Compose project"
                    found.append(_finding(svc, a, f"running database container {name} ({owner}) mounts {b}"))
    return found


def _finding(service: str, source: Path, other: str) -> Finding:
    return Finding(
        rule="shared-data-directory", severity="error", category="deploy", service=service,
        message=f"database service {service!r} would use the host data directory {source}, and {other}: two "
                "database servers on one data directory corrupt it",
        fix="give each database its own data directory (or a named volume), or stop the other one first",
        evidence=[other])
