"""Backups on the real engine: volume archives, PostgreSQL dumps, restore, verify drills, pins, retention.

Every stack here is a real Compose project (``dsmtest`` prefix, removed after); helper and scratch
containers are checked to be gone after each operation.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.backups import BackupStore
from server.compose import ComposeRunner
from server.engine import Engine
from server.errors import BackupFailed, BackupNotFound
from server.settings import Settings
from server.stackload import load_stack
from tests.conftest import provision_facts, write_stack

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BUSYBOX = provision_facts().get("DSM_TEST_IMAGE_WEB_1_0", "dsm-test/web:1.0")
POSTGRES = provision_facts().get("DSM_TEST_IMAGE_POSTGRES", "dsm-test/postgres:15")
PG_PASSWORD = "s3cret-Pg-" + uuid.uuid4().hex[:10]


def sh(*argv: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} failed: {result.stderr}")
    return result.stdout


def compose_up(directory: Path) -> None:
    sh("docker", "compose", "--project-directory", str(directory), "up", "-d", "--wait", "--wait-timeout", "120")


def container_of(project: str, service: str) -> str:
    out = sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
             "--filter", f"label=com.docker.compose.service={service}")
    assert out.split(), f"no running container for {project}/{service}"
    return out.split()[0]


def leftovers(project: str) -> list[str]:
    """This project's helper/scratch containers and scratch volumes still on the engine (their
    names carry the project's; other tests on the shared engine have their own)."""
    containers = sh("docker", "ps", "-aq", "--filter", "label=dsm.helper=1", "--filter", f"name={project}").split()
    volumes = sh("docker", "volume", "ls", "-q", "--filter", "label=dsm.scratch=1", "--filter",
                 f"name={project}").split()
    return containers + volumes


WEB_STACK = """\
name: {name}
services:
  web:
    image: {image}
    init: true
    volumes: [data:/data]
volumes:
  data: {{}}
"""

PG_STACK = """\
name: {name}
services:
  db:
    image: {image}
    environment:
      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD}}
      POSTGRES_DB: app
    volumes: [pgdata:/var/lib/postgresql/data]
volumes:
  pgdata: {{}}
"""


@pytest.fixture(autouse=True)
def remove_pins(project_name: str) -> Iterator[None]:
    """Our pinned tags outlive the project's containers by design; remove this test's ones."""
    yield
    refs = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
              f"reference=dsm-pin/{project_name}-*").split()
    if refs:
        sh("docker", "rmi", *refs, check=False)


@pytest.fixture
def store(settings: Settings) -> BackupStore:
    return BackupStore(settings, Engine(settings), ComposeRunner(settings))


def fill_volume(project: str) -> dict[str, str]:
    """Known files in the web service's volume; returns path -> sha256 as seen in the container."""
    cid = container_of(project, "web")
    script = (
        "mkdir -p /data/sub/deep && printf 'hello\\n' > /data/a.txt && "
        "dd if=/dev/urandom of=/data/sub/blob.bin bs=1024 count=3000 2>/dev/null && "
        "printf 'x' > /data/sub/deep/.hidden && ln -s a.txt /data/link && chmod 0640 /data/a.txt"
    )
    sh("docker", "exec", cid, "sh", "-c", script)
    return checksums(project)


def checksums(project: str) -> dict[str, str]:
    cid = container_of(project, "web")
    out = sh("docker", "exec", cid, "sh", "-c", "cd /data && find . -type f -exec sha256sum {} + | sort; "
             "find . -type l -exec sh -c 'echo link $1 $(readlink $1)' _ {} \\; ; stat -c '%a %n' a.txt")
    return {line.split()[-1]: line for line in out.splitlines() if line.strip()}


async def test_volume_archive_restores_byte_identical(store: BackupStore, stacks_root: Path, project_name: str) -> None:
    directory = write_stack(stacks_root, project_name, WEB_STACK.format(name=project_name, image=BUSYBOX))
    compose_up(directory)
    before = fill_volume(project_name)
    stack = await load_stack(store.settings, store.compose, path=project_name)
    steps: list[str] = []

    async def progress(done: float, total: float, message: str) -> None:
        steps.append(message)

    manifest = await store.create(stack, reason="test", progress=progress)
    assert [v.name for v in manifest.volumes] == [f"{project_name}_data"]
    archive = manifest.volumes[0]
    assert archive.bytes > 3_000_000 and len(archive.sha256) == 64
    assert any("archiving volume" in s for s in steps)
    assert manifest.files == ["compose.yaml"]
    assert leftovers(project_name) == []

    # Damage the live data: change, delete and add files.
    cid = container_of(project_name, "web")
    sh("docker", "exec", cid, "sh", "-c", "echo changed > /data/a.txt; rm -rf /data/sub; echo new > /data/added")
    assert checksums(project_name) != before

    restored = await store.restore_data(manifest)
    assert restored == [f"volume {project_name}_data"]
    after = checksums(project_name)
    assert after == before  # same files, same bytes, the added one gone, symlink and mode kept
    assert "added" not in " ".join(after)
    assert leftovers(project_name) == []
    state = sh("docker", "ps", "--filter", f"label=com.docker.compose.project={project_name}",
               "--format", "{{.State}}").split()
    assert state == ["running"]

    verification = await store.verify(manifest)
    assert verification.ok, verification.checks
    assert any(c.kind == "volume" and "content identical" in c.detail for c in verification.checks)
    assert leftovers(project_name) == []

    # A corrupted archive fails verification, and a restore refuses it before touching anything.
    path = store.backup_dir(project_name, manifest.backup_id) / archive.file
    with path.open("r+b") as handle:
        handle.seek(2000)
        handle.write(b"corrupt!")
    broken = await store.verify(manifest)
    assert not broken.ok
    assert any(c.kind == "checksum" and not c.ok for c in broken.checks)
    with pytest.raises(BackupFailed, match="damaged"):
        await store.restore_data(manifest)
    assert checksums(project_name) == before
    assert leftovers(project_name) == []


async def test_postgres_dump_restore_and_verify(store: BackupStore, stacks_root: Path, project_name: str) -> None:
    directory = write_stack(stacks_root, project_name, PG_STACK.format(name=project_name, image=POSTGRES),
                            env=f"POSTGRES_PASSWORD={PG_PASSWORD}\n")
    compose_up(directory)
    db = container_of(project_name, "db")

    def psql(sql: str, database: str = "app") -> str:
        return sh("docker", "exec", db, "psql", "-X", "-At", "-U", "postgres", "-d", database, "-c", sql).strip()

    psql("CREATE TABLE items (id int primary key, name text); "
         "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g; "
         "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('keep me')")
    stack = await load_stack(store.settings, store.compose, path=project_name)
    manifest = await store.create(stack, reason="before migration")
    assert [d.service for d in manifest.dumps] == ["db"]
    dump = manifest.dumps[0]
    assert dump.kind == "postgres" and dump.bytes > 0
    assert dump.tables == {"app.public.items": 500, "app.public.notes": 1}
    # The live database volume was dumped, not tarred.
    assert manifest.volumes == []
    assert any("dumped instead" in n for n in manifest.notes)
    text = (store.backup_dir(project_name, manifest.backup_id) / dump.file).read_text()
    assert "item 250" in text
    assert PG_PASSWORD not in manifest.model_dump_json()
    assert oct((store.backup_dir(project_name, manifest.backup_id) / "rendered.json").stat().st_mode)[-3:] == "600"

    # A failed migration: rows changed, deleted, a table added.
    psql("UPDATE items SET name = 'broken'; DELETE FROM items WHERE id > 100; DROP TABLE notes; "
         "CREATE TABLE half_migrated (x int)")
    assert psql("SELECT count(*) FROM items") == "100"

    assert await store.restore_data(manifest) == ["dump db"]
    db = container_of(project_name, "db")
    assert psql("SELECT count(*), min(name), max(name) FROM items") == "500|item 1|item 99"
    assert psql("SELECT body FROM notes") == "keep me"
    assert psql("SELECT to_regclass('public.half_migrated') IS NULL") == "t"

    verification = await store.verify(manifest)
    assert verification.ok, verification.checks
    drill = next(c for c in verification.checks if c.kind == "dump")
    assert "501 rows" in drill.detail
    assert leftovers(project_name) == []

    # A dump whose recorded counts disagree with what it restores fails the drill.
    path = store.backup_dir(project_name, manifest.backup_id) / "manifest.json"
    data = json.loads(path.read_text())
    data["dumps"][0]["tables"]["app.public.items"] = 499
    path.write_text(json.dumps(data))
    tampered = store.get(project_name, manifest.backup_id)
    result = await store.verify(tampered)
    assert not result.ok
    assert "row counts differ" in next(c for c in result.checks if c.kind == "dump").detail
    assert leftovers(project_name) == []


async def test_pinned_image_survives_rmi_of_its_tag(store: BackupStore, stacks_root: Path, project_name: str) -> None:
    tag = f"dsmtest/pinme:{uuid.uuid4().hex[:8]}"
    sh("docker", "tag", BUSYBOX, tag)
    try:
        directory = write_stack(stacks_root, project_name, WEB_STACK.format(name=project_name, image=tag))
        compose_up(directory)
        stack = await load_stack(store.settings, store.compose, path=project_name)
        manifest = await store.create(stack, data=False)
        pin = manifest.images[0]
        assert pin.service == "web" and pin.pinned_ref == f"dsm-pin/{project_name}-web:{manifest.backup_id}"
        sh("docker", "compose", "--project-directory", str(directory), "down")
        sh("docker", "rmi", tag)
        assert sh("docker", "image", "inspect", "-f", "{{.Id}}", pin.pinned_ref).strip() == pin.image_id
    finally:
        sh("docker", "rmi", tag, check=False)


async def test_retention_prunes_oldest_with_their_pins(
    settings: Settings, stacks_root: Path, project_name: str
) -> None:
    store = BackupStore(replace(settings, backup_keep=2), Engine(settings), ComposeRunner(settings))
    directory = write_stack(stacks_root, project_name, WEB_STACK.format(name=project_name, image=BUSYBOX))
    compose_up(directory)
    stack = await load_stack(store.settings, store.compose, path=project_name)
    ids = [(await store.create(stack, reason=f"n{i}")).backup_id for i in range(3)]
    kept = [m.backup_id for m in store.list(project_name)]
    assert kept == [ids[2], ids[1]]
    assert not store.backup_dir(project_name, ids[0]).exists()
    pins = sh("docker", "images", "--format", "{{.Tag}}", f"dsm-pin/{project_name}-web").split()
    assert sorted(pins) == sorted(kept)
    with pytest.raises(BackupNotFound):
        store.get(project_name, ids[0])
    # The size cap: one byte less than the two newest together keeps only the newest.
    sizes = [m.bytes for m in store.list(project_name)]
    capped = BackupStore(replace(settings, backup_max_bytes=sum(sizes) - 1), Engine(settings), ComposeRunner(settings))
    assert await capped.prune(project_name) == [ids[1]]
    assert [m.backup_id for m in store.list(project_name)] == [ids[2]]
    pins = sh("docker", "images", "--format", "{{.Tag}}", f"dsm-pin/{project_name}-web").split()
    assert pins == [ids[2]]


async def test_bad_backup_ids_are_refused(store: BackupStore) -> None:
    for bad in ("../../etc", "latest", "20260101T000000Z-zzzzzz", "-rf"):
        with pytest.raises(BackupNotFound):
            store.get("myapp", bad)
    with pytest.raises(BackupNotFound, match="no backup"):
        store.get("myapp", "20260101T000000Z-abcdef")


HOOK_STACK = """\
name: {name}
services:
  web:
    image: {image}
    init: true
    volumes: [data:/data]
    x-dsm:
      backup:
        dump: ["sh", "-c", "cat /data/state.txt"]
        restore: ["sh", "-c", "cat > /data/state.txt"]
  broken:
    image: {image}
    init: true
    volumes: [other:/other]
    x-dsm:
      backup:
        dump: ["sh", "-c", "echo cannot dump >&2; exit 3"]
  unknowndb:
    image: {image}
    init: true
    volumes: [dbfiles:/var/lib/db]
    x-dsm: {{role: database}}
volumes:
  data: {{}}
  other: {{}}
  dbfiles: {{}}
"""


async def test_dump_hooks_and_the_stop_archive_start_fallback(
    store: BackupStore, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, project_name, HOOK_STACK.format(name=project_name, image=BUSYBOX))
    compose_up(directory)
    web = container_of(project_name, "web")
    broken = container_of(project_name, "broken")
    sh("docker", "exec", web, "sh", "-c", "seq 1 20000 > /data/state.txt")
    sh("docker", "exec", broken, "sh", "-c", "echo precious > /other/file")
    stack = await load_stack(store.settings, store.compose, path=project_name)
    manifest = await store.create(stack)
    assert [(d.service, d.kind) for d in manifest.dumps] == [("web", "hooks")]
    # The service whose dump failed was stopped, archived and started again.
    assert [v.name for v in manifest.volumes] == [f"{project_name}_dbfiles", f"{project_name}_other"]
    assert any("broken: hooks dump failed (exit 3" in n for n in manifest.notes), manifest.notes
    assert any("broken was stopped while it was archived" in n for n in manifest.notes), manifest.notes
    assert any("unknowndb was stopped while it was archived" in n for n in manifest.notes), manifest.notes
    assert container_of(project_name, "broken") == broken  # running again, same container
    container_of(project_name, "unknowndb")
    sh("docker", "exec", web, "sh", "-c", "echo overwritten > /data/state.txt")
    await store.restore_data(manifest, services=["web"])
    assert sh("docker", "exec", web, "sh", "-c", "wc -l < /data/state.txt").strip() == "20000"
    assert leftovers(project_name) == []


MEMORY_STACK = """\
name: {name}
services:
  web:
    image: {image}
    init: true
    volumes: [data:/data]
  blob:
    image: {image}
    init: true
    volumes: [blob:/blob]
    x-dsm:
      backup:
        dump: ["cat", "/blob/big.bin"]
        restore: ["sh", "-c", "cat > /blob/big.bin"]
volumes:
  data: {{}}
  blob: {{}}
"""


async def test_memory_stays_bounded_while_archiving(store: BackupStore, stacks_root: Path, project_name: str) -> None:
    """~200 MB archived and ~150 MB dumped through exec, then verified and restored (the dump
    back through the exec's stdin): Python's peak allocation stays a few MB throughout."""
    import tracemalloc

    directory = write_stack(stacks_root, project_name, MEMORY_STACK.format(name=project_name, image=BUSYBOX))
    compose_up(directory)
    sh("docker", "exec", container_of(project_name, "web"), "sh", "-c",
       "dd if=/dev/urandom of=/data/big.bin bs=1M count=200 2>/dev/null")
    blob = container_of(project_name, "blob")
    sh("docker", "exec", blob, "sh", "-c", "dd if=/dev/urandom of=/blob/big.bin bs=1M count=150 2>/dev/null")
    original = sh("docker", "exec", blob, "sha256sum", "/blob/big.bin").split()[0]
    stack = await load_stack(store.settings, store.compose, path=project_name)
    tracemalloc.start()
    try:
        manifest = await store.create(stack)
        _, peak_create = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert (await store.verify(manifest)).ok
        _, peak_verify = tracemalloc.get_traced_memory()
        sh("docker", "exec", blob, "sh", "-c", "echo gone > /blob/big.bin")
        tracemalloc.reset_peak()
        await store.restore_data(manifest)
        _, peak_restore = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest.volumes[0].bytes > 200 * 1024 * 1024
    assert manifest.dumps[0].bytes == 150 * 1024 * 1024 and manifest.dumps[0].sha256 == original
    assert sh("docker", "exec", container_of(project_name, "blob"), "sha256sum", "/blob/big.bin").split()[0] == original
    limit = 24 * 1024 * 1024
    assert peak_create < limit and peak_verify < limit and peak_restore < limit, (peak_create, peak_verify,
                                                                                  peak_restore)
    print(f"tracemalloc peaks: create {peak_create / 1e6:.1f} MB, verify {peak_verify / 1e6:.1f} MB, "
          f"restore {peak_restore / 1e6:.1f} MB")
