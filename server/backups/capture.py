"""Capturing a stack's data: database dumps by exec, named volumes through the archive API.

A live database volume is never tarred: the database is dumped instead, and when that fails
the service is stopped, its volumes archived, and it is started again (the notes say so).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from server.backups import recovery
from server.backups.databases import Recipe, recipe_for_role
from server.backups.models import DatabaseDump, VolumeArchive
from server.errors import DsmError
from server.preflight.progress import Progress, report_progress
from server.redact import Scrubber
from server.roles import role_of_container
from server.stackmodel import LoadedStack

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.engine import ContainerSummary

log = logging.getLogger("docker_stack_mcp.backups")


async def capture_data(
    store: BackupStore,
    stack: LoadedStack,
    target: Path,
    containers: list[ContainerSummary],
    scrub: Scrubber,
    progress: Progress | None,
) -> tuple[list[VolumeArchive], list[DatabaseDump], list[str]]:
    engine = store.engine
    notes: list[str] = []
    volumes = [v["Name"] for v in await engine.project_volumes(stack.name)]
    users: dict[str, list[ContainerSummary]] = {v: [] for v in volumes}
    for container in containers:
        for name in container.volumes:
            users.setdefault(name, []).append(container)
    databases: list[tuple[ContainerSummary, Recipe]] = []
    stop_to_archive: set[str] = set()
    for container in containers:
        if not container.running or not container.service:
            continue
        settings = stack.service_settings_for(container.service)
        # What the container IS (a pin resolved to its original, what it runs), not its image's name.
        role = await role_of_container(engine, stack, container)
        recipe = recipe_for_role(role, settings)
        if recipe is not None:
            databases.append((container, recipe))
        elif role.is_database and container.volumes:
            # A database we cannot dump (no hooks, unknown image): never tar it while it runs.
            notes.append(f"{container.service}: role database without x-dsm backup hooks; not dumped")
            stop_to_archive.add(container.id)
    total = len(databases) + len(volumes) + 1
    step = 0
    dumps: list[DatabaseDump] = []
    covered: set[str] = set()
    for container, recipe in databases:
        step += 1
        service = container.service or ""
        await report_progress(progress, step, total, f"{recipe.kind} database {service}")
        if recipe.snapshot is not None:
            result = await engine.exec_stream(container.id, recipe.snapshot, timeout_s=600)
            if result.exit_code != 0:
                notes.append(f"{service}: {recipe.kind} snapshot failed (exit {result.exit_code}); "
                             "stopped while its volumes were archived")
                stop_to_archive.add(container.id)
            continue
        assert recipe.dump is not None
        dump = await _dump(store, container, recipe, target, scrub, notes)
        if dump is None:
            stop_to_archive.add(container.id)
            continue
        dumps.append(dump)
        covered.update(dump.volumes)
    archives: list[VolumeArchive] = []
    (target / "volumes").mkdir(mode=0o700, exist_ok=True)
    for name in volumes:
        step += 1
        if name in covered:
            notes.append(f"volume {name}: not archived, its database is dumped instead")
            continue
        await report_progress(progress, step, total, f"archiving volume {name}")
        mounted_by = users.get(name, [])
        to_stop = [c for c in mounted_by if c.id in stop_to_archive and c.running]
        image = await store.helper_image([c.image_id for c in mounted_by] + [c.image_id for c in containers])
        # Noted before they stop: a server killed mid-archive has them started by crash recovery.
        async with recovery.stopped(store, stack.name, to_stop, f"archiving volume {name}"):
            notes.extend(f"volume {name}: {c.service} was stopped while it was archived, then started again"
                         for c in to_stop)
            archives.append(await archive_volume(store, name, image, target, mounted_by, stack=stack.name))
    return archives, dumps, notes


async def archive_volume(
    store: BackupStore, name: str, image: str, target: Path, mounted_by: list[ContainerSummary],
    *, stack: str | None = None,
) -> VolumeArchive:
    """Archive one volume from a created-never-started helper container into volumes/<name>.tar."""
    from server.backups.store import VOLUME_MOUNT

    engine = store.engine
    helper = await engine.create_helper(image, {name: VOLUME_MOUNT}, purpose=f"archive-{name}",
                                        labels=recovery.helper_labels(stack) if stack else None)
    try:
        rel = f"volumes/{name}.tar"
        written = await engine.archive_to_file(helper, f"{VOLUME_MOUNT}/.", target / rel)
    finally:
        await engine.remove_container(helper)
    return VolumeArchive(
        name=name,
        file=rel,
        bytes=written.bytes,
        sha256=written.sha256,
        service=mounted_by[0].service if mounted_by else None,
    )


async def _dump(
    store: BackupStore,
    container: ContainerSummary,
    recipe: Recipe,
    target: Path,
    scrub: Scrubber,
    notes: list[str],
) -> DatabaseDump | None:
    from server.backups.store import _DUMP_TIMEOUT_S

    service = container.service or container.name
    (target / "dumps").mkdir(mode=0o700, exist_ok=True)
    rel = f"dumps/{service}.{recipe.ext}"
    assert recipe.dump is not None
    try:
        result = await store.engine.exec_stream(
            container.id, recipe.dump, stdout_to=target / rel, timeout_s=_DUMP_TIMEOUT_S
        )
    except DsmError as exc:
        notes.append(f"{service}: {recipe.kind} dump could not run ({scrub(exc.what)[:200]})")
        (target / rel).unlink(missing_ok=True)
        return None
    if result.exit_code != 0 or result.sha256 is None:
        why = "timed out" if result.timed_out else f"exit {result.exit_code}"
        notes.append(f"{service}: {recipe.kind} dump failed ({why}: {scrub(result.stderr.strip())[-200:]})")
        (target / rel).unlink(missing_ok=True)
        return None
    if result.stdout_bytes == 0:
        notes.append(f"{service}: {recipe.kind} dump printed nothing; its volumes are archived instead")
        (target / rel).unlink(missing_ok=True)
        return None
    tables = await store.exec_counts(container.id, recipe)
    if recipe.restore is None:
        notes.append(f"{service}: dumped, but x-dsm backup has no restore hook; restore is not possible")
    return DatabaseDump(
        service=service,
        kind=recipe.kind,
        file=rel,
        bytes=result.stdout_bytes,
        sha256=result.sha256,
        restore=list(recipe.restore or []),
        tables=tables,
        volumes=sorted(container.volumes),
        counted_as=recipe.counts_kind if tables is not None and recipe.kind == "hooks" else None,
    )


