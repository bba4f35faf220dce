"""The audit trail: one JSON line per tool call in ``DSM_STATE_DIR/audit/audit.jsonl``.

Separate from the operation journal (which records what operations did to stacks): this records
who asked for what and how it ended, refused and failed calls included. Arguments are scrubbed
before they are written: ``env`` values are never kept (they are the caller's secrets by
definition), every other string goes through :class:`Scrubber` with every secret value this
process has seen (.env values, given env). The file is 0600 in a 0700 directory, each line is
fsync'd, and it rotates by size (``audit.jsonl.1`` .. ``.N``, oldest dropped).

The server sets :data:`CURRENT` for each tool call (``DockerStackServer.call_tool``); the tool
wrapper fills in the outcome; whoever finishes the call writes the line, exactly once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.redact import MASK, Scrubber, seen_secrets

MAX_BYTES = 5 * 1024 * 1024
KEEP = 3
_MAX_STRING = 2000
_LOCK = threading.Lock()


@dataclass
class Call:
    """One tool call in flight."""

    state_dir: Path
    tool: str
    arguments: dict[str, Any]
    client: str | None = None
    started: float = field(default_factory=time.monotonic)
    outcome: str | None = None
    """ok | error | refused (None until the tool wrapper or the server knows)."""
    detail: str = ""
    operation_id: str | None = None
    approval: dict[str, str] | None = None
    """Which policy rule asked for an approval, and who gave it (user | model); set by the gate."""
    written: bool = False

    def finish(self, outcome: str, *, detail: str = "", result: Any = None) -> None:
        """Record the call once; never raises (an audit failure must not fail the call)."""
        if self.written:
            return
        self.written = True
        op = getattr(result, "operation_id", None)
        try:
            append(self.state_dir, {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "tool": self.tool,
                "stack": stack_of(self.arguments),
                "arguments": scrub_arguments(self.arguments),
                "client": self.client,
                "outcome": outcome,
                "status": getattr(result, "status", None) if isinstance(getattr(result, "status", None), str) else None,
                "detail": " ".join(Scrubber(seen_secrets())(detail).split())[:500],
                "duration_ms": round((time.monotonic() - self.started) * 1000),
                "operation_id": op if isinstance(op, str) else self.operation_id,
                "approval": self.approval,
            })
        except Exception:  # a full disk or a bad value must not turn a done deploy into an error
            import logging

            logging.getLogger("docker_stack_mcp.audit").exception("audit line not written for %s", self.tool)


def outcome_of(exc: BaseException) -> str:
    """refused: the policy, a missing confirmation or read-only mode said no; error: anything else."""
    from server.errors import ConfirmationRequired, ReadOnlyMode
    from server.safety.gate import PolicyRefused

    return "refused" if isinstance(exc, PolicyRefused | ConfirmationRequired | ReadOnlyMode) else "error"


CURRENT: ContextVar[Call | None] = ContextVar("dsm_audit_call", default=None)


def stack_of(arguments: dict[str, Any]) -> str | None:
    value = arguments.get("stack", arguments.get("path"))
    return value if isinstance(value, str) else None


def scrub_arguments(arguments: dict[str, Any]) -> Any:
    scrub = Scrubber(seen_secrets())

    def clean(key: str, value: Any) -> Any:
        if key == "env" and isinstance(value, dict):
            return {str(k): MASK for k in value}
        if isinstance(value, dict):
            return {str(k): clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(key, v) for v in value]
        if isinstance(value, str):
            text = scrub(f"{key}={value}")[len(key) + 1:] if key else scrub(value)
            return text if len(text) <= _MAX_STRING else text[:_MAX_STRING] + f"... ({len(text)} chars)"
        return value if isinstance(value, int | float | bool) or value is None else str(value)

    return {str(k): clean(str(k), v) for k, v in arguments.items()}


def audit_dir(state_dir: Path) -> Path:
    return state_dir / "audit"


def append(state_dir: Path, entry: dict[str, Any]) -> None:
    directory = audit_dir(state_dir)
    line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
    with _LOCK:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        path = directory / "audit.jsonl"
        try:
            if path.stat().st_size + len(line) > MAX_BYTES:
                _rotate(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _rotate(path: Path) -> None:
    for n in range(KEEP, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if n == KEEP:
            older.unlink(missing_ok=True)
        else:
            newer = path.with_name(f"{path.name}.{n + 1}")
            if older.exists():
                older.rename(newer)
    path.rename(path.with_name(f"{path.name}.1"))


def read(state_dir: Path) -> Iterator[dict[str, Any]]:
    """Every entry, oldest first (rotated files, then the current one); unreadable lines skipped."""
    path = audit_dir(state_dir) / "audit.jsonl"
    for candidate in [path.with_name(f"{path.name}.{n}") for n in range(KEEP, 0, -1)] + [path]:
        try:
            with candidate.open(encoding="utf-8") as fh:
                for raw in fh:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(entry, dict):
                        yield entry
        except FileNotFoundError:
            continue


def format_line(entry: dict[str, Any]) -> str:
    """One line for a person: time, outcome, tool, stack, arguments, client, duration, operation."""
    args = {k: v for k, v in (entry.get("arguments") or {}).items() if k not in ("stack", "path")}
    parts = [
        str(entry.get("ts", "?")),
        f"{entry.get('outcome', '?'):<8}",
        str(entry.get("tool", "?")),
        str(entry.get("stack") or "-"),
        json.dumps(args, ensure_ascii=False, separators=(",", ":")) if args else "",
        f"client={entry.get('client') or '?'}",
        f"{entry.get('duration_ms', '?')}ms",
    ]
    if entry.get("operation_id"):
        parts.append(f"op={entry['operation_id']}")
    if entry.get("outcome") != "ok" and entry.get("detail"):
        parts.append(f"-- {entry['detail'][:200]}")
    return " ".join(p for p in parts if p)
