"""Volumes replaced, and a database that will not start brought back.

A volume cannot be emptied through the engine's API without running something in it, and a
distroless image has nothing to run; so the containers that use it are stopped and removed,
the volume is recreated with the same labels, driver and options, an archive (if any) is
extracted into it from a never-started helper container, and Compose recreates the containers
from the stack's files (``up`` for those that ran, ``create`` for the others).

A database whose dump must be replayed has to run. When it does not (a new version rewrote its
data directory and the old server refuses it), it is started with Compose and given time to
become ready; failing that, what its volumes hold now is archived into the backup directory
(``failed-<time>/<volume>.tar``: the failed state is kept, never deleted), and the volumes are
refilled from the backup's archive of them, or emptied so that the database initialises a fresh
data directory for the dump to be replayed into.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from server.backups import recovery
from server.backups.databases import Recipe
from server.backups.models import BackupManifest
from server.compose import services_argv
from server.errors import DsmError
from server.preflight.progress import Progress, report_progress

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.engine import ContainerSummary

log = logging.getLogger("docker_stack_mcp.backups")

READY_TIMEOUT_S = 180.0
"""How long a database gets to accept connections after it was started (a fresh data directory
is initialised first, a few seconds for PostgreSQL; longer on a loaded host)."""
_STABLE_S = 3.0
"""Without a readiness probe (x-dsm hooks), running this long counts as started."""


async def replace_volumes(
    store: BackupStore,
    manifest: BackupManifest,
    items: list[tuple[str, Path | None]],
    *,
    changes: list[str],
    keep_failed: bool = False,
    start: frozenset[str] = frozenset(),
    progress: Progress | None = None,
    total: int = 0,
) -> list[str]:
    """Recreate each volume of ``items`` (name, archive or None) and extract its archive into it.
    ``keep_failed`` archives what each volume holds first (returns those files, relative to the
    backup directory); ``start`` names services that run afterwards even if they did not before."""
    from server.backups.store import VOLUME_MOUNT

    engine = store.engine
    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    names = {name for name, _ in items}
    containers = await engine.compose_containers(manifest.stack)
    affected = [c for c in containers if set(c.volumes) & names]
    running = {c.service for c in affected if c.running and c.service}
    idle = {c.service for c in affected if not c.running and c.service}
    up = sorted(running | set(start))
    create = sorted(idle - set(up))
    image = await store.helper_image([p.image_id for p in manifest.images] + [c.image_id for c in containers])
    kept: list[str] = []
    note = recovery.write_note(store, manifest.stack, [c for c in affected if c.running], "volume restore")
    try:
        for container in affected:
            if container.running:
                await engine.stop_container(container.id)
            await engine.remove_container(container.id)
            changes.append(f"container {container.name} stopped and removed")
        if keep_failed:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            for name in sorted(names):
                kept.append(await _keep_failed_state(store, manifest, name, image, f"failed-{stamp}"))
        for index, (name, archive) in enumerate(items, start=1):
            await report_progress(progress, index, total or len(items), f"restoring volume {name}")
            await _remove_orphan_helpers(store, name)
            attrs = await engine.volume_attrs(name) or {}
            labels = attrs.get("Labels") or {
                "com.docker.compose.project": manifest.stack,
                "com.docker.compose.volume": name.removeprefix(f"{manifest.stack}_"),
            }
            await engine.remove_volume(name)
            changes.append(f"volume {name} emptied" + (f" (its content is kept in {kept})" if kept else ""))
            await engine.create_volume(name, labels=labels, driver=attrs.get("Driver") or "local",
                                       options=attrs.get("Options"))
            if archive is None:
                continue
            helper = await engine.create_helper(image, {name: VOLUME_MOUNT}, purpose=f"restore-{name}",
                                                labels=recovery.helper_labels(manifest.stack))
            try:
                await engine.put_archive_from_file(helper, VOLUME_MOUNT, directory / archive)
            finally:
                await engine.remove_container(helper)
            changes.append(f"volume {name} restored from the backup")
    finally:
        with anyio.CancelScope(shield=True):
            await recreate(store, manifest, up, create)
            recovery.drop_note(note)
    return kept


async def _keep_failed_state(store: BackupStore, manifest: BackupManifest, volume: str, image: str,
                             folder: str) -> str:
    """Archive the volume's current content into ``<backup>/<folder>/<volume>.tar`` (streamed)."""
    from server.backups.store import VOLUME_MOUNT

    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    (directory / folder).mkdir(mode=0o700, exist_ok=True)
    rel = f"{folder}/{volume}.tar"
    helper = await store.engine.create_helper(image, {volume: VOLUME_MOUNT}, purpose=f"keep-{volume}",
                                              labels=recovery.helper_labels(manifest.stack))
    try:
        written = await store.engine.archive_to_file(helper, f"{VOLUME_MOUNT}/.", directory / rel)
    finally:
        await store.engine.remove_container(helper)
    os.chmod(directory / rel, 0o600)
    log.info("kept the failed state of %s in %s (%d bytes)", volume, directory / rel, written.bytes)
    return rel


async def _remove_orphan_helpers(store: BackupStore, volume: str) -> None:
    """Our helpers still mounting a stack volume are orphans (we hold the stack's lock, and only
    operations under it mount its volumes in helpers): a killed server's, holding the volume."""
    from server.engine import HELPER_LABEL

    rows = await store.engine.call(lambda c: c.api.containers(all=True, filters={
        "label": [f"{HELPER_LABEL}=1"], "volume": [volume]}), f"list helpers on volume {volume}")
    for row in rows:
        await store.engine.remove_container(str(row.get("Id")))


async def recreate(store: BackupStore, manifest: BackupManifest, up: list[str], create: list[str]) -> None:
    """Compose (re)creates containers from the stack's files, with the backup's env: ``up`` starts
    ``up``, ``create --no-recreate`` only creates ``create``."""
    if not up and not create:
        return
    from server.stacks import find_by_name, locate_stack

    env = store.env_of(manifest)
    directory = find_by_name(store.settings, manifest.stack).directory
    # The same project description as every other Compose call (files, compose.dsm.yaml, .env).
    project = locate_stack(store.settings, str(directory), env).project().named(manifest.stack)
    # Only services the files define now: a rollback may already have put back files without a
    # service whose container used the volume (a one-shot of the failed version, say).
    listed = await store.compose.run_project(project, ["config", "--services"],
                                             what="docker compose config --services (after a restore)")
    defined = set(listed.stdout.split())
    up, create = [s for s in up if s in defined], [s for s in create if s in defined]
    if up:
        await store.compose.run_project(project, ["up", "-d", "--no-deps", *services_argv(up)],
                                        what="docker compose up (after a restore)")
    if create:
        await store.compose.run_project(project, ["create", "--no-recreate", *services_argv(create)],
                                        what="docker compose create (after a restore)")


async def container_of(store: BackupStore, stack: str, service: str) -> ContainerSummary | None:
    containers = [c for c in await store.engine.compose_containers(stack) if c.service == service]
    return next((c for c in containers if c.running), containers[0] if containers else None)


async def wait_ready(store: BackupStore, container_id: str, recipe: Recipe | None,
                     timeout_s: float = READY_TIMEOUT_S) -> bool:
    """True once the database in ``container_id`` accepts connections (its recipe's probe); False
    when it stops (not restarting), restarts twice, or ``timeout_s`` passes."""
    engine = store.engine
    deadline = time.monotonic() + timeout_s
    first_restarts: int | None = None
    running_since: float | None = None
    while time.monotonic() < deadline:
        attrs = await engine.container_attrs(container_id)
        state = (attrs or {}).get("State") or {}
        restarts = int((attrs or {}).get("RestartCount") or 0)
        first_restarts = restarts if first_restarts is None else first_restarts
        if not attrs or restarts - first_restarts >= 2:
            return False
        if not state.get("Running") and not state.get("Restarting"):
            return False
        if state.get("Running") and not state.get("Restarting"):
            running_since = running_since or time.monotonic()
            if recipe is None or recipe.ready is None:
                if time.monotonic() - running_since >= _STABLE_S:
                    return True
            else:
                try:
                    if (await engine.exec_stream(container_id, recipe.ready, timeout_s=30)).exit_code == 0:
                        return True
                except DsmError:
                    pass  # it stopped between the inspect and the exec: the next inspect says so
        else:
            running_since = None
        await anyio.sleep(1)
    return False


async def ready_database(store: BackupStore, manifest: BackupManifest, service: str, recipe: Recipe | None,
                         changes: list[str]) -> tuple[str | None, str]:
    """The id of ``service``'s running, ready container, starting it with Compose when it is not
    running; (None, why) when it does not become ready."""
    container = await container_of(store, manifest.stack, service)
    if container is not None and container.running:
        if await wait_ready(store, container.id, recipe):
            return container.id, ""
        return None, f"{service} runs but did not accept connections in {READY_TIMEOUT_S:.0f}s"
    try:
        await recreate(store, manifest, [service], [])
        changes.append(f"{service} started")
    except DsmError as exc:
        return None, f"{service} could not be started: {exc.what[:300]}"
    container = await container_of(store, manifest.stack, service)
    if container is not None and await wait_ready(store, container.id, recipe):
        return container.id, ""
    attrs = await store.engine.container_attrs(container.id) if container else None
    state = (attrs or {}).get("State") or {}
    return None, (f"{service} did not become ready (exit {state.get('ExitCode')}, "
                  f"{state.get('Error') or state.get('Status') or 'gone'})")
