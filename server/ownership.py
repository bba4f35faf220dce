"""Touch only what is ours: a Compose project belongs to the directory it was started from.

Compose labels every container with its project's working directory
(``com.docker.compose.project.working_dir``); every Compose call of ours passes
``--project-directory <stack directory>``, so the containers of a stack we run carry its
directory. A project of the same name started by hand from another directory is not ours:
``up`` under that name would recreate its services and remove its other containers as orphans,
and stop/rollback/restore would act on them. Two checks, one source of truth:

- :func:`ownership_findings` (pre-flight of validate_compose and deploy_stack): the project
  runs from another directory -> ``foreign-project``; this directory already runs under another
  project name (a given COMPOSE_PROJECT_NAME, an edited ``name:``) -> ``directory-in-use``.
- :func:`require_ours` (every mutating tool: stack_control, rollback, backup restore): raises
  StackConflict, naming both directories, before anything is changed.

A container of the project without the label (``docker run --label com.docker.compose.project=x``,
a very old Compose) counts as foreign: we cannot show it was started from this directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import StackConflict
from server.models import Finding

if TYPE_CHECKING:
    from server.engine import Engine

PROJECT_LABEL = "com.docker.compose.project"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


async def compose_rows(engine: Engine, project: str | None = None) -> list[dict[str, Any]]:
    """``GET /containers/json?all=1`` of Compose containers (of one project): raw rows, labels and
    mounts included. One API call."""
    label = f"{PROJECT_LABEL}={project}" if project else PROJECT_LABEL
    rows = await engine.call(lambda c: c.api.containers(all=True, filters={"label": label}), "list containers")
    return list(rows or [])


def same_directory(label: str | None, directory: Path) -> bool:
    if not label:
        return False
    if label == str(directory):
        return True
    try:
        return Path(label).resolve() == directory.resolve()
    except (OSError, RuntimeError):
        return False


def _labels(row: Mapping[str, Any]) -> dict[str, str]:
    return dict(row.get("Labels") or {})


def _name(row: Mapping[str, Any]) -> str:
    names = row.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(row.get("Id", ""))[:12]


def foreign_dirs(rows: Iterable[Mapping[str, Any]], name: str, directory: Path) -> dict[str, list[str]]:
    """Containers of project ``name`` not started from ``directory``: their working dir -> names."""
    out: dict[str, list[str]] = {}
    for row in rows:
        labels = _labels(row)
        if labels.get(PROJECT_LABEL) != name:
            continue
        where = labels.get(WORKING_DIR_LABEL)
        if not same_directory(where, directory):
            out.setdefault(where or "(no working directory label)", []).append(_name(row))
    return out


def other_names(rows: Iterable[Mapping[str, Any]], name: str, directory: Path) -> dict[str, list[str]]:
    """Projects other than ``name`` whose containers were started from ``directory``: project -> names."""
    out: dict[str, list[str]] = {}
    for row in rows:
        labels = _labels(row)
        project = labels.get(PROJECT_LABEL)
        if project and project != name and same_directory(labels.get(WORKING_DIR_LABEL), directory):
            out.setdefault(project, []).append(_name(row))
    return out


def _brief(names: list[str]) -> str:
    return ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def ownership_findings(rows: Iterable[Mapping[str, Any]], name: str, directory: Path) -> list[Finding]:
    """Pre-flight: errors when project ``name`` is not this directory's, or this directory runs under another name."""
    rows = list(rows)
    found: list[Finding] = []
    for where, names in sorted(foreign_dirs(rows, name, directory).items()):
        found.append(Finding(
            rule="foreign-project", severity="error", category="deploy",
            message=f"project {name!r} already runs from {where}, not from the stack directory {directory}: "
                    f"deploying would recreate its services and remove its other containers ({_brief(names)}) "
                    "as orphans",
            fix=f"give this stack another project name (top-level name:), or stop that project from {where} first",
            evidence=[f"{n}: {WORKING_DIR_LABEL}={where}" for n in sorted(names)[:5]]))
    for project, names in sorted(other_names(rows, name, directory).items()):
        found.append(Finding(
            rule="directory-in-use", severity="error", category="deploy",
            message=f"the stack directory {directory} already runs as project {project!r} ({_brief(names)}): "
                    f"deploying it as {name!r} would run a second copy of it (two servers on one data directory)",
            fix=f"deploy it under its project name {project!r} (drop COMPOSE_PROJECT_NAME from env), or remove "
                f"project {project!r} first (docker compose -p {project} down, from {directory})",
            evidence=[f"{n}: project {project}" for n in sorted(names)[:5]]))
    return found


async def require_ours(engine: Engine, name: str, directory: Path, action: str) -> None:
    """Raise StackConflict when project ``name`` has containers not started from ``directory``:
    no mutating tool acts on a project we did not create from that directory."""
    foreign = foreign_dirs(await compose_rows(engine, name), name, directory)
    if not foreign:
        return
    where = ", ".join(sorted(foreign))
    names = [n for group in foreign.values() for n in group]
    raise StackConflict(
        f"{action} refused: project {name!r} runs from {where}, not from the stack directory {directory} "
        f"({_brief(names)}); it was not started from this stack",
        state="nothing was changed",
        next_step=f"manage that project from {where}, or give the stack in {directory.name}/ another project name",
    )
