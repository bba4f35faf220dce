"""``docker-stack-mcp audit [--stack S] [--since T]``: the audit trail for a person.

The audit is printed on stdout: this command is not the MCP server, nothing else speaks there.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

from server.safety.audit import format_line, read
from server.settings import Settings

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(raw: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    if match := _AGO.match(raw):
        return now - timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"--since {raw!r} is neither an ISO time nor a duration like 30m, 2h, 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def print_audit(settings: Settings, *, stack: str | None, since: str | None, raw: bool = False) -> int:
    try:
        cutoff = parse_since(since) if since else None
    except ValueError as exc:
        print(f"docker-stack-mcp audit: {exc}", file=sys.stderr)
        return 2
    count = 0
    for entry in read(settings.state_dir):
        if stack is not None and not _about(entry, stack):
            continue
        if cutoff is not None and not _after(entry, cutoff):
            continue
        print(json.dumps(entry, ensure_ascii=False) if raw else format_line(entry))
        count += 1
    if count == 0:
        print(f"docker-stack-mcp audit: no calls recorded{' for ' + stack if stack else ''}"
              f"{' since ' + since if since else ''} in {settings.state_dir / 'audit'}", file=sys.stderr)
    return 0


def _about(entry: dict, stack: str) -> bool:
    value = entry.get("stack")
    if not isinstance(value, str):
        return False
    candidates = {value, value.strip("/").split("/")[0]}
    return any(fnmatchcase(c, stack) for c in candidates)


def _after(entry: dict, cutoff: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(entry.get("ts"))) >= cutoff
    except ValueError:
        return False
