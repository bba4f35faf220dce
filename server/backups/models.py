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
    counted_as: str | None = Field(
        default=None, description="A hooks dump's tables were counted as this kind (postgres); recount the same way."
    )


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
    """A backup in human terms: what each service ran (its own reference, not our pin), and what each
    dump holds. Compact strings: one per image, volume and dump."""

    backup_id: str
    created_at: str
    reason: str
    bytes: int
    size: str = Field(default="", description="bytes, readable (e.g. '12.4 MiB').")
    volumes: list[str] = Field(description="'volume (size, files)' per volume archived.")
    dumps: list[str] = Field(description="'service: kind, size, rows in tables' per database dumped.")
    images: list[str] = Field(
        description="'service: image reference @ digest' per running service: what it ran (tag and digest)."
    )
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, manifest: BackupManifest) -> BackupSummary:
        return cls(
            backup_id=manifest.backup_id,
            created_at=manifest.created_at,
            reason=manifest.reason,
            bytes=manifest.bytes,
            size=human_size(manifest.bytes),
            volumes=[_volume(v) for v in manifest.volumes],
            dumps=[_dump(d) for d in manifest.dumps],
            images=[_image(p) for p in manifest.images],
            notes=manifest.notes,
        )


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB': one decimal from KiB up."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop returns


def _short(digest: str) -> str:
    """'repo@sha256:abcd...' or 'sha256:abcd...' -> 'sha256:' and 12 hex digits."""
    value = digest.rsplit("@", 1)[-1]
    algo, _, hexa = value.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else value[:19]


def _image(p: PinnedImage) -> str:
    """The reference the service was configured with, and what pins it: the registry digest when
    known, else the local image id."""
    pin = f"@{_short(p.digest)}" if p.digest else f" (id {_short(p.image_id)})"
    return f"{p.service}: {p.reference}{pin}"


def _volume(v: VolumeArchive) -> str:
    files = f", {v.files} files" if v.files is not None else ""
    return f"{v.name} ({human_size(v.bytes)}{files})"


def _dump(d: DatabaseDump) -> str:
    rows = ""
    if d.tables is not None:
        rows = f", {sum(d.tables.values())} rows in {len(d.tables)} table{'s' if len(d.tables) != 1 else ''}"
    return f"{d.service}: {d.kind}, {human_size(d.bytes)}{rows}"


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
