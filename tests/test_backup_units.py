"""Backups without an engine: content digests, database detection, ids, retention, file restore, settings."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.backups.databases import parse_counts, recipe_for
from server.backups.models import BackupManifest
from server.backups.store import BACKUP_ID, BackupStore, new_backup_id, pin_ref
from server.backups.tarsum import tar_content
from server.errors import BackupNotFound, PathRejected, SettingsError
from server.roles import repository_name
from server.settings import Settings
from server.xdsm import parse_service_settings

pytestmark = pytest.mark.anyio


def make_tar(entries: list[tuple[str, bytes | None, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                info.mtime = len(name)  # differs between the two archives below on purpose
                archive.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_tar_content_ignores_order_and_times_but_not_content_or_mode() -> None:
    a = [("./", None, 0o755), ("./d", None, 0o755), ("./d/x", b"one", 0o644), ("./y", b"two", 0o600)]
    reordered = [a[0], a[3], a[1], a[2]]
    first, second = tar_content(make_tar(a)), tar_content(make_tar(reordered))
    assert first == second and first.files == 2 and first.entries == 3
    changed = tar_content(make_tar([*a[:3], ("./y", b"tw0", 0o600)]))
    chmod = tar_content(make_tar([*a[:3], ("./y", b"two", 0o644)]))
    extra = tar_content(make_tar([*a, ("./z", b"", 0o644)]))
    assert len({first.digest, changed.digest, chmod.digest, extra.digest}) == 4


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("postgres:16", "postgres"),
        ("docker.io/library/postgres:15-alpine@sha256:" + "a" * 64, "postgres"),
        ("supabase/postgres:15.1.0.147", "postgres"),
        ("dsm-test/postgres:15", "postgres"),
        ("timescale/timescaledb:latest-pg16", "postgres"),
        ("mariadb:11", "mysql"),
        ("mysql:8.4", "mysql"),
        ("mongo:7", "mongo"),
        ("redis:7-alpine", "redis"),
        ("valkey/valkey:8", "redis"),
        ("nginx:1.27", None),
        ("ghcr.io/example/postgres-exporter:1", None),
        (None, None),
    ],
)
def test_database_detection_by_image(image: str | None, kind: str | None) -> None:
    recipe = recipe_for(image, parse_service_settings("svc", None))
    assert (recipe.kind if recipe else None) == kind


def test_hooks_win_over_the_image_and_keep_their_argv() -> None:
    settings = parse_service_settings("db", {"backup": {"dump": ["pg_dump", "-Fc"], "restore": ["pg_restore"]}})
    recipe = recipe_for("postgres:16", settings)
    assert recipe is not None and recipe.kind == "hooks"
    assert recipe.dump == ["pg_dump", "-Fc"] and recipe.restore == ["pg_restore"]
    assert repository_name("registry:5000/team/MyDB:1") == "mydb"


@pytest.mark.parametrize(("image", "counted"), [("postgres:16", "postgres"), ("acme/app:1", None),
                                                ("mysql:8", None)])
def test_hooks_on_a_known_database_still_record_its_row_counts(image: str, counted: str | None) -> None:
    # Hooks change how the dump is taken, not what the database is: a postgres service's hooks dump
    # records postgres row counts, so the data check after a restore compares rows.
    settings = parse_service_settings("db", {"backup": {"dump": ["pg_dumpall", "-U", "postgres"],
                                                         "restore": ["psql", "-U", "postgres"]}})
    recipe = recipe_for(image, settings)
    assert recipe is not None and recipe.kind == "hooks" and recipe.dump == ["pg_dumpall", "-U", "postgres"]
    assert recipe.counts_kind == counted
    postgres = recipe_for("postgres:16", parse_service_settings("db", None))
    assert postgres is not None
    assert recipe.counts == (postgres.counts if counted else None)


def test_recipes_keep_passwords_out_of_argv() -> None:
    for image in ("postgres:16", "mysql:8", "mongo:7"):
        recipe = recipe_for(image, parse_service_settings("db", None))
        assert recipe is not None and recipe.dump and recipe.restore
        for argv in (recipe.dump, recipe.restore):
            # Credentials are expanded inside the container from its own environment.
            assert all("$" in a or "PASSWORD" not in a for a in argv)


def test_parse_counts() -> None:
    assert parse_counts("app.public.items|500\napp.public.a|b|3\nnoise\n") == {"app.public.items": 500,
                                                                                "app.public.a|b": 3}


def test_ids_and_pins() -> None:
    backup_id = new_backup_id()
    assert BACKUP_ID.match(backup_id)
    assert pin_ref("myapp", "Web_1", backup_id) == f"dsm-pin/myapp-web_1:{backup_id}"


def manifest(stack: str, backup_id: str, size: int, created: str) -> BackupManifest:
    return BackupManifest(backup_id=backup_id, stack=stack, created_at=created, reason="", files=[], images=[],
                          volumes=[], dumps=[], bytes=size)


def seed(store: BackupStore, stack: str, sizes: list[int]) -> list[str]:
    ids = []
    for index, size in enumerate(sizes):
        backup_id = f"2026010{index + 1}T000000Z-00000{index}"
        directory = store.backup_dir(stack, backup_id)
        directory.mkdir(parents=True)
        (directory / "manifest.json").write_text(
            manifest(stack, backup_id, size, f"2026-01-0{index + 1}T00:00:00+00:00").model_dump_json())
        ids.append(backup_id)
    return ids


class NoEngine:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was called ({name}) for backups without pinned images")


async def test_retention_by_count_and_size(settings: Settings) -> None:
    store = BackupStore(replace(settings, backup_keep=3), NoEngine(), NoEngine())  # type: ignore[arg-type]
    ids = seed(store, "app", [100, 100, 100, 100, 100])
    unfinished = store.backup_dir("app", "20251231T000000Z-abcdef")
    unfinished.mkdir(parents=True)  # a backup that crashed before its manifest
    assert [m.backup_id for m in store.list("app")] == ids[::-1]
    removed = await store.prune("app")
    assert sorted(removed) == sorted([ids[0], ids[1], unfinished.name])
    assert [m.backup_id for m in store.list("app")] == [ids[4], ids[3], ids[2]]
    capped = BackupStore(replace(settings, backup_max_bytes=250), NoEngine(), NoEngine())  # type: ignore[arg-type]
    assert await capped.prune("app") == [ids[2]]
    alone = BackupStore(replace(settings, backup_max_bytes=1), NoEngine(), NoEngine())  # type: ignore[arg-type]
    assert await alone.prune("app") == [ids[3]]
    assert [m.backup_id for m in store.list("app")] == [ids[4]]  # the newest always stays


async def test_get_refuses_bad_ids_and_names(settings: Settings) -> None:
    store = BackupStore(settings, NoEngine(), NoEngine())  # type: ignore[arg-type]
    for bad in ("../x", "20260101T000000Z-00000g", ""):
        with pytest.raises(BackupNotFound):
            store.get("app", bad)
    with pytest.raises(PathRejected):
        store.list("../etc")
    assert store.list("nothing-here") == []


async def test_restore_files_puts_back_and_keeps_what_it_replaced(settings: Settings, tmp_path: Path) -> None:
    store = BackupStore(settings, NoEngine(), NoEngine())  # type: ignore[arg-type]
    backup_id = "20260101T000000Z-000001"
    directory = store.backup_dir("app", backup_id)
    (directory / "files").mkdir(parents=True)
    (directory / "files" / "compose.yaml").write_text("services: {old: {image: a}}\n")
    (directory / "files" / ".env").write_text("TAG=1\n")
    saved = manifest("app", backup_id, 1, "2026-01-01T00:00:00+00:00").model_copy(
        update={"files": ["compose.yaml", ".env"]})
    stack = tmp_path / "stackdir"
    stack.mkdir()
    (stack / "compose.yaml").write_text("services: {new: {image: b}}\n")
    (stack / ".env").write_text("TAG=2\nCOMPOSE_FILE=compose.yaml:compose.dsm.yaml\n")
    (stack / "compose.dsm.yaml").write_text("services: {new: {image: pinned}}\n")
    await store.restore_files(saved, stack)
    assert (stack / "compose.yaml").read_text() == "services: {old: {image: a}}\n"
    assert (stack / ".env").read_text() == "TAG=1\n"
    assert not (stack / "compose.dsm.yaml").exists()  # did not exist when the backup was taken
    aside = next(directory.glob("replaced-*"))
    assert sorted(p.name for p in aside.iterdir()) == [".env", "compose.dsm.yaml", "compose.yaml"]
    assert "COMPOSE_FILE" in (aside / ".env").read_text()


def test_backup_settings_are_validated() -> None:
    base = {"HOME": "/tmp"}
    settings = Settings.from_env({**base, "DSM_BACKUP_KEEP": "3", "DSM_BACKUP_MAX_BYTES": "2GiB"})
    assert settings.backup_keep == 3 and settings.backup_max_bytes == 2 * 1024**3
    assert Settings.from_env(base).backup_keep == 10
    assert Settings.from_env(base).backup_max_bytes == 20 * 1024**3
    assert Settings.from_env({**base, "DSM_BACKUP_MAX_BYTES": "1048576"}).backup_max_bytes == 1024**2
    for key, value in (("DSM_BACKUP_KEEP", "0"), ("DSM_BACKUP_KEEP", "ten"), ("DSM_BACKUP_KEEP", "2.5"),
                       ("DSM_BACKUP_MAX_BYTES", "20 parsecs"), ("DSM_BACKUP_MAX_BYTES", "10"),
                       ("DSM_BACKUP_MAX_BYTES", "-5G")):
        with pytest.raises(SettingsError, match=key):
            Settings.from_env({**base, key: value})


def test_manifest_round_trips() -> None:
    m = manifest("app", "20260101T000000Z-000001", 5, "2026-01-01T00:00:00+00:00")
    assert BackupManifest.model_validate_json(m.model_dump_json()) == m
    assert json.loads(m.model_dump_json())["backup_id"] == m.backup_id
