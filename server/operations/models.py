"""What the journal holds: record kinds, the folded view of one operation, and ids and clocks.

The journal is a sequence of small records, each naming its operation (``op``) and its type
(``t``): ``begin`` (stack, kind, pid, scrubbed params), ``phase``, ``child`` (a process group),
``end`` (status, scrubbed result) and ``snapshot`` (an operation folded whole, written by
compaction). :func:`fold` replays them into :class:`OperationRecord`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

OperationKind = Literal["deploy", "rollback", "backup", "restore", "control", "recovery"]
OperationStatus = Literal[
    "running", "deployed", "unchanged", "rolled_back", "blocked", "failed", "planned", "interrupted", "done",
    "adopted",
]
"""``adopted``: a deployment recorded from what already ran (server.deploy.targets), never run by us."""
KINDS: frozenset[str] = frozenset(get_args(OperationKind))
STATUSES: frozenset[str] = frozenset(get_args(OperationStatus))
FINAL_STATUSES: frozenset[str] = STATUSES - {"running"}

OPERATION_ID = re.compile(r"^op-\d{8}T\d{6}Z-[0-9a-f]{8}$")
STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
"""A normalised Compose project name: also safe as a file name (locks/<stack>.lock)."""


def now_iso() -> str:
    """UTC, millisecond precision, ``Z`` suffix: sorts as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_operation_id() -> str:
    return f"op-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class OperationRecord:
    """One operation as the journal knows it, across processes. What operation_status returns."""

    operation_id: str
    stack: str
    kind: OperationKind
    status: OperationStatus
    started_at: str
    ended_at: str | None
    pid: int
    phases: list[dict[str, Any]]
    """``[{name, status, duration_s, detail}]`` in the order first reported; a phase reported
    again (running -> ok) is updated in place."""
    result: dict[str, Any] | None
    """The final report (already scrubbed) as JSON; None while running."""
    params: dict[str, Any]
    """Scrubbed inputs; ``env`` appears as its variable names only, never values."""
    updated_at: str | None = None
    """When the journal last heard of it (a phase, a child, the end)."""
    children: list[int] = field(default_factory=list)
    """Process groups (pgids) the operation started, in order."""

    @property
    def running(self) -> bool:
        return self.status == "running"


class _Fold:
    """Mutable state of one operation while replaying records."""

    __slots__ = ("begin", "children", "end", "phases", "updated_at")

    def __init__(self, begin: dict[str, Any]) -> None:
        self.begin = begin
        self.phases: list[dict[str, Any]] = list(begin.get("phases") or [])
        self.children: list[dict[str, Any]] = list(begin.get("children") or [])
        self.end: dict[str, Any] | None = begin.get("end")
        self.updated_at: str | None = begin.get("updated_at") or begin.get("at")

    def apply(self, rec: dict[str, Any]) -> None:
        at = rec.get("at")
        if isinstance(at, str):
            self.updated_at = at
        kind = rec.get("t")
        if kind == "phase":
            entry = {k: rec.get(k) for k in ("name", "status", "duration_s", "detail")}
            for i, old in enumerate(self.phases):
                if old.get("name") == entry["name"]:
                    self.phases[i] = entry
                    return
            self.phases.append(entry)
        elif kind == "child":
            self.children.append({"pgid": rec.get("pgid"), "start": rec.get("start")})
        elif kind == "end" and self.end is None:  # the first end wins; a late duplicate changes nothing
            self.end = {"status": rec.get("status"), "at": rec.get("at"), "result": rec.get("result")}

    def snapshot(self) -> dict[str, Any]:
        """One self-contained record for compaction; folds back to the same state."""
        return {
            **{k: v for k, v in self.begin.items() if k not in ("phases", "children", "end", "updated_at")},
            "t": "snapshot",
            "phases": self.phases,
            "children": self.children,
            "end": self.end,
            "updated_at": self.updated_at,
        }

    def record(self) -> OperationRecord:
        b = self.begin
        end = self.end
        return OperationRecord(
            operation_id=str(b["op"]),
            stack=str(b.get("stack", "")),
            kind=b.get("kind", "deploy"),
            status=(end or {}).get("status") or "running",
            started_at=str(b.get("at", "")),
            ended_at=(end or {}).get("at"),
            pid=int(b.get("pid") or 0),
            phases=[dict(p) for p in self.phases],
            result=(end or {}).get("result"),
            params=dict(b.get("params") or {}),
            updated_at=self.updated_at,
            children=[int(c["pgid"]) for c in self.children if isinstance(c.get("pgid"), int)],
        )


def fold_states(records: Iterable[dict[str, Any]]) -> dict[str, _Fold]:
    """Replay records in journal order; operations keep the order of their begin records."""
    states: dict[str, _Fold] = {}
    for rec in records:
        op = rec.get("op")
        if not isinstance(op, str):
            continue
        kind = rec.get("t")
        if kind in ("begin", "snapshot"):
            states[op] = _Fold(rec)
        elif op in states:
            states[op].apply(rec)
    return states


def fold(records: Iterable[dict[str, Any]]) -> list[OperationRecord]:
    return [state.record() for state in fold_states(records).values()]
