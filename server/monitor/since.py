"""What a diagnosis can tie to an act: the deployment or rollback after which errors began, and
the noise a restore itself produces.

- A problem on a service whose container was (re)started after the newest deploy or rollback
  that changed the stack (the journal, through opsbridge) is named with that operation: its id,
  when it ended, its kind and what it changed. Diagnosis ranks that finding first.
- ``pg_dumpall --clean`` dumps drop and recreate every role, so replaying one into a running
  server logs errors by design (``role "postgres" already exists``, ``current user cannot be
  dropped``...): those lines are labelled restore noise, not counted as the service's errors.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("docker_stack_mcp.monitor")

RESTORE_NOISE = re.compile(
    r"(role \"[^\"]+\" already exists|current user cannot be dropped|cannot drop the currently open database|"
    r"database \"[^\"]+\" already exists|role \"[^\"]+\" does not exist.*DROP ROLE|"
    r"cannot be dropped because some objects depend on it)", re.IGNORECASE)


def is_restore_noise(line: str) -> bool:
    return bool(RESTORE_NOISE.search(line))


@dataclass(frozen=True)
class Act:
    """The newest journaled deploy or rollback that changed the stack."""

    operation_id: str
    kind: str
    status: str
    ended_at: str
    started_epoch: float
    changed: list[str]

    def named(self) -> str:
        what = "; ".join(self.changed[:6]) or "no service change recorded"
        return f"{self.kind} {self.operation_id} ({self.status}, ended {self.ended_at}): {what}"


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an engine or journal ISO time (nanoseconds cut), None when unset."""
    text = str(value or "")
    if not text or text.startswith("0001-"):
        return None
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:  # the engine gives nanoseconds; fromisoformat takes at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def last_act(runtime: Any, stack: str) -> Act | None:
    try:
        from server.monitor.opsbridge import last_deployment

        record = last_deployment(runtime, stack)
    except Exception as exc:  # the journal is optional for diagnosis
        log.debug("no journal for %s: %s", stack, exc)
        return None
    if record is None:
        return None
    started = parse_time(record.started_at)
    if started is None:
        return None
    return Act(operation_id=record.operation_id, kind=str(record.kind), status=str(record.status),
               ended_at=str(record.ended_at or record.started_at), started_epoch=started,
               changed=changes_of(record.result or {}))


def changes_of(result: dict[str, Any]) -> list[str]:
    """What a deploy/rollback report says it changed, per service (journal data, already scrubbed)."""
    out: list[str] = []
    plan = result.get("plan") or {}
    for s in plan.get("services") or []:
        if isinstance(s, dict) and s.get("action") not in (None, "unchanged"):
            image = f" -> {s['image_to']}" if s.get("image_to") else ""
            out.append(f"{s.get('service')} {s.get('action')}{image}")
    rollback = result.get("rollback") or {}
    if isinstance(rollback, dict) and rollback.get("to_deployment"):
        out.append(f"rolled back to {rollback.get('to_deployment')}")
    if not out:
        out = [f"{s.get('name') or s.get('service')} {s.get('image') or ''}".strip()
               for s in result.get("services") or [] if isinstance(s, dict)]
    return out


def began_after(act: Act, started_at: Any) -> bool:
    """The container was (re)started after the act began (the act started or recreated it, or it
    has crashed and restarted since)."""
    started = parse_time(started_at)
    return started is not None and started >= act.started_epoch
