"""What a backup is, as stored in its manifest.json and returned to the caller.

The manifest names files relative to the backup directory and holds no secret values: the
``env`` given and the rendered model (which has interpolated secrets) sit next to it, 0600.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.models import Frozen


class VolumeArchive(Frozen):
    name: str = Field(description="Engine volume name (<project>_<volume>).")
    file: str = Field(description="Tar archive, relative to the backup directory.")
    bytes: int
    sha256: str
    files: int | None = Field(default=None, description="Regular files in the archive.")
    content_sha256: str | None = Field(
        default=None, description="Digest over names, types, modes and file contents: what a restore must reproduce."
    )
    service: str | None = Field(default=None, description="A service that mounted it when it was archived.")


class DatabaseDump(Frozen):
    service: str
    kind: str = Field(description="postgres | mysql | mongo | hooks (x-dsm backup.dump)")
    file: str
    bytes: int
    sha256: str
    restore: list[str] = Field(description="argv run in the database container with the dump on stdin.")
    tables: dict[str, int] | None = Field(
        default=None, description="Rows per table when the dump was taken (postgres), for restore drills."
    )
    volumes: list[str] = Field(default_factory=list, description="Volumes the dump stands for (not archived).")


class PinnedImage(Frozen):
    service: str
    image: str = Field(description="The image reference the container ran (a dsm-pin/ tag after a rollback).")
    original: str | None = Field(
        default=None, description="The reference the service was configured with before any pin: what it IS."
    )
    image_id: str
    digest: str | None = Field(default=None, description="Registry digest (repo@sha256:...) when known.")
    pinned_ref: str = Field(description="Our local tag dsm-pin/<stack>-<service>:<backup_id> on image_id.")

    @property
    def reference(self) -> str:
        """The original reference (older manifests: ``image``, unless that is itself a pin)."""
        return self.original or self.image


class BackupManifest(Frozen):
    backup_id: str
    stack: str
    created_at: str
    reason: str
    files: list[str] = Field(description="Stack files copied, relative to the stack directory.")
    images: list[PinnedImage]
    volumes: list[VolumeArchive]
    dumps: list[DatabaseDump]
    bytes: int = Field(description="Size of the backup on disk.")
    notes: list[str] = Field(default_factory=list)


class VerifyCheck(Frozen):
    kind: Literal["checksum", "volume", "dump", "file"]
    name: str
    ok: bool
    detail: str


class BackupVerification(Frozen):
    backup_id: str
    stack: str
    ok: bool = Field(description="True when every check passed.")
    checks: list[VerifyCheck]
    duration_s: float


class BackupSummary(Frozen):
    backup_id: str
    created_at: str
    reason: str
    bytes: int
    volumes: list[str]
    dumps: list[str] = Field(description="Services whose database was dumped.")
    images: list[str] = Field(description="Pinned image references, one per running service.")
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, manifest: BackupManifest) -> BackupSummary:
        return cls(
            backup_id=manifest.backup_id,
            created_at=manifest.created_at,
            reason=manifest.reason,
            bytes=manifest.bytes,
            volumes=[v.name for v in manifest.volumes],
            dumps=[d.service for d in manifest.dumps],
            images=[p.pinned_ref for p in manifest.images],
            notes=manifest.notes,
        )


class BackupResult(Frozen):
    stack: str
    action: Literal["create", "list", "restore", "verify"]
    backups: list[BackupSummary] = Field(description="list: newest first; create: the new backup.")
    verification: BackupVerification | None = None
    restored: list[str] = Field(default_factory=list, description="restore: volumes and dumps put back.")
    next_steps: list[str] = Field(default_factory=list)
