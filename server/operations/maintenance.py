"""Maintenance windows: DSM_STATE_DIR/maintenance/<stack>.json.

While a window is open the health watcher does not alert or auto-recover the stack, and
stack_control may refuse or warn. Deploys open one for their own duration. A window ends at
``until`` on its own (an expired file reads as no window), so a crashed deploy cannot silence
monitoring for ever.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.errors import BadMaintenanceWindow
from server.operations.models import now_iso
from server.statefiles import private_dir


def parse_until(until_iso: str) -> datetime:
    """ISO 8601 (``Z`` or an offset; a naive time is taken as UTC) -> aware UTC datetime."""
    try:
        when = datetime.fromisoformat(until_iso.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadMaintenanceWindow(
            f"maintenance until={until_iso!r} is not an ISO 8601 time",
            state="the window was not changed",
            next_step="pass a time like 2026-01-31T22:00:00Z",
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


class MaintenanceWindows:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, stack: str) -> Path:
        return self.directory / f"{stack}.json"

    def set(self, stack: str, until_iso: str | None, reason: str) -> dict[str, Any] | None:
        """Open (or replace) the window until ``until_iso``; None closes it. Returns the window
        that was open before (or None), so a deploy can put a user's window back afterwards."""
        previous = self.get(stack)
        path = self._file(stack)
        if until_iso is None:
            path.unlink(missing_ok=True)
            return previous
        until = parse_until(until_iso)
        if until <= datetime.now(UTC):
            raise BadMaintenanceWindow(
                f"maintenance until={until_iso!r} is in the past",
                state="the window was not changed",
                next_step="pass a future time, or until=None to close the window",
            )
        window = {
            "stack": stack,
            "until": until.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "reason": reason[:500],
            "set_at": now_iso(),
            "pid": os.getpid(),
        }
        private_dir(self.directory)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(window))
        os.replace(tmp, path)  # readers see the old window or the new one, never half
        return previous

    def get(self, stack: str) -> dict[str, Any] | None:
        """The open window ``{stack, until, reason, set_at, pid}``, or None (none, or expired)."""
        try:
            window = json.loads(self._file(stack).read_text())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(window, dict) or not isinstance(window.get("until"), str):
            return None
        try:
            if parse_until(window["until"]) <= datetime.now(UTC):
                return None
        except BadMaintenanceWindow:
            return None
        return window
