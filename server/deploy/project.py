"""The one place that says which files and flags every deploy-time Compose call gets.

``compose_args`` builds the project flags for ``up``, ``ps``, ``pull``, ``config --hash`` and
``down`` alike, so the deploy, the plan and a later plain ``docker compose up`` in the stack
directory all see the same project: the user's files (COMPOSE_FILE from the stack's ``.env`` when
set, else the main file and its override) followed by our own override, ``compose.dsm.yaml``,
when it exists. Issue 7 will give one description of the project for every Compose call; this
function is the seam that switches to it.
"""

from __future__ import annotations

from pathlib import Path

from server.compose import project_flags
from server.stacks import compose_files, read_dotenv

OVERRIDE_NAME = "compose.dsm.yaml"


def user_files(directory: Path) -> list[Path]:
    """The stack's own compose files, in merge order, without ours."""
    listed = read_dotenv(directory).get("COMPOSE_FILE")
    if listed:
        separator = read_dotenv(directory).get("COMPOSE_PATH_SEPARATOR") or ":"
        files = [directory / part for part in listed.split(separator) if part.strip()]
        files = [f for f in files if f.name != OVERRIDE_NAME]
        if files:
            return files
    return compose_files(directory)


def compose_args(directory: Path, project: str, *, with_override: bool = True) -> list[str]:
    """``--project-directory DIR -f FILE... -p NAME`` for every deploy-time Compose call."""
    files = user_files(directory)
    override = directory / OVERRIDE_NAME
    if with_override and override.is_file():
        files = [*files, override]
    return project_flags(directory, files, project)
