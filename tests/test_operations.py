"""The journal, the per-stack lock, crash recovery and detached operations, with real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.errors import BadMaintenanceWindow, StackBusy
from server.operations import Operations, procs
from server.operations.journal import MAX_RECORD_BYTES
from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ops(settings: Settings) -> Operations:
    return Operations(settings, kill_grace_s=1.0)


def _journal_lines(settings: Settings) -> list[dict]:
    path = settings.state_dir / "journal" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _worker(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.ops_worker", args[0], str(settings.state_dir), *args[1:]],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- journal and lock, one process ---------------------------------------------------------------

def test_begin_is_journaled_before_acting_and_end_releases(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy", {"path": "web", "env": {"TAG": "2.0", "DB_PASSWORD": "s3cret-pw"}})
    lines = _journal_lines(settings)
    assert [(r["t"], r["op"]) for r in lines] == [("begin", op.id)]  # durable before the caller acts
    assert lines[0]["params"]["env"] == ["DB_PASSWORD", "TAG"]  # names only, never values
    op.phase("backup", "running")
    op.child(os.getpid())
    op.phase("backup", "ok", detail="token s3cret-pw archived", duration_s=1.23456)
    op.phase("deploy", "ok")
    running = ops.running("web")
    assert running is not None and running.operation_id == op.id and running.status == "running"
    op.end("deployed", {"services": [{"name": "web", "image": "web:2.0", "image_digest": "sha256:ab"}],
                        "note": "used s3cret-pw", "DB_PASSWORD": "s3cret-pw"})
    assert ops.running("web") is None
    rec = ops.get(op.id)
    assert rec is not None
    assert (rec.status, rec.kind, rec.stack, rec.pid) == ("deployed", "deploy", "web", os.getpid())
    assert rec.ended_at is not None and rec.ended_at >= rec.started_at
    # A phase reported twice keeps its place and shows its latest state.
    assert [(p["name"], p["status"]) for p in rec.phases] == [("backup", "ok"), ("deploy", "ok")]
    assert rec.phases[0]["duration_s"] == 1.235 and rec.children == [os.getpid()]
    journal_dir = settings.state_dir / "journal"
    for private in (journal_dir, journal_dir / "journal.jsonl", settings.state_dir / "locks" / "web.lock"):
        assert private.stat().st_mode & 0o077 == 0, private  # nobody else on the host reads it
    raw = (journal_dir / "journal.jsonl").read_text()
    assert "s3cret-pw" not in raw and rec.params == {"path": "web", "env": ["DB_PASSWORD", "TAG"]}
    assert rec.result is not None and rec.result["DB_PASSWORD"] == "***" and "***" in rec.result["note"]
    # The lock is free again.
    ops.begin("web", "rollback").end("rolled_back")


def test_second_begin_is_refused_naming_the_holder(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy")
    start = time.monotonic()
    with pytest.raises(StackBusy) as info:
        Operations(settings).begin("web", "rollback")  # another Operations object, same process
    assert time.monotonic() - start < 1  # refused at once, not after waiting
    busy = info.value
    assert (busy.operation_id, busy.kind, busy.started_at, busy.pid) == (op.id, "deploy", op.started_at, os.getpid())
    assert op.id in str(busy) and "operation_status" in str(busy)
    other = ops.begin("db", "backup")  # other stacks are independent
    other.end("done")
    op.end("failed", {"why": "test"})
    ops.begin("web", "rollback").end("rolled_back")


def test_history_newest_first_with_kinds_and_limit(ops: Operations) -> None:
    ids = []
    for kind, status in [("deploy", "deployed"), ("backup", "done"), ("rollback", "rolled_back"),
                         ("deploy", "failed"), ("deploy", "unchanged")]:
        op = ops.begin("app", kind)  # type: ignore[arg-type]
        ids.append(op.id)
        op.end(status)  # type: ignore[arg-type]
    ops.begin("other", "deploy").end("deployed")
    history = ops.history("app")
    assert [r.operation_id for r in history] == [ids[4], ids[3], ids[2], ids[0]]
    assert [r.operation_id for r in ops.history("app", limit=2)] == [ids[4], ids[3]]
    assert [r.operation_id for r in ops.history("app", kinds=("backup",))] == [ids[1]]
    assert ops.history("nothing-here") == []


def test_bad_arguments(ops: Operations) -> None:
    for bad in ("../etc", "Web", "-x", "", "a/b"):
        with pytest.raises(ValueError):
            ops.begin(bad, "deploy")
    with pytest.raises(ValueError):
        ops.begin("web", "explode")  # type: ignore[arg-type]
    op = ops.begin("web", "deploy")
    with pytest.raises(ValueError):
        op.end("running")  # type: ignore[arg-type]
    op.end("done")
    with pytest.raises(RuntimeError):
        op.end("done")
    records = len(ops.journal.records())
    op.phase("late", "ok")  # after the end: ignored, the final record stays final
    op.child(os.getpid())
    assert len(ops.journal.records()) == records and ops.get(op.id).phases == []  # type: ignore[union-attr]
    assert ops.get("op-nope") is None and ops.get('op-1"}') is None
    assert ops.get("op-20260101T000000Z-00000000") is None


def test_context_manager_ends_failed_on_exception(ops: Operations) -> None:
    with pytest.raises(KeyError), ops.begin("web", "control") as op:
        raise KeyError("boom")
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "failed" and rec.result == {"error": "KeyError", "error_type": "KeyError"}


def test_torn_last_line_is_skipped(ops: Operations, settings: Settings) -> None:
    op = ops.begin("web", "deploy")
    with (settings.state_dir / "journal" / "journal.jsonl").open("ab") as fh:
        fh.write(b'{"op":"' + op.id.encode() + b'","t":"end","stack":"web","sta')  # a writer killed mid-line
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "running"


def test_oversized_result_keeps_scalars(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    op.end("deployed", {"summary": "ok", "logs": ["a log line " * 90] * (MAX_RECORD_BYTES // 500),
                        "one_long": "y " * 10_000})
    rec = ops.get(op.id)
    assert rec is not None and rec.result is not None
    assert rec.result["summary"] == "ok" and "logs" not in rec.result and "truncated" in rec.result
    assert len(rec.result["one_long"]) == 2000  # strings are clipped (4000) then cut to 2000 when oversized


# -- compaction ---------------------------------------------------------------------------------

def test_compaction_bounds_the_file_and_keeps_operations_whole(settings: Settings) -> None:
    settings = replace(settings, journal_max_bytes=64 * 1024)
    ops = Operations(settings)
    long_running = ops.begin("keeper", "deploy", {"note": "started first, never ends during the test"})
    quiet = ops.begin("quiet", "deploy")
    quiet.end("deployed")
    for i in range(400):
        op = ops.begin("busy", "deploy", {"i": i, "pad": "p" * 200})
        op.phase("deploy", "ok", detail=f"run {i}")
        op.end("deployed", {"i": i})
        size = ops.journal.size()
        assert size <= settings.journal_max_bytes + 2048
    long_running.phase("verify", "running")
    kept = ops.history("busy", limit=1000)
    assert 20 < len(kept) < 400  # old ones went
    assert kept[0].result == {"i": 399}  # the newest is always there
    for rec in kept:  # every kept operation is whole: its begin, phase and end
        assert rec.status == "deployed" and rec.params["i"] == rec.result["i"] and len(rec.phases) == 1  # type: ignore[index]
    assert [r.result["i"] for r in kept] == sorted((r.result["i"] for r in kept), reverse=True)  # type: ignore[index]
    keeper = ops.get(long_running.id)
    assert keeper is not None and keeper.status == "running" and keeper.phases[-1]["name"] == "verify"
    assert [r.operation_id for r in ops.history("quiet")] == [quiet.id]  # a busy stack does not evict a quiet one
    long_running.end("deployed")
    assert ops.get(long_running.id).status == "deployed"  # type: ignore[union-attr]


@pytest.mark.slow
def test_several_writer_processes_with_compaction(settings: Settings) -> None:
    max_bytes = 96 * 1024
    workers = [_worker(settings, "write", f"s{i}", "120", str(max_bytes)) for i in range(3)]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    ops = Operations(replace(settings, journal_max_bytes=max_bytes))
    assert ops.journal.size() <= max_bytes + 2048
    for i in range(3):
        history = ops.history(f"s{i}", limit=1000)
        assert history and history[0].params["i"] == 119  # the last op of every writer survived
        for rec in history:
            assert rec.status == "deployed" and [p["name"] for p in rec.phases] == ["backup", "deploy", "verify"]
            assert rec.result == {"i": rec.params["i"]}
        numbers = [r.params["i"] for r in history]
        assert numbers == list(range(119, 119 - len(numbers), -1))  # only the oldest were dropped, no gaps


def test_several_writer_processes_lose_nothing(settings: Settings) -> None:
    workers = [_worker(settings, "write", f"w{i}", "40") for i in range(4)]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    lines = _journal_lines(settings)  # every line parses: no interleaving
    assert len(lines) == 4 * 40 * 5
    ops = Operations(settings)
    for i in range(4):
        assert sorted(r.params["i"] for r in ops.history(f"w{i}", limit=100)) == list(range(40))


# -- the lock across processes ---------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_race_one_wins(settings: Settings, tmp_path: Path) -> None:
    for round_ in range(3):
        go = tmp_path / f"go{round_}"
        workers = [_worker(settings, "race", "shop", str(go)) for _ in range(2)]
        time.sleep(1.0)  # both imported and spinning on the go file
        go.touch()
        outs = [w.communicate(timeout=60)[0].split() for w in workers]
        assert sorted(o[0] for o in outs) == ["busy", "won"], outs
        won = next(o for o in outs if o[0] == "won")
        busy = next(o for o in outs if o[0] == "busy")
        assert busy[1] == won[1]  # the refused one names the winner's operation
    history = Operations(settings).history("shop")
    assert len(history) == 3 and all(r.status == "deployed" for r in history)


# -- crash recovery ------------------------------------------------------------------------------

def _hold(settings: Settings) -> tuple[subprocess.Popen[str], str, int, int]:
    worker = _worker(settings, "hold", "web")
    assert worker.stdout is not None
    line = worker.stdout.readline().split()
    assert line and line[0] == "ready", worker.stderr.read() if worker.stderr else ""
    return worker, line[1], int(line[2]), int(line[3])


def test_sigkilled_server_is_recovered_by_the_next_begin(settings: Settings) -> None:
    worker, op_id, pgid, grandchild = _hold(settings)
    assert procs.group_members(pgid) and procs.start_time(grandchild)
    probed: list[str] = []
    ops = Operations(settings, kill_grace_s=1.0, stack_state=lambda s: probed.append(s) or {"web": "running"})
    with pytest.raises(StackBusy) as info:
        ops.begin("web", "deploy")  # the server is alive: busy, nothing killed
    assert info.value.operation_id == op_id and procs.group_members(pgid)
    assert ops.recover() == []  # a live server's operation is not an orphan
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert procs.group_members(pgid)  # its compose-like group outlives it ...
    seen = ops.get(op_id)  # reads interrupted at once; recovery has not run yet
    assert seen is not None and seen.status == "interrupted" and seen.children == [pgid]
    assert seen.result is not None and seen.result["recovery"].startswith("pending")
    assert ops.running("web") is None and [r.status for r in ops.history("web")] == ["interrupted"]
    start = time.monotonic()
    op = ops.begin("web", "deploy")  # ... until the next begin on the stack
    assert time.monotonic() - start < 6
    assert procs.group_members(pgid) == []  # the TERM-ignoring grandchild too (SIGKILL after grace)
    assert procs.start_time(grandchild) is None
    rec = ops.get(op_id)
    assert rec is not None and rec.status == "interrupted" and rec.result is not None
    assert rec.result["process_groups"] == [{"pgid": pgid, "outcome": "killed"}]
    assert rec.result["last_phase"]["name"] == "deploy" and rec.result["stack_state"] == {"web": "running"}
    assert f"pid {worker.pid}" in rec.result["reason"] and probed == ["web"]
    assert "hunter2-secret" not in (settings.state_dir / "journal" / "journal.jsonl").read_text()
    op.end("deployed")
    assert [r.status for r in ops.history("web")] == ["deployed", "interrupted"]


def test_recover_without_begin(settings: Settings) -> None:
    worker, op_id, pgid, _ = _hold(settings)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    ops = Operations(settings, kill_grace_s=0.5)
    recovered = ops.recover()
    assert [r.operation_id for r in recovered] == [op_id] and recovered[0].status == "interrupted"
    assert procs.group_members(pgid) == []
    assert ops.recover() == [] and ops.running("web") is None
    ops.begin("web", "rollback").end("rolled_back")


def test_recorded_identities_are_checked(ops: Operations, settings: Settings) -> None:
    """A pid or a group number reused by another program is neither trusted nor signalled."""
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ops.journal.append({"op": "op-20260101T000000Z-0000abcd", "t": "begin", "stack": "web", "kind": "deploy",
                            "at": "2026-01-01T00:00:00.000Z", "pid": os.getppid(), "pid_start": "1", "params": {}})
        ops.journal.append({"op": "op-20260101T000000Z-0000abcd", "t": "child", "stack": "web",
                            "at": "2026-01-01T00:00:01.000Z", "pgid": bystander.pid, "start": "1"})
        # The parent process is alive, but it is not the recorded one (start time differs).
        recovered = ops.recover("web")
        assert [r.operation_id for r in recovered] == ["op-20260101T000000Z-0000abcd"]
        assert recovered[0].result["process_groups"] == [{"pgid": bystander.pid, "outcome": "gone"}]  # type: ignore[index]
        assert bystander.poll() is None  # not ours: left alone
        # A group whose leader had already exited when it was recorded (start unknown) is not
        # signalled either when a live leader now holds that number.
        ops.journal.append({"op": "op-20260101T000000Z-0000abce", "t": "begin", "stack": "web", "kind": "deploy",
                            "at": "2026-01-01T00:00:02.000Z", "pid": os.getppid(), "pid_start": "1", "params": {}})
        ops.journal.append({"op": "op-20260101T000000Z-0000abce", "t": "child", "stack": "web",
                            "at": "2026-01-01T00:00:03.000Z", "pgid": bystander.pid, "start": None})
        again = ops.recover("web")
        assert again[0].result["process_groups"] == [{"pgid": bystander.pid, "outcome": "gone"}]  # type: ignore[index]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# -- detached work ------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_cancelled_caller_does_not_cancel_the_operation(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    finished = asyncio.Event()

    async def work() -> dict:
        op.phase("deploy", "running")
        await asyncio.sleep(0.5)
        op.phase("deploy", "ok")
        op.end("deployed", {"services": []})
        finished.set()
        return {"status": "deployed"}

    caller = asyncio.create_task(ops.run_detached(op, work))
    await asyncio.sleep(0.1)
    caller.cancel()  # the client timed out
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ops.get(op.id).status == "running"  # type: ignore[union-attr]
    assert ops.running("web").operation_id == op.id  # type: ignore[union-attr]
    assert ops.in_flight == 1
    await asyncio.wait_for(finished.wait(), 5)
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "deployed" and rec.phases == [
        {"name": "deploy", "status": "ok", "duration_s": None, "detail": ""}]
    await asyncio.sleep(0)
    assert ops.in_flight == 0


@pytest.mark.anyio
async def test_processes_started_inside_an_operation_are_journaled(ops: Operations) -> None:
    from server.process import child_recorder, run_argv

    env = {"PATH": os.environ["PATH"]}
    op = ops.begin("web", "deploy")
    seen: list[int] = []

    async def work() -> dict:
        # Nobody passes on_start here: the operation's context records the group anyway;
        # passing it as well records it once.
        first = await run_argv(["sh", "-c", "echo $$"], timeout_s=10, env=env)
        second = await run_argv(["sh", "-c", "echo $$"], timeout_s=10, env=env, on_start=op.child)
        seen.extend(int(r.stdout) for r in (first, second))
        return {}

    await ops.run_detached(op, work)
    assert child_recorder.get() is None  # the caller's context is untouched
    await run_argv(["true"], timeout_s=10, env=env)  # outside any operation: nothing recorded
    rec = ops.get(op.id)
    assert rec is not None and rec.children == seen and len(seen) == 2


@pytest.mark.anyio
async def test_run_detached_results_and_failures(ops: Operations) -> None:
    op = await ops.begin_async("web", "backup", {"env": {"K": "value-1234"}})
    with pytest.raises(StackBusy):
        await ops.begin_async("web", "deploy")

    async def ok() -> dict:
        return {"backup_id": "b1"}

    assert await ops.run_detached(op, ok) == {"backup_id": "b1"}
    rec = ops.get(op.id)
    assert rec is not None and rec.status == "done" and rec.result == {"backup_id": "b1"}

    op2 = ops.begin("web", "deploy")

    async def broken() -> None:
        raise RuntimeError("engine exploded with password=hunter22")

    with pytest.raises(RuntimeError):
        await ops.run_detached(op2, broken)
    rec2 = ops.get(op2.id)
    assert rec2 is not None and rec2.status == "failed" and rec2.result == {"error": "RuntimeError",
                                                                           "error_type": "RuntimeError"}
    ops.begin("web", "deploy").end("done")  # the lock was released


@pytest.mark.anyio
async def test_shutdown_waits_then_cancels(ops: Operations) -> None:
    op = ops.begin("web", "deploy")
    cleaned: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaned.append("rolled back")  # the pipeline's shielded cleanup would run here
            raise

    caller = asyncio.create_task(ops.run_detached(op, slow))
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await ops.shutdown(grace_s=0.3)
    assert time.monotonic() - start < 3 and cleaned == ["rolled back"]
    assert ops.get(op.id).status == "interrupted"  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await caller


# -- maintenance windows -------------------------------------------------------------------------

def test_maintenance_windows(ops: Operations, settings: Settings) -> None:
    assert ops.maintenance("web") is None
    until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ops.set_maintenance("web", until, "disk swap") is None
    window = ops.maintenance("web")
    assert window is not None and window["until"] == until and window["reason"] == "disk swap"
    assert ops.maintenance("db") is None
    assert (settings.state_dir / "maintenance" / "web.json").stat().st_mode & 0o077 == 0
    mine = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    previous = ops.set_maintenance("web", mine, "deploy op-x")
    assert previous is not None and previous["reason"] == "disk swap"  # the caller can put it back
    assert ops.set_maintenance("web", None, "") is not None and ops.maintenance("web") is None
    for bad in ("tomorrow", "2020-01-01T00:00:00Z"):
        with pytest.raises(BadMaintenanceWindow):
            ops.set_maintenance("web", bad, "x")
    # An expired window reads as none (a crashed deploy cannot silence monitoring for ever).
    path = settings.state_dir / "maintenance" / "web.json"
    path.write_text(json.dumps({"stack": "web", "until": "2020-01-01T00:00:00Z", "reason": "old"}))
    assert ops.maintenance("web") is None


def test_runtime_operations_is_lazy_and_probes_the_engine(settings: Settings, docker_engine: None,
                                                          project_name: str) -> None:
    from server.runtime import Runtime

    runtime = Runtime(settings)
    assert runtime._operations is None and runtime._engine is None  # nothing opened at construction
    ops = runtime.operations()
    assert runtime.operations() is ops and runtime._engine is None
    assert ops.stack_state is not None and ops.stack_state(project_name) == []  # a real engine call
    assert runtime._engine is not None
    runtime.close()


def test_a_lock_held_by_someone_unnamed_answers_busy_after_a_moment(ops: Operations, settings: Settings) -> None:
    from server.operations.lock import StackLock

    probe = StackLock(settings.state_dir / "locks" / "web.lock")
    assert probe.try_acquire()  # held, but nobody wrote who holds it (a recovery probe, a starting begin)
    try:
        start = time.monotonic()
        with pytest.raises(StackBusy) as info:
            ops.begin("web", "deploy")
        assert 1.5 < time.monotonic() - start < 5  # waited for the holder to name itself, then answered
        assert info.value.operation_id == "unknown" and "stack_history" in str(info.value)
        assert (info.value.kind, info.value.started_at, info.value.pid) == ("unknown", "unknown", 0)
    finally:
        probe.release()
    ops.begin("web", "deploy").end("done")


def test_history_orders_same_millisecond_operations_newest_first(ops: Operations) -> None:
    at = "2026-01-01T00:00:00.000Z"
    ids = [f"op-20260101T000000Z-0000000{i}" for i in range(3)]
    for op_id in ids:
        ops.journal.append({"op": op_id, "t": "begin", "stack": "web", "kind": "deploy", "at": at, "pid": 1,
                            "params": {}})
        ops.journal.append({"op": op_id, "t": "end", "stack": "web", "at": at, "status": "deployed"})
    assert [r.operation_id for r in ops.history("web")] == ids[::-1]


@pytest.mark.docker
def test_a_compose_up_left_by_a_killed_server_is_stopped(settings: Settings, docker_engine: None,
                                                          project_name: str, stacks_root: Path) -> None:
    """The real thing: a killed server's `docker compose up` (CLI + compose plugin in one group)
    must not race the next deploy. The next begin stops the group and records the stack's state."""
    from server.runtime import Runtime
    from tests.conftest import provision_facts, write_stack

    image = provision_facts().get("DSM_TEST_IMAGE_BUSYBOX", "dsm-test/busybox:1")
    directory = write_stack(stacks_root, project_name, f"""
services:
  web:
    image: {image}
    command: ["sleep", "300"]
    init: true
    labels: {{dsm.test: "1"}}
""")
    worker = _worker(settings, "compose", project_name, str(directory))
    try:
        assert worker.stdout is not None
        ready = worker.stdout.readline().split()
        assert ready and ready[0] == "ready", worker.stderr.read() if worker.stderr else ""
        op_id, pgid = ready[1], int(ready[2])

        def container_state() -> str:
            return subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project_name}",
                                   "--format", "{{.State}}"], capture_output=True, text=True, timeout=30).stdout.strip()

        deadline = time.monotonic() + 120
        while container_state() != "running":
            assert time.monotonic() < deadline, "the compose up never started its container"
            time.sleep(0.3)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        # The compose child gets SIGKILL with its server (PR_SET_PDEATHSIG, server.process); whatever
        # of its group is still there (a child of it, or the death signal not yet delivered) is the
        # next begin's to stop.
        members = procs.group_members(pgid)
        runtime = Runtime(settings)
        try:
            op = runtime.operations().begin(project_name, "deploy")
        finally:
            runtime.close()
        assert procs.group_members(pgid) == [] and all(procs.start_time(m) is None for m in members)
        rec = Operations(settings).get(op_id)
        assert rec is not None and rec.status == "interrupted" and rec.result is not None
        assert rec.result["process_groups"][0]["pgid"] == pgid
        assert rec.result["process_groups"][0]["outcome"] in ("terminated", "killed", "gone")
        states = rec.result["stack_state"]  # the stack as it is now, from the real engine
        assert isinstance(states, list) and [s["service"] for s in states] == ["web"]
        op.end("deployed")
    finally:
        if worker.poll() is None:
            worker.kill()


def _window(settings: Settings, stack: str, reason: str, pid: int) -> None:
    until = (datetime.now(UTC) + timedelta(minutes=20)).isoformat(timespec="seconds").replace("+00:00", "Z")
    path = settings.state_dir / "maintenance" / f"{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stack": stack, "until": until, "reason": reason, "set_at": until, "pid": pid}))


def test_recovery_closes_the_window_the_dead_operation_opened(settings: Settings) -> None:
    """A SIGKILLed deploy's own window muted the watcher for its full length on a stack left
    down, and the next deploy put it back as if the user had opened it."""
    worker, op_id, _, _ = _hold(settings)
    _window(settings, "web", f"deploy {op_id}", worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    ops = Operations(settings, kill_grace_s=0.5)
    assert ops.maintenance("web") is not None
    assert [r.operation_id for r in ops.recover()] == [op_id]
    assert ops.maintenance("web") is None


def test_recovery_keeps_a_users_window(settings: Settings) -> None:
    worker, op_id, _, _ = _hold(settings)
    _window(settings, "web", "disk swap", worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    ops = Operations(settings, kill_grace_s=0.5)
    assert [r.operation_id for r in ops.recover()] == [op_id]
    window = ops.maintenance("web")
    assert window is not None and window["reason"] == "disk swap"
