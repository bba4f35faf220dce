"""The memory outbox: deployment records written after the answer, never lost.

Real embedded memory (deployment records carry no dense vector, so no model is needed); the
only fakes are memory providers at our own seam, to make the memory fail or wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.memory.outbox import MemoryOutbox
from server.runtime import Runtime
from server.settings import Settings


def _post(outbox: MemoryOutbox, op: str, stack: str = "shop", **kw: Any) -> Path:
    return outbox.post_deployment(stack=stack, services=["web", "db"], outcome="success", operation_id=op,
                                  image_digests={"web": "sha256:" + "b" * 64}, duration_s=12.5, **kw)


def _quiet(outbox: MemoryOutbox) -> MemoryOutbox:
    """An outbox whose worker never runs: the process 'dies' right after posting."""
    outbox.kick = lambda delay_s=0.0: 0  # type: ignore[method-assign]
    return outbox


def test_posted_record_is_on_disk_private_then_written_with_its_own_time(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        outbox = runtime.memory_outbox()
        _quiet(outbox)
        path = _post(outbox, "op-1")
        assert outbox.pending() == [path]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        entry = json.loads(path.read_text())
        assert entry["fields"]["operation_id"] == "op-1"
        assert abs(entry["fields"]["finished_at"] - time.time()) < 5  # fixed when posted
        entry["fields"]["finished_at"] = 1_700_000_000.0  # as if the worker got to it much later
        path.write_text(json.dumps(entry))
        assert runtime.memory().list_deployments(stack="shop").deployments == []  # not written yet

        assert outbox.drain() == 1
        assert outbox.pending() == []
        [dep] = runtime.memory().list_deployments(stack="shop").deployments
        assert (dep.operation_id, dep.outcome, dep.services, dep.duration_s) == ("op-1", "success", ["db", "web"], 12.5)
        assert dep.image_digests == {"web": "sha256:" + "b" * 64}
        # The time is the deployment's end (when posted), not when the worker got to it.
        assert datetime.fromisoformat(dep.time.replace("Z", "+00:00")) == datetime.fromtimestamp(1_700_000_000, UTC)
    finally:
        runtime.close()


def test_worker_writes_in_the_background_and_flush_waits_for_it(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        outbox = runtime.memory_outbox()
        _post(outbox, "op-bg")
        assert outbox.flush(60)
        assert outbox.pending() == []
        assert [d.operation_id for d in runtime.memory().list_deployments(stack="shop").deployments] == ["op-bg"]
    finally:
        runtime.close()


def test_a_replayed_entry_updates_instead_of_duplicating(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        outbox = _quiet(runtime.memory_outbox())
        _post(outbox, "op-twice")
        assert outbox.drain() == 1
        _post(outbox, "op-twice")  # a crash after the write, before the file was removed: written again
        assert outbox.drain() == 1
        assert [d.operation_id for d in runtime.memory().list_deployments(stack="shop").deployments] == ["op-twice"]
    finally:
        runtime.close()


def test_a_record_left_by_a_dead_server_is_written_at_the_next_start(settings: Settings) -> None:
    dead = Runtime(settings)
    _post(_quiet(dead.memory_outbox()), "op-left")
    # The process dies here: no drain, no close. A new server starts on the same state dir.
    fresh = Runtime(settings)
    try:
        fresh.recover_operations()  # what build_server(recover_operations=True) runs at start-up
        assert fresh.memory_outbox().flush(60)
        assert [d.operation_id for d in fresh.memory().list_deployments(stack="shop").deployments] == ["op-left"]
        assert fresh.memory_outbox().pending() == []
    finally:
        fresh.close()


def test_close_writes_what_was_posted_before_the_memory_closes(settings: Settings) -> None:
    runtime = Runtime(settings)
    release = threading.Event()
    real = runtime.memory

    def slow_memory() -> Any:
        release.wait(30)
        return real()

    outbox = MemoryOutbox(settings.state_dir / "memory-outbox", slow_memory)
    runtime._outbox = outbox
    _post(outbox, "op-close")
    threading.Timer(0.2, release.set).start()
    runtime.close()  # flushes the outbox (waiting for the slow write), then closes the memory
    again = Runtime(settings)
    try:
        assert [d.operation_id for d in again.memory().list_deployments(stack="shop").deployments] == ["op-close"]
        assert again.memory_outbox().pending() == []
    finally:
        again.close()


def test_a_failing_memory_keeps_the_entry_for_the_next_drain(settings: Settings) -> None:
    def broken() -> Any:
        raise RuntimeError("disk on fire")

    failing = MemoryOutbox(settings.state_dir / "memory-outbox", broken)
    path = _post(_quiet(failing), "op-kept")
    assert failing.drain() == 0
    assert failing.pending() == [path]  # nothing lost
    runtime = Runtime(settings)
    try:
        assert runtime.memory_outbox().drain() == 1
        assert [d.operation_id for d in runtime.memory().list_deployments(stack="shop").deployments] == ["op-kept"]
    finally:
        runtime.close()


def test_an_entry_the_memory_refuses_is_set_aside_and_the_rest_still_written(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        outbox = _quiet(runtime.memory_outbox())
        bad = _post(outbox, "op-bad", stack="")  # the memory refuses an empty stack: it never will accept it
        (outbox.directory / "00000000000000000000-torn.json").write_text('{"kind": "deploy')  # torn/garbage
        _post(outbox, "op-good")
        assert outbox.drain() == 1
        assert outbox.pending() == []
        assert sorted(p.name for p in outbox.directory.glob("*.rejected")) == sorted(
            [bad.with_suffix(".rejected").name, "00000000000000000000-torn.rejected"])
        assert [d.operation_id for d in runtime.memory().list_deployments(stack="shop").deployments] == ["op-good"]
    finally:
        runtime.close()


def test_an_entry_claimed_by_another_process_is_left_to_it(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        outbox = _quiet(runtime.memory_outbox())
        path = _post(outbox, "op-claimed")
        fd = os.open(path, os.O_RDONLY)  # another server holds it (flock is per open file description)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert outbox.drain() == 0
            assert outbox.pending() == [path]
        finally:
            os.close(fd)
        assert outbox.drain() == 1
    finally:
        runtime.close()


def test_post_needs_an_operation_id(settings: Settings) -> None:
    outbox = MemoryOutbox(settings.state_dir / "memory-outbox", lambda: pytest.fail("memory touched"))
    with pytest.raises(ValueError, match="operation_id"):
        _post(outbox, "")
    assert outbox.pending() == []


def test_a_post_waits_for_the_delay_but_a_flush_does_not(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        lazy = MemoryOutbox(settings.state_dir / "memory-outbox", runtime.memory, delay_s=600)
        _post(lazy, "op-lazy")
        assert lazy.pending()  # not written yet: the worker waits out the delay
        assert lazy.flush(60)  # ...unless flushed (a 600 s wait would time this out)
        assert lazy.pending() == []

        soon = MemoryOutbox(settings.state_dir / "memory-outbox", runtime.memory, delay_s=0.2)
        _post(soon, "op-soon")
        deadline = time.monotonic() + 60
        while soon.pending() and time.monotonic() < deadline:  # written without anyone asking
            time.sleep(0.1)
        assert soon.pending() == []
        assert sorted(d.operation_id or "" for d in runtime.memory().list_deployments(stack="shop").deployments) == [
            "op-lazy", "op-soon"]
        lazy.close()
        soon.close()
    finally:
        runtime.close()
