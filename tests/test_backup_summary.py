"""backup_stack list in human terms (issue 17): the original image references with their digest,
dump sizes and row counts, compactly; never our dsm-pin/ tags."""

from __future__ import annotations

from server.backups.models import (
    BackupManifest,
    BackupSummary,
    DatabaseDump,
    PinnedImage,
    VolumeArchive,
    human_size,
)

DIGEST = "sha256:" + "ab" * 32


def manifest() -> BackupManifest:
    return BackupManifest(
        backup_id="20261207T201500Z-000001", stack="chat", created_at="2026-12-07T20:15:00Z", reason="pre-deploy",
        files=["compose.yaml"],
        images=[
            # After a rollback the container runs our pin; the summary shows what it IS.
            PinnedImage(service="db", image="dsm-pin/chat-db:20261207T190000Z-000000", original="postgres:15",
                        image_id="sha256:" + "cd" * 32, digest=f"docker.io/library/postgres@{DIGEST}",
                        pinned_ref="dsm-pin/chat-db:20261207T201500Z-000001"),
            PinnedImage(service="api", image="ghcr.io/acme/api:1.2", image_id="sha256:" + "ef" * 32,
                        pinned_ref="dsm-pin/chat-api:20261207T201500Z-000001"),
        ],
        volumes=[VolumeArchive(name="chat_uploads", file="volumes/chat_uploads.tar", bytes=3 * 1024 * 1024,
                               sha256="0" * 64, files=12)],
        dumps=[DatabaseDump(service="db", kind="postgres", file="dumps/db.sql", bytes=1536, sha256="1" * 64,
                            restore=["psql"], tables={"app.public.messages": 500, "app.public.rooms": 3}),
               DatabaseDump(service="cache", kind="hooks", file="dumps/cache.out", bytes=10, sha256="2" * 64,
                            restore=["sh"])],
        bytes=5 * 1024 * 1024 + 300 * 1024,
    )


def test_summary_in_human_terms() -> None:
    summary = BackupSummary.of(manifest())
    assert summary.images == [f"db: postgres:15@sha256:{'ab' * 6}", f"api: ghcr.io/acme/api:1.2 (id sha256:{'ef' * 6})"]
    assert summary.dumps == ["db: postgres, 1.5 KiB, 503 rows in 2 tables", "cache: hooks, 10 B"]
    assert summary.volumes == ["chat_uploads (3.0 MiB, 12 files)"]
    assert summary.size == "5.3 MiB" and summary.bytes == 5 * 1024 * 1024 + 300 * 1024
    text = summary.model_dump_json()
    assert "dsm-pin" not in text and len(text) < 600, len(text)


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 10 * 1024 ** 2, 3 * 1024 ** 3, 5 * 1024 ** 4)] == [
        "0 B", "1023 B", "1.0 KiB", "10.0 MiB", "3.0 GiB", "5120.0 GiB"]
