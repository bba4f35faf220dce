"""Restore drills (server.backups.verify) without an engine: a fake engine object at our seam.
Which checks a backup gets, what a damaged file skips, how a drill's result is judged, and that
scratch volumes and containers go whatever happens. The real drills: tests/test_backups.py."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.lowlevel
import pytest

from server.backups import verify as verify_module
from server.backups.models import BackupManifest, DatabaseDump, PinnedImage, VolumeArchive
from server.backups.store import VOLUME_MOUNT, BackupStore, new_backup_id
from server.engine import ExecResult
from server.errors import EngineError
from server.settings import Settings

pytestmark = pytest.mark.anyio

RESTORE = ["sh", "-c", "psql"]


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Engine:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.read_back: bytes | None = None  # what the scratch volume holds (default: the archive put in)
        self.put: bytes = b""
        self.put_fails: bool | str = False
        self.local_images = {"sha256:db", "sha256:web"}
        self.ready_after = 0  # probes failing before the scratch database is ready
        self.scratch_running = True
        self.replay_exit = 0
        self.counts = "app.public.items|3\n"
        self.count_exit = 0
        self.stderr = "ERROR: bad"
        self.error = "OOM"
        self.hang = False
        self.timeouts: list[float] = []

    async def image_attrs(self, ref: str) -> dict[str, Any] | None:
        return {"Id": ref} if ref in self.local_images else None

    async def create_volume(self, name: str, *, labels: dict[str, str], **kw: Any) -> None:
        assert re.fullmatch(r"dsm-scratch-app-[0-9a-f]{8}", name), name
        assert labels == {"dsm.scratch": "1", "dsm.helper": "1"}
        self.calls.append(("create_volume", name.rsplit("-", 1)[0], sorted(labels)))

    async def remove_volume(self, name: str) -> None:
        self.calls.append(("remove_volume", name.rsplit("-", 1)[0]))

    async def create_helper(self, image: str, volumes: dict[str, str], *, purpose: str,
                            labels: dict[str, str] | None = None) -> str:
        assert (labels or {}).get("dsm.stack") == "app"
        self.calls.append(("helper", image, list(volumes.values()), purpose, sorted(labels or {})))
        return "helper-1"

    async def put_archive_from_file(self, container_id: str, path: str, src: Path) -> None:
        assert (container_id, path) == ("helper-1", VOLUME_MOUNT)
        if self.put_fails:
            raise EngineError(self.put_fails if isinstance(self.put_fails, str) else
                              "the Docker engine refused to extract: no space left")
        self.put = src.read_bytes()

    async def read_archive(self, container_id: str, path: str, consume: Any) -> Any:
        assert container_id == "helper-1"
        self.calls.append(("read", path))
        if self.hang:
            await anyio.Event().wait()
        data: BinaryIO = io.BytesIO(self.read_back if self.read_back is not None else self.put)
        return consume(data)

    async def remove_container(self, container_id: str) -> None:
        await anyio.lowlevel.checkpoint()  # where a cancellation would land, were it not shielded
        self.calls.append(("remove", container_id))

    async def run_scratch(self, image: str, *, env: dict[str, str], purpose: str) -> str:
        self.calls.append(("scratch", image, purpose, env.get("POSTGRES_USER"), env.get("POSTGRES_HOST_AUTH_METHOD")))
        return "scratch-1"

    async def container_attrs(self, container_id: str) -> dict[str, Any] | None:
        assert container_id == "scratch-1"
        return {"State": {"Running": self.scratch_running, "ExitCode": 0 if self.scratch_running else 137,
                          "Error": "" if self.scratch_running else self.error}}

    async def exec_stream(self, container_id: str, argv: list[str], *, stdin_from: Path | None = None,
                          timeout_s: float = 0) -> ExecResult:
        assert container_id == "scratch-1"
        self.timeouts.append(timeout_s)
        if argv == RESTORE:
            self.calls.append(("replay", stdin_from.name if stdin_from else None))
            return ExecResult(self.replay_exit, 0, None, "", f" {self.stderr}\n" if self.replay_exit else "")
        if "pg_isready" in " ".join(argv):
            self.calls.append(("probe",))
            self.ready_after -= 1
            return ExecResult(0 if self.ready_after < 0 else 2, 0, None, "", "")
        self.calls.append(("count",))
        return ExecResult(self.count_exit, 0, None, self.counts, "")


def make(store: BackupStore, *, volume: bytes | None = None, dump: bytes | None = None,
         tables: dict[str, int] | None = None, kind: str = "postgres", files: list[str] | None = None,
         restore: list[str] | None = None, rendered: Any = None) -> BackupManifest:
    backup_id = new_backup_id()
    directory = store.backup_dir("app", backup_id)
    (directory / "volumes").mkdir(parents=True)
    (directory / "dumps").mkdir()
    (directory / "files").mkdir()
    for rel in files or []:
        (directory / "files" / rel).write_text("x")
    volumes, dumps = [], []
    if volume is not None:
        (directory / "volumes" / "app_data.tar").write_bytes(volume)
        volumes.append(VolumeArchive(name="app_data", file="volumes/app_data.tar", bytes=len(volume),
                                     sha256=hashlib.sha256(volume).hexdigest(), service="web"))
    if dump is not None:
        (directory / "dumps" / "db.sql").write_bytes(dump)
        dumps.append(DatabaseDump(service="db", kind=kind, file="dumps/db.sql", bytes=len(dump),
                                  sha256=hashlib.sha256(dump).hexdigest(),
                                  restore=RESTORE if restore is None else restore, tables=tables))
    (directory / "rendered.json").write_text(json.dumps(rendered if rendered is not None else {"services": {
        "db": {"image": "postgres:15", "environment": {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw"}}}}))
    images = [PinnedImage(service="db", image="postgres:15", image_id="sha256:db", pinned_ref="dsm-pin/app-db:1"),
              PinnedImage(service="web", image="web", image_id="sha256:web", pinned_ref="dsm-pin/app-web:1")]
    return BackupManifest(backup_id=backup_id, stack="app", created_at="2026-01-01T00:00:00+00:00", reason="t",
                          files=files or [], images=images, volumes=volumes, dumps=dumps, bytes=1)


@pytest.fixture
def engine() -> Engine:
    return Engine()


SLEEPS: list[float] = []


@pytest.fixture
def store(settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> BackupStore:
    async def no_sleep(seconds: float) -> None:
        SLEEPS.append(seconds)

    SLEEPS.clear()
    monkeypatch.setattr(verify_module.anyio, "sleep", no_sleep)
    return BackupStore(settings, engine, None)  # type: ignore[arg-type]


ARCHIVE = tar_bytes({"./a.txt": b"hello", "./b/c.bin": b"\x00" * 10})


async def test_a_good_backup_passes_every_check(store: BackupStore, engine: Engine,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make(store, volume=ARCHIVE, dump=b"sql", tables={"app.public.items": 3}, files=["compose.yaml"])
    said: list[tuple[float, float, str]] = []

    async def progress(done: float, total: float, message: str) -> None:
        said.append((done, total, message))

    clock = iter([100.0])
    monkeypatch.setattr(verify_module.time, "monotonic", lambda: next(clock, 101.23456))
    result = await store.verify(manifest, progress)
    assert said == [(1, 3, "restore drill: volume app_data"), (2, 3, "restore drill: postgres dump of db"),
                    (3, 3, "verification done")]
    assert result.duration_s == 1.23
    assert engine.timeouts == [30, 6 * 3600, 600]  # probe, replay (hours for a big dump), count
    assert result.ok is True and result.backup_id == manifest.backup_id and result.stack == "app"
    assert [(c.kind, c.name, c.ok, c.detail) for c in result.checks] == [
        ("checksum", "volumes/app_data.tar", True, "sha256 matches"),
        ("checksum", "dumps/db.sql", True, "sha256 matches"),
        ("file", "compose.yaml", True, "present"),
        ("volume", "app_data", True, "restored 2 files, content identical"),
        ("dump", "db", True, "replayed: 1 tables, 3 rows, as recorded at dump time"),
    ]
    assert engine.put == ARCHIVE
    assert ("helper", "sha256:db", [VOLUME_MOUNT], "verify-app_data", ["dsm.owner", "dsm.stack"]) in engine.calls
    assert ("read", f"{VOLUME_MOUNT}/.") in engine.calls
    assert ("scratch", "sha256:db", "verify-app-db", "app", "trust") in engine.calls
    assert ("replay", "db.sql") in engine.calls
    # Scratch volume and containers are gone.
    assert ("create_volume", "dsm-scratch-app", ["dsm.helper", "dsm.scratch"]) in engine.calls
    assert ("remove_volume", "dsm-scratch-app") in engine.calls
    assert engine.calls.count(("remove", "helper-1")) == 1 and engine.calls.count(("remove", "scratch-1")) == 1
    assert result.duration_s >= 0


async def test_damaged_files_fail_and_are_not_drilled(store: BackupStore, engine: Engine) -> None:
    manifest = make(store, volume=ARCHIVE, dump=b"sql", files=["compose.yaml"])
    directory = store.backup_dir("app", manifest.backup_id)
    (directory / "dumps" / "db.sql").write_bytes(b"SQL")
    (directory / "volumes" / "app_data.tar").unlink()
    (directory / "files" / "compose.yaml").unlink()
    result = await store.verify(manifest)
    assert result.ok is False
    checks = [(c.kind, c.name, c.ok, c.detail) for c in result.checks]
    assert checks[0] == ("checksum", "volumes/app_data.tar", False, "file missing")
    assert checks[1][:3] == ("checksum", "dumps/db.sql", False) and checks[1][3].startswith("sha256 ")
    assert checks[2:] == [("file", "compose.yaml", False, "missing"),
                          ("volume", "app_data", False, "not drilled: archive damaged"),
                          ("dump", "db", False, "not drilled: dump damaged")]
    assert engine.calls == []  # nothing was drilled


async def test_a_volume_that_reads_back_different_fails(store: BackupStore, engine: Engine) -> None:
    manifest = make(store, volume=ARCHIVE)
    engine.read_back = tar_bytes({"./a.txt": b"hellO", "./b/c.bin": b"\x00" * 10})
    check = (await store.verify(manifest)).checks[-1]
    assert (check.kind, check.ok, check.detail) == ("volume", False, "restored tree differs: 2 entries vs 2 in the "
                                                                      "archive")
    engine.read_back = tar_bytes({"./a.txt": b"hello"})
    check = (await store.verify(manifest)).checks[-1]
    assert check.detail == "restored tree differs: 1 entries vs 2 in the archive"


async def test_an_unreadable_archive_or_a_failed_extract_fails(store: BackupStore, engine: Engine) -> None:
    manifest = make(store, volume=b"not a tar at all" * 64)
    check = (await store.verify(manifest)).checks[-1]
    assert check.ok is False and check.detail.startswith("archive unreadable: ")
    assert engine.calls == []
    engine.put_fails = True
    check = (await store.verify(make(store, volume=ARCHIVE))).checks[-1]
    assert (check.ok, check.detail) == (False, "restore into a scratch volume failed: the Docker engine refused to "
                                               "extract: no space left")
    assert ("remove", "helper-1") in engine.calls and ("remove_volume", "dsm-scratch-app") in engine.calls


async def test_dump_drills(store: BackupStore, engine: Engine) -> None:
    async def drill(**kw: Any) -> tuple[bool, str]:
        engine.calls.clear()
        check = (await store.verify(make(store, dump=b"sql", **kw))).checks[-1]
        assert check.kind == "dump" and check.name == "db"
        return check.ok, check.detail

    assert await drill(kind="hooks") == (True, "checksum only: no restore drill for hooks dumps")
    assert await drill(kind="redis") == (True, "checksum only: no restore drill for redis dumps")
    assert await drill(restore=[]) == (True, "checksum only: no restore drill for postgres dumps")
    assert engine.calls == []
    assert await drill(tables=None) == (True, "replayed into a scratch database without errors (row counts not "
                                              "recorded)")
    assert await drill(tables={"app.public.items": 4}) == (False, "row counts differ: app.public.items: 4 -> 3")
    assert await drill(tables={"app.public.items": 3, "app.public.gone": 1}) == (
        False, "row counts differ: app.public.gone: 1 -> None")
    engine.count_exit = 1
    assert await drill(tables={"app.public.items": 3}) == (True, "replayed into a scratch database without errors "
                                                                 "(row counts not recorded)")
    engine.count_exit = 0
    engine.replay_exit = 3
    assert await drill(tables={"app.public.items": 3}) == (False, "replay into a scratch database failed (exit 3): "
                                                                  "ERROR: bad")
    engine.scratch_running = False
    ok, detail = await drill()
    assert (ok, detail) == (False, "scratch database did not become ready in 180s")
    assert ("remove", "scratch-1") in engine.calls


async def test_a_scratch_database_that_dies_mid_replay_says_so(store: BackupStore, engine: Engine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    engine.replay_exit = 2
    original = engine.exec_stream

    async def dies(container_id: str, argv: list[str], **kw: Any) -> ExecResult:
        result = await original(container_id, argv, **kw)
        if argv == RESTORE:
            engine.scratch_running = False
        return result

    monkeypatch.setattr(engine, "exec_stream", dies)
    check = (await store.verify(make(store, dump=b"sql"))).checks[-1]
    assert check.detail == ("replay into a scratch database failed (exit 2): ERROR: bad (the scratch container "
                            "stopped: exit 137, OOM)")


async def test_the_scratch_database_waits_until_ready(store: BackupStore, engine: Engine) -> None:
    engine.ready_after = 3
    check = (await store.verify(make(store, dump=b"sql", tables={"app.public.items": 3}))).checks[-1]
    assert check.ok is True
    assert engine.calls.count(("probe",)) == 4


async def test_a_database_image_not_local_fails(store: BackupStore, engine: Engine) -> None:
    engine.local_images = set()
    check = (await store.verify(make(store, dump=b"sql"))).checks[-1]
    assert (check.ok, check.detail) == (False, "image of the database is not local")
    engine.local_images = {"postgres:15"}
    assert (await store.verify(make(store, dump=b"sql"))).checks[-1].ok is False  # the pinned one, not a tag
    unpinned = make(store, dump=b"sql", tables=None)
    unpinned = unpinned.model_copy(update={"images": unpinned.images[1:]})
    check = (await store.verify(unpinned)).checks[-1]
    assert check.ok is True
    assert engine.calls[0][:2] == ("scratch", "postgres:15")  # the rendered image when nothing is pinned


def more(manifest: BackupManifest, store: BackupStore) -> BackupManifest:
    """A second archive and a second dump (good ones) after the first."""
    directory = store.backup_dir("app", manifest.backup_id)
    (directory / "volumes" / "app_two.tar").write_bytes(ARCHIVE)
    (directory / "dumps" / "db2.sql").write_bytes(b"sql2")
    volume = VolumeArchive(name="app_two", file="volumes/app_two.tar", bytes=len(ARCHIVE),
                           sha256=hashlib.sha256(ARCHIVE).hexdigest(), service="web")
    dump = manifest.dumps[0].model_copy(update={"service": "db2", "file": "dumps/db2.sql",
                                                "sha256": hashlib.sha256(b"sql2").hexdigest(), "tables": None})
    pin = manifest.images[0].model_copy(update={"service": "db2"})
    return manifest.model_copy(update={"volumes": [*manifest.volumes, volume], "dumps": [*manifest.dumps, dump],
                                       "images": [*manifest.images, pin]})


async def test_one_damaged_file_does_not_stop_the_next_drill(store: BackupStore, engine: Engine) -> None:
    manifest = more(make(store, volume=ARCHIVE, dump=b"sql"), store)
    directory = store.backup_dir("app", manifest.backup_id)
    (directory / "volumes" / "app_data.tar").write_bytes(b"x")
    (directory / "dumps" / "db.sql").write_bytes(b"x")
    result = await store.verify(manifest)
    assert [(c.kind, c.name, c.ok) for c in result.checks if c.kind in ("volume", "dump")] == [
        ("volume", "app_data", False), ("volume", "app_two", True), ("dump", "db", False), ("dump", "db2", True)]


async def test_long_errors_keep_their_useful_part(store: BackupStore, engine: Engine) -> None:
    engine.replay_exit = 1
    engine.stderr = "E" * 100 + "x" * 299 + "!"
    check = (await store.verify(make(store, dump=b"sql"))).checks[-1]
    assert check.detail == "replay into a scratch database failed (exit 1): " + "x" * 299 + "!"
    engine.put_fails = "y" * 199 + "!" + "z" * 50
    check = (await store.verify(make(store, volume=ARCHIVE))).checks[-1]
    assert check.detail == "restore into a scratch volume failed: " + "y" * 199 + "!"


async def test_a_scratch_container_gone_without_an_error(store: BackupStore, engine: Engine,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    engine.replay_exit = 2
    engine.error = ""
    original = engine.exec_stream

    async def dies(container_id: str, argv: list[str], **kw: Any) -> ExecResult:
        result = await original(container_id, argv, **kw)
        engine.scratch_running = argv != RESTORE
        return result

    monkeypatch.setattr(engine, "exec_stream", dies)
    check = (await store.verify(make(store, dump=b"sql"))).checks[-1]
    assert check.detail.endswith("(the scratch container stopped: exit 137, gone)")


async def test_at_most_five_differing_tables_are_shown(store: BackupStore, engine: Engine) -> None:
    tables = {f"app.public.t{i}": i + 10 for i in range(7)}
    engine.counts = "".join(f"app.public.t{i}|{i}\n" for i in range(7))
    check = (await store.verify(make(store, dump=b"sql", tables=tables))).checks[-1]
    assert check.detail == "row counts differ: " + ", ".join(f"app.public.t{i}: {i + 10} -> {i}" for i in range(5))


async def test_odd_rendered_files_give_no_environment(store: BackupStore, engine: Engine) -> None:
    listed = {"services": {"db": {"image": "postgres:15", "environment": ["POSTGRES_USER=app"]}}}
    assert (await store.verify(make(store, dump=b"sql", rendered=listed))).checks[-1].ok is True
    assert engine.calls[0] == ("scratch", "sha256:db", "verify-app-db", None, "trust")
    engine.calls.clear()
    assert (await store.verify(make(store, dump=b"sql", rendered=["not", "a", "mapping"]))).checks[-1].ok is True
    assert engine.calls[0] == ("scratch", "sha256:db", "verify-app-db", None, "trust")


async def test_a_database_never_ready_in_time(store: BackupStore, engine: Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine.ready_after = 10**9
    monkeypatch.setattr(verify_module, "_READY_TIMEOUT_S", 0.05)
    check = (await store.verify(make(store, dump=b"sql"))).checks[-1]
    assert (check.ok, check.detail) == (False, "scratch database did not become ready in 0s")
    assert SLEEPS and set(SLEEPS) == {1}
    assert ("replay", "db.sql") not in engine.calls and ("remove", "scratch-1") in engine.calls


async def test_a_cancelled_drill_still_removes_its_scratch(store: BackupStore, engine: Engine) -> None:
    engine.hang = True
    with anyio.move_on_after(0.2):
        await store.verify(make(store, volume=ARCHIVE))
    assert ("remove", "helper-1") in engine.calls and ("remove_volume", "dsm-scratch-app") in engine.calls
