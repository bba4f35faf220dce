"""Putting a backup's data back: volumes recreated empty and refilled, dumps replayed by exec.

A volume cannot be emptied through the engine's API without running something in it, and a
distroless image has nothing to run; so the containers that use it are stopped and removed,
the volume is recreated with the same labels, driver and options, the archive is extracted
into it from a never-started helper container, and Compose recreates the containers from the
stack's files (``up`` for those that ran, ``create`` for the others). A dump is replayed in
the running database container while the stack's other services are stopped.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from server.backups.databases import recipe_by_kind
from server.backups.models import BackupManifest, DatabaseDump, VolumeArchive
from server.compose import services_argv
from server.errors import BackupFailed
from server.preflight.progress import Progress, report_progress
from server.redact import Scrubber

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.engine import ContainerSummary

log = logging.getLogger("docker_stack_mcp.backups")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def check_checksums(store: BackupStore, manifest: BackupManifest,
                          items: list[VolumeArchive | DatabaseDump]) -> list[tuple[str, str | None]]:
    """(file, problem) for every item; problem None when the file is there and its sha256 matches."""
    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    results: list[tuple[str, str | None]] = []
    for item in items:
        path = directory / item.file
        if not path.is_file():
            results.append((item.file, "file missing"))
            continue
        actual = await anyio.to_thread.run_sync(sha256_file, path)
        results.append((item.file, None if actual == item.sha256 else f"sha256 {actual[:12]} != {item.sha256[:12]}"))
    return results


async def restore_data(
    store: BackupStore,
    manifest: BackupManifest,
    *,
    services: list[str] | None,
    volumes: bool,
    dumps: bool,
    progress: Progress | None,
) -> list[str]:
    chosen_volumes = [v for v in manifest.volumes if volumes and (services is None or v.service in services)]
    chosen_dumps = [d for d in manifest.dumps if dumps and (services is None or d.service in services)]
    bad = [(f, p) for f, p in await check_checksums(store, manifest, [*chosen_volumes, *chosen_dumps]) if p]
    if bad:
        raise BackupFailed(
            f"backup {manifest.backup_id} is damaged: " + "; ".join(f"{f}: {p}" for f, p in bad),
            state="nothing was restored; the stack was not changed",
            next_step="restore an older backup (backup_stack action='list')",
        )
    missing_restore = [d.service for d in chosen_dumps if not d.restore]
    if missing_restore:
        raise BackupFailed(
            f"the dumps of {', '.join(missing_restore)} have no restore command (x-dsm backup.restore)",
            state="nothing was restored",
            next_step="add backup.restore to the service's x-dsm block, or restore without those services",
        )
    restored: list[str] = []
    total = len(chosen_volumes) + len(chosen_dumps) + 1
    if chosen_volumes:
        restored += await _restore_volumes(store, manifest, chosen_volumes, progress, total)
    step = len(chosen_volumes)
    for dump in chosen_dumps:
        step += 1
        await report_progress(progress, step, total, f"restoring the {dump.kind} dump of {dump.service}")
        await _restore_dump(store, manifest, dump)
        restored.append(f"dump {dump.service}")
    await report_progress(progress, total, total, "restore done")
    return restored


async def _restore_volumes(
    store: BackupStore, manifest: BackupManifest, chosen: list[VolumeArchive], progress: Progress | None, total: int
) -> list[str]:
    from server.backups.store import VOLUME_MOUNT

    engine = store.engine
    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    names = {v.name for v in chosen}
    containers = await engine.compose_containers(manifest.stack)
    affected = [c for c in containers if set(c.volumes) & names]
    running = sorted({c.service for c in affected if c.running and c.service})
    idle = sorted({c.service for c in affected if not c.running and c.service} - set(running))
    image = await store.helper_image([p.image_id for p in manifest.images] + [c.image_id for c in containers])
    restored: list[str] = []
    for container in affected:
        if container.running:
            await engine.stop_container(container.id)
        await engine.remove_container(container.id)
    try:
        for index, volume in enumerate(chosen, start=1):
            await report_progress(progress, index, total, f"restoring volume {volume.name}")
            attrs = await engine.volume_attrs(volume.name) or {}
            labels = attrs.get("Labels") or {
                "com.docker.compose.project": manifest.stack,
                "com.docker.compose.volume": volume.name.removeprefix(f"{manifest.stack}_"),
            }
            await engine.remove_volume(volume.name)
            await engine.create_volume(
                volume.name, labels=labels, driver=attrs.get("Driver") or "local", options=attrs.get("Options")
            )
            helper = await engine.create_helper(image, {volume.name: VOLUME_MOUNT}, purpose=f"restore-{volume.name}")
            try:
                await engine.put_archive_from_file(helper, VOLUME_MOUNT, directory / volume.file)
            finally:
                await engine.remove_container(helper)
            restored.append(f"volume {volume.name}")
    finally:
        with anyio.CancelScope(shield=True):
            await _recreate(store, manifest, running, idle)
    return restored


async def _recreate(store: BackupStore, manifest: BackupManifest, running: list[str], idle: list[str]) -> None:
    """Compose recreates the removed containers from the stack's files, with the backup's env."""
    if not running and not idle:
        return
    from server.stacks import find_by_name, locate_stack

    env = store.env_of(manifest)
    directory = find_by_name(store.settings, manifest.stack).directory
    # The same project description as every other Compose call (files, compose.dsm.yaml, .env).
    project = locate_stack(store.settings, str(directory), env).project().named(manifest.stack)
    if running:
        await store.compose.run_project(project, ["up", "-d", "--no-deps", *services_argv(running)],
                                        what="docker compose up (after a volume restore)")
    if idle:
        await store.compose.run_project(project, ["create", "--no-recreate", *services_argv(idle)],
                                        what="docker compose create (after a volume restore)")


async def _restore_dump(store: BackupStore, manifest: BackupManifest, dump: DatabaseDump) -> None:
    engine = store.engine
    containers = await engine.compose_containers(manifest.stack)
    database = next((c for c in containers if c.service == dump.service and c.running), None)
    if database is None:
        raise BackupFailed(
            f"service {dump.service} is not running, so its dump cannot be replayed",
            state="nothing of this dump was restored",
            next_step="start the stack (deploy_stack or docker compose up -d) and restore again",
        )
    others: list[ContainerSummary] = [c for c in containers if c.running and c.service != dump.service]
    stopped: list[str] = []
    try:
        for container in others:  # no client may hold the databases the dump drops and recreates
            await engine.stop_container(container.id)
            stopped.append(container.id)
        recipe = recipe_by_kind(dump.kind)
        if recipe is not None and recipe.before_restore:
            await engine.exec_stream(database.id, recipe.before_restore, timeout_s=60)
        path = store.backup_dir(manifest.stack, manifest.backup_id) / dump.file
        result = await engine.exec_stream(database.id, dump.restore, stdin_from=path, timeout_s=6 * 3600)
        if result.exit_code != 0:
            raise BackupFailed(
                f"replaying the {dump.kind} dump of {dump.service} failed (exit {result.exit_code}: "
                f"{Scrubber()(result.stderr.strip())[-300:]})",
                state="the database may be partly restored; the stack's other services were started again",
                next_step="read the database's logs, then restore again or restore an older backup",
            )
    finally:
        with anyio.CancelScope(shield=True):
            for cid in stopped:
                await engine.start_container(cid)
