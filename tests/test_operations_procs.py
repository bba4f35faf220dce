"""Recover stops only process groups that are provably the operation's: real child processes.

The promise: a process group an interrupted operation left behind is stopped (SIGTERM, then
SIGKILL after the grace), but a pid or group id now used by another program (pid reuse: the
recorded start time differs) is never signalled, and neither is our own group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.operations import procs


def _stat_start(pid: int) -> str:
    """Ground truth read independently: field 22 of /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw.rsplit(")", 1)[1].split()[19]


def _wait_until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def spawn() -> Iterator:  # type: ignore[type-arg]
    """Start real processes in their own group; every one is killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            with_group = proc.pid
            try:
                os.killpg(with_group, signal.SIGKILL)
            except ProcessLookupError:
                proc.kill()
        proc.wait()


def _term_ignoring_group(spawn, tmp_path: Path) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A group whose leader (sleep) dies on SIGTERM and a member that ignores it; (pgid, member)."""
    marker = tmp_path / "member"
    script = f"sh -c 'trap \"\" TERM; echo $$ > {marker}; exec sleep 30' & exec sleep 30"
    leader = spawn(["sh", "-c", script])
    _wait_until(lambda: marker.exists() and marker.read_text().strip())
    return leader.pid, int(marker.read_text())


# -- identity: pid + start time ----------------------------------------------------------------

def test_start_time_is_the_kernel_start_time_even_with_a_hostile_command_name(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A command name may hold ") " and spaces: fields are counted after the LAST ")".
    odd = tmp_path / "a) b ) c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    proc = spawn([str(odd), "30"])
    _wait_until(lambda: Path(f"/proc/{proc.pid}/comm").read_text().startswith("a) b"))
    assert procs.start_time(proc.pid) == _stat_start(proc.pid)
    assert procs.group_members(proc.pid) == [proc.pid]  # the pgrp field is read from the right place
    assert procs.start_time(os.getpid()) == _stat_start(os.getpid())


def test_a_group_in_our_session_is_found_by_its_group_id(spawn) -> None:  # type: ignore[no-untyped-def]
    # A new process group inside our session: pgrp (not the session id) decides membership.
    proc = subprocess.Popen(["sleep", "30"], process_group=0)
    try:
        assert os.getsid(proc.pid) != proc.pid
        assert procs.group_members(proc.pid) == [proc.pid]
        assert procs.group_is_ours(proc.pid, _stat_start(proc.pid))
    finally:
        proc.kill()
        proc.wait()


def test_pid_1_is_alive() -> None:
    # A server can run as pid 1 in a container: its operations must not be taken for orphans.
    assert procs.is_alive(1, procs.start_time(1)) and procs.start_time(1) == _stat_start(1)


def test_gone_and_zombie_processes_have_no_start_time(spawn) -> None:  # type: ignore[no-untyped-def]
    proc = spawn(["sleep", "30"])
    assert procs.start_time(proc.pid) is not None and procs.is_alive(proc.pid, procs.start_time(proc.pid))
    proc.kill()
    _wait_until(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert procs.start_time(proc.pid) is None  # a zombie is not running: nothing to signal
    assert procs.group_members(proc.pid) == []
    assert not procs.is_alive(proc.pid, None)
    proc.wait()
    assert procs.start_time(proc.pid) is None  # reaped: no /proc entry at all
    assert procs.start_time(2**22 + 12345) is None


@pytest.mark.parametrize(("recorded", "expected"), [
    ("same", True),       # the recorded process itself
    (None, True),         # recorded without a start time: the pid is all we know
    ("?", True),          # recorded on a system without /proc
    ("1", False),         # pid reused by another program: a different start time
])
def test_is_alive_checks_the_recorded_start_time(spawn, recorded: str | None, expected: bool) -> None:  # type: ignore[no-untyped-def]
    proc = spawn(["sleep", "30"])
    start = _stat_start(proc.pid)
    assert procs.is_alive(proc.pid, start if recorded == "same" else recorded) is expected


@pytest.mark.parametrize("pid", [0, -1, "-own"])
def test_is_alive_refuses_non_positive_pids(pid: int | str) -> None:
    pid = -os.getpid() if pid == "-own" else int(pid)  # a stable test id (pytest-xdist compares ids)
    # os.kill(0 or a negative pid) would mean "a whole group": never a process identity.
    assert procs.is_alive(pid, None) is False


def test_without_proc_the_pid_alone_is_checked(spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(procs, "_PROC", tmp_path / "no-proc")  # a system without /proc (macOS, BSD)
    # SIGHUP back to its default (nohup may have us ignore it): a probe that sent a real signal shows
    proc = spawn(["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    assert procs.start_time(proc.pid) == "?" and procs.start_time(os.getpid()) == "?"
    time.sleep(0.05)
    assert proc.poll() is None
    assert procs.start_time(1) == "?"  # exists but not ours to signal (PermissionError): still alive
    assert procs.is_alive(proc.pid, "12345")  # no start time to compare: a live pid counts
    assert not procs.is_alive(0, None)  # kill(0) would probe our own group: never an identity
    assert procs.group_members(proc.pid) == [proc.pid]
    time.sleep(0.05)
    assert proc.poll() is None  # probing sent signal 0, nothing the process noticed
    proc.kill()
    proc.wait()
    assert procs.start_time(proc.pid) is None and procs.group_members(proc.pid) == []


# -- which groups are ours ----------------------------------------------------------------------

def test_group_members_are_exactly_the_running_processes_of_the_group(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pgid, member = _term_ignoring_group(spawn, tmp_path)
    other = spawn(["sleep", "30"])
    assert sorted(procs.group_members(pgid)) == sorted([pgid, member])
    assert procs.group_members(other.pid) == [other.pid]
    assert os.getpid() in procs.group_members(os.getpgid(0))


def test_group_is_ours_decisions(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = spawn(["sleep", "30"])
    start = _stat_start(proc.pid)
    assert procs.group_is_ours(proc.pid, start)
    assert procs.group_is_ours(proc.pid, "?")  # recorded without /proc: the group id is all we know
    assert not procs.group_is_ours(proc.pid, "1")  # the number now belongs to another program
    assert not procs.group_is_ours(proc.pid, None)  # leader had exited when recorded: unverifiable now
    assert not procs.group_is_ours(os.getpgid(0), "?")  # never our own group (its leader may be gone)
    for never in (0, 1, -5):
        assert not procs.group_is_ours(never, None)
    proc.kill()
    proc.wait()
    assert not procs.group_is_ours(proc.pid, start)  # nothing left


def test_a_group_whose_leader_exited_is_still_ours(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Leader exits at once, its child stays in the group: Linux never reuses a pgid still in use.
    marker = tmp_path / "child"
    leader = spawn(["sh", "-c", f"sleep 30 & echo $! > {marker}"])
    leader.wait()
    _wait_until(lambda: marker.exists() and marker.read_text().strip())
    child = int(marker.read_text())
    assert procs.start_time(leader.pid) is None and procs.group_members(leader.pid) == [child]
    for recorded in ("1", None, _stat_start(child)):
        assert procs.group_is_ours(leader.pid, recorded)
    assert procs.stop_group(leader.pid, "1", grace_s=2) == "terminated"
    assert procs.start_time(child) is None


# -- stopping ----------------------------------------------------------------------------------

def test_stop_group_terminates_a_group_that_obeys_sigterm(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "m"
    proc = spawn(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"])
    _wait_until(lambda: marker.exists() and marker.read_text().strip())
    member = int(marker.read_text())
    started = time.monotonic()
    assert procs.stop_group(proc.pid, _stat_start(proc.pid), grace_s=5) == "terminated"
    assert time.monotonic() - started < 1.0  # it ended on SIGTERM: no waiting out the grace
    assert procs.group_members(proc.pid) == [] and procs.start_time(member) is None
    assert proc.wait(timeout=5) == -signal.SIGTERM  # SIGTERM first, not SIGKILL


def test_stop_group_answers_soon_after_a_slow_group_ends(spawn) -> None:  # type: ignore[no-untyped-def]
    # The group needs ~0.1 s to finish after SIGTERM: stop_group sees it end within a short poll.
    proc = spawn(["python3", "-c", "import signal, sys, time\n"
                  "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.1), sys.exit(0)))\n"
                  "print('ready', flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    started = time.monotonic()
    assert procs.stop_group(proc.pid, _stat_start(proc.pid), grace_s=5) == "terminated"
    assert time.monotonic() - started < 0.7


def test_stop_group_kills_what_ignores_sigterm_after_the_grace(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pgid, member = _term_ignoring_group(spawn, tmp_path)
    started = time.monotonic()
    assert procs.stop_group(pgid, _stat_start(pgid), grace_s=0.3) == "killed"
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 2.5  # waited the grace, then SIGKILL ended it promptly
    assert procs.group_members(pgid) == [] and procs.start_time(member) is None


def test_stop_group_never_signals_a_reused_pid(spawn) -> None:  # type: ignore[no-untyped-def]
    bystander = spawn(["sleep", "30"])
    assert procs.stop_group(bystander.pid, "1", grace_s=0.2) == "gone"  # start time differs: pid reused
    assert procs.stop_group(bystander.pid, None, grace_s=0.2) == "gone"
    time.sleep(0.1)
    assert bystander.poll() is None
    assert procs.stop_group(2**22 + 12345, None, grace_s=0.2) == "gone"


def test_stop_group_never_signals_our_own_group(tmp_path: Path) -> None:
    # Run in a session of its own: if the guard were broken, the signal must not reach pytest (or
    # mutmut, or make) but only this probe, whose death then fails the test.
    code = ("import os, sys; from server.operations import procs; g = os.getpgid(0); "
            "s = procs.start_time(g); print(procs.group_is_ours(g, s), procs.stop_group(g, s, grace_s=0.2), "
            "flush=True)")
    probe = subprocess.run([sys.executable, "-c", code], start_new_session=True, capture_output=True, text=True,
                           timeout=30, cwd=Path(__file__).resolve().parent.parent)
    assert (probe.returncode, probe.stdout.split()) == (0, ["False", "gone"]), probe.stderr


def test_wait_empty_is_bounded() -> None:
    started = time.monotonic()
    assert procs._wait_empty(os.getpgid(0), 0.2) is False  # our own group never empties
    assert 0.15 < time.monotonic() - started < 1.5
    assert procs._wait_empty(2**22 + 12345, 5) is True
