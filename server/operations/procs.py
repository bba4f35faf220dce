"""Is a recorded process still the one we recorded, and stopping a recorded process group.

A pid alone is not an identity: after a crash the number can belong to another program. We
record each process's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) next to
its pid and treat a pid whose start time differs as dead. A process group is only signalled
when it is provably ours: its leader still runs with the recorded start time, or the leader is
gone but members remain (Linux does not hand out a pid that is still in use as a group id, so a
group with members left cannot be someone else's).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], pgrp [2], starttime [19])."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The process's start time token, or None when it does not run (gone or a zombie)."""
    if not _PROC.is_dir():  # not Linux: no identity beyond the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def is_alive(pid: int, recorded_start: str | None) -> bool:
    """True when ``pid`` runs and is the process that was recorded (same start time)."""
    if pid <= 0:
        return False
    now = start_time(pid)
    if now is None:
        return False
    return recorded_start in (None, "?") or now in ("?", recorded_start)


def group_members(pgid: int) -> list[int]:
    """Running (non-zombie) processes whose process group is ``pgid``."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def group_is_ours(pgid: int, recorded_start: str | None) -> bool:
    """The group ``pgid`` still exists and is the one recorded (see the module docstring)."""
    if pgid <= 1 or pgid == os.getpgid(0):
        return False
    members = group_members(pgid)
    if not members:
        return False
    leader = start_time(pgid)
    if leader is None:
        return True  # leader gone, members left: the group id cannot have been reused
    if recorded_start is None:
        return False  # the leader had exited when it was recorded: this one cannot be verified
    return "?" in (recorded_start, leader) or leader == recorded_start


def stop_group(pgid: int, recorded_start: str | None, grace_s: float) -> str:
    """SIGTERM the group, wait up to ``grace_s`` for it to end, then SIGKILL what is left.

    Returns what happened: ``gone`` (nothing of ours ran), ``terminated`` or ``killed``.
    Blocking; bounded by ``grace_s`` + 2 s.
    """
    if not group_is_ours(pgid, recorded_start):
        return "gone"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    if _wait_empty(pgid, grace_s):
        return "terminated"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _wait_empty(pgid, 2.0)
    return "killed"


def _wait_empty(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
