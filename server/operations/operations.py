"""Operations: the journal, the per-stack lock and crash recovery behind one small API.

Every mutating operation on a stack (deploy, rollback, backup, restore, control) runs as::

    op = runtime.operations().begin(stack, "deploy", params)   # StackBusy if another runs
    op.phase("backup", "running") ... op.child(pgid) ... op.end("deployed", report)

``begin`` takes the stack's lock without waiting and writes the begin record (fsync'd) before
the caller acts; ``end`` writes the final record, then releases the lock. Process groups the
operation starts are journaled (pass ``op.child`` as ``on_start`` to run_argv / ComposeRunner)
so that when a server dies mid-operation, the next one to touch the stack stops them before it
acts and records the operation ``interrupted``: a ``docker compose up`` left behind by a killed
server must not race the next deploy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from server.errors import DsmError, StackBusy
from server.operations import procs
from server.operations.journal import Journal
from server.operations.lock import StackLock, read_holder
from server.operations.maintenance import MaintenanceWindows
from server.operations.models import (
    FINAL_STATUSES,
    KINDS,
    OPERATION_ID,
    STACK_NAME,
    OperationKind,
    OperationRecord,
    OperationStatus,
    fold_states,
    new_operation_id,
    now_iso,
)
from server.redact import Scrubber, redact_mapping
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.operations")

T = TypeVar("T")
_BUSY_SETTLE_S = 2.0
"""How long a refused begin waits for the holder to identify itself before answering busy anyway."""
_DETAIL_MAX = 2000
_STRING_MAX = 4000


class Operation:
    """A running operation; holds its stack's lock until :meth:`end`.

    Usable as a context manager: leaving the block without ``end`` ends it ``failed`` (on an
    exception) or ``done``.
    """

    def __init__(
        self, owner: Operations, *, id: str, stack: str, kind: str, started_at: str, lock: StackLock, scrub: Scrubber
    ) -> None:
        self.id = id
        self.stack = stack
        self.kind = kind
        self.started_at = started_at
        self._owner = owner
        self._lock = lock
        self._scrub = scrub
        self.status: str = "running"
        self._children: set[int] = set()

    @property
    def ended(self) -> bool:
        return self.status != "running"

    def phase(self, name: str, status: str, detail: str = "", duration_s: float | None = None) -> None:
        """Journal a phase's progress (``running``, ``ok``, ``failed``, ``skipped``...). A phase
        reported again under the same name replaces the earlier entry in the folded view."""
        if self.ended:
            log.debug("phase %s after the end of %s ignored", name, self.id)
            return
        self._append(
            "phase",
            name=str(name)[:100],
            status=str(status)[:50],
            detail=clip_scrub(str(detail), self._scrub, _DETAIL_MAX),
            duration_s=None if duration_s is None else round(float(duration_s), 3),
        )

    def child(self, pgid: int) -> None:
        """Record a process group this operation started; pass as ``on_start`` to run_argv (inside
        :meth:`Operations.run_detached` every process started is recorded without it). Once each."""
        pgid = int(pgid)
        if pgid in self._children or self.ended:
            return
        self._children.add(pgid)
        self._append("child", pgid=pgid, start=procs.start_time(pgid))

    def end(self, status: OperationStatus, result: Mapping[str, Any] | Any | None = None) -> None:
        """Write the final record (``result`` scrubbed: a dict, pydantic model or dataclass), then
        release the stack's lock. Ending twice is a programming error."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"{status!r} is not a final operation status ({sorted(FINAL_STATUSES)})")
        if self.ended:
            raise RuntimeError(f"operation {self.id} already ended {self.status}")
        self.status = status
        try:
            self._append("end", status=status, result=None if result is None else scrub_json(result, self._scrub))
        finally:
            # Even when the end record cannot be written (disk full), the lock must go: the next
            # begin then finds the operation unended and records it interrupted.
            self._lock.release()

    def _append(self, t: str, **fields: Any) -> None:
        self._owner.journal.append({"op": self.id, "t": t, "stack": self.stack, "at": now_iso(), **fields})

    def record(self) -> OperationRecord | None:
        return self._owner.get(self.id)

    def __enter__(self) -> Operation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if not self.ended:
            self.end("failed" if exc is not None else "done", _error_result(exc, self._scrub) if exc else None)

    def __repr__(self) -> str:
        return f"Operation({self.id}, {self.stack}, {self.kind}, {self.status})"


class Operations:
    """Journal, locks, recovery and maintenance windows under ``settings.state_dir``.

    ``stack_state`` (optional, blocking) describes a stack's containers for the record of an
    interrupted operation; ``kill_grace_s`` is how long an orphaned process group gets between
    SIGTERM and SIGKILL. ``repair`` (optional, blocking) puts right what a dead operation left
    on the engine (containers it stopped, helpers it created); its answer is recorded too.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        stack_state: Callable[[str], Any] | None = None,
        kill_grace_s: float = 5.0,
        repair: Callable[[str], Any] | None = None,
    ) -> None:
        self.settings = settings
        state = Path(settings.state_dir)
        self.journal = Journal(state / "journal", settings.journal_max_bytes)
        self.locks_dir = state / "locks"
        self.windows = MaintenanceWindows(state / "maintenance")
        self.stack_state = stack_state
        self.repair = repair
        self.kill_grace_s = kill_grace_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pid_start = procs.start_time(os.getpid())

    # -- begin / lock -----------------------------------------------------------------------
    def begin(
        self, stack: str, kind: OperationKind, params: Mapping[str, Any] | None = None, *, secrets: Iterable[str] = ()
    ) -> Operation:
        """Take ``stack``'s lock without waiting and journal the start; raises StackBusy naming the
        holder. An operation of this stack that was started but never ended (its server died) is
        recovered first: its process groups are stopped and it is recorded ``interrupted``.
        ``params`` are journaled scrubbed; ``env`` in them as names only. ``secrets`` (and the
        values of ``params['env']``) are masked in every detail and result of the operation.
        Blocking: from async code prefer :meth:`begin_async`."""
        _check_stack(stack)
        if kind not in KINDS:
            raise ValueError(f"{kind!r} is not an operation kind ({sorted(KINDS)})")
        params = dict(params or {})
        env = params.get("env")
        env_values = [str(v) for v in env.values()] if isinstance(env, Mapping) else []
        scrub = Scrubber([*secrets, *env_values])
        op_id, started_at = new_operation_id(), now_iso()
        holder = {"operation_id": op_id, "kind": kind, "started_at": started_at, "pid": os.getpid(),
                  "pid_start": self._pid_start}
        lock = self._acquire(stack)
        try:
            lock.write_holder(holder)
            # Under our lock nobody else can run on this stack: an unended operation is an orphan.
            self._recover_locked(stack, exclude=op_id)
            self.journal.append({
                "op": op_id, "t": "begin", "stack": stack, "kind": kind, "at": started_at, "pid": os.getpid(),
                "pid_start": self._pid_start, "params": scrub_params(params, scrub),
            })
        except BaseException:
            lock.release()
            raise
        log.info("operation %s began: %s %s", op_id, kind, stack)
        return Operation(self, id=op_id, stack=stack, kind=kind, started_at=started_at, lock=lock, scrub=scrub)

    async def begin_async(
        self, stack: str, kind: OperationKind, params: Mapping[str, Any] | None = None, *, secrets: Iterable[str] = ()
    ) -> Operation:
        """:meth:`begin` in a worker thread: from async code, use this one. ``begin`` fsyncs and,
        when it finds an orphan, waits seconds for its process groups to stop; the event loop
        (progress notifications, other requests) must not wait with it."""
        import anyio

        return await anyio.to_thread.run_sync(lambda: self.begin(stack, kind, params, secrets=secrets))

    def _lock_path(self, stack: str) -> Path:
        return self.locks_dir / f"{stack}.lock"

    def _acquire(self, stack: str) -> StackLock:
        lock = StackLock(self._lock_path(stack))
        deadline = time.monotonic() + _BUSY_SETTLE_S
        while not lock.try_acquire():
            holder = self._live_holder(stack)
            if holder is not None or time.monotonic() >= deadline:
                holder = holder or {}
                raise StackBusy(
                    stack,
                    operation_id=str(holder.get("operation_id", "unknown")),
                    kind=str(holder.get("kind", "unknown")),
                    started_at=str(holder.get("started_at", "unknown")),
                    pid=int(holder.get("pid") or 0),
                )
            time.sleep(0.05)  # the holder is between acquire and naming itself, or a probe holds it
        return lock

    def _live_holder(self, stack: str) -> dict[str, Any] | None:
        holder = read_holder(self._lock_path(stack))
        if holder and holder.get("operation_id") and procs.is_alive(int(holder.get("pid") or 0),
                                                                     holder.get("pid_start")):
            return holder
        return None

    # -- reading ------------------------------------------------------------------------------
    def get(self, operation_id: str) -> OperationRecord | None:
        """The operation as journaled by any process; None for an unknown or malformed id."""
        if not OPERATION_ID.match(operation_id or ""):
            return None
        states = fold_states(self.journal.records(f'"op":"{operation_id}"'))
        state = states.get(operation_id)
        return self._as_seen(state.record()) if state else None

    def history(
        self, stack: str, kinds: Iterable[str] = ("deploy", "rollback"), limit: int = 20
    ) -> list[OperationRecord]:
        """The stack's operations of ``kinds``, newest first, at most ``limit``."""
        _check_stack(stack)
        wanted = set(kinds)
        records = [r for r in reversed(self._stack_records(stack)) if r.kind in wanted]
        records.sort(key=lambda r: r.started_at, reverse=True)  # stable: same-millisecond ties stay newest first
        return records[: max(0, limit)]

    def running(self, stack: str) -> OperationRecord | None:
        """The operation holding ``stack``'s lock now (in any process), if any."""
        _check_stack(stack)
        holder = self._live_holder(stack)
        if holder is None:
            return None
        op_id = str(holder["operation_id"])
        states = fold_states(self.journal.records(f'"op":"{op_id}"'))
        if op_id in states:
            record = states[op_id].record()
            return record if record.running else None
        # Acquired but not journaled yet (recovering an orphan first): describe it from the lock.
        return OperationRecord(
            operation_id=op_id, stack=stack, kind=holder.get("kind", "deploy"), status="running",
            started_at=str(holder.get("started_at", "")), ended_at=None, pid=int(holder.get("pid") or 0),
            phases=[], result=None, params={},
        )

    def _stack_records(self, stack: str) -> list[OperationRecord]:
        states = fold_states(self.journal.records(f'"stack":"{stack}"'))
        return [self._as_seen(s.record()) for s in states.values() if s.begin.get("stack") == stack]

    def _as_seen(self, rec: OperationRecord) -> OperationRecord:
        """An unended operation is running only while its live server holds the stack's lock and
        names it there; otherwise its server died and it reads ``interrupted`` at once, before
        recovery (the next begin on the stack, or a server's start-up) writes that down."""
        if not rec.running or not STACK_NAME.match(rec.stack):
            return rec
        holder = self._live_holder(rec.stack)
        if holder is not None and holder.get("operation_id") == rec.operation_id and not holder.get("recovering"):
            return rec
        return replace(rec, status="interrupted", result={
            "reason": f"its server (pid {rec.pid}) stopped before the operation ended",
            "recovery": "pending: the next operation on the stack (or a server start) stops its leftover "
                        "processes and records it",
            "last_phase": rec.phases[-1] if rec.phases else None,
        })

    # -- recovery -----------------------------------------------------------------------------
    def recover(self, stack: str | None = None) -> list[OperationRecord]:
        """Operations started but never ended whose server is dead (pid gone or reused), of
        ``stack`` or of every stack: stop every recorded process group still alive (SIGTERM, then
        SIGKILL after ``kill_grace_s``), write an ``interrupted`` end record; returns them.
        Blocking (seconds at most per orphan). Safe to run from several processes at once."""
        if stack is not None:
            _check_stack(stack)
        needle = f'"stack":"{stack}"' if stack else None
        states = fold_states(self.journal.records(needle))
        recovered: list[OperationRecord] = []
        me = os.getpid()
        for op_id, state in states.items():
            b = state.begin
            if state.end is not None or (stack and b.get("stack") != stack):
                continue
            pid = int(b.get("pid") or 0)
            if pid != me and procs.is_alive(pid, b.get("pid_start")):
                continue  # its server still runs: not ours to judge
            name = str(b.get("stack", ""))
            if not STACK_NAME.match(name):
                continue
            lock = StackLock(self._lock_path(name))
            if not lock.try_acquire():
                continue  # held: a live operation of this process, or another recoverer/begin on it
            try:
                lock.write_holder({"operation_id": op_id, "kind": "recovery", "started_at": now_iso(), "pid": me,
                                   "pid_start": self._pid_start, "recovering": True})
                recovered.extend(self._recover_locked(name, only=op_id))
            finally:
                lock.release()
        return recovered

    def _recover_locked(
        self, stack: str, *, only: str | None = None, exclude: str | None = None
    ) -> list[OperationRecord]:
        """With ``stack``'s lock held: interrupt its unended operations (re-read under the lock)."""
        out: list[OperationRecord] = []
        for op_id, state in fold_states(self.journal.records(f'"stack":"{stack}"')).items():
            if state.end is not None or state.begin.get("stack") != stack or op_id == exclude:
                continue
            if only is not None and op_id != only:
                continue
            out.append(self._interrupt(op_id, stack, state.begin, state.children, state.phases))
        return out

    def _interrupt(
        self, op_id: str, stack: str, begin: dict[str, Any], children: list[dict[str, Any]],
        phases: list[dict[str, Any]],
    ) -> OperationRecord:
        pid = int(begin.get("pid") or 0)
        server_alive = procs.is_alive(pid, begin.get("pid_start"))
        groups = []
        for child in reversed(children):  # newest first: the one most likely still running
            pgid = child.get("pgid")
            if isinstance(pgid, int):
                outcome = procs.stop_group(pgid, child.get("start"), self.kill_grace_s)
                groups.append({"pgid": pgid, "outcome": outcome})
        last = next((p for p in reversed(phases) if p.get("name")), None)
        repaired = self._repair(stack)  # before the probe: the state recorded is the state after it
        result: dict[str, Any] = {
            "reason": (f"its server (pid {pid}) is still alive but no longer holds the stack's lock"
                       if server_alive else f"its server (pid {pid}) died before the operation ended"),
            "last_phase": last,
            "process_groups": groups,
            "recovered_by_pid": os.getpid(),
            "stack_state": self._probe(stack),
            "next_step": "check the stack's containers, then deploy or roll back again",
        }
        if repaired:
            result["repaired"] = repaired
        self.journal.append({"op": op_id, "t": "end", "stack": stack, "at": now_iso(), "status": "interrupted",
                             "result": scrub_json(result, Scrubber())})
        self._close_window_of(stack, op_id, pid)
        log.warning("operation %s on %s recorded interrupted (%s); process groups: %s", op_id, stack,
                    result["reason"], groups)
        record = self.get(op_id)
        assert record is not None
        return record

    def _close_window_of(self, stack: str, op_id: str, pid: int) -> None:
        """Close the maintenance window the dead operation opened for itself (``deploy <op id>``):
        it would mute the watcher on a stack left down, and the next deploy would put it back as
        if the user had opened it. A user's window (another reason or process) stays."""
        try:
            window = self.windows.get(stack)
            if window and str(window.get("reason", "")).endswith(f" {op_id}") and int(window.get("pid") or 0) == pid:
                self.windows.set(stack, None, "")
        except Exception:  # the interrupted record is written; a window ends at its `until` anyway
            log.warning("could not close the maintenance window of %s", stack, exc_info=True)

    def _repair(self, stack: str) -> Any:
        if self.repair is None:
            return None
        try:
            return self.repair(stack)
        except Exception as exc:  # the interrupted record is written whatever happens here
            return {"error": f"repair failed: {type(exc).__name__}: {str(exc)[:300]}"}

    def _probe(self, stack: str) -> Any:
        if self.stack_state is None:
            return None
        try:
            return self.stack_state(stack)
        except Exception as exc:  # the record must be written even when the engine is away
            return {"error": f"state unknown: {type(exc).__name__}: {str(exc)[:300]}"}

    # -- running work that outlives its request --------------------------------------------------
    async def run_detached(self, op: Operation, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in a task owned by the server, shielded from the caller's cancellation: a
        client that times out and cancels its request does not cancel the operation, which runs
        to its end (poll operation_status). The caller gets the result if it is still there.
        If ``work`` returns without ending ``op``, it is ended ``done`` with the returned value
        (a dict or model) as result; if it raises, ``failed`` (``interrupted`` when cancelled by
        server shutdown), and the exception reaches the caller."""
        task = asyncio.get_running_loop().create_task(self._drive(op, work), name=f"operation {op.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    async def _drive(self, op: Operation, work: Callable[[], Awaitable[T]]) -> T:
        from server.process import child_recorder

        child_recorder.set(op.child)  # this task's context only: every child it starts is journaled
        try:
            value = await work()
        except BaseException as exc:
            if not op.ended:
                cancelled = isinstance(exc, asyncio.CancelledError)
                op.end("interrupted" if cancelled else "failed", _error_result(exc, op._scrub))
            raise
        if not op.ended:
            op.end("done", value if isinstance(value, Mapping) or hasattr(value, "model_dump") else None)
        return value

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            log.warning("%s was cancelled", task.get_name())
        elif (exc := task.exception()) is not None and not isinstance(exc, DsmError):
            log.error("%s failed: %s", task.get_name(), type(exc).__name__, exc_info=exc)

    @property
    def in_flight(self) -> int:
        """Detached operations still running in this process."""
        return len(self._tasks)

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Server shutdown: let detached operations finish for up to ``grace_s``, then cancel
        them (their own shielded cleanup, e.g. a rollback, runs) and wait for that."""
        pending = set(self._tasks)
        if not pending:
            return
        log.info("waiting up to %.0fs for %d running operation(s)", grace_s, len(pending))
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)

    # -- maintenance windows --------------------------------------------------------------------
    def set_maintenance(self, stack: str, until_iso: str | None, reason: str) -> dict[str, Any] | None:
        """Open a maintenance window on ``stack`` until ``until_iso`` (None closes it). Returns the
        window open before, so a caller can restore a user's window after its own."""
        _check_stack(stack)
        return self.windows.set(stack, until_iso, reason)

    def maintenance(self, stack: str) -> dict[str, Any] | None:
        """The open window ``{stack, until, reason, set_at, pid}`` or None (none or expired)."""
        _check_stack(stack)
        return self.windows.get(stack)


def _check_stack(stack: str) -> None:
    if not isinstance(stack, str) or not STACK_NAME.match(stack):
        raise ValueError(f"{stack!r} is not a normalised Compose project name")


def _error_result(exc: BaseException | None, scrub: Scrubber) -> dict[str, Any]:
    if exc is None:
        return {}
    message = str(exc) if isinstance(exc, DsmError) else type(exc).__name__
    return {"error": scrub(message)[:_DETAIL_MAX], "error_type": type(exc).__name__}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def clip_scrub(text: str, scrub: Scrubber, limit: int) -> str:
    """Scrub, then cut to ``limit``. Cutting first could leave the head of a secret that straddles
    the cut unmasked; scrubbing a huge text whole is slow, so scrub twice the limit and cut after."""
    return scrub(text[: 2 * limit])[:limit]


def scrub_json(value: Any, scrub: Scrubber) -> Any:
    """JSON-ready copy with credential-looking keys masked and secrets removed from every string
    (each string at most _STRING_MAX characters: the journal is not the place for whole logs)."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return clip_scrub(v, scrub, _STRING_MAX) if isinstance(v, str) else v

    return walk(redact_mapping(_jsonable(value)))


def scrub_params(params: Mapping[str, Any], scrub: Scrubber) -> dict[str, Any]:
    """Inputs as journaled: ``env`` reduced to its variable names (values never leave memory)."""
    out = dict(params)
    env = out.get("env")
    if isinstance(env, Mapping):
        out["env"] = sorted(str(k) for k in env)
    result = scrub_json(out, scrub)
    return result if isinstance(result, dict) else {}
