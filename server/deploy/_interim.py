"""Stand-in for server.backups until that branch is merged.

Same signature as SPEC-deploy.md, the smallest behaviour the pipeline needs: a backup of the
files, pinned image tags and database dumps via ``compose exec``. Deleted when the real package
lands (see seams.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from server.compose import ComposeRunner
from server.settings import Settings

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class PinnedImage:
    service: str
    image: str
    image_id: str
    digest: str | None
    pinned_ref: str


@dataclass
class DatabaseDump:
    service: str
    kind: str
    file: str
    bytes: int
    sha256: str
    restore: list[str]


@dataclass
class BackupManifest:
    backup_id: str
    stack: str
    created_at: str
    reason: str
    files: list[str]
    images: list[PinnedImage]
    volumes: list[Any]
    dumps: list[DatabaseDump]
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


class BackupStore:
    def __init__(self, settings: Settings, engine: Any, compose: ComposeRunner) -> None:
        self.settings, self.engine, self.compose = settings, engine, compose

    def _dir(self, stack: str, backup_id: str) -> Path:
        return self.settings.state_dir / "backups" / stack / backup_id

    async def create(self, stack: Any, *, env: Mapping[str, str] | None = None, reason: str = "",
                     data: bool = True, progress: Any = None) -> BackupManifest:
        from server.deploy.plan import IMAGE_LABEL, is_database
        from server.deploy.project import OVERRIDE_NAME, compose_project, user_files
        from server.engine import tag_image

        backup_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        where = self._dir(stack.name, backup_id)
        (where / "files").mkdir(parents=True)
        names = []
        for f in [*user_files(stack.directory), stack.directory / ".env", stack.directory / OVERRIDE_NAME]:
            if f.is_file():
                shutil.copy2(f, where / "files" / f.name)
                names.append(f.name)
        images = []
        running = [c for c in await self.engine.compose_containers(stack.name) if c.running]
        for c in running:
            image_id = c.labels.get(IMAGE_LABEL)
            if c.service and image_id:
                ref = f"dsm-pin/{stack.name}-{c.service}:{backup_id}"
                await tag_image(self.engine, image_id, ref)
                images.append(PinnedImage(c.service, c.image or "", image_id, None, ref))
        dumps = []
        for c in running:
            if data and c.service and is_database(stack, c.service):
                hooks = stack.service_settings_for(c.service).backup
                dump = hooks.dump or ["pg_dumpall", "--clean", "--if-exists", "-U", "postgres"]
                restore = hooks.restore or ["psql", "-U", "postgres", "-d", "postgres", "-q"]
                result = await self.compose.run_project(compose_project(stack), ["exec", "-T", c.service, *dump])
                file = where / f"{c.service}.sql"
                file.write_text(result.stdout)
                dumps.append(DatabaseDump(c.service, "sql", file.name, file.stat().st_size, "", restore))
        manifest = BackupManifest(backup_id, stack.name, _now(), reason, names, images, [], dumps)
        (where / "manifest.json").write_text(json.dumps({"dumps": [d.__dict__ for d in dumps], "files": names,
                                                          "images": [i.__dict__ for i in images]}))
        return manifest

    def get(self, stack: str, backup_id: str) -> BackupManifest:
        where = self._dir(stack, backup_id)
        raw = json.loads((where / "manifest.json").read_text())
        return BackupManifest(backup_id, stack, "", "", raw["files"], [PinnedImage(**i) for i in raw["images"]], [],
                              [DatabaseDump(**d) for d in raw["dumps"]])

    async def restore_files(self, manifest: BackupManifest, directory: Path) -> None:
        from server.deploy.project import OVERRIDE_NAME

        where = self._dir(manifest.stack, manifest.backup_id) / "files"
        for name in (".env", OVERRIDE_NAME):
            if name not in manifest.files:
                (directory / name).unlink(missing_ok=True)
        for name in manifest.files:
            shutil.copy2(where / name, directory / name)

    async def restore_data(self, manifest: BackupManifest, *, services: list[str] | None = None,
                           volumes: bool = True, dumps: bool = True, progress: Any = None) -> list[str]:
        from server.deploy.project import fresh_project
        from server.stacks import find_by_name

        location = find_by_name(self.settings, manifest.stack)
        done = []
        for d in manifest.dumps:
            if dumps and (services is None or d.service in services):
                data = (self._dir(manifest.stack, manifest.backup_id) / d.file).read_bytes()
                deadline = time.monotonic() + 60
                while True:
                    result = await self.compose.run_project(
                        fresh_project(self.settings, location.directory, manifest.stack),
                        ["exec", "-T", d.service, *d.restore], stdin=data, check=False)
                    if result.returncode == 0 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                done.append(f"{d.service}: dump restored (exit {result.returncode})")
        return done
