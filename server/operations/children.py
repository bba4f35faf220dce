"""Every process group a server starts, on disk while it runs, so that the next start can reap it.

PR_SET_PDEATHSIG (server.process) kills a dead server's direct child, not the child's children:
a docker CLI's Compose plugin or a shell's commands live on in the group after the server was
SIGKILLed. The operation journal records the groups of mutating operations only; a
``compose config`` of a read-only tool is in no operation. So every group is also one small file
``<state>/children/<pgid>.json`` (group id and its leader's start time, our pid and start time),
written at spawn and removed when the group is done. At start-up, :meth:`ChildRegistry.reap`
stops (SIGTERM, then SIGKILL) the groups of servers that are gone, with the same identity checks
as operation recovery (server.operations.procs): a group whose leader now has another start time
is someone else's and is left alone.

Not fsync'd: the files only matter while the machine keeps running (a reboot ends every group).
A file that cannot be written (a full or read-only state disk) costs the reaping of that one
group, never the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from server.operations import procs

log = logging.getLogger("docker_stack_mcp.children")


class ChildRegistry:
    """One file per live child process group of this server under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pid = os.getpid()
        self._pid_start = procs.start_time(self._pid)
        self._warned = False

    def _path(self, pgid: int) -> Path:
        return self.directory / f"{pgid}.json"

    def add(self, pgid: int) -> None:
        entry = {"pgid": pgid, "start": procs.start_time(pgid), "server_pid": self._pid,
                 "server_start": self._pid_start}
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._path(pgid), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(entry))
        except OSError as exc:
            if not self._warned:  # once: a full disk would otherwise log at every command
                self._warned = True
                log.warning("cannot record child process groups under %s (%s): a child left running by a "
                            "killed server will not be reaped", self.directory, exc)

    def discard(self, pgid: int) -> None:
        with contextlib.suppress(OSError):
            self._path(pgid).unlink()

    def reap(self, grace_s: float = 5.0) -> list[dict[str, Any]]:
        """Stop the recorded groups of servers that no longer run; forget them. Returns what was
        done per group. Blocking (up to ``grace_s`` + 2 s per live group). Never raises."""
        out: list[dict[str, Any]] = []
        try:
            files = sorted(self.directory.glob("*.json"))
        except OSError:
            return out
        for path in files:
            try:
                entry = json.loads(path.read_text())
                pgid, server_pid = int(entry["pgid"]), int(entry["server_pid"])
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()  # torn or foreign: nothing to identify a group by
                continue
            if server_pid == self._pid or procs.is_alive(server_pid, entry.get("server_start")):
                continue  # its server still runs and owns it
            outcome = procs.stop_group(pgid, entry.get("start"), grace_s)
            with contextlib.suppress(OSError):
                path.unlink()
            out.append({"pgid": pgid, "server_pid": server_pid, "outcome": outcome})
            if outcome != "gone":
                log.warning("process group %d left by dead server pid %d: %s", pgid, server_pid, outcome)
        return out
