"""Times as the calling model writes them: ISO 8601 or a duration back from now ("7d")."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from server.memory.errors import MemoryInputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|wk|weeks?)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400,
           "days": 86400, "w": 604800, "wk": 604800, "week": 604800, "weeks": 604800}


def parse_since(value: str, *, now: float | None = None) -> float:
    """Epoch seconds for ``value``: an ISO 8601 time (UTC if no offset) or a duration ago.

    Durations: a number and a unit, ``90s``, ``30m``, ``12h``, ``7d``, ``2w``.
    """
    now = time.time() if now is None else now
    match = _DURATION.match(value)
    if match:
        return now - float(match[1]) * _UNIT_S[match[2].lower()]
    raw = value.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise MemoryInputError(
            f"since={value!r} is neither an ISO 8601 time nor a duration",
            next_step="pass e.g. '2024-05-01', '2024-05-01T10:00:00Z', '12h', '7d' or '2w'",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(ts: float) -> str:
    """``ts`` as an ISO 8601 UTC string with second precision."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
