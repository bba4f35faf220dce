"""server.process promises, each with a real child process: the group dies on timeout and on
cancellation, SIGTERM comes before SIGKILL, capped output keeps draining, our stdin is never
inherited, and the child gets exactly the argv, env, cwd and stdin it was given."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from server.process import run_argv

pytestmark = pytest.mark.anyio
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _alive(pid: int) -> bool:
    """Running (a killed orphan may stay a zombie until PID 1 reaps it: that no longer runs)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _grandchild(marker: Path) -> str:
    """A shell that starts a grandchild ignoring SIGTERM (as the compose plugin outlives the CLI)."""
    return f"sh -c 'trap \"\" TERM; echo $$ > {marker}; exec sleep 30' & wait"


async def _wait_for(path: Path) -> None:
    with anyio.fail_after(5):
        while not path.exists() or not path.read_text().strip():
            await anyio.sleep(0.02)


async def test_cancellation_kills_the_whole_group_and_propagates(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    started = time.monotonic()
    with anyio.CancelScope() as outer:

        async def cancel_when_started() -> None:
            await _wait_for(marker)
            outer.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_started)
            await run_argv(["sh", "-c", _grandchild(marker)], timeout_s=30, env=ENV, term_grace_s=0.3)
            pytest.fail("run_argv returned instead of propagating the cancellation")
    assert outer.cancelled_caught
    assert time.monotonic() - started < 5
    pid = int(marker.read_text())
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


async def test_timeout_kills_the_group_after_the_leader_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    result = await run_argv(["sh", "-c", _grandchild(marker)], timeout_s=0.5, env=ENV, term_grace_s=0.3)
    assert result.timed_out and result.returncode == -9
    await anyio.sleep(0.1)
    assert not _alive(int(marker.read_text()))


async def test_sigterm_comes_first_and_the_grace_is_honoured(tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = f"trap 'echo TERM >> {log}; exit 0' TERM; echo up >> {log}; while :; do sleep 0.05; done"
    started = time.monotonic()
    graceful = await run_argv(["sh", "-c", script], timeout_s=0.5, env=ENV, term_grace_s=5)
    assert graceful.timed_out and log.read_text().split() == ["up", "TERM"]
    assert time.monotonic() - started < 3  # the child left at SIGTERM; the 5 s grace was not waited out
    log.unlink()
    await run_argv(["sh", "-c", script], timeout_s=0.5, env=ENV, term_grace_s=0)
    assert log.read_text().split() == ["up"]  # grace 0: straight to SIGKILL, no trap ran


async def test_a_term_ignoring_child_is_killed_after_the_grace() -> None:
    started = time.monotonic()
    result = await run_argv(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], timeout_s=0.3, env=ENV,
                            term_grace_s=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out and 0.7 <= elapsed < 3


async def test_timeout_keeps_the_output_so_far() -> None:
    result = await run_argv(["sh", "-c", "echo before; echo oops >&2; sleep 30"], timeout_s=0.5, env=ENV,
                            term_grace_s=0)
    assert result.timed_out and result.stdout == "before\n" and result.stderr == "oops\n"


async def test_capped_capture_keeps_draining_so_the_child_finishes() -> None:
    # 8 MB through a 64 KB pipe: if the capture stopped reading at its cap the child would block
    # on a full pipe until the timeout.
    started = time.monotonic()
    result = await run_argv(["sh", "-c", "head -c 8000000 /dev/zero; echo finished >&2"], timeout_s=8, env=ENV,
                            max_output=1000)
    assert not result.timed_out and result.returncode == 0
    assert result.truncated and len(result.stdout) == 1000 and result.stderr == "finished\n"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("size", "truncated"), [(999, False), (1000, False), (1001, True)])
async def test_cap_edges(size: int, truncated: bool) -> None:
    result = await run_argv(["head", "-c", str(size), "/dev/zero"], timeout_s=10, env=ENV, max_output=1000)
    assert len(result.stdout) == min(size, 1000) and result.truncated is truncated


async def test_stderr_gets_a_quarter_of_the_cap() -> None:
    result = await run_argv(["sh", "-c", "head -c 5000 /dev/zero >&2"], timeout_s=10, env=ENV, max_output=4000)
    assert len(result.stderr) == 1000 and result.truncated and result.stdout == ""


async def test_output_across_many_chunks_is_whole_and_in_order() -> None:
    result = await run_argv(["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done"],
                            timeout_s=20, env=ENV)
    assert result.stdout.splitlines() == [f"line{i}" for i in range(3000)] and not result.truncated


async def test_exit_codes_and_invalid_utf8() -> None:
    assert (await run_argv(["sh", "-c", "exit 7"], timeout_s=10, env=ENV)).returncode == 7
    killed = await run_argv(["sh", "-c", "kill -KILL $$"], timeout_s=10, env=ENV)
    assert killed.returncode == -9 and not killed.timed_out
    garbled = await run_argv(["printf", "caf\\351"], timeout_s=10, env=ENV)
    assert garbled.stdout == "caf\ufffd" and garbled.returncode == 0 and not garbled.truncated


async def test_argv_env_and_cwd_are_exactly_what_was_given(tmp_path: Path) -> None:
    result = await run_argv(["sh", "-c", 'printf "%s|" "$0" "$1" "$2"; echo; pwd', tmp_path, 5, "a b"],
                            timeout_s=10, env=ENV, cwd=tmp_path)
    first, cwd = result.stdout.splitlines()
    assert first == f"{tmp_path}|5|a b|" and cwd == str(tmp_path)
    listed = await run_argv(["env"], timeout_s=10, env={"ONLY": "this"})
    assert listed.stdout == "ONLY=this\n"
    assert result.argv[3:] == [str(tmp_path), "5", "a b"]


async def test_stdin_is_fed_whole_and_closed() -> None:
    data = os.urandom(300_000).hex().encode()  # more than a pipe holds: fed while the child reads
    result = await run_argv(["sh", "-c", "wc -c"], timeout_s=10, env=ENV, stdin=data)
    assert result.stdout.strip() == str(len(data))
    ignored = await run_argv(["true"], timeout_s=10, env=ENV, stdin=data)  # a child that never reads
    assert ignored.returncode == 0 and not ignored.timed_out


async def test_our_stdin_is_never_inherited() -> None:
    """On stdio our fd 0 carries the MCP protocol: a child must not be able to read it."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.write(write_end, b"protocol bytes\n")
    os.dup2(read_end, 0)
    try:
        result = await run_argv(["cat"], timeout_s=2, env=ENV, term_grace_s=0)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert not result.timed_out and result.stdout == ""


async def test_a_cancellation_that_lands_during_the_spawn_still_kills_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of a race seen under load: the cancel arrives while the process is being
    started. The spawn must finish (shielded) so the group is killed, not orphaned."""
    from server import process

    marker = tmp_path / "pid"
    real_spawn = process._spawn
    scopes: list[anyio.CancelScope] = []

    async def spawn_then_cancel(*args: object) -> object:
        proc = await real_spawn(*args)  # type: ignore[arg-type]
        await _wait_for(marker)  # the grandchild is running
        scopes[0].cancel()
        await anyio.sleep(0)  # a checkpoint: the cancellation lands here unless the spawn is shielded
        return proc

    monkeypatch.setattr(process, "_spawn", spawn_then_cancel)
    with anyio.CancelScope() as outer:
        scopes.append(outer)
        await run_argv(["sh", "-c", _grandchild(marker)], timeout_s=30, env=ENV, term_grace_s=0.3)
    assert outer.cancelled_caught
    pid = int(marker.read_text())
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


async def test_the_cap_holds_across_many_chunks() -> None:
    result = await run_argv(["sh", "-c", "i=0; while [ $i -lt 40 ]; do head -c 10000 /dev/zero; i=$((i+1)); done"],
                            timeout_s=20, env=ENV, max_output=100_000)
    assert len(result.stdout) == 100_000 and result.truncated
    assert result.timed_out is False and result.returncode == 0
