"""Stand-ins for server.operations and server.backups until those branches are merged.

Same signatures as SPEC-deploy.md, smallest behaviour the pipeline needs: an fcntl lock and a
JSON-lines journal; a backup of the files, pinned image tags and database dumps via
``compose exec``. Deleted when the real packages land (see seams.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from server.compose import ComposeRunner
from server.errors import DsmError
from server.settings import Settings

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StackBusy(DsmError):
    def __init__(self, operation_id: str, kind: str, started_at: str, pid: int, stack: str) -> None:
        self.operation_id, self.kind, self.started_at, self.pid = operation_id, kind, started_at, pid
        super().__init__(f"stack {stack!r} is busy: {kind} {operation_id} (pid {pid}) started at {started_at}",
                         next_step=f"call operation_status({operation_id!r})")


@dataclass
class OperationRecord:
    operation_id: str
    stack: str
    kind: str
    status: str
    started_at: str
    ended_at: str | None
    pid: int
    phases: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


class Operation:
    def __init__(self, ops: Operations, stack: str, kind: str, fd: int) -> None:
        self.id = f"op-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        self.stack, self.kind, self._ops, self._fd, self.ended = stack, kind, ops, fd, False

    def phase(self, name: str, status: str, detail: str = "", duration_s: float | None = None) -> None:
        self._ops._append({"type": "phase", "id": self.id, "name": name, "status": status, "detail": detail,
                           "duration_s": duration_s})

    def child(self, pgid: int) -> None:
        self._ops._append({"type": "child", "id": self.id, "pgid": pgid})

    def end(self, status: str, result: dict[str, Any] | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        self._ops._append({"type": "end", "id": self.id, "status": status, "at": _now(), "result": result})
        with contextlib.suppress(OSError):
            os.close(self._fd)


class Operations:
    def __init__(self, settings: Settings) -> None:
        self.dir = settings.state_dir
        self._tasks: set[asyncio.Task[Any]] = set()

    def _append(self, record: dict[str, Any]) -> None:
        path = self.dir / "journal" / "journal.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _records(self) -> dict[str, OperationRecord]:
        path = self.dir / "journal" / "journal.jsonl"
        ops: dict[str, OperationRecord] = {}
        if not path.is_file():
            return ops
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r["type"] == "begin":
                ops[r["id"]] = OperationRecord(r["id"], r["stack"], r["kind"], "running", r["at"], None, r["pid"],
                                               params=r.get("params") or {})
            elif r["id"] in ops and r["type"] == "phase":
                ops[r["id"]].phases.append({k: r[k] for k in ("name", "status", "detail", "duration_s")})
            elif r["id"] in ops and r["type"] == "end":
                ops[r["id"]].status, ops[r["id"]].ended_at, ops[r["id"]].result = r["status"], r["at"], r.get("result")
        return ops

    def begin(self, stack: str, kind: str, params: dict[str, Any] | None = None) -> Operation:
        self.recover(stack)
        path = self.dir / "locks" / f"{stack}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.running(stack)
            if holder is None:
                raise StackBusy("unknown", "unknown", _now(), 0, stack) from None
            raise StackBusy(holder.operation_id, holder.kind, holder.started_at, holder.pid, stack) from None
        op = Operation(self, stack, kind, fd)
        self._append({"type": "begin", "id": op.id, "stack": stack, "kind": kind, "pid": os.getpid(), "at": _now(),
                      "params": params or {}})
        return op

    def get(self, operation_id: str) -> OperationRecord | None:
        return self._records().get(operation_id)

    def history(self, stack: str, kinds: tuple[str, ...] = ("deploy", "rollback"), limit: int = 20
                ) -> list[OperationRecord]:
        ops = [o for o in self._records().values() if o.stack == stack and o.kind in kinds]
        return sorted(ops, key=lambda o: o.started_at, reverse=True)[:limit]

    def running(self, stack: str) -> OperationRecord | None:
        live = [o for o in self._records().values() if o.stack == stack and o.status == "running"]
        return live[-1] if live else None

    def recover(self, stack: str | None = None) -> list[OperationRecord]:
        found = []
        for o in self._records().values():
            if o.status == "running" and (stack is None or o.stack == stack) and not _alive(o.pid):
                self._append({"type": "end", "id": o.operation_id, "status": "interrupted", "at": _now()})
                found.append(o)
        return found

    async def run_detached(self, op: Operation, work: Callable[[], Awaitable[T]]) -> T:
        async def runner() -> T:
            return await work()

        task = asyncio.ensure_future(runner())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SHARED: dict[Path, Operations] = {}


def shared_operations(settings: Settings) -> Operations:
    return _SHARED.setdefault(settings.state_dir, Operations(settings))


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
        from server.deploy.project import OVERRIDE_NAME, compose_args, user_files
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
                result = await self.compose.run(compose_args(stack.directory, stack.name),
                                                ["exec", "-T", c.service, *dump], cwd=stack.directory, env=env)
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
        from server.deploy.project import compose_args
        from server.stacks import find_by_name

        location = find_by_name(self.settings, manifest.stack)
        done = []
        for d in manifest.dumps:
            if dumps and (services is None or d.service in services):
                data = (self._dir(manifest.stack, manifest.backup_id) / d.file).read_bytes()
                deadline = time.monotonic() + 60
                while True:
                    result = await self.compose.run(
                        compose_args(location.directory, manifest.stack), ["exec", "-T", d.service, *d.restore],
                        cwd=location.directory, stdin=data, check=False)
                    if result.returncode == 0 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1)
                done.append(f"{d.service}: dump restored (exit {result.returncode})")
        return done
