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


class DataCheck(Frozen):
    """Tables and rows of a database after its dump was replayed, against those recorded when the
    dump was taken (``DatabaseDump.tables``)."""

    service: str
    tables_expected: int | None = Field(description="Tables recorded at dump time (None: not recorded).")
    tables_found: int | None = Field(description="Tables counted after the restore (None: could not count).")
    rows_expected: int | None
    rows_found: int | None
    ok: bool | None = Field(
        description="True: every recorded table is back with its row count; False: not (see missing, "
        "differ); None: not checked (detail says why)."
    )
    missing: list[str] = Field(default_factory=list, description="Tables recorded at dump time and not found.")
    differ: list[str] = Field(default_factory=list, description="'table: recorded -> found' row counts.")
    detail: str = ""


RestoreWay = Literal["volume archive", "dump", "volume archive, database could not start",
                     "dump into a fresh data directory, database could not start"]


class RestoreStep(Frozen):
    """One thing a restore put back, and which way it went."""

    target: str = Field(description="'volume <name>' or 'dump <service>'.")
    way: RestoreWay
    service: str | None = None
    failed_state: list[str] = Field(
        default_factory=list,
        description="Archives of what the volumes held before (kept in the backup directory, relative to it).",
    )
    detail: str = ""


class BackupResult(Frozen):
    stack: str
    action: Literal["create", "list", "restore", "verify"]
    backups: list[BackupSummary] = Field(description="list: newest first; create: the new backup.")
    verification: BackupVerification | None = None
    restored: list[str] = Field(default_factory=list, description="restore: volumes and dumps put back.")
    steps: list[RestoreStep] = Field(default_factory=list, description="restore: which way each one went.")
    data_checks: list[DataCheck] = Field(default_factory=list, description="restore: tables and rows vs dump time.")
    next_steps: list[str] = Field(default_factory=list)
