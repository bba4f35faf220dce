"""Several server processes on one embedded store: no lock errors, no lost writes, fair turns.

Each "server" is a real Python process with its own Memory on the same directory, as when an
agent spawns several docker-stack-mcp processes. BM25-only mode keeps them quick to start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from server.memory.edge import EdgeStore
from server.memory.service import Memory
from tests.memory_data.helpers import lexical_model

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time, pathlib
from server.memory.edge import EdgeStore
from server.memory.embedding import DenseModel
from server.memory.service import Memory

directory, count, tag, idle_s, start_at, hold_after = sys.argv[1:7]
store = None
def factory():
    global store
    store = EdgeStore(pathlib.Path(directory), idle_s=float(idle_s))
    return store
memory = Memory(factory, DenseModel(None, None, enabled=False))
def word(i):
    out = ""
    while True:
        out = chr(97 + i % 26) + out
        i //= 26
        if not i:
            return out
while time.time() < float(start_at):
    time.sleep(0.005)
t0 = time.monotonic()
for i in range(int(count)):
    memory.record_incident(title=f"{tag} failure {word(i)}", symptoms=f"{tag} symptom {word(i)} observed",
                           stack=tag)
print(json.dumps({"seconds": time.monotonic() - t0, "opens": store.lease.opens if store else 0}), flush=True)
if hold_after == "hold":
    time.sleep(600)  # keeps the lease (idle_s is long) until killed
memory.close()
"""


def _spawn(directory: Path, count: int, tag: str, *, idle_s: float = 1.5, start_at: float = 0.0,
           hold: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), str(count), tag, str(idle_s), str(start_at),
         "hold" if hold else "exit"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, float]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _memory(directory: Path, **lease: float) -> Memory:
    return Memory(lambda: EdgeStore(directory, **lease), lexical_model())


def _count(memory: Memory, stack: str | None = None) -> int:
    from server.memory.store import Where

    where = Where(equals={"kind": "incident", **({"stack": stack} if stack else {})})
    return memory.store.count(where)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    start_at = time.time() + 2.0  # all processes import first, then write at the same moment
    tags = ["alpha", "bravo", "charlie", "delta"]
    procs = [_spawn(tmp_path, 20, tag, start_at=start_at) for tag in tags]
    reader = _memory(tmp_path)
    searches = 0
    try:
        while any(p.poll() is None for p in procs):  # this process searches meanwhile
            reader.search_incidents("failure observed")
            searches += 1
            time.sleep(0.02)
        results = [_finish(p) for p in procs]
        assert searches > 0
        for tag in tags:
            assert _count(reader, tag) == 20, tag
            hits = reader.search_incidents(f"{tag} failure", stack=tag, limit=20).results
            assert len(hits) == 20
        assert _count(reader) == 80
        assert all(r["opens"] >= 1 for r in results)
    finally:
        reader.close()


def test_writes_persist_across_processes(tmp_path: Path) -> None:
    _finish(_spawn(tmp_path, 3, "written-elsewhere"))
    memory = _memory(tmp_path, idle_s=60.0)
    try:
        assert _count(memory, "written-elsewhere") == 3
        memory.record_incident(title="recorded by the long-lived server", symptoms="kept open for a minute",
                               stack="here")
        # This process now holds the lease for up to 60 s idle, but a waiter makes it let go.
        started = time.monotonic()
        other = _spawn(tmp_path, 1, "another")
        _finish(other)
        assert time.monotonic() - started < 15
        assert _count(memory, "another") == 1 and _count(memory, "here") == 1
    finally:
        memory.close()


def test_a_busy_server_yields_to_a_waiting_one(tmp_path: Path) -> None:
    busy = _memory(tmp_path, idle_s=60.0)
    busy.record_incident(title="seed record", symptoms="so that searches have something to find", stack="seed")
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            busy.search_incidents("seed record")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        proc = _spawn(tmp_path, 5, "waiter", start_at=time.time())
        result = _finish(proc)
        # The busy holder releases after at most max_hold_s once someone waits; the waiter's five
        # writes need one open (~0.1 s) and are done well within a few seconds.
        assert result["seconds"] < 5.0, result
    finally:
        stop.set()
        thread.join()
    try:
        assert _count(busy, "waiter") == 5
    finally:
        busy.close()


def test_idle_lease_is_released(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, idle_s=0.2)
    memory = Memory(lambda: store, lexical_model())
    try:
        memory.record_incident(title="lease check", symptoms="the shard should close when idle")
        assert store.lease.held
        deadline = time.monotonic() + 5
        while store.lease.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.lease.held
        opens = store.lease.opens
        assert memory.search_incidents("lease").results  # reopens on demand
        assert store.lease.opens == opens + 1
    finally:
        memory.close()


def test_a_killed_holder_loses_no_acknowledged_write(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, 5, "killed", idle_s=600.0, hold=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed after the five writes returned
    assert json.loads(line)["seconds"] >= 0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    memory = _memory(tmp_path)
    try:
        assert _count(memory, "killed") == 5
        assert memory.search_incidents("killed failure", stack="killed").results
    finally:
        memory.close()


def test_an_idle_holder_keeps_the_shard_and_flushes_what_it_wrote(tmp_path: Path) -> None:
    """Reopening a 10k shard costs more than a whole warm search: an idle process keeps it (no
    other process asked for it) and flushes its writes as a close would, once."""
    from server.memory.lease import ShardLease

    events: list[str] = []
    lease: ShardLease[object] = ShardLease(tmp_path, object, lambda _r: events.append("close"),
                                           flusher=lambda _r: events.append("flush"), flush_s=0.1, idle_s=60.0)
    try:
        with lease.hold():
            lease.mark_written()
        deadline = time.monotonic() + 5
        while "flush" not in events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == ["flush"] and lease.held
        with lease.hold():  # a read: nothing more to flush, and no reopen
            pass
        time.sleep(0.4)
        assert events == ["flush"] and lease.held and lease.opens == 1
    finally:
        lease.close()
    assert events == ["flush", "close"]


def test_the_embedded_store_stays_open_between_an_agents_calls(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    memory = Memory(lambda: store, lexical_model())
    try:
        memory.record_incident(title="kept open", symptoms="the next search must not reopen the shard")
        time.sleep(2.0)  # longer than the former 1.5 s idle release
        assert memory.search_incidents("kept open").results
        assert store.lease.opens == 1
    finally:
        memory.close()
