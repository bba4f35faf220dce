"""restore_data's decisions without an engine (fakes at our own seams: the engine object and
server.backups.revive): every checksum before any change, which way each database comes back,
the data check, and errors that say what was changed. The real thing: test_restore_recovery.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from server.backups import restore, revive
from server.backups.models import BackupManifest, DatabaseDump, PinnedImage, VolumeArchive
from server.backups.restore import data_check
from server.backups.store import BackupStore, new_backup_id
from server.engine import ContainerSummary, ExecResult
from server.errors import BackupFailed, EngineError
from server.settings import Settings

pytestmark = pytest.mark.anyio

RESTORE = ["sh", "-c", "psql"]
TABLES = {"app.public.items": 300, "app.public.notes": 1}


def box(service: str, state: str = "running", cid: str | None = None) -> ContainerSummary:
    return ContainerSummary(id=cid or f"id-{service}", name=f"app-{service}-1", project="app", service=service,
                            state=state, status="", health=None, image="img", image_id="sha256:1")


class Engine:
    def __init__(self, containers: list[ContainerSummary], counts: str = "", replay_exit: int = 0,
                 stderr: str = "ERROR: boom") -> None:
        self.containers = containers
        self.counts = counts
        self.replay_exit = replay_exit
        self.stderr = stderr
        self.start_fails = False
        self.calls: list[tuple[Any, ...]] = []
        self.timeouts: list[float] = []

    async def compose_containers(self, project: str) -> list[ContainerSummary]:
        assert project == "app"
        return list(self.containers)

    async def stop_container(self, container_id: str, timeout_s: int = 30) -> None:
        self.calls.append(("stop", container_id))

    async def start_container(self, container_id: str) -> None:
        self.calls.append(("start", container_id))
        if self.start_fails:
            raise EngineError("the Docker engine refused to start it")

    async def exec_stream(self, container_id: str, argv: list[str], *, stdin_from: Path | None = None,
                          timeout_s: float = 0) -> ExecResult:
        self.timeouts.append(timeout_s)
        if argv == RESTORE:
            self.calls.append(("replay", container_id, stdin_from.name if stdin_from else None))
            return ExecResult(self.replay_exit, 0, None, "", f"  {self.stderr}\n" if self.replay_exit else "")
        if "pg_terminate_backend" in " ".join(argv):
            self.calls.append(("terminate", container_id))
            return ExecResult(0, 0, None, "", "")
        self.calls.append(("count", container_id))
        return ExecResult(0, 0, None, self.counts, "")


class Revive:
    """Stands in for server.backups.revive: which database is ready when, what was replaced."""

    def __init__(self, ready: list[str | None]) -> None:
        self.ready = list(ready)
        self.calls: list[tuple[Any, ...]] = []
        self.progress: list[tuple[Any, Any]] = []

    @staticmethod
    def _ours(store: Any, manifest: Any) -> None:
        assert isinstance(store, BackupStore) and isinstance(manifest, BackupManifest)

    async def ready_database(self, store: Any, manifest: Any, service: str, recipe: Any,
                             changes: list[str]) -> tuple[str | None, str]:
        self._ours(store, manifest)
        assert isinstance(changes, list)
        kind = next(d.kind for d in manifest.dumps if d.service == service)
        assert (recipe.kind if recipe else "hooks") == kind
        self.calls.append(("ready", service))
        got = self.ready.pop(0)
        return got, "" if got else f"{service} did not become ready (exit 1)"

    async def replace_volumes(self, store: Any, manifest: Any, items: list[tuple[str, Path | None]], *,
                              changes: list[str], keep_failed: bool = False, start: frozenset[str] = frozenset(),
                              progress: Any = None, total: int = 0) -> list[str]:
        self._ours(store, manifest)
        self.calls.append(("replace", [(n, a.name if a else None) for n, a in items], keep_failed, sorted(start)))
        self.progress.append((progress, total))
        changes.append(f"volumes {[n for n, _ in items]} replaced")
        return [f"failed-x/{n}.tar" for n, _ in items] if keep_failed else []

    async def recreate(self, store: Any, manifest: Any, up: list[str], create: list[str]) -> None:
        self._ours(store, manifest)
        self.calls.append(("recreate", up, create))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Revive:
    r = Revive([])
    monkeypatch.setattr(revive, "ready_database", r.ready_database)
    monkeypatch.setattr(revive, "replace_volumes", r.replace_volumes)
    monkeypatch.setattr(revive, "recreate", r.recreate)
    return r


def backup(store: BackupStore, *, archive: bool = False, dump: bool = True, volumes: list[str] | None = None,
           restore_argv: list[str] | None = None, tables: dict[str, int] | None = TABLES, kind: str = "postgres",
           more_archives: tuple[tuple[str, str | None], ...] = ()) -> BackupManifest:
    backup_id = new_backup_id()
    directory = store.backup_dir("app", backup_id)
    (directory / "volumes").mkdir(parents=True)
    (directory / "dumps").mkdir()
    archives, dumps = [], []
    for name, service in ((("app_pgdata", "db"),) if archive else ()) + more_archives:
        (directory / "volumes" / f"{name}.tar").write_bytes(b"tar")
        archives.append(VolumeArchive(name=name, file=f"volumes/{name}.tar", bytes=3,
                                      sha256=hashlib.sha256(b"tar").hexdigest(), service=service))
    if dump:
        (directory / "dumps" / "db.sql").write_text("sql")
        dumps.append(DatabaseDump(service="db", kind=kind, file="dumps/db.sql", bytes=3,
                                  sha256=hashlib.sha256(b"sql").hexdigest(),
                                  restore=RESTORE if restore_argv is None else restore_argv, tables=tables,
                                  volumes=["app_pgdata"] if volumes is None else volumes))
    images = [PinnedImage(service=s, image="img", image_id="sha256:1", pinned_ref=f"dsm-pin/app-{s}:1")
              for s in ("db", "web")]
    return BackupManifest(backup_id=backup_id, stack="app", created_at="2026-01-01T00:00:00+00:00", reason="t",
                          files=[], images=images, volumes=archives, dumps=dumps, bytes=6)


def store_with(settings: Settings, engine: Engine) -> BackupStore:
    return BackupStore(settings, engine, None)  # type: ignore[arg-type]


COUNTS = "app.public.items|300\napp.public.notes|1\n"


async def test_a_damaged_dump_is_refused_before_anything_is_touched(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db"), box("web")])
    store = store_with(settings, engine)
    manifest = backup(store, archive=True)
    path = store.backup_dir("app", manifest.backup_id) / "dumps" / "db.sql"
    path.write_text("SQL")
    with pytest.raises(BackupFailed) as refused:
        await store.restore_data(manifest)
    actual = hashlib.sha256(b"SQL").hexdigest()[:12]
    assert refused.value.what == (f"backup {manifest.backup_id} is damaged: dumps/db.sql: sha256 {actual} != "
                                  f"{manifest.dumps[0].sha256[:12]}")
    assert "nothing was restored" in refused.value.state
    assert engine.calls == [] and fake.calls == []
    path.unlink()
    with pytest.raises(BackupFailed, match=r"is damaged: dumps/db\.sql: file missing\.") as missing:
        await store.restore_data(manifest, volumes=False, services=["db"])
    assert "volumes/" not in missing.value.what
    assert engine.calls == [] and fake.calls == []
    archive = store.backup_dir("app", manifest.backup_id) / "volumes" / "app_pgdata.tar"
    archive.rename(archive.with_suffix(".moved"))
    with pytest.raises(BackupFailed) as both:
        await store.restore_data(manifest)
    assert both.value.what == (f"backup {manifest.backup_id} is damaged: volumes/app_pgdata.tar: file missing; "
                               "dumps/db.sql: file missing")
    archive.with_suffix(".moved").rename(archive)
    # A service not asked for: its dump is neither checked nor replayed.
    assert await store.restore_data(manifest, services=["web"]) == []
    # Another service's damaged dump does not stop a restore of this one's volume.
    fake.ready = []
    assert await store.restore_data(manifest, services=["db"], dumps=False) == ["volume app_pgdata"]


async def test_the_archive_a_database_may_need_is_checked_too(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db")])
    store = store_with(settings, engine)
    manifest = backup(store, archive=True)
    (store.backup_dir("app", manifest.backup_id) / "volumes" / "app_pgdata.tar").write_bytes(b"TAR")
    # Even when volumes are not asked for: the dump's database may have to come back from it.
    with pytest.raises(BackupFailed, match=r"damaged: volumes/app_pgdata\.tar: sha256"):
        await store.restore_data(manifest, volumes=False)
    assert engine.calls == [] and fake.calls == []
    assert await store.restore_data(manifest, volumes=False, dumps=False) == []


async def test_a_dump_without_restore_command_is_refused(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db")])
    store = store_with(settings, engine)
    manifest = backup(store, restore_argv=[])
    with pytest.raises(BackupFailed) as refused:
        await store.restore_data(manifest)
    assert refused.value.what == "the dumps of db have no restore command (x-dsm backup.restore)"
    assert engine.calls == [] and fake.calls == []
    two = manifest.model_copy(update={"dumps": [*manifest.dumps, manifest.dumps[0].model_copy(
        update={"service": "db2"})]})
    with pytest.raises(BackupFailed, match=r"^the dumps of db, db2 have no restore command"):
        await store.restore_data(two)


async def test_a_running_database_gets_its_dump_with_the_others_stopped(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db"), box("web"), box("old", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    manifest = backup(store)
    fake.ready = ["id-db"]
    said: list[tuple[float, float, str]] = []

    async def progress(done: float, total: float, message: str) -> None:
        said.append((done, total, message))

    outcome = await store.restore_data(manifest, bring_up=True, progress=progress)
    assert said == [(1, 2, "restoring the postgres dump of db"), (2, 2, "restore done")]
    assert engine.timeouts == [60, 6 * 3600, 600]  # terminate, replay (hours for a big dump), count
    assert outcome == ["dump db"]
    assert [(s.target, s.way, s.failed_state) for s in outcome.steps] == [("dump db", "dump", [])]
    assert engine.calls == [("stop", "id-web"), ("terminate", "id-db"), ("replay", "id-db", "db.sql"),
                            ("count", "id-db"), ("start", "id-web")]
    assert fake.calls == [("ready", "db")]
    check = outcome.checks[0]
    assert (check.ok, check.tables_expected, check.tables_found, check.rows_expected, check.rows_found) == (
        True, 2, 2, 301, 301)
    assert check.detail == "2 tables, 301 rows, as recorded when the dump was taken"
    assert not list((settings.state_dir / "backups" / "app" / ".stopped").glob("*"))


async def test_a_database_that_cannot_start_comes_back_from_its_archive(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    manifest = backup(store, archive=True)
    fake.ready = [None, "id-db"]
    outcome = await store.restore_data(manifest, volumes=False)
    assert fake.calls == [("ready", "db"), ("replace", [("app_pgdata", "app_pgdata.tar")], True, ["db"]),
                          ("ready", "db")]
    assert outcome == ["volume app_pgdata", "dump db"]
    assert [(s.way, s.service, s.failed_state) for s in outcome.steps] == [
        ("volume archive, database could not start", "db", ["failed-x/app_pgdata.tar"]),
        ("dump", "db", ["failed-x/app_pgdata.tar"])]
    assert outcome.steps[0].detail == "db did not become ready (exit 1)"
    assert ("replay", "id-db", "db.sql") in engine.calls


async def test_a_volume_restored_as_asked_is_not_restored_again(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    manifest = backup(store, archive=True)
    fake.ready = [None, "id-fresh"]
    said: list[tuple[float, float, str]] = []

    async def progress(done: float, total: float, message: str) -> None:
        said.append((done, total, message))

    outcome = await store.restore_data(manifest, progress=progress)
    # The archive went back first (asked for), so the database gets a fresh directory, not it again.
    assert fake.calls == [("replace", [("app_pgdata", "app_pgdata.tar")], False, []), ("ready", "db"),
                          ("replace", [("app_pgdata", None)], True, ["db"]), ("ready", "db")]
    assert [(s.way, s.service) for s in outcome.steps] == [
        ("volume archive", "db"), ("dump into a fresh data directory, database could not start", "db")]
    assert fake.progress[0] == (progress, 3)
    assert said == [(2, 3, "restoring the postgres dump of db"), (3, 3, "restore done")]


async def test_the_archives_a_database_may_come_back_from(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    # Its data volume (by name), another archive of the same service, and another service's volume.
    manifest = backup(store, volumes=["app_pgdata"], more_archives=(
        ("app_pgdata", None), ("app_db_extra", "db"), ("app_web", "web")))
    fake.ready = [None, "id-db"]
    await store.restore_data(manifest, volumes=False)
    assert fake.calls[1] == ("replace", [("app_pgdata", "app_pgdata.tar"), ("app_db_extra", "app_db_extra.tar")],
                             True, ["db"])


async def test_only_a_dump_means_a_fresh_data_directory(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    manifest = backup(store)
    fake.ready = [None, "id-fresh"]
    outcome = await store.restore_data(manifest)
    assert fake.calls == [("ready", "db"), ("replace", [("app_pgdata", None)], True, ["db"]), ("ready", "db")]
    step = outcome.steps[0]
    assert (step.target, step.way, step.failed_state, step.detail) == (
        "dump db", "dump into a fresh data directory, database could not start", ["failed-x/app_pgdata.tar"],
        "db did not become ready (exit 1)")
    assert engine.calls == [("terminate", "id-fresh"), ("replay", "id-fresh", "db.sql"), ("count", "id-fresh")]
    assert outcome.checks[0].ok is True


async def test_a_database_that_never_starts_says_what_was_kept(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")])
    store = store_with(settings, engine)
    manifest = backup(store)
    fake.ready = [None, None]
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(manifest)
    text = str(failed.value)
    assert failed.value.what.startswith("db did not become ready (exit 1); on a fresh data directory too: db did")
    assert "failed-x/app_pgdata.tar" in text and "already changed: volumes ['app_pgdata'] replaced" in text
    assert "nothing was" not in text


async def test_a_database_outside_a_named_volume_is_not_emptied(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")])
    store = store_with(settings, engine)
    manifest = backup(store, volumes=[])
    fake.ready = [None]
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(manifest)
    assert failed.value.what == ("db did not become ready (exit 1), and its data is not in a named volume, so it "
                                 "cannot be given a fresh data directory")
    assert [c[0] for c in fake.calls] == ["ready"]


async def test_a_failed_replay_says_what_was_changed(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db"), box("web")], replay_exit=3)
    store = store_with(settings, engine)
    manifest = backup(store)
    fake.ready = ["id-db"]
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(manifest)
    assert failed.value.what == "replaying the postgres dump of db failed (exit 3: ERROR: boom)"
    assert failed.value.state == "already changed: the postgres dump of db replayed; the database may be partly " \
        "restored"
    assert engine.calls[-1] == ("start", "id-web")  # the others run again


async def test_an_engine_error_after_a_change_is_not_nothing_changed(settings: Settings, fake: Revive,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine([box("db")])
    store = store_with(settings, engine)
    manifest = backup(store, archive=True)

    async def in_use(*args: Any, changes: list[str], **kw: Any) -> list[str]:
        changes.append("container app-db-1 stopped and removed")
        raise EngineError("the Docker engine refused to remove volume app_pgdata: volume is in use",
                          state="nothing was changed by this call", next_step="")

    monkeypatch.setattr(revive, "replace_volumes", in_use)
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(manifest, dumps=False)
    assert failed.value.state == "already changed: container app-db-1 stopped and removed"
    assert failed.value.next_step.startswith("read the affected services' logs")

    async def refused(*args: Any, changes: list[str], **kw: Any) -> list[str]:
        raise EngineError("refused", state="nothing was changed by this call")

    monkeypatch.setattr(revive, "replace_volumes", refused)
    with pytest.raises(EngineError) as untouched:  # before any change, the engine's own answer stands
        await store.restore_data(manifest, dumps=False)
    assert untouched.value.state == "nothing was changed by this call"


async def test_bring_up_starts_what_ran_at_backup_time(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited"), box("web", state="exited"), box("job", state="exited")])
    store = store_with(settings, engine)
    manifest = backup(store, archive=True, dump=False)
    assert await store.restore_data(manifest, bring_up=True) == ["volume app_pgdata"]
    assert fake.calls[-1] == ("recreate", ["db", "web"], [])
    fake.calls.clear()
    engine.containers = [box("db"), box("web")]
    await store.restore_data(manifest, bring_up=True)
    assert [c[0] for c in fake.calls] == ["replace"]
    fake.calls.clear()
    engine.containers = [box("db", state="exited")]
    await store.restore_data(manifest)
    assert [c[0] for c in fake.calls] == ["replace"]


def dump_with(tables: dict[str, int] | None) -> DatabaseDump:
    return DatabaseDump(service="db", kind="postgres", file="dumps/db.sql", bytes=1, sha256="0", restore=RESTORE,
                        tables=tables)


def test_data_check() -> None:
    ok = data_check(dump_with(TABLES), dict(TABLES))
    assert ok.ok is True and ok.missing == [] and ok.differ == []
    extra = data_check(dump_with(TABLES), {**TABLES, "app.public.new": 5})
    assert extra.ok is True and (extra.tables_found, extra.rows_found) == (3, 306)
    bad = data_check(dump_with(TABLES), {"app.public.items": 299})
    assert (bad.ok, bad.missing, bad.differ) == (False, ["app.public.notes"], ["app.public.items: 300 -> 299"])
    assert (bad.tables_expected, bad.tables_found, bad.rows_expected, bad.rows_found) == (2, 1, 301, 299)
    assert bad.detail == "1 table(s) missing, 1 with other row counts than at dump time"
    fewer = data_check(dump_with(TABLES), {"app.public.items": 300, "app.public.notes": 0})
    assert fewer.ok is False and fewer.differ == ["app.public.notes: 1 -> 0"] and fewer.missing == []
    unrecorded = data_check(dump_with(None), dict(TABLES))
    assert (unrecorded.ok, unrecorded.tables_expected, unrecorded.tables_found, unrecorded.rows_expected,
            unrecorded.rows_found) == (None, None, 2, None, 301)
    assert unrecorded.detail == "no row counts were recorded when the dump was taken"
    uncounted = data_check(dump_with(TABLES), None)
    assert (uncounted.ok, uncounted.tables_expected, uncounted.tables_found, uncounted.rows_expected,
            uncounted.rows_found) == (None, 2, None, 301, None)
    assert uncounted.detail == "the tables of this postgres database could not be counted"


def test_outcome_is_the_list_it_always_was() -> None:
    outcome = restore.RestoreOutcome()
    assert outcome == [] and outcome.steps == [] and outcome.checks == []


async def test_a_long_error_keeps_its_end(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db")], replay_exit=1, stderr="E" * 100 + "x" * 299 + "!")
    store = store_with(settings, engine)
    fake.ready = ["id-db"]
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(backup(store))
    assert failed.value.what == "replaying the postgres dump of db failed (exit 1: " + "x" * 299 + "!)"


async def test_what_could_not_be_started_again_is_said_and_noted(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db"), box("web")], replay_exit=3)
    engine.start_fails = True
    store = store_with(settings, engine)
    fake.ready = ["id-db"]
    with pytest.raises(BackupFailed) as failed:
        await store.restore_data(backup(store))
    assert failed.value.state == ("already changed: web stopped; the postgres dump of db replayed; the database "
                                  "may be partly restored")
    notes = list((settings.state_dir / "backups" / "app" / ".stopped").glob("*.json"))
    assert len(notes) == 1  # crash recovery (or the next start) tries again
    note = json.loads(notes[0].read_text())
    assert note["why"] == "replaying the dump of db" and note["containers"][0]["id"] == "id-web"


async def test_a_hooks_dump_is_replayed_without_a_recipe(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db")])
    store = store_with(settings, engine)
    fake.ready = ["id-db"]
    outcome = await store.restore_data(backup(store, kind="hooks"))
    assert engine.calls == [("replay", "id-db", "db.sql")]
    check = outcome.checks[0]
    assert (check.ok, check.detail) == (None, "the tables of this hooks database could not be counted")


def test_checksums_read_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"a" * (3 * 1024 * 1024 + 5))
    expected = hashlib.sha256(b"a" * (3 * 1024 * 1024 + 5)).hexdigest()
    sizes: list[int | None] = []
    real_open = Path.open

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        read = handle.read

        def bounded(size: int | None = None) -> bytes:
            sizes.append(size)
            return read(size)

        handle.read = bounded
        return handle

    monkeypatch.setattr(Path, "open", spy_open)
    assert restore.sha256_file(path) == expected
    assert sizes == [1 << 20] * 5


async def test_what_every_replacement_held_is_kept(settings: Settings, fake: Revive) -> None:
    engine = Engine([box("db", state="exited")], counts=COUNTS)
    store = store_with(settings, engine)
    fake.ready = [None, None, "id-db"]  # its archive did not help either: a fresh data directory then
    outcome = await store.restore_data(backup(store, archive=True), volumes=False)
    assert outcome.steps[-1].way == "dump into a fresh data directory, database could not start"
    assert outcome.steps[-1].failed_state == ["failed-x/app_pgdata.tar", "failed-x/app_pgdata.tar"]
