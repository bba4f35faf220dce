"""Putting a backup's data back: volumes recreated and refilled, dumps replayed by exec.

Nothing is touched before every file to be used (archives and dumps alike) matches its sha256.
Volumes are replaced as :mod:`server.backups.revive` describes. A dump is replayed in the
running database container while the stack's other services are stopped; a database that does
not run or does not become ready is brought back first (revive: its archive, or a fresh data
directory, the failed state kept). After each replay its tables and rows are counted and
compared with those recorded when the dump was taken (:class:`DataCheck`).

Every answer says what was changed: an error after a change never says "nothing was changed".
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from server.backups import recovery, revive
from server.backups.databases import counts_recipe, recipe_by_kind
from server.backups.models import BackupManifest, DatabaseDump, DataCheck, RestoreStep, RestoreWay, VolumeArchive
from server.errors import BackupFailed, DsmError
from server.preflight.progress import Progress, report_progress
from server.redact import Scrubber

if TYPE_CHECKING:
    from server.backups.store import BackupStore

log = logging.getLogger("docker_stack_mcp.backups")


class RestoreOutcome(list[str]):
    """What a restore put back: a list of ``'volume <name>'`` / ``'dump <service>'`` (as before),
    with ``steps`` (which way each went: :class:`RestoreStep`) and ``checks`` (one
    :class:`DataCheck` per dump replayed)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[RestoreStep] = []
        self.checks: list[DataCheck] = []

    def add(self, step: RestoreStep) -> None:
        self.steps.append(step)
        self.append(step.target)


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


def _archives_of(manifest: BackupManifest, dump: DatabaseDump) -> list[VolumeArchive]:
    return [v for v in manifest.volumes if v.name in dump.volumes or (v.service == dump.service and v.service)]


async def restore_data(
    store: BackupStore,
    manifest: BackupManifest,
    *,
    services: list[str] | None,
    volumes: bool,
    dumps: bool,
    progress: Progress | None,
    bring_up: bool,
) -> RestoreOutcome:
    chosen_volumes = [v for v in manifest.volumes if volumes and (services is None or v.service in services)]
    chosen_dumps = [d for d in manifest.dumps if dumps and (services is None or d.service in services)]
    # A database that cannot start is brought back from its own archive when the backup has one:
    # checked now with the rest, so a damaged backup is refused before anything is touched.
    fallback = [v for d in chosen_dumps for v in _archives_of(manifest, d) if v not in chosen_volumes]
    items: list[VolumeArchive | DatabaseDump] = [*chosen_volumes, *chosen_dumps, *fallback]
    bad = [(f, p) for f, p in await check_checksums(store, manifest, items) if p]
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
    outcome = RestoreOutcome()
    changes: list[str] = []
    total = len(chosen_volumes) + len(chosen_dumps) + 1
    try:
        if chosen_volumes:
            directory = store.backup_dir(manifest.stack, manifest.backup_id)
            await revive.replace_volumes(store, manifest, [(v.name, directory / v.file) for v in chosen_volumes],
                                         changes=changes, progress=progress, total=total)
            for v in chosen_volumes:
                outcome.add(RestoreStep(target=f"volume {v.name}", way="volume archive", service=v.service))
        step = len(chosen_volumes)
        for dump in chosen_dumps:
            step += 1
            await report_progress(progress, step, total, f"restoring the {dump.kind} dump of {dump.service}")
            restored = {v.name for v in chosen_volumes}
            await _restore_one_dump(store, manifest, dump, [v for v in _archives_of(manifest, dump)
                                                            if v.name not in restored], outcome, changes)
        if bring_up:
            await _bring_up(store, manifest)
    except DsmError as exc:
        if not changes:
            raise
        raise BackupFailed(
            exc.what,
            state="already changed: " + "; ".join(changes[-12:])
            + ("" if not exc.state or "nothing" in exc.state else f"; {exc.state}"),
            next_step=exc.next_step or "read the affected services' logs (stack_logs), then restore again",
        ) from exc
    await report_progress(progress, total, total, "restore done")
    return outcome


async def _restore_one_dump(store: BackupStore, manifest: BackupManifest, dump: DatabaseDump,
                            archives: list[VolumeArchive], outcome: RestoreOutcome, changes: list[str]) -> None:
    recipe = recipe_by_kind(dump.kind)
    database, why = await revive.ready_database(store, manifest, dump.service, recipe, changes)
    way: RestoreWay = "dump"
    kept: list[str] = []
    directory = store.backup_dir(manifest.stack, manifest.backup_id)
    if database is None and archives:
        log.warning("%s/%s: %s; restoring its volume archive", manifest.stack, dump.service, why)
        kept = await revive.replace_volumes(store, manifest, [(v.name, directory / v.file) for v in archives],
                                            changes=changes, keep_failed=True, start=frozenset({dump.service}))
        for v in archives:
            outcome.add(RestoreStep(target=f"volume {v.name}", way="volume archive, database could not start",
                                    service=dump.service, failed_state=kept, detail=why))
        database, why = await revive.ready_database(store, manifest, dump.service, recipe, changes)
    if database is None:
        if not dump.volumes:
            raise BackupFailed(
                f"{why}, and its data is not in a named volume, so it cannot be given a fresh data directory",
                state="the database is not running", next_step="start it by hand on an empty data directory, "
                "then backup_stack restore again (the dump is replayed into it)")
        log.warning("%s/%s: %s; replaying the dump into a fresh data directory", manifest.stack, dump.service, why)
        kept += await revive.replace_volumes(store, manifest, [(name, None) for name in dump.volumes],
                                             changes=changes, keep_failed=True, start=frozenset({dump.service}))
        way = "dump into a fresh data directory, database could not start"
        database, fresh_why = await revive.ready_database(store, manifest, dump.service, recipe, changes)
        if database is None:
            raise BackupFailed(
                f"{why}; on a fresh data directory too: {fresh_why}",
                state=f"its volumes were emptied; what they held is kept in {directory}/{', '.join(kept)}",
                next_step=f"read the logs of {dump.service} (stack_logs); the dump is {directory / dump.file}")
    check = await _replay(store, manifest, dump, database, changes)
    outcome.checks.append(check)
    outcome.add(RestoreStep(target=f"dump {dump.service}", way=way, service=dump.service, failed_state=kept,
                            detail=why))


async def _replay(store: BackupStore, manifest: BackupManifest, dump: DatabaseDump, database: str,
                  changes: list[str]) -> DataCheck:
    """Replay the dump in ``database`` with the stack's other services stopped; count after."""
    engine = store.engine
    containers = await engine.compose_containers(manifest.stack)
    others = [c for c in containers if c.running and c.service != dump.service]
    recipe = recipe_by_kind(dump.kind)
    # No client may hold the databases the dump drops and recreates.
    async with recovery.stopped(store, manifest.stack, others, f"replaying the dump of {dump.service}", changes):
        if recipe is not None and recipe.before_restore:
            await engine.exec_stream(database, recipe.before_restore, timeout_s=60)
        path = store.backup_dir(manifest.stack, manifest.backup_id) / dump.file
        changes.append(f"the {dump.kind} dump of {dump.service} replayed")
        result = await engine.exec_stream(database, dump.restore, stdin_from=path, timeout_s=6 * 3600)
        if result.exit_code != 0:
            raise BackupFailed(
                f"replaying the {dump.kind} dump of {dump.service} failed (exit {result.exit_code}: "
                f"{Scrubber()(result.stderr.strip())[-300:]})",
                state="the database may be partly restored",
                next_step="read the database's logs, then restore again or restore an older backup",
            )
        # Counted before the other services write again.
        counter = counts_recipe(dump.kind, dump.counted_as)
        counts = await store.exec_counts(database, counter) if counter is not None else None
    return data_check(dump, counts)


def data_check(dump: DatabaseDump, counts: dict[str, int] | None) -> DataCheck:
    expected = dump.tables
    if expected is None or counts is None:
        why = ("no row counts were recorded when the dump was taken" if expected is None
               else f"the tables of this {dump.kind} database could not be counted")
        return DataCheck(service=dump.service, tables_expected=None if expected is None else len(expected),
                         tables_found=None if counts is None else len(counts),
                         rows_expected=None if expected is None else sum(expected.values()),
                         rows_found=None if counts is None else sum(counts.values()), ok=None, detail=why)
    missing = sorted(t for t in expected if t not in counts)
    differ = sorted(f"{t}: {n} -> {counts[t]}" for t, n in expected.items() if t in counts and counts[t] != n)
    ok = not missing and not differ
    return DataCheck(
        service=dump.service, tables_expected=len(expected), tables_found=len(counts),
        rows_expected=sum(expected.values()), rows_found=sum(counts.values()), ok=ok, missing=missing,
        differ=differ,
        detail=(f"{len(counts)} tables, {sum(counts.values())} rows, as recorded when the dump was taken" if ok else
                f"{len(missing)} table(s) missing, {len(differ)} with other row counts than at dump time"),
    )


async def _bring_up(store: BackupStore, manifest: BackupManifest) -> None:
    """Services that ran when the backup was taken (the pinned ones) and do not run now are started."""
    ran = {p.service for p in manifest.images}
    containers = await store.engine.compose_containers(manifest.stack)
    running = {c.service for c in containers if c.running}
    down = sorted({c.service for c in containers if not c.running and c.service in ran} - running)
    if down:
        await revive.recreate(store, manifest, down, [])
