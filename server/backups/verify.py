"""Restore drills: prove a backup restores, without touching the stack.

Every archive and dump is checked against its sha256; each volume archive is extracted into a
scratch volume and read back, and the two trees compared by content digest; each database
dump is replayed into a scratch container of the same image (no network, labelled
``dsm.scratch=1``) and its tables and row counts compared with those recorded at dump time.
Scratch volumes and containers are removed whatever happens.
"""

from __future__ import annotations

import json
import secrets
import tarfile
import time
from typing import TYPE_CHECKING, Any

import anyio

from server.backups.databases import recipe_by_kind, scratch_environment
from server.backups.models import BackupManifest, BackupVerification, DatabaseDump, VerifyCheck, VolumeArchive
from server.backups.recovery import helper_labels
from server.backups.restore import check_checksums
from server.backups.tarsum import tar_content, tar_content_of_file
from server.errors import DsmError
from server.preflight.progress import Progress, report_progress
from server.redact import Scrubber

if TYPE_CHECKING:
    from server.backups.store import BackupStore

_READY_TIMEOUT_S = 180.0


async def verify(store: BackupStore, manifest: BackupManifest, progress: Progress | None) -> BackupVerification:
    started = time.monotonic()
    checks: list[VerifyCheck] = []
    items: list[VolumeArchive | DatabaseDump] = [*manifest.volumes, *manifest.dumps]
    damaged: set[str] = set()
    for file, problem in await check_checksums(store, manifest, items):
        checks.append(VerifyCheck(kind="checksum", name=file, ok=problem is None, detail=problem or "sha256 matches"))
        if problem:
            damaged.add(file)
    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    for rel in manifest.files:
        present = (directory / "files" / rel).is_file()
        checks.append(VerifyCheck(kind="file", name=rel, ok=present, detail="present" if present else "missing"))
    total = len(items) + 1
    for step, volume in enumerate(manifest.volumes, start=1):
        await report_progress(progress, step, total, f"restore drill: volume {volume.name}")
        if volume.file in damaged:
            checks.append(VerifyCheck(kind="volume", name=volume.name, ok=False, detail="not drilled: archive damaged"))
            continue
        checks.append(await _drill_volume(store, manifest, volume))
    for step, dump in enumerate(manifest.dumps, start=len(manifest.volumes) + 1):
        await report_progress(progress, step, total, f"restore drill: {dump.kind} dump of {dump.service}")
        if dump.file in damaged:
            checks.append(VerifyCheck(kind="dump", name=dump.service, ok=False, detail="not drilled: dump damaged"))
            continue
        checks.append(await _drill_dump(store, manifest, dump))
    await report_progress(progress, total, total, "verification done")
    return BackupVerification(
        backup_id=manifest.backup_id,
        stack=manifest.stack,
        ok=all(c.ok for c in checks),
        checks=checks,
        duration_s=round(time.monotonic() - started, 2),
    )


async def _drill_volume(store: BackupStore, manifest: BackupManifest, volume: VolumeArchive) -> VerifyCheck:
    from server.backups.store import VOLUME_MOUNT
    from server.engine import HELPER_LABEL, SCRATCH_LABEL

    engine = store.engine
    path = store.backup_dir(manifest.stack, manifest.backup_id) / volume.file
    try:
        expected = await anyio.to_thread.run_sync(tar_content_of_file, str(path))
    except (tarfile.TarError, OSError) as exc:
        return VerifyCheck(kind="volume", name=volume.name, ok=False, detail=f"archive unreadable: {exc}")
    scratch = f"dsm-scratch-{manifest.stack}-{secrets.token_hex(4)}"
    image = await store.helper_image([p.image_id for p in manifest.images])
    await engine.create_volume(scratch, labels={SCRATCH_LABEL: "1", HELPER_LABEL: "1"})
    helper = None
    try:
        helper = await engine.create_helper(image, {scratch: VOLUME_MOUNT}, purpose=f"verify-{volume.name}",
                                           labels=helper_labels(manifest.stack))
        await engine.put_archive_from_file(helper, VOLUME_MOUNT, path)
        got = await engine.read_archive(helper, f"{VOLUME_MOUNT}/.", tar_content)
    except DsmError as exc:
        return VerifyCheck(kind="volume", name=volume.name, ok=False, detail=f"restore into a scratch volume failed: "
                           f"{exc.what[:200]}")
    finally:
        with anyio.CancelScope(shield=True):
            if helper:
                await engine.remove_container(helper)
            await engine.remove_volume(scratch)
    ok = got.digest == expected.digest and got.entries == expected.entries
    detail = (f"restored {got.files} files, content identical" if ok else
              f"restored tree differs: {got.entries} entries vs {expected.entries} in the archive")
    return VerifyCheck(kind="volume", name=volume.name, ok=ok, detail=detail)


async def _drill_dump(store: BackupStore, manifest: BackupManifest, dump: DatabaseDump) -> VerifyCheck:
    engine = store.engine
    recipe = recipe_by_kind(dump.kind)
    if recipe is None or recipe.ready is None or not dump.restore:
        return VerifyCheck(kind="dump", name=dump.service, ok=True,
                           detail=f"checksum only: no restore drill for {dump.kind} dumps")
    image = next((p.image_id for p in manifest.images if p.service == dump.service), None)
    rendered = _rendered(store, manifest)
    service = (rendered.get("services") or {}).get(dump.service) or {}
    image = image or service.get("image")
    if not image or await engine.image_attrs(image) is None:
        return VerifyCheck(kind="dump", name=dump.service, ok=False, detail="image of the database is not local")
    environment = service.get("environment") if isinstance(service.get("environment"), dict) else {}
    env = scratch_environment(recipe, {str(k): str(v) for k, v in (environment or {}).items() if v is not None})
    container = await engine.run_scratch(image, env=env, purpose=f"verify-{manifest.stack}-{dump.service}")
    try:
        if not await _wait_ready(store, container, recipe.ready):
            return VerifyCheck(kind="dump", name=dump.service, ok=False,
                               detail=f"scratch database did not become ready in {_READY_TIMEOUT_S:.0f}s")
        path = store.backup_dir(manifest.stack, manifest.backup_id) / dump.file
        result = await engine.exec_stream(container, dump.restore, stdin_from=path, timeout_s=6 * 3600)
        if result.exit_code != 0:
            why = Scrubber()(result.stderr.strip())[-300:]
            state = ((await engine.container_attrs(container)) or {}).get("State") or {}
            if not state.get("Running"):
                why += f" (the scratch container stopped: exit {state.get('ExitCode')}, {state.get('Error') or 'gone'})"
            return VerifyCheck(kind="dump", name=dump.service, ok=False,
                               detail=f"replay into a scratch database failed (exit {result.exit_code}): {why}")
        counts = await store.exec_counts(container, recipe)
    finally:
        await engine.remove_container(container)
    if dump.tables is None or counts is None:
        return VerifyCheck(kind="dump", name=dump.service, ok=True,
                           detail="replayed into a scratch database without errors (row counts not recorded)")
    differ = sorted(t for t in set(dump.tables) | set(counts) if dump.tables.get(t) != counts.get(t))
    if differ:
        shown = ", ".join(f"{t}: {dump.tables.get(t)} -> {counts.get(t)}" for t in differ[:5])
        return VerifyCheck(kind="dump", name=dump.service, ok=False, detail=f"row counts differ: {shown}")
    return VerifyCheck(kind="dump", name=dump.service, ok=True,
                       detail=f"replayed: {len(counts)} tables, {sum(counts.values())} rows, as recorded at dump time")


async def _wait_ready(store: BackupStore, container: str, ready: list[str]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        attrs = await store.engine.container_attrs(container)
        if not attrs or not (attrs.get("State") or {}).get("Running"):
            return False
        if (await store.engine.exec_stream(container, ready, timeout_s=30)).exit_code == 0:
            return True
        await anyio.sleep(1)
    return False


def _rendered(store: BackupStore, manifest: BackupManifest) -> dict[str, Any]:
    path = store.backup_dir(manifest.stack, manifest.backup_id) / "rendered.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
