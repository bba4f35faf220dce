"""The files of each successful deployment, kept so a rollback can put them back.

A backup is taken at the start of a deploy, when the user has already edited the files; the
files of the deployment to return to are the ones that deployment ran with. Each successful
deploy (and rollback) copies its compose files, .env and compose.dsm.yaml to
``DSM_STATE_DIR/deployments/<stack>/<deployment_id>/`` (directories 0700, files 0600: .env may
hold secrets; server.statefiles).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from server.deploy.project import OVERRIDE_NAME, user_files
from server.settings import Settings
from server.statefiles import copy_private, private_dir, write_private


def _dir(settings: Settings, stack: str, deployment_id: str) -> Path:
    return settings.state_dir / "deployments" / stack / deployment_id


def _kept(directory: Path) -> list[tuple[Path, str]]:
    """The stack's files a deployment runs with: (file, path relative to the stack directory).
    COMPOSE_FILE may name files in subdirectories (deploy/compose.yaml); they are kept too."""
    here = directory.resolve()
    out: list[tuple[Path, str]] = []
    for path in [*user_files(directory), directory / ".env", directory / OVERRIDE_NAME]:
        if not path.is_file():
            continue
        try:
            rel = path.absolute().relative_to(directory.absolute())
        except ValueError:
            continue  # outside the stack (the loader refuses it before a deploy gets here)
        if ".." in rel.parts or not path.resolve().is_relative_to(here):
            continue
        if str(rel) not in {r for _, r in out}:
            out.append((path, str(rel)))
    return out


FILES_NOT_KEPT = ("the deployment's files could not be kept (state directory not writable): a rollback to it "
                  "falls back to the files of the backup taken before the next deploy")


def save_kept(settings: Settings, stack: str, deployment_id: str, directory: Path) -> bool:
    """:func:`save`, for a deployment whose containers already run: False (logged) when the state
    disk refuses, so the deploy or rollback itself still ends as it went."""
    try:
        save(settings, stack, deployment_id, directory)
    except OSError as exc:
        logging.getLogger("docker_stack_mcp.deploy").warning(
            "could not keep the files of deployment %s of %s: %s", deployment_id, stack, exc)
        return False
    return True


def save(settings: Settings, stack: str, deployment_id: str, directory: Path) -> list[str]:
    target = private_dir(_dir(settings, stack, deployment_id))
    saved = []
    for path, rel in _kept(directory):
        private_dir((target / rel).parent)
        copy_private(path, target / rel)
        saved.append(rel)
    write_private(target / "FILES", "\n".join(saved) + "\n")
    return saved


def exists(settings: Settings, stack: str, deployment_id: str) -> bool:
    return (_dir(settings, stack, deployment_id) / "FILES").is_file()


def restore(settings: Settings, stack: str, deployment_id: str, directory: Path) -> list[str]:
    """Put the deployment's files back (subdirectories included); .env and compose.dsm.yaml it did
    not have are removed."""
    source = _dir(settings, stack, deployment_id)
    names = [n for n in (source / "FILES").read_text().splitlines() if n]
    here = directory.resolve()
    for name in (".env", OVERRIDE_NAME):
        if name not in names:
            (directory / name).unlink(missing_ok=True)
    for name in names:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            continue  # never written by save: a tampered list must not write outside the stack
        dest = directory / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.parent.resolve().is_relative_to(here):
            continue  # a subdirectory replaced by a symlink out of the stack
        tmp = dest.with_name(f".{dest.name}.dsm-tmp")
        shutil.copy2(source / rel, tmp)
        os.replace(tmp, dest)
    return names


async def put_back(settings: Settings, backups: Any, snapshot: Any) -> list[str]:
    """The rollback's first step for every executor: the target deployment's kept files back into the
    stack's directory, else (no earlier deployment recorded) the files of the backup taken before the
    failed deploy. Returns the note for the report."""
    stack = snapshot.stack
    assert stack.directory is not None
    if snapshot.target and exists(settings, stack.name, snapshot.target):
        restore(settings, stack.name, snapshot.target, stack.directory)
        return [f"files of deployment {snapshot.target} restored"]
    await backups.restore_files(snapshot.backup, stack.directory)
    return ["files as they were before this deploy restored (no earlier deployment recorded)"]


def keep_failed(settings: Settings, stack: str, label: str, directory: Path) -> Path:
    """Copy the files of a failed deployment aside (next to the backup taken before it)."""
    target = private_dir(settings.state_dir / "backups" / stack / label / "failed-files")
    for path, rel in _kept(directory):
        private_dir((target / rel).parent)
        copy_private(path, target / rel)
    return target
