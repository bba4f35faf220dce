"""Running external programs: the only module that starts processes.

Every program gets an argv list (never a shell), its own process group, a timeout, and bounded
output capture. On timeout or cancellation the whole group is killed: the Compose plugin
survives a signal sent to the ``docker`` CLI alone, and a runaway ``compose config`` can take
all memory, so signalling only the direct child is not enough.

Children die with the server: on Linux each is started through ``setpriv --pdeathsig KILL``
(util-linux; it sets PR_SET_PDEATHSIG and execs the program in place, so the pid, the process
group and the timeouts are unchanged), so a SIGKILLed server does not leave a ``compose config``
running for half an hour. That signal reaches the direct child only; its own children (the
Compose plugin under the docker CLI, a shell's commands) stay in the child's process group,
which a server registers with :func:`track_children` and the next start reaps
(``server.operations.children``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.abc import ByteReceiveStream, Process

log = logging.getLogger("docker_stack_mcp.process")

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
child_recorder: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "child_recorder", default=None
)
"""Set by a running operation (``Operations.run_detached``) for its task: every process started
in that context has its group journaled, even by code that does not pass ``on_start``."""
_TERM_GRACE_S = 3.0


class ChildTracker(Protocol):
    """Where a server records the process groups it starts, so that the next start can stop them
    if this server dies first (server.operations.children.ChildRegistry). Never raises."""

    def add(self, pgid: int) -> None: ...

    def discard(self, pgid: int) -> None: ...


_tracker: ChildTracker | None = None


def track_children(tracker: ChildTracker | None) -> None:
    """Register every process group started from now on with ``tracker`` (process-wide: set once
    by the server at start-up; None stops tracking)."""
    global _tracker
    _tracker = tracker


def _pdeathsig_prefix() -> list[str]:
    if not sys.platform.startswith("linux"):
        return []  # no PR_SET_PDEATHSIG: the next start's reaping is all there is
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "KILL", "--"]
    # No util-linux: the same in a few lines of Python (slower to start, so only as a fallback).
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_PY]


_PDEATHSIG_PY = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)
_PDEATHSIG = _pdeathsig_prefix()


@dataclass(frozen=True)
class ProcessResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False


async def run_argv(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    stdin: bytes | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    term_grace_s: float = _TERM_GRACE_S,
    on_start: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion or until ``timeout_s``; never raises on a non-zero exit.

    On timeout the result has ``timed_out=True`` and ``returncode=-9``. On cancellation the
    group is killed (in a shielded scope) and the cancellation propagates. ``term_grace_s`` is how
    long the group gets between SIGTERM and SIGKILL (0 for read-only work that may be runaway).
    ``on_start`` is called with the child's process-group id (== its pid) right after the spawn,
    before any output is read, so the operation journal can record the group and a later server
    can kill it if this one dies; if it raises, the group is killed and the error propagates.
    """
    argv = [str(a) for a in argv]
    # Spawning is shielded: a cancellation that landed inside open_process would let asyncio kill
    # the leader alone and orphan its children. Once we hold the process, the try below owns it.
    with anyio.CancelScope(shield=True):
        proc = await _spawn(argv, stdin, cwd, env)
    out = _Capture(max_output)
    err = _Capture(max_output // 4)
    timed_out = False
    tracker = _tracker
    try:
        if tracker is not None:
            tracker.add(proc.pid)
        recorder = child_recorder.get()
        for hook in (recorder, on_start):
            if hook is not None:
                hook(proc.pid)  # start_new_session=True: the child leads its own group
        with anyio.move_on_after(timeout_s) as scope:
            async with anyio.create_task_group() as tg:
                assert proc.stdout is not None and proc.stderr is not None
                tg.start_soon(out.drain, proc.stdout)
                tg.start_soon(err.drain, proc.stderr)
                if stdin is not None and proc.stdin is not None:
                    tg.start_soon(_feed, proc, stdin)
                await proc.wait()
        if scope.cancelled_caught:
            timed_out = True
            log.warning("timed out after %.0fs, killing process group: %s", timeout_s, argv[:3])
            with anyio.CancelScope(shield=True):
                await _kill_group(proc, term_grace_s)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _kill_group(proc, term_grace_s)
        raise
    finally:
        if tracker is not None:
            tracker.discard(proc.pid)
    return ProcessResult(
        argv=argv,
        returncode=-9 if timed_out else (proc.returncode if proc.returncode is not None else -1),
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
    )


async def _spawn(
    argv: list[str], stdin: bytes | None, cwd: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Process:
    if _PDEATHSIG:
        # The wrapper would report a missing program as its own exit 127: keep the error callers
        # (and their messages) get without it.
        path = env.get("PATH", os.defpath)
        found = shutil.which(argv[0], path=path) if os.sep not in argv[0] else argv[0]
        target = os.path.join(cwd or "", found) if found is not None else None
        if target is None or not os.path.exists(target):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        if not os.access(target, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), argv[0])
    return await anyio.open_process(
        [*_PDEATHSIG, *argv],
        # Never inherit our stdin: on stdio it is the MCP protocol stream, and a child that reads
        # it (a compose prompt, a cat) would eat the client's messages.
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=-1,
        stderr=-1,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )


class _Capture:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    async def drain(self, stream: ByteReceiveStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in stream:
                if self.size < self.limit:
                    keep = chunk[: self.limit - self.size]
                    self.chunks.append(keep)
                    self.size += len(keep)
                    self.truncated |= len(keep) < len(chunk)
                else:  # keep draining so the child never blocks on a full pipe
                    self.truncated = True

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


async def _feed(proc: Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError):
        await proc.stdin.send(data)
    with contextlib.suppress(Exception):
        await proc.stdin.aclose()


async def _kill_group(proc: Process, term_grace_s: float) -> None:
    """SIGTERM the group, give it a moment, then SIGKILL whatever is left of it."""
    pgid = proc.pid  # start_new_session=True makes the child its group's leader
    if term_grace_s > 0:
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(term_grace_s):
            await proc.wait()
    # Even when the leader exited, children (the compose plugin) may live on in the group.
    _signal_group(pgid, signal.SIGKILL)
    with anyio.move_on_after(_TERM_GRACE_S):
        await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


StreamProcess = subprocess.Popen[bytes]


def open_stream_process(argv: list[str], env: Mapping[str, str]) -> StreamProcess:
    """A long-lived child whose stdin/stdout are a byte stream (server.sshbridge: one per engine
    connection), started like every other child: its own process group, dying with the server,
    recorded with the tracker. The caller ends it with :func:`end_stream_process`."""
    proc = subprocess.Popen([*_PDEATHSIG, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env), start_new_session=True)
    if _tracker is not None:
        _tracker.add(proc.pid)
    return proc


def end_stream_process(proc: StreamProcess, grace_s: float = 3.0) -> None:
    """TERM the child's group, KILL it after ``grace_s``, forget it."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    if _tracker is not None:
        _tracker.discard(proc.pid)
