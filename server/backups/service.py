"""The backup_stack tool's core: resolve the stack, pick the backup, run the action.

Creating and restoring hold the stack's operation lock and are journaled (server.operations);
verifying and listing touch nothing of the stack and take no lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.backups.models import BackupManifest, BackupResult, BackupSummary
from server.errors import BackupNotFound, StackNotFound
from server.preflight.progress import Progress
from server.stacks import StackLocation, check_argument, find_by_name, locate_stack

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.operations import OperationKind
    from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.backups")


def resolve_stack(runtime: Runtime, value: str) -> StackLocation:
    """``value`` is a stack directory (relative to the root) or a Compose project name."""
    check_argument(value, "stack")
    try:
        return locate_stack(runtime.settings, value)
    except StackNotFound:
        return find_by_name(runtime.settings, value)


def store_of(runtime: Runtime) -> BackupStore:
    from server.backups.store import BackupStore

    return BackupStore(runtime.settings, runtime.engine(), runtime.compose())


def pick(store: BackupStore, stack: str, backup_id: str | None) -> BackupManifest:
    if backup_id is not None:  # "" is an id that matches nothing, never "the newest"
        return store.get(stack, backup_id)
    backups = store.list(stack)
    if not backups:
        raise BackupNotFound(
            f"stack {stack!r} has no backups",
            state="nothing was changed",
            next_step=f"call backup_stack(stack={stack!r}, action='create') first",
        )
    return backups[0]


def restore_question(manifest: BackupManifest, critical: bool) -> str:
    what = [f"volume {v.name}" for v in manifest.volumes] + [f"database of {d.service}" for d in manifest.dumps]
    return (
        f"Overwrite the current data of {'CRITICAL ' if critical else ''}stack {manifest.stack!r} with backup "
        f"{manifest.backup_id} ({manifest.created_at[:19]}Z)? Replaced: {', '.join(what) or 'nothing'}. "
        "Changes made since then are lost; affected services restart."
    )


@contextlib.asynccontextmanager
async def operation(runtime: Runtime, stack: str, kind: OperationKind, params: dict[str, Any],
                    directory: Path | None = None) -> AsyncIterator[Any]:
    """Hold the stack's lock (and its directory's) and journal the act: a second create/restore (or
    a deploy) of the same stack, from this or another server process, is refused with StackBusy
    naming the holder."""
    with runtime.operations().begin(stack, kind, params, directory=directory) as op:
        yield op


async def create(runtime: Runtime, location: StackLocation, reason: str, progress: Progress | None) -> BackupResult:
    from server.ownership import require_ours  # archiving stops databases: never another project's
    from server.stackload import load_stack

    store = store_of(runtime)
    stack = await load_stack(runtime.settings, runtime.compose(), path=location.directory.name)
    await require_ours(runtime.engine(), stack.name, location.directory, "backup")
    async with operation(runtime, stack.name, "backup", {"reason": reason}, location.directory) as op:
        manifest = await store.create(stack, reason=reason, progress=progress)
        op.end("done", {"backup_id": manifest.backup_id, "bytes": manifest.bytes})
    from server.deploy.targets import adopt_if_new

    adopt_if_new(runtime, stack, manifest)  # a stack we never deployed: what runs becomes a deployment
    return BackupResult(
        stack=stack.name,
        action="create",
        backups=[BackupSummary.of(manifest)],
        next_steps=[f"check it restores: backup_stack(stack={stack.name!r}, action='verify', "
                    f"backup_id={manifest.backup_id!r})"],
    )


def listing(runtime: Runtime, location: StackLocation) -> BackupResult:
    backups = store_of(runtime).list(location.name)
    return BackupResult(
        stack=location.name,
        action="list",
        backups=[BackupSummary.of(m) for m in backups],
        next_steps=[] if backups else [f"backup_stack(stack={location.name!r}, action='create')"],
    )


async def verify(runtime: Runtime, location: StackLocation, backup_id: str | None,
                 progress: Progress | None) -> BackupResult:
    store = store_of(runtime)
    manifest = pick(store, location.name, backup_id)
    result = await store.verify(manifest, progress)
    return BackupResult(
        stack=location.name,
        action="verify",
        backups=[BackupSummary.of(manifest)],
        verification=result,
        next_steps=[] if result.ok else ["do not rely on this backup: take a new one (action='create') and "
                                         "verify it; the failed checks say what is wrong"],
    )


async def is_critical(runtime: Runtime, location: StackLocation) -> bool:
    """``x-dsm: critical: true`` on the stack or any of its services (from the source files)."""
    for doc in location.documents:
        data = doc.data if doc is not None and isinstance(doc.data, dict) else {}
        top = data.get("x-dsm")
        if isinstance(top, dict) and top.get("critical") is True:
            return True
        services = data.get("services")
        for body in services.values() if isinstance(services, dict) else []:
            block = body.get("x-dsm") if isinstance(body, dict) else None
            if isinstance(block, dict) and block.get("critical") is True:
                return True
            labels = body.get("labels") if isinstance(body, dict) else None
            if isinstance(labels, dict) and str(labels.get("dsm.critical", "")).lower() in {"1", "true", "yes"}:
                return True
    return False


async def restore(runtime: Runtime, manifest: BackupManifest, progress: Progress | None) -> BackupResult:
    """Put the backup's data back and bring the stack back up: a database that cannot start on
    what it has now is revived (its archive, or a fresh data directory for the dump); services
    that ran when the backup was taken run afterwards."""
    from server.ownership import require_ours  # never overwrite data of a project started elsewhere

    directory = find_by_name(runtime.settings, manifest.stack).directory
    await require_ours(runtime.engine(), manifest.stack, directory, "restore")
    store = store_of(runtime)
    async with operation(runtime, manifest.stack, "restore", {"backup_id": manifest.backup_id}, directory) as op:
        outcome = await store.restore_data(manifest, progress=progress, bring_up=True)
        op.end("done", {"backup_id": manifest.backup_id, "restored": list(outcome),
                        "steps": [s.model_dump(mode="json") for s in outcome.steps],
                        "data_checks": [c.model_dump(mode="json") for c in outcome.checks]})
    next_steps = [f"check the stack: inspect_stack(path={manifest.stack!r}) and list_stacks for its health"]
    kept = sorted({f for s in outcome.steps for f in s.failed_state})
    if kept:
        folder = store.backup_dir(manifest.stack, manifest.backup_id)
        next_steps.append(f"the database could not start on its data, so it was replaced; what it held is kept in "
                          f"{', '.join(str(folder / f) for f in kept)} (delete it once the stack is fine)")
    for check in outcome.checks:
        if check.ok is False:
            next_steps.append(f"the data of {check.service} differs from dump time ({check.detail}): compare "
                              f"missing {check.missing[:5]} and differ {check.differ[:5]} before going on")
    return BackupResult(
        stack=manifest.stack,
        action="restore",
        backups=[BackupSummary.of(manifest)],
        restored=list(outcome),
        steps=outcome.steps,
        data_checks=outcome.checks,
        next_steps=next_steps,
    )
