"""What a backup or restore leaves behind when its server dies mid-way, and putting it right.

Backups stop a database to archive its volume; restores stop the services that use the data.
Before a container is stopped it is written down in a note (``backups/<stack>/.stopped/<id>.json``,
0600, fsync'd, naming the server process); the note goes once the container runs again. The
helper containers backups create carry the labels ``dsm.stack`` and ``dsm.owner`` (the server's
pid and start time). When a server is killed mid-operation, crash recovery (server.operations,
at the next start or the next operation on the stack, with the stack's lock held) calls
:func:`repair_blocking`: containers a dead server noted are started again and helpers a dead
server owned are removed. A helper left behind would hold its volume ("volume is in use").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import BackupFailed, DsmError
from server.operations import procs

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.engine import ContainerSummary, Engine
    from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.backups")

STACK_LABEL = "dsm.stack"
OWNER_LABEL = "dsm.owner"
_NOTES = ".stopped"


def owner_token() -> str:
    """This server process as ``<pid>:<start time>`` (a pid alone can be reused after a crash)."""
    pid = os.getpid()
    return f"{pid}:{procs.start_time(pid)}"


def owner_alive(token: str | None) -> bool:
    pid, _, start = (token or "").partition(":")
    if not pid.isdigit():
        return False
    return procs.is_alive(int(pid), None if start in ("", "None") else start)


def helper_labels(stack: str) -> dict[str, str]:
    return {STACK_LABEL: stack, OWNER_LABEL: owner_token()}


def _notes_dir(root: Path, stack: str) -> Path:
    return root / stack / _NOTES


def write_note(store: BackupStore, stack: str, containers: Sequence[ContainerSummary], why: str) -> Path | None:
    """Write down ``containers`` (about to be stopped) for crash recovery; None when there are none."""
    if not containers:
        return None
    directory = _notes_dir(store.root, store.stack_dir(stack).name)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.json"
    body = {"owner": owner_token(), "why": why[:300],
            "containers": [{"id": c.id, "name": c.name, "service": c.service} for c in containers]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(body))
        handle.flush()
        os.fsync(handle.fileno())
    return path


def drop_note(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def stopped(store: BackupStore, stack: str, containers: Sequence[ContainerSummary], why: str,
                  changes: list[str] | None = None) -> AsyncIterator[list[str]]:
    """Stop the running ones of ``containers`` for the block and start them again after, whatever
    happens; noted first, so a server killed inside the block has them started by recovery.
    A container that cannot be started again keeps its note and is an error (unless the block
    already failed: its error is the one reported)."""
    running = [c for c in containers if c.running]
    note = write_note(store, stack, running, why)
    done: list[str] = []
    said: list[str] = []
    failed = False
    try:
        for container in running:
            await store.engine.stop_container(container.id)
            done.append(container.id)
            said.append(f"{container.service or container.name} stopped")
            if changes is not None:
                changes.append(said[-1])
        yield done
    except BaseException:
        failed = True
        raise
    finally:
        with anyio.CancelScope(shield=True):
            problems: list[str] = []
            for container in running:
                try:
                    await store.engine.start_container(container.id)
                except DsmError as exc:
                    problems.append(f"{container.service or container.name}: {exc.what[:200]}")
            if not problems:
                drop_note(note)
                for line in said:
                    if changes is not None:
                        changes.remove(line)
            elif not failed:
                raise BackupFailed(
                    "could not start again what was stopped: " + "; ".join(problems),
                    state="those containers are stopped (the next server start tries again)",
                    next_step="start them (stack_control or deploy_stack) and read their logs",
                )
            else:
                log.error("could not start again after a failure: %s", "; ".join(problems))


# -- crash recovery ------------------------------------------------------------------------------
async def repair(settings: Settings, engine: Engine, stack: str) -> dict[str, Any]:
    """Start the containers dead servers stopped for ``stack`` and remove their helpers."""
    from server.engine import HELPER_LABEL

    started: list[str] = []
    gone: list[str] = []
    problems: list[str] = []
    directory = _notes_dir(settings.state_dir / "backups", stack)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            note = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if owner_alive(note.get("owner")):
            continue
        ok = True
        for entry in note.get("containers") or []:
            name = str(entry.get("service") or entry.get("name") or entry.get("id"))
            try:
                if await engine.container_attrs(str(entry.get("id"))) is None:
                    gone.append(name)
                    continue
                await engine.start_container(str(entry.get("id")))
                started.append(name)
            except DsmError as exc:
                problems.append(f"{name}: {exc.what[:200]}")
                ok = False
        if ok:
            path.unlink(missing_ok=True)
    removed: list[str] = []
    rows = await engine.call(lambda c: c.api.containers(all=True, filters={
        "label": [f"{HELPER_LABEL}=1", f"{STACK_LABEL}={stack}"]}), "list helper containers")
    for row in rows:
        if owner_alive((row.get("Labels") or {}).get(OWNER_LABEL)):
            continue  # a live server's (a restore drill running now)
        await engine.remove_container(str(row.get("Id")))
        removed.append(((row.get("Names") or ["?"])[0]).lstrip("/"))
    result: dict[str, Any] = {}
    if started:
        result["restarted"] = started
    if gone:
        result["gone"] = gone
        result["gone_next_step"] = "those containers were removed mid-restore: backup_stack restore again or deploy"
    if removed:
        result["helpers_removed"] = removed
    if problems:
        result["problems"] = problems
    return result


def repair_blocking(settings: Settings, engine: Engine, stack: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """:func:`repair` from synchronous crash recovery (which may itself run on an event loop's
    thread): on a thread of its own with its own loop. Never raises."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = anyio.run(repair, settings, engine, stack)
        except BaseException as exc:
            box["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"

    thread = threading.Thread(target=run, name=f"dsm-repair-{stack}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return {"error": f"repair of {stack} still running after {timeout_s:.0f}s"}
    if "error" in box:
        log.warning("repair of %s after an interrupted operation failed: %s", stack, box["error"])
        return {"error": box["error"]}
    return dict(box.get("result") or {})
