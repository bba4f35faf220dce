"""BackupStore: where backups live, and taking, listing, pruning and restoring them.

Layout: ``DSM_STATE_DIR/backups/<stack>/<backup_id>/`` holding ``manifest.json`` (written last:
a directory without one is an unfinished backup and is ignored, then pruned), ``files/``,
``rendered.json`` and ``env.json`` (0600: they hold interpolated secrets), ``volumes/<name>.tar``
and ``dumps/<service>.<ext>``. Everything is streamed to disk and hashed while it is written.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from server.backups.databases import Recipe, parse_counts, recipe_for
from server.backups.models import BackupManifest, BackupVerification, DatabaseDump, PinnedImage, VolumeArchive
from server.errors import BackupFailed, BackupNotFound, DsmError, PathRejected
from server.preflight.progress import Progress, report_progress
from server.redact import Scrubber
from server.settings import Settings
from server.stackmodel import LoadedStack

if TYPE_CHECKING:
    from server.backups.restore import RestoreOutcome
    from server.compose import ComposeRunner
    from server.engine import ContainerSummary, Engine

log = logging.getLogger("docker_stack_mcp.backups")

BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
PIN_REPOSITORY = "dsm-pin/"
VOLUME_MOUNT = "/dsm-volume"
STACK_EXTRA_FILES = (".env", "compose.dsm.yaml")
_DUMP_TIMEOUT_S = 6 * 3600


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def pin_ref(stack: str, service: str, backup_id: str) -> str:
    repo = re.sub(r"[^a-z0-9_.-]+", "-", f"{stack}-{service}".lower()).strip("-.")
    return f"{PIN_REPOSITORY}{repo}:{backup_id}"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start, atomically (tmp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


class BackupStore:
    def __init__(self, settings: Settings, engine: Engine, compose: ComposeRunner) -> None:
        self.settings = settings
        self.engine = engine
        self.compose = compose
        self.root = settings.state_dir / "backups"

    # -- layout ---------------------------------------------------------------------------
    def stack_dir(self, stack: str) -> Path:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", stack):
            raise PathRejected(f"{stack!r} is not a Compose project name", state="nothing was read")
        return self.root / stack

    def backup_dir(self, stack: str, backup_id: str) -> Path:
        if not BACKUP_ID.match(backup_id):
            raise BackupNotFound(
                f"{backup_id!r} is not a backup id (they look like 20260101T120000Z-a1b2c3)",
                next_step=f"call backup_stack(stack={stack!r}, action='list')",
            )
        return self.stack_dir(stack) / backup_id

    # -- reading ----------------------------------------------------------------------------
    def list(self, stack: str) -> list[BackupManifest]:
        """Complete backups of ``stack``, newest first."""
        directory = self.stack_dir(stack)
        found: builtins.list[BackupManifest] = []
        for entry in directory.iterdir() if directory.is_dir() else []:
            if BACKUP_ID.match(entry.name) and (entry / "manifest.json").is_file():
                try:
                    found.append(BackupManifest.model_validate_json((entry / "manifest.json").read_text()))
                except (OSError, ValidationError):
                    log.warning("backup %s/%s has an unreadable manifest; ignored", stack, entry.name)
        return sorted(found, key=lambda m: (m.created_at, m.backup_id), reverse=True)

    def get(self, stack: str, backup_id: str) -> BackupManifest:
        path = self.backup_dir(stack, backup_id) / "manifest.json"
        try:
            return BackupManifest.model_validate_json(path.read_text())
        except (OSError, ValidationError):
            raise BackupNotFound(
                f"no backup {backup_id} for stack {stack!r}",
                state="nothing was changed",
                next_step=f"call backup_stack(stack={stack!r}, action='list') for the backups there are",
            ) from None

    def env_of(self, manifest: BackupManifest) -> dict[str, str]:
        """The ``env`` given when the backup was taken (for interpolation on restore)."""
        path = self.backup_dir(manifest.stack, manifest.backup_id) / "env.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    # -- taking a backup --------------------------------------------------------------------
    async def create(
        self,
        stack: LoadedStack,
        *,
        env: Mapping[str, str] | None = None,
        reason: str = "",
        data: bool = True,
        progress: Progress | None = None,
    ) -> BackupManifest:
        """Config, rendered model, pinned images of what runs now and (``data``) volumes and dumps.

        Raises BackupFailed (nothing of the partial backup is left behind)."""
        backup_id = new_backup_id()
        target = self.stack_dir(stack.name) / backup_id
        target.mkdir(parents=True, mode=0o700)
        os.chmod(self.root, 0o700)
        pins: builtins.list[PinnedImage] = []
        scrub = Scrubber(stack.secret_values | set((env or {}).values()))
        try:
            files = self._copy_stack_files(stack, target / "files")
            write_private(target / "rendered.json", json.dumps(stack.rendered, indent=1))
            write_private(target / "env.json", json.dumps(dict(env or {})))
            containers = await self.engine.compose_containers(stack.name)
            pins = await self._pin_images(stack.name, backup_id, containers, self._pin_originals(stack))
            volumes: builtins.list[VolumeArchive] = []
            dumps: builtins.list[DatabaseDump] = []
            notes: builtins.list[str] = []
            if data:
                from server.backups.capture import capture_data

                volumes, dumps, notes = await capture_data(self, stack, target, containers, scrub, progress)
            manifest = BackupManifest(
                backup_id=backup_id,
                stack=stack.name,
                created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
                reason=scrub(reason)[:500],
                files=files,
                images=pins,
                volumes=volumes,
                dumps=dumps,
                bytes=_size_of(target),
                notes=notes if data else [*notes, "config only: volumes and databases were not backed up"],
            )
            write_private(target / "manifest.json", manifest.model_dump_json(indent=1))
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._discard(target, pins)
            if isinstance(exc, Exception) and not isinstance(exc, DsmError):
                log.exception("backup of %s failed", stack.name)
                raise BackupFailed(
                    f"backup of {stack.name!r} failed: {type(exc).__name__}: {scrub(str(exc))[:300]}",
                    state="the partial backup was removed; the stack was not changed",
                    next_step="fix the cause and call backup_stack(action='create') again",
                ) from exc
            raise
        await report_progress(progress, 1, 1, f"backup {backup_id} done ({manifest.bytes} bytes)")
        pruned = await self.prune(stack.name)
        if pruned:
            log.info("pruned backups of %s: %s", stack.name, ", ".join(pruned))
        return manifest

    def _copy_stack_files(self, stack: LoadedStack, dest: Path) -> builtins.list[str]:
        if stack.directory is None:
            return []
        dest.mkdir(mode=0o700)
        names: builtins.list[str] = []
        candidates = [*stack.files, *(stack.directory / n for n in STACK_EXTRA_FILES)]
        for path in candidates:
            if not path.is_file() or not path.resolve().is_relative_to(stack.directory.resolve()):
                continue
            rel = path.resolve().relative_to(stack.directory.resolve()).as_posix()
            if rel in names:
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            os.chmod(dest / rel, 0o600)
            names.append(rel)
        return names

    def _pin_originals(self, stack: LoadedStack) -> dict[str, str]:
        """``service -> original reference`` known before looking at images: the pins' record in
        compose.dsm.yaml, else the newest backup that pinned the same image (pin of a pin)."""
        from server.roles import pin_originals

        found = pin_originals(stack)
        for manifest in self.list(stack.name):
            for pin in manifest.images:
                if pin.original and pin.service not in found:
                    found.setdefault(f"{pin.service}@{pin.image_id}", pin.original)
        return found

    async def _pin_images(
        self, stack: str, backup_id: str, containers: builtins.list[ContainerSummary],
        originals: dict[str, str] | None = None,
    ) -> builtins.list[PinnedImage]:
        from server.roles import is_pin, original_from_tags

        originals = originals or {}
        pins: builtins.list[PinnedImage] = []
        seen: set[str] = set()
        for container in containers:
            if not container.running or not container.service or not container.image_id:
                continue
            if container.service in seen:
                continue
            seen.add(container.service)
            ref = pin_ref(stack, container.service, backup_id)
            repository, tag = ref.rsplit(":", 1)
            await self.engine.tag_image(container.image_id, repository, tag)
            attrs = await self.engine.image_attrs(container.image_id) or {}
            digests = attrs.get("RepoDigests") or []
            image = container.image or ""
            original = image if image and not is_pin(image) and not image.startswith("sha256:") else (
                originals.get(container.service) or originals.get(f"{container.service}@{container.image_id}")
                or original_from_tags(attrs))
            pins.append(
                PinnedImage(
                    service=container.service,
                    image=image,
                    original=original,
                    image_id=container.image_id,
                    digest=digests[0] if digests else None,
                    pinned_ref=ref,
                )
            )
        return sorted(pins, key=lambda p: p.service)

    async def _discard(self, target: Path, pins: builtins.list[PinnedImage]) -> None:
        for pin in pins:
            try:
                await self.engine.remove_image_tag(pin.pinned_ref)
            except DsmError:
                log.warning("could not remove pinned tag %s", pin.pinned_ref)
        shutil.rmtree(target, ignore_errors=True)

    # -- retention --------------------------------------------------------------------------
    async def prune(self, stack: str) -> builtins.list[str]:
        """Keep DSM_BACKUP_KEEP newest backups within DSM_BACKUP_MAX_BYTES (the newest always
        stays); remove the rest with their pinned image tags, and unfinished backup directories.
        Returns the ids removed."""
        manifests = self.list(stack)  # newest first
        keep: builtins.list[BackupManifest] = []
        drop: builtins.list[BackupManifest] = []
        total = 0
        for index, manifest in enumerate(manifests):
            fits = total + manifest.bytes <= self.settings.backup_max_bytes
            if index == 0 or (index < self.settings.backup_keep and fits):
                keep.append(manifest)
                total += manifest.bytes
            else:
                drop.append(manifest)
        removed: builtins.list[str] = []
        for manifest in drop:
            await self._discard(self.backup_dir(stack, manifest.backup_id), list(manifest.images))
            removed.append(manifest.backup_id)
        # Unfinished backups (no manifest) older than the newest complete one: a crash mid-backup.
        newest = manifests[0].backup_id if manifests else None
        directory = self.stack_dir(stack)
        for entry in directory.iterdir() if directory.is_dir() else []:
            unfinished = BACKUP_ID.match(entry.name) and not (entry / "manifest.json").exists()
            if unfinished and newest and entry.name < newest:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    # -- restoring --------------------------------------------------------------------------
    async def restore_files(self, manifest: BackupManifest, directory: Path) -> None:
        """Put the stack's files back as they were (compose files, .env, compose.dsm.yaml).

        The files replaced (and ours created since, like a compose.dsm.yaml or .env that did not
        exist then) are moved to ``replaced-<time>/`` inside the backup, not deleted."""
        source = self.backup_dir(manifest.stack, manifest.backup_id) / "files"
        aside = source.parent / f"replaced-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        backed = set(manifest.files)
        current = [n for n in STACK_EXTRA_FILES if (directory / n).is_file()]
        for rel in sorted(backed | set(current)):
            target = directory / rel
            if not target.resolve().is_relative_to(directory.resolve()):
                raise PathRejected(f"{rel!r} leads out of the stack directory", state="nothing was changed")
            if target.is_file():
                aside.mkdir(mode=0o700, exist_ok=True)
                shutil.copy2(target, aside / Path(rel).name)
            if rel in backed:
                tmp = target.with_name(target.name + ".dsm-restore")
                shutil.copy2(source / rel, tmp)
                os.replace(tmp, target)
            elif target.is_file():
                target.unlink()

    async def restore_data(
        self,
        manifest: BackupManifest,
        *,
        services: builtins.list[str] | None = None,
        volumes: bool = True,
        dumps: bool = True,
        progress: Progress | None = None,
        bring_up: bool = False,
    ) -> RestoreOutcome:
        """Volumes (recreated empty, then filled) and database dumps (restored by exec). Returns
        what was restored, e.g. ``['volume dsm_data', 'dump db']``, a list that also carries
        ``.steps`` (which way each went) and ``.checks`` (tables and rows after each dump vs dump
        time). Every file is checked against its sha256 first: a damaged backup changes nothing.

        A database that does not run or does not become ready is brought back: from the backup's
        archive of its volumes if there is one, else its volumes are emptied (what they held is
        archived into the backup directory first) so that it initialises a fresh data directory,
        and the dump is replayed into that. ``bring_up`` starts, afterwards, the services that ran
        when the backup was taken and do not run now (backup_stack restore: the stack comes back)."""
        from server.backups.restore import restore_data

        return await restore_data(self, manifest, services=services, volumes=volumes, dumps=dumps,
                                  progress=progress, bring_up=bring_up)

    async def verify(self, manifest: BackupManifest, progress: Progress | None = None) -> BackupVerification:
        """Restore drill into scratch volumes and scratch database containers (removed after)."""
        from server.backups.verify import verify

        return await verify(self, manifest, progress)

    # -- shared helpers ---------------------------------------------------------------------
    async def helper_image(self, preferred: Sequence[str | None]) -> str:
        """A local image to create never-started helper containers from: the first of
        ``preferred`` that is present, else any local image (nothing runs, so any will do)."""
        for ref in preferred:
            if ref and await self.engine.image_attrs(ref) is not None:
                return ref
        tags = await self.engine.images_with_prefix("")
        if tags:
            return tags[0]
        raise BackupFailed(
            "no local image to create a helper container from",
            state="nothing was changed",
            next_step="pull or build any image on this engine (the stack's own images will do)",
        )

    async def exec_counts(self, container_id: str, recipe: Recipe) -> dict[str, int] | None:
        if recipe.counts is None:
            return None
        result = await self.engine.exec_stream(container_id, recipe.counts, timeout_s=600)
        return parse_counts(result.stdout) if result.exit_code == 0 else None

    @staticmethod
    def recipe(stack_rendered: dict[str, Any], service: str, settings: Any) -> Recipe | None:
        body = (stack_rendered.get("services") or {}).get(service) or {}
        return recipe_for(body.get("image"), settings)
