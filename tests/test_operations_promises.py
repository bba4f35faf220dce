"""The promises of the journal, the stack lock, recovery and maintenance windows, edge by edge.

Real files in tmp_path, real flock locks, real child processes. Each test names the promise it
holds; mutation testing (scripts/mutate.py, modules ops-*) checks that each one can fail.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from server.errors import BadMaintenanceWindow, StackBusy
from server.operations import Operations
from server.operations import journal as journal_mod
from server.operations.journal import MAX_RECORD_BYTES, Journal, encode
from server.operations.lock import StackLock, read_holder
from server.operations.maintenance import MaintenanceWindows, parse_until
from server.settings import Settings

OP = "op-20260101T000000Z-{:08x}"


@pytest.fixture
def ops(settings: Settings) -> Operations:
    return Operations(settings, kill_grace_s=0.3)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _stat_start(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# == the journal ====================================================================================

def test_append_is_durable_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of the file (and of the directory when the file is new) happens inside append."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    journal = Journal(tmp_path / "j", max_bytes=1 << 20)
    journal.append({"op": OP.format(1), "t": "begin", "stack": "web"})
    assert synced == [str(journal.path), str(journal.directory)]  # new file: its directory entry too
    synced.clear()
    journal.append({"op": OP.format(1), "t": "end", "stack": "web"})
    assert synced == [str(journal.path)]
    assert (tmp_path / "j").stat().st_mode & 0o777 == 0o700
    assert journal.path.stat().st_mode & 0o777 == 0o600


def test_appends_from_many_threads_are_whole_lines(tmp_path: Path) -> None:
    import threading

    journal = Journal(tmp_path / "j", max_bytes=1 << 24)
    pad = "x" * 5000  # larger than a pipe buffer's atomic write: only the lock keeps lines whole

    def writer(n: int) -> None:
        for i in range(25):
            journal.append({"op": OP.format(n), "t": "phase", "stack": "web", "i": i, "pad": pad})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(journal.path)
    assert len(lines) == 100 and all(r["pad"] == pad for r in lines)
    for n in range(4):
        assert [r["i"] for r in lines if r["op"] == OP.format(n)] == list(range(25))


def test_the_journal_lock_is_not_inherited_by_a_child(tmp_path: Path) -> None:
    """A process spawned (by another thread) while an append holds the journal lock must not keep it."""
    import fcntl

    journal = Journal(tmp_path, max_bytes=1 << 20)
    with journal._locked(fcntl.LOCK_EX):
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        fd = os.open(journal.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free although the child still runs
        finally:
            os.close(fd)
        journal.append({"op": "a", "t": "begin"})
    finally:
        child.kill()
        child.wait()
    assert journal.lock_path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("content", "expected"), [
    (b"", []),
    (b'{"op":"a","t":"begin"}\n', [{"op": "a", "t": "begin"}]),
    (b'\n{"op":"a","t":"begin"}\n{"op":"b","t":"begin"}\n',
     [{"op": "a", "t": "begin"}, {"op": "b", "t": "begin"}]),  # an empty first line
    (b'{"op":"a","t":"begin"}', [{"op": "a", "t": "begin"}]),  # last line without its newline
    (b'{"op":"a","t":"begin"}\n{"op":"a","t":"end","sta', [{"op": "a", "t": "begin"}]),  # torn tail
    (b'{"op":"a","t":"begin"}\nnot json\n[1, 2]\n7\n\n{"op":"b","t":"begin"}\n',
     [{"op": "a", "t": "begin"}, {"op": "b", "t": "begin"}]),  # garbage and non-objects skipped
])
def test_records_skip_what_does_not_parse(tmp_path: Path, content: bytes, expected: list[dict[str, Any]]) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20)
    assert journal.records() == [] and journal.size() == 0  # no file yet
    journal.path.write_bytes(content)
    assert journal.records() == expected
    assert list(journal._read_all_unlocked()) == expected
    assert journal.size() == len(content)


def test_records_with_a_needle_return_exactly_the_matching_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20)
    rows = [{"op": "a", "t": "begin", "stack": "web"}, {"op": "b", "t": "begin", "stack": "db"},
            {"op": "a", "t": "phase", "stack": "web", "note": '"stack":"web" twice in one line'},
            {"op": "c", "t": "begin", "stack": "db"}, {"op": "a", "t": "end", "stack": "web"}]
    journal.path.write_bytes(b"\n".join(json.dumps(r, separators=(",", ":")).encode() for r in rows))  # no final \n
    assert journal.records('"stack":"web"') == [rows[0], rows[2], rows[4]]  # first, middle (twice), last
    assert journal.records('"stack":"db"') == [rows[1], rows[3]]
    assert journal.records('"op":"c"') == [rows[3]]
    assert journal.records("nowhere") == []
    assert journal.records('{"op":"a"') == [rows[0], rows[2], rows[4]]  # a match at the very first byte
    assert journal.records('{"op":') == rows  # a match at the first byte of every line
    assert journal.records("}") == rows  # one line per match, even when the needle ends each line
    assert journal.records() == rows


def test_encode_puts_op_and_type_first_and_keeps_text_as_written() -> None:
    line = encode({"stack": "wéb", "t": "begin", "op": "x"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.startswith(b'{"op":"x","t":"begin",')  # the needle '"op":"<id>"' always matches
    assert "wéb".encode() in line  # UTF-8, not \\u escapes


def test_an_oversized_result_is_reduced_to_scalars_at_the_limit() -> None:
    base = {"op": "x", "t": "end", "result": {"s": ""}}
    room = MAX_RECORD_BYTES - len(encode(base)) + 1  # +1: encode adds the newline
    at_limit = {**base, "result": {"s": "a" * room}}
    assert len(encode(at_limit)) == MAX_RECORD_BYTES + 1
    assert json.loads(encode(at_limit))["result"] == {"s": "a" * room}  # at the limit: kept whole
    over = {**base, "result": {"s": "a" * (room + 1), "name": "wéb", "n": 3, "f": 1.5, "ok": False, "none": None,
                               "list": [1], "map": {"k": "v"}}}
    result = json.loads(encode(over))["result"]
    assert result["s"] == "a" * 2000 and (result["n"], result["f"], result["ok"], result["none"]) == (3, 1.5, False,
                                                                                                      None)
    assert "list" not in result and "map" not in result
    assert '"name":"wéb"'.encode() in encode(over)  # the reduced line stays UTF-8 too
    full = len(json.dumps({"op": "x", "t": "end", **over}, separators=(",", ":"), ensure_ascii=False))
    assert result["truncated"] == f"the full result was {full} bytes; only its scalar fields were journaled"
    # A result that is not a mapping cannot be reduced: it is kept as it is.
    listed = json.loads(encode({**base, "result": ["a" * MAX_RECORD_BYTES]}))
    assert listed["result"] == ["a" * MAX_RECORD_BYTES]


def _finished(journal: Journal, n: int, stack: str, running: bool = False) -> str:
    op = OP.format(n)
    journal.append({"op": op, "t": "begin", "stack": stack, "kind": "deploy", "at": "2026-01-01T00:00:00.000Z"})
    journal.append({"op": op, "t": "phase", "stack": stack, "name": "deploy", "status": "ok",
                    "at": "2026-01-01T00:00:01.000Z"})
    if not running:
        journal.append({"op": op, "t": "end", "stack": stack, "status": "deployed", "at": "2026-01-01T00:00:02.000Z"})
    return op


def test_compaction_drops_oldest_finished_of_the_busiest_stack_down_to_half(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 30)
    busy = [_finished(journal, n, "aa") for n in range(5)]
    quiet = [_finished(journal, n, "bb") for n in range(10, 12)]
    assert journal.compact() == 0  # under the cap: nothing dropped, each operation folded to one line
    snapshots = _lines(journal.path)
    assert [r["t"] for r in snapshots] == ["snapshot"] * 7 and [r["op"] for r in snapshots] == busy + quiet
    sizes = {len(line) for line in journal.path.read_bytes().splitlines(keepends=True)}
    assert len(sizes) == 1
    line = sizes.pop()
    journal.max_bytes = 2 * 4 * line  # half of it holds exactly four operations
    assert journal.compact() == 3
    assert [r["op"] for r in _lines(journal.path)] == busy[3:] + quiet  # the busy stack's oldest went
    assert journal.size() == 4 * line <= journal.max_bytes // 2
    for rec in _lines(journal.path):  # kept whole: begin, phase and end in one record
        assert rec["end"]["status"] == "deployed" and [p["name"] for p in rec["phases"]] == ["deploy"]
    assert not (tmp_path / "journal.jsonl.tmp").exists()
    assert journal.path.stat().st_mode & 0o777 == 0o600


def test_compaction_is_durable_and_ignores_a_stale_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 30)
    ops = [_finished(journal, n, "web") for n in range(3)]
    ghost = b'{"op":"op-ghost","t":"begin","stack":"web"}\n' * 200  # a compaction killed mid-write left this
    (tmp_path / "journal.jsonl.tmp").write_bytes(ghost)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    assert journal.compact() == 0
    assert [r["op"] for r in journal.records()] == ops  # nothing of the stale file
    assert synced == [str(tmp_path / "journal.jsonl.tmp"), str(tmp_path)]  # the new file, then the rename


def test_compaction_never_drops_a_running_operation(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 30)
    running = _finished(journal, 1, "web", running=True)
    journal.append({"op": running, "t": "phase", "stack": "web", "name": "pad", "detail": "p" * 3000})
    done = [_finished(journal, n, "web") for n in range(2, 6)]
    journal.max_bytes = 1000  # the running operation alone is three times the cap
    only_running = Journal(tmp_path / "only", max_bytes=1 << 30)
    _finished(only_running, 1, "web", running=True)
    only_running.max_bytes = 10
    assert only_running.compact() == 0 and [r["op"] for r in only_running.records()] == [OP.format(1)]
    assert journal.compact() == len(done)
    kept = _lines(journal.path)
    assert [r["op"] for r in kept] == [running] and kept[0]["end"] is None
    assert [p["name"] for p in kept[0]["phases"]] == ["deploy", "pad"]


def test_append_compacts_only_past_the_cap(tmp_path: Path) -> None:
    probe = Journal(tmp_path / "probe", max_bytes=1 << 30)
    first = {"op": OP.format(1), "t": "begin", "stack": "web", "at": "2026-01-01T00:00:00.000Z"}
    second = {"op": OP.format(1), "t": "end", "stack": "web", "status": "done", "at": "2026-01-01T00:00:01.000Z"}
    cap = len(encode(first)) + len(encode(second))
    journal = Journal(tmp_path / "j", max_bytes=cap)
    journal.append(first)
    journal.append(second)
    assert journal.size() == cap and [r["t"] for r in journal.records()] == ["begin", "end"]  # at the cap: as is
    journal.append({"op": OP.format(2), "t": "begin", "stack": "web", "at": "2026-01-01T00:00:02.000Z"})
    assert [(r["op"], r["t"]) for r in journal.records()] == [(OP.format(2), "snapshot")]  # past it: compacted
    assert journal.size() <= cap // 2 + 200
    del probe


def test_a_failing_compaction_does_not_fail_a_durable_append(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The record is on disk before compaction starts: the caller must hear success (a begin that
    raised would release its lock; an end that raised would report a finished deploy as failed)."""
    journal = Journal(tmp_path, max_bytes=300)
    (tmp_path / "journal.jsonl.tmp").mkdir()  # compaction cannot write its temporary
    ops = [_finished(journal, n, "web") for n in range(3)]  # each append past the cap tries to compact
    assert journal.size() > journal.max_bytes
    assert [r["op"] for r in journal.records() if r["t"] == "end"] == ops  # every record kept, none lost
    assert "journal compaction failed" in caplog.text
    (tmp_path / "journal.jsonl.tmp").rmdir()
    journal.append({"op": OP.format(9), "t": "begin", "stack": "web"})
    assert journal.size() <= journal.max_bytes  # the next append compacted


def test_a_compaction_that_fails_midway_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 30)
    ops = [_finished(journal, n, "web") for n in range(3)]
    before = journal.path.read_bytes()
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    with pytest.raises(OSError):
        journal.compact()
    assert journal.path.read_bytes() == before and [r["op"] for r in journal.records() if r["t"] == "end"] == ops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl", "journal.lock"]


def test_compaction_under_max_bytes_in_a_long_run(settings: Settings) -> None:
    ops = Operations(replace(settings, journal_max_bytes=16 * 1024))
    for i in range(120):
        with ops.begin("web", "deploy", {"i": i, "pad": "p" * 100}) as op:
            op.phase("deploy", "ok")
        assert ops.journal.size() <= 16 * 1024
    history = ops.history("web", limit=1000)
    assert history[0].params["i"] == 119 and len(history) < 120
    numbers = [r.params["i"] for r in history]
    assert numbers == list(range(119, 119 - len(numbers), -1))  # only the oldest were dropped


# == the stack lock ==================================================================================

def test_lock_is_exclusive_and_a_refusal_leaks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "web.lock"
    first = StackLock(path)
    assert not first.held and first.try_acquire() and first.held
    assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError, match=r"web\.lock is already held by this object"):
        first.try_acquire()  # the same object twice is a programming error, not a silent second fd
    before = _open_fds()
    for _ in range(20):
        other = StackLock(path)
        assert other.try_acquire() is False and not other.held
    assert _open_fds() == before  # refused attempts close their descriptor
    first.release()
    assert not first.held
    first.release()  # twice: harmless
    second = StackLock(path)
    assert second.try_acquire()
    second.release()


def test_holder_is_written_whole_and_cleared_on_release(tmp_path: Path) -> None:
    path = tmp_path / "web.lock"
    lock = StackLock(path)
    with pytest.raises(RuntimeError, match=r"^write_holder without the lock$"):
        lock.write_holder({"operation_id": "x"})  # without the lock
    assert read_holder(path) is None  # no file
    assert lock.try_acquire()
    assert read_holder(path) is None  # empty right after acquire
    lock.write_holder({"operation_id": "a-long-first-holder-name", "pid": 1})
    lock.write_holder({"operation_id": "b", "pid": 2})  # shorter: no tail of the first left
    assert read_holder(path) == {"operation_id": "b", "pid": 2}
    lock.release()
    assert path.read_bytes() == b"" and read_holder(path) is None  # a finished holder is never named


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'"text"'])
def test_read_holder_of_a_bad_file_is_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.lock").write_bytes(content)
    assert read_holder(tmp_path / "x.lock") is None


def test_a_dropped_lock_object_releases_the_stack(tmp_path: Path) -> None:
    path = tmp_path / "web.lock"
    lock = StackLock(path)
    assert lock.try_acquire()
    del lock
    gc.collect()
    again = StackLock(path)
    assert again.try_acquire()
    again.release()


def test_a_child_process_does_not_inherit_the_lock(tmp_path: Path) -> None:
    """Compose started during an operation must not keep the stack locked after the operation."""
    path = tmp_path / "web.lock"
    lock = StackLock(path)
    assert lock.try_acquire()
    child = subprocess.Popen(["sleep", "30"], close_fds=False)  # only close-on-exec protects the fd
    try:
        lock.release()
        other = StackLock(path)
        assert other.try_acquire()  # the child still runs, the stack is free
        other.release()
    finally:
        child.kill()
        child.wait()


# == begin / end / busy ==============================================================================

def test_begin_names_itself_in_the_lock(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "backup")
    holder = read_holder(settings.state_dir / "locks" / "web.lock")
    assert holder == {"operation_id": op.id, "kind": "backup", "started_at": op.started_at, "pid": os.getpid(),
                      "pid_start": _stat_start(os.getpid()), "stack": "web"}  # a directory's lock names its stack
    begin = _lines(settings.state_dir / "journal" / "journal.jsonl")[0]
    # pid + start time: a later reader tells a dead server from a pid now used by another program
    assert (begin["t"], begin["op"], begin["pid"], begin["pid_start"]) == ("begin", op.id, os.getpid(),
                                                                          _stat_start(os.getpid()))
    assert (begin["at"], begin["kind"], begin["stack"]) == (op.started_at, "backup", "web")
    assert ops.get(op.id).started_at == op.started_at  # type: ignore[union-attr]
    op.end("done")
    assert read_holder(settings.state_dir / "locks" / "web.lock") is None


def test_busy_is_answered_at_once_with_the_holder(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy")
    for attempt in range(3):
        started = time.monotonic()
        with pytest.raises(StackBusy) as info:
            Operations(settings).begin("web", "rollback")
        assert time.monotonic() - started < 0.5, attempt
        assert (info.value.operation_id, info.value.kind, info.value.pid) == (op.id, "deploy", os.getpid())
        assert info.value.stack == "web" and info.value.started_at == op.started_at
    assert [r.operation_id for r in ops.history("web", kinds=("deploy", "rollback"))] == [op.id]  # nothing journaled
    op.end("deployed")


def test_a_starting_holder_is_named_as_soon_as_it_names_itself(ops: Operations, settings: Settings) -> None:
    import threading

    starting = StackLock(settings.state_dir / "locks" / "web.lock")
    assert starting.try_acquire()  # acquired, not yet named (begin writes the holder right after)
    holder = {"operation_id": OP.format(9), "kind": "restore", "started_at": "2026-01-01T00:00:00.000Z",
              "pid": os.getpid(), "pid_start": _stat_start(os.getpid())}
    timer = threading.Timer(0.15, starting.write_holder, args=(holder,))
    timer.start()
    try:
        started = time.monotonic()
        with pytest.raises(StackBusy) as info:
            ops.begin("web", "deploy")
        assert time.monotonic() - started < 0.6  # polled briskly, not after the whole settle time
        assert (info.value.operation_id, info.value.kind, info.value.pid) == (OP.format(9), "restore", os.getpid())
    finally:
        timer.join()
        starting.release()


def _free(ops: Operations, stack: str = "web") -> bool:
    lock = StackLock(ops.locks_dir / f"{stack}.lock")
    if not lock.try_acquire():
        return False
    lock.release()
    return True


def test_the_lock_is_released_on_every_exit_path(ops: Operations, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. an exception in the block: ended failed, lock free
    with pytest.raises(KeyError), ops.begin("web", "deploy") as op:
        assert not _free(ops)
        raise KeyError("x")
    assert _free(ops) and ops.get(op.id).status == "failed"  # type: ignore[union-attr]
    # 2. a block that leaves normally without end: ended done, with no result
    with ops.begin("web", "control") as op:
        pass
    rec = ops.get(op.id)
    assert _free(ops) and rec is not None and (rec.status, rec.result) == ("done", None)
    # 3. an explicit end inside the block is not overwritten (and does not raise "ended twice")
    with ops.begin("web", "deploy") as op:
        op.end("rolled_back", {"why": "unhealthy"})
    assert ops.get(op.id).status == "rolled_back"  # type: ignore[union-attr]
    # 4. the end record cannot be written (disk full): the error is raised, the lock still goes
    op = ops.begin("web", "deploy")

    def full(record: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ops.journal, "append", full)
    with pytest.raises(OSError):
        op.end("deployed")
    assert _free(ops) and op.ended
    # 5. the begin record cannot be written: no operation, no lock held
    with pytest.raises(OSError):
        ops.begin("web", "deploy")
    assert _free(ops)
    monkeypatch.undo()
    # the operation whose end was lost reads interrupted, and the next begin writes that down
    assert ops.get(op.id).status == "interrupted"  # type: ignore[union-attr]
    nxt = ops.begin("web", "deploy")
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "interrupted" and "no longer holds" in rec.result["reason"]  # type: ignore[index]
    nxt.end("done")


@pytest.mark.anyio
async def test_cancellation_ends_interrupted_and_releases(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(ops._drive(op, work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "interrupted" and rec.result == {"error": "CancelledError",
                                                                              "error_type": "CancelledError"}
    assert _free(ops)


@pytest.mark.anyio
async def test_drive_ends_with_what_work_returned(ops: Operations) -> None:
    from pydantic import BaseModel

    class Report(BaseModel):
        status: str

    cases: list[tuple[Any, str, Any]] = [
        ({"backup_id": "b1"}, "done", {"backup_id": "b1"}),
        (Report(status="ok"), "done", {"status": "ok"}),
        ("a plain string", "done", None),  # not a report: journaled without a result
        (None, "done", None),
    ]
    for value, status, result in cases:
        op = ops.begin("web", "backup")

        async def work(v: Any = value) -> Any:
            return v

        assert await ops._drive(op, work) is value
        rec = ops.get(op.id)
        assert rec is not None and (rec.status, rec.result) == (status, result), value
    # work that ends the operation itself keeps its status
    op = ops.begin("web", "deploy")

    async def ends() -> dict[str, str]:
        op.end("rolled_back", {"why": "x"})
        return {"other": "y"}

    await ops._drive(op, ends)
    assert ops.get(op.id).result == {"why": "x"}  # type: ignore[union-attr]
    # a failure after its own end does not end it twice
    op = ops.begin("web", "deploy")

    async def ends_then_fails() -> None:
        op.end("rolled_back")
        raise ValueError("late")

    with pytest.raises(ValueError):
        await ops._drive(op, ends_then_fails)
    assert ops.get(op.id).status == "rolled_back"  # type: ignore[union-attr]
    assert _free(ops)


def test_child_is_recorded_once_with_its_start_time(ops: Operations, settings: Settings) -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        op = ops.begin("web", "deploy")
        op.child(proc.pid)
        op.child(proc.pid)
        op.child(str(proc.pid))  # type: ignore[arg-type]
        children = [r for r in _lines(settings.state_dir / "journal" / "journal.jsonl") if r["t"] == "child"]
        assert children == [{**children[0], "pgid": proc.pid, "start": _stat_start(proc.pid)}]
        assert children[0]["op"] == op.id and children[0]["stack"] == "web"
        op.end("done")
        op.child(proc.pid + 1)
        assert ops.get(op.id).children == [proc.pid]  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()


def test_end_refuses_a_status_that_is_not_final(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    for bad in ("running", "finished", ""):
        with pytest.raises(ValueError, match=f"{bad!r} is not a final operation status"):
            op.end(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'explode' is not an operation kind"):
        ops.begin("db", "explode")  # type: ignore[arg-type]
    assert not op.ended and not _free(ops)  # still running, still locked
    op.end("blocked", {"token": "hunter2-secret-xyz"})
    assert op.status == "blocked" and op.kind == "deploy" and op.ended
    with pytest.raises(RuntimeError, match=f"operation {op.id} already ended blocked"):
        op.end("done")
    assert ops.get(op.id).result == {"token": "***"}  # type: ignore[union-attr]


def test_secrets_of_begin_are_masked_in_every_detail_and_result(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy", {"env": {"TAG": "v-tag-value-99"}}, secrets=["api-secret-777"])
    op.phase("deploy", "failed", detail="pull v-tag-value-99 with api-secret-777")
    op.end("failed", {"log": "api-secret-777 / v-tag-value-99"})
    raw = (settings.state_dir / "journal" / "journal.jsonl").read_text()
    assert "api-secret-777" not in raw and "v-tag-value-99" not in raw


# == what a reader sees: running or interrupted =========================================================

def test_running_and_interrupted_as_seen_by_a_reader(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy")
    assert ops.get(op.id).status == "running" and ops.running("web").operation_id == op.id  # type: ignore[union-attr]
    op.phase("backup", "ok")
    op.phase("deploy", "running")
    for holder, seen in [
        ({"operation_id": "op-other", "pid": os.getpid(), "pid_start": _stat_start(os.getpid())}, "interrupted"),
        ({"operation_id": op.id, "pid": os.getpid(), "pid_start": "1"}, "interrupted"),  # holder pid reused
        ({"operation_id": op.id, "pid": 0}, "interrupted"),
        ({"operation_id": op.id, "pid": os.getpid(), "pid_start": None, "recovering": True}, "interrupted"),
        ({"operation_id": op.id, "pid": os.getpid(), "pid_start": _stat_start(os.getpid())}, "running"),
    ]:
        op._lock.write_holder(holder)
        rec = ops.get(op.id)
        assert rec is not None and rec.status == seen, holder
        if seen == "interrupted":
            assert rec.result is not None and rec.result["recovery"] == (
                "pending: the next operation on the stack (or a server start) stops its leftover processes and "
                "records it")
            assert rec.result["reason"] == f"its server (pid {os.getpid()}) stopped before the operation ended"
            assert rec.result["last_phase"]["name"] == "deploy"
    op.end("deployed")
    assert ops.get(op.id).status == "deployed" and ops.running("web") is None  # type: ignore[union-attr]


def test_running_names_a_holder_that_has_not_journaled_yet(ops: Operations, settings: Settings) -> None:
    lock = StackLock(settings.state_dir / "locks" / "web.lock")
    assert lock.try_acquire()
    try:
        assert ops.running("web") is None  # held, but nobody named: not an operation
        lock.write_holder({"operation_id": OP.format(7), "kind": "backup", "started_at": "2026-01-01T00:00:00.000Z",
                           "pid": os.getpid(), "pid_start": _stat_start(os.getpid())})
        rec = ops.running("web")
        assert rec is not None and (rec.operation_id, rec.kind, rec.status, rec.pid, rec.started_at) == (
            OP.format(7), "backup", "running", os.getpid(), "2026-01-01T00:00:00.000Z")
        assert (rec.stack, rec.phases, rec.params, rec.result, rec.ended_at) == ("web", [], {}, None, None)
        lock.write_holder({"operation_id": OP.format(7), "pid": os.getpid()})  # an older holder format
        rec = ops.running("web")
        assert rec is not None and (rec.kind, rec.started_at) == ("deploy", "")
        ops.journal.append({"op": OP.format(7), "t": "begin", "stack": "web", "kind": "backup", "pid": os.getpid(),
                            "at": "2026-01-01T00:00:00.000Z"})
        ops.journal.append({"op": OP.format(7), "t": "end", "stack": "web", "status": "done"})
        assert ops.running("web") is None  # the named operation has ended
        lock.write_holder({"operation_id": OP.format(7), "pid": 2**22 + 12345})
        assert ops.running("web") is None  # a dead holder
    finally:
        lock.release()


# == recovery ==============================================================================================

def _orphan(ops: Operations, n: int, stack: str, pid: int, pid_start: str | None = "1",
            children: list[tuple[int, str | None]] = (), phases: list[str] = ()) -> str:  # type: ignore[assignment]
    op = OP.format(n)
    ops.journal.append({"op": op, "t": "begin", "stack": stack, "kind": "deploy", "at": "2026-01-01T00:00:00.000Z",
                        "pid": pid, "pid_start": pid_start, "params": {}})
    for name in phases:
        ops.journal.append({"op": op, "t": "phase", "stack": stack, "name": name, "status": "running"})
    for pgid, start in children:
        ops.journal.append({"op": op, "t": "child", "stack": stack, "pgid": pgid, "start": start})
    return op


def test_recover_leaves_a_live_operation_of_this_process_alone(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    assert ops.recover() == [] and ops.recover("web") == []
    assert ops.get(op.id).status == "running"  # type: ignore[union-attr]
    op.end("deployed")


def test_recover_interrupts_only_dead_servers_operations_of_the_asked_stack(ops: Operations) -> None:
    dead = 2**22 + 12345
    a = _orphan(ops, 1, "aa", dead, phases=["backup", "deploy"])
    b = _orphan(ops, 2, "bb", dead)
    alive = _orphan(ops, 3, "cc", os.getppid(), _stat_start(os.getppid()))  # its server still runs
    bad = _orphan(ops, 4, "../etc", dead)  # not a stack name: never turned into a lock path
    mine = _orphan(ops, 5, "dd", os.getpid(), _stat_start(os.getpid()))  # ours, but no lock held: dropped
    alive_aa = _orphan(ops, 6, "aa", os.getppid(), _stat_start(os.getppid()))  # a live server's, same stack
    ops.journal.append({"op": OP.format(8), "t": "begin", "stack": "ee", "kind": "backup", "pid": dead,
                        "params": {"stack": "aa"}})  # names "aa" only inside its params
    with pytest.raises(ValueError):
        ops.recover("../aa")
    seen: list[str] = []
    ops.stack_state = lambda stack: seen.append(ops.get(a).status)  # type: ignore[func-returns-value,union-attr]
    recovered = ops.recover("aa")
    assert seen == ["interrupted"]  # the recoverer holds the lock naming it, yet it reads interrupted
    ops.stack_state = None
    assert [r.operation_id for r in recovered] == [a]
    rec = recovered[0]
    assert rec.status == "interrupted" and rec.result is not None
    assert rec.result["reason"] == f"its server (pid {dead}) died before the operation ended"
    assert rec.result["last_phase"]["name"] == "deploy" and rec.result["recovered_by_pid"] == os.getpid()
    assert rec.result["process_groups"] == [] and rec.result["stack_state"] is None
    assert ops.get(b).status == "interrupted"  # type: ignore[union-attr]  # as seen; not yet written
    assert [r.operation_id for r in ops.recover()] == [b, mine, OP.format(8)]
    assert ops.get(mine).result["reason"].endswith("still alive but no longer holds the stack's lock")  # type: ignore[index]
    assert set(rec.result) == {"reason", "last_phase", "process_groups", "recovered_by_pid", "stack_state",
                               "next_step", "backup_id"}
    assert rec.result["backup_id"] is None  # no backup phase journaled (tests/test_deploy_rollback.py has one)
    assert rec.result["next_step"].startswith("check the stack's containers") and rec.ended_at is not None
    for untouched in (alive, bad, alive_aa):  # no end record written for any
        assert [r["t"] for r in ops.journal.records(f'"op":"{untouched}"')] == ["begin"]
    assert ops.recover() == []  # written down once
    for stack in ("aa", "bb", "dd"):
        assert _free(ops, stack)
    assert not (ops.locks_dir / "..").joinpath("etc.lock").exists()


def test_recover_skips_a_stack_someone_holds(ops: Operations, settings: Settings) -> None:
    orphan = _orphan(ops, 1, "web", 2**22 + 12345)
    other = _orphan(ops, 2, "db", 2**22 + 12345)
    lock = StackLock(settings.state_dir / "locks" / "web.lock")
    assert lock.try_acquire()  # another recoverer (or a begin) is on it
    try:
        assert [r.operation_id for r in ops.recover()] == [other]  # the other stacks are still recovered
    finally:
        lock.release()
    assert [r.operation_id for r in ops.recover()] == [orphan]


def test_recover_reaches_an_orphan_listed_after_a_live_servers_operation(ops: Operations) -> None:
    live = _orphan(ops, 1, "ff", os.getppid(), _stat_start(os.getppid()))
    dead = _orphan(ops, 2, "ff", 2**22 + 12345)
    reused = _orphan(ops, 3, "gg", os.getppid(), "1")  # the pid now belongs to another program
    assert [r.operation_id for r in ops.recover("ff")] == [dead]
    assert [r["t"] for r in ops.journal.records(f'"op":"{live}"')] == ["begin"]
    rec = ops.recover("gg")[0]
    assert rec.operation_id == reused and rec.result is not None
    assert rec.result["reason"] == f"its server (pid {os.getppid()}) died before the operation ended"
    assert ops.recover("ff") == [] and ops.recover("gg") == []  # the end records are found by stack
    assert "process_groups" in ops.history("gg")[0].result  # type: ignore[operator]  # the written record


def test_begin_recovers_only_its_own_stack(ops: Operations) -> None:
    ops.journal.append({"op": OP.format(8), "t": "begin", "stack": "ee", "kind": "backup", "pid": 2**22 + 12345,
                        "params": {"stack": "aa"}})  # names "aa" only inside its params
    ops.begin("aa", "deploy").end("done")
    assert [r["t"] for r in ops.journal.records(f'"op":"{OP.format(8)}"')] == ["begin"]


def test_a_begin_during_recovery_is_refused_at_once_naming_the_recovery(ops: Operations, settings: Settings) -> None:
    orphan = _orphan(ops, 1, "web", 2**22 + 12345)
    answers: list[Any] = []

    def probe(stack: str) -> None:  # runs while recover holds the stack's lock
        started = time.monotonic()
        try:
            Operations(settings).begin(stack, "deploy")
        except StackBusy as busy:
            answers.append((busy.operation_id, busy.kind, busy.pid, time.monotonic() - started < 0.5))
        answers.append(read_holder(settings.state_dir / "locks" / "web.lock"))

    ops.stack_state = probe
    assert [r.operation_id for r in ops.recover()] == [orphan]
    assert answers[0] == (orphan, "recovery", os.getpid(), True)
    holder = answers[1]
    assert holder["pid_start"] == _stat_start(os.getpid()) and holder["recovering"] is True
    assert holder["started_at"].endswith("Z") and holder["operation_id"] == orphan


def test_recovery_stops_recorded_groups_newest_first_and_spares_reused_ones(ops: Operations) -> None:
    groups = [subprocess.Popen(["sleep", "30"], start_new_session=True) for _ in range(3)]
    try:
        starts = [_stat_start(p.pid) for p in groups]
        children = [(groups[0].pid, starts[0]), (groups[1].pid, "1"), (groups[2].pid, starts[2])]  # [1]: reused
        probed: list[str] = []

        def probe(stack: str) -> Any:
            probed.append(stack)
            seen.append(ops.get(op).status)  # type: ignore[union-attr]
            raise ConnectionError("engine away")

        seen: list[str] = []

        ops.stack_state = probe
        op = _orphan(ops, 1, "web", 2**22 + 12345, children=children)
        started = time.monotonic()
        nxt = ops.begin("web", "deploy")
        assert time.monotonic() - started < 3
        rec = ops.get(op)
        assert rec is not None and rec.result is not None
        assert rec.result["process_groups"] == [
            {"pgid": groups[2].pid, "outcome": "terminated"},
            {"pgid": groups[1].pid, "outcome": "gone"}, {"pgid": groups[0].pid, "outcome": "terminated"}]
        assert groups[1].poll() is None  # the reused pid was not signalled
        assert groups[0].wait(timeout=5) == -signal.SIGTERM and groups[2].wait(timeout=5) == -signal.SIGTERM
        assert rec.result["stack_state"] == {"error": "state unknown: ConnectionError: engine away"}
        assert probed == ["web"] and rec.result["last_phase"] is None
        assert seen == ["interrupted"]  # while begin recovers it, a reader already sees it interrupted
        assert ops.get(nxt.id).status == "running"  # type: ignore[union-attr]  # the new one is not recovered
        nxt.end("done")
    finally:
        for p in groups:
            p.kill()
            p.wait()


# == maintenance windows ===================================================================================

@pytest.mark.parametrize(("text", "expected"), [
    ("2030-01-31T22:00:00Z", datetime(2030, 1, 31, 22, tzinfo=UTC)),
    ("2030-01-31t22:00:00z", datetime(2030, 1, 31, 22, tzinfo=UTC)),
    (" 2030-01-31T22:00:00Z\n", datetime(2030, 1, 31, 22, tzinfo=UTC)),
    ("2030-01-31T23:30:00+01:30", datetime(2030, 1, 31, 22, tzinfo=UTC)),
    ("2030-01-31T22:00:00", datetime(2030, 1, 31, 22, tzinfo=UTC)),  # naive: UTC
    ("2030-01-31", datetime(2030, 1, 31, tzinfo=UTC)),
])
def test_parse_until_forms(text: str, expected: datetime) -> None:
    got = parse_until(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["tomorrow", "", "2030-13-01T00:00:00Z", "22:00"])
def test_parse_until_refuses(text: str) -> None:
    with pytest.raises(BadMaintenanceWindow) as info:
        parse_until(text)
    assert repr(text) in str(info.value)


def test_window_opens_replaces_closes_and_expires(tmp_path: Path) -> None:
    windows = MaintenanceWindows(tmp_path / "m")
    assert windows.get("web") is None and windows.set("web", None, "") is None  # closing none: fine
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    assert windows.set("web", soon.astimezone(timezone(timedelta(hours=2))).isoformat(), "r" * 600) is None
    window = windows.get("web")
    assert window is not None
    assert window["until"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")  # stored as UTC with Z
    assert window["reason"] == "r" * 500 and window["stack"] == "web" and window["pid"] == os.getpid()
    assert window["set_at"].endswith("Z")
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["web.json"]  # no temporary left
    # a refused change leaves the open window as it was
    for bad in ("2020-01-01T00:00:00Z", datetime.now(UTC).isoformat(), "soon"):
        with pytest.raises(BadMaintenanceWindow):
            windows.set("web", bad, "x")
    assert windows.get("web") == window
    later = (soon + timedelta(hours=1)).isoformat()
    assert windows.set("web", later, "second") == window  # the window it replaced
    assert windows.set("web", None, "") is not None and windows.get("web") is None
    assert not (tmp_path / "m" / "web.json").exists()


class _Clock(datetime):
    """maintenance.py's clock, frozen where a test puts it."""

    frozen = datetime(2030, 1, 31, 21, 0, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> _Clock:  # type: ignore[override]
        return cls.frozen  # type: ignore[return-value]


def test_until_is_read_as_utc_whatever_the_local_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a local-time slip would show
    time.tzset()
    try:
        assert parse_until("2030-01-31T22:00:00").utcoffset() == timedelta(0)
        assert parse_until("2030-01-31T22:00:00") == datetime(2030, 1, 31, 22, tzinfo=UTC)  # naive is UTC, not local
        assert parse_until("2030-01-31T22:00:00+01:00") == datetime(2030, 1, 31, 21, tzinfo=UTC)
        windows = MaintenanceWindows(tmp_path)
        windows.set("web", "2099-01-31T22:00:00", "x")
        assert windows.get("web")["until"] == "2099-01-31T22:00:00Z"  # type: ignore[index]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_stale_temporary_does_not_corrupt_a_window(tmp_path: Path) -> None:
    windows = MaintenanceWindows(tmp_path)
    (tmp_path / f".web.json.{os.getpid()}.tmp").write_text("x" * 5000)  # a set killed mid-write
    windows.set("web", "2099-01-31T22:00:00Z", "short")
    assert windows.get("web") is not None and windows.get("web")["reason"] == "short"  # type: ignore[index]


def test_a_window_expires_on_its_own_at_until(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.operations import maintenance

    monkeypatch.setattr(maintenance, "datetime", _Clock)
    windows = MaintenanceWindows(tmp_path)
    t0 = _Clock.frozen
    with pytest.raises(BadMaintenanceWindow):
        windows.set("web", t0.isoformat(), "ends as it starts")  # until == now: already over
    windows.set("web", (t0 + timedelta(hours=1)).isoformat(), "swap")
    monkeypatch.setattr(_Clock, "frozen", t0 + timedelta(hours=1) - timedelta(microseconds=1))
    assert windows.get("web") is not None  # open up to its last instant
    monkeypatch.setattr(_Clock, "frozen", t0 + timedelta(hours=1))
    assert windows.get("web") is None  # a crashed deploy cannot silence monitoring for ever


@pytest.mark.parametrize("content", [
    "{not json", "[1]", json.dumps({"until": 5}), json.dumps({"reason": "no until"}),
    json.dumps({"until": "garbage"}), json.dumps({"until": "2020-01-01T00:00:00Z"}),
])
def test_an_unreadable_or_expired_window_is_no_window(tmp_path: Path, content: str) -> None:
    (tmp_path / "web.json").write_text(content)
    assert MaintenanceWindows(tmp_path).get("web") is None


def test_append_fsyncs_the_written_record_not_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fsync covers the record: every byte of it is written to the file before the file is
    fsync'd, and nothing is written to it after (an fsync ahead of the write syncs nothing)."""
    journal = Journal(tmp_path / "j", max_bytes=1 << 20)
    journal.append({"op": OP.format(1), "t": "begin", "stack": "web"})
    events: list[tuple[str, bytes]] = []
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(journal.path):
            events.append(("fsync", journal.path.read_bytes()))
        real_fsync(fd)

    def write(fd: int, data: Any) -> int:
        n = real_write(fd, data)
        if os.readlink(f"/proc/self/fd/{fd}") == str(journal.path):
            events.append(("write", bytes(data[:n])))
        return n

    monkeypatch.setattr(journal_mod.os, "fsync", fsync)
    monkeypatch.setattr(journal_mod.os, "write", write)
    journal.append({"op": OP.format(1), "t": "end", "stack": "web", "result": {"pad": "y" * 300}})
    kinds = [k for k, _ in events]
    assert kinds and kinds[-1] == "fsync" and "write" in kinds, kinds
    assert kinds.index("fsync") > max(i for i, k in enumerate(kinds) if k == "write")  # no write after
    synced = events[-1][1]
    assert synced.endswith(b"".join(d for k, d in events if k == "write"))
    assert synced.splitlines()[-1].startswith(b'{') and b'"t":"end"' in synced.splitlines()[-1]
