"""What the watcher persists in DSM_STATE_DIR/watcher/state.json, and how others read it.

One JSON document, rewritten atomically (write to a temp file, fsync, rename) after every
change, so a SIGKILLed watcher restarts with its budgets and its last actions intact and never
repeats an action it already took. Small by construction: per service a bounded list of
attempt times and the last observation/action.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.settings import Settings
from server.statefiles import private_dir


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state_path(settings: Settings) -> Path:
    return settings.state_dir / "watcher" / "state.json"


class WatchState:
    """Per ``stack/service`` records: attempts (epoch seconds), last seen/action, alert flags."""

    def __init__(self, settings: Settings) -> None:
        self.path = state_path(settings)
        self._lock = threading.Lock()
        self.data: dict[str, Any] = load(settings)

    def service(self, stack: str, service: str) -> dict[str, Any]:
        return self.data.setdefault("services", {}).setdefault(f"{stack}/{service}", {})

    def save(self) -> None:
        with self._lock:
            private_dir(self.path.parent)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(self.data, fh, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def load(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(state_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def service_view(data: dict[str, Any], stack: str, service: str) -> dict[str, Any] | None:
    return (data.get("services") or {}).get(f"{stack}/{service}")


_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def iso_to_epoch(value: str | None) -> float | None:
    """Docker's RFC3339 timestamps (nanoseconds, Z) as epoch seconds; None for unset/zero."""
    match = _ISO.match(value or "")
    if not match or match.group(1).startswith("0001-"):
        return None
    frac = float("0" + match.group(2)[:7]) if match.group(2) else 0.0
    zone = match.group(3) or "Z"
    base = datetime.fromisoformat(match.group(1) + ("+00:00" if zone == "Z" else zone))
    return base.timestamp() + frac
