"""Argument checks and limits: every value a caller gives memory is cleaned here or refused.

Cleaning means trimmed, bounded and scrubbed of credentials (stored text is searched by later
sessions); refusing means a :class:`MemoryInputError` (or :class:`MemoryRecordNotFound` for an
id that cannot be one) saying what to pass instead.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence

from server.memory.errors import MemoryInputError, MemoryRecordNotFound
from server.memory.timespec import parse_since
from server.redact import Scrubber

MAX_TITLE = 300
MAX_TEXT = 20_000
MAX_QUERY = 10_000
MAX_LOG_LINES_IN = 500
MAX_LOG_LINES_KEPT = 50
MAX_LOG_LINE = 1000
MAX_TAGS = 20
MAX_STEPS = 50
MAX_SIGNATURES = 200
MAX_HISTORY = 10
_TAG = re.compile(r"^[\w.:/+-]{1,64}$")

_SCRUB = Scrubber()
"""Everything stored in memory is searched by later sessions: credentials are masked first."""


def clean_scope(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value or None


def one_of(value: str, name: str, choices: Sequence[str], *, next_step: str = "") -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a severity, an outcome)."""
    if value not in choices:
        raise MemoryInputError(f"{name}={value!r} is not one of {', '.join(choices)}", next_step=next_step)


def required_text(value: str | None, name: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise MemoryInputError(f"{name} is empty", next_step=f"pass a non-empty {name}")
    if len(text) > limit:
        raise MemoryInputError(f"{name} has {len(text)} characters, more than {limit}",
                               next_step=f"shorten {name}; put long logs in log_lines")
    return text


def scrubbed_text(value: str, name: str, limit: int) -> str:
    """:func:`required_text` with credentials masked: for free text that is stored."""
    return required_text(_SCRUB(value), name, limit)


def optional_text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    text = _SCRUB(value.strip())
    if len(text) > MAX_TEXT:
        raise MemoryInputError(f"{name} has {len(text)} characters, more than {MAX_TEXT}")
    return text or None


def clean_tags(tags: Iterable[str]) -> list[str]:
    out = sorted({t.strip().lower() for t in tags if t and t.strip()})
    bad = [t for t in out if not _TAG.match(t)]
    if bad:
        raise MemoryInputError(f"tags {bad} are not simple words (letters, digits, . : / + - _; at most 64)")
    if len(out) > MAX_TAGS:
        raise MemoryInputError(f"{len(out)} tags given, at most {MAX_TAGS} are kept per record")
    return out


def clean_steps(steps: Sequence[str]) -> list[str]:
    if isinstance(steps, str):
        steps = [s for s in steps.splitlines()]
    clean = [_SCRUB(s.strip()) for s in steps if s and s.strip()]
    if not clean:
        raise MemoryInputError("steps is empty", next_step="pass the procedure as a list of steps")
    if len(clean) > MAX_STEPS or any(len(s) > 2000 for s in clean):
        raise MemoryInputError(f"steps: at most {MAX_STEPS} steps of at most 2000 characters each")
    return clean


def clean_log_lines(lines: Sequence[str]) -> list[str]:
    if isinstance(lines, str):
        lines = lines.splitlines()
    if len(lines) > MAX_LOG_LINES_IN:
        lines = list(lines)[-MAX_LOG_LINES_IN:]
    split = [line.rstrip() for raw in lines for line in str(raw).splitlines()]
    # Scrubbed as one text so a multi-line secret (a PEM key) is masked whole.
    return [line[:MAX_LOG_LINE] for line in _SCRUB.lines(split) if line.strip()]


def search_limit(limit: int) -> int:
    if not 1 <= int(limit) <= 20:
        raise MemoryInputError(f"limit={limit} is outside 1..20")
    return int(limit)


def time_bound(value: str | float | None, now: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return parse_since(value, now=now)


def record_uuid(value: str, kind: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError):
        raise MemoryRecordNotFound(f"{value!r} is not a {kind} id (ids are UUIDs)",
                                   next_step=f"use the {kind}_id returned by a search") from None
