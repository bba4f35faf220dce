"""Error-line fingerprints: the same failure, whatever its timestamps, ids and numbers.

``2024-05-01T10:22:03Z supabase-auth-1 | error: dial tcp 172.18.0.4:5432: connect: connection
refused`` and the same line a week later from another container id normalise to the same
template (``error: dial tcp <ip>: connect: connection refused``) and so to the same
signature. Incidents store the signatures of their log lines and symptom lines; a pasted log
line in a search finds them even when the incident was worded differently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MIN_LINE_CHARS = 12
"""Shorter lines carry too little to fingerprint ("Killed", "exit 1")."""
MAX_LINE_CHARS = 2000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# `docker compose logs` prefix ("supabase-db-1  | "), `docker logs -t` timestamp, syslog prefix
# ("May 12 10:00:01 myhost "): all vary by host or container and say nothing about the error.
_COMPOSE_PREFIX = re.compile(r"^\s*[\w.-]+\s+\|\s?")
_ISO_PREFIX = re.compile(r"^\s*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?\s+")
_SYSLOG_PREFIX = re.compile(
    r"^\s*(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}\s+\S+\s+"
)
_RULES: list[tuple[re.Pattern[str], str]] = [
    # Timestamps first: they contain numbers, colons and dashes that other rules would split.
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"), "<ts>"),
    (re.compile(r"\d{1,2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}(?:\s[+-]\d{4})?"), "<ts>"),
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+", re.I), ""),
    (re.compile(r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\s+\d{1,2},?\s+(?:\d{4}\s+)?"
                r"\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"), "<ts>"),
    (re.compile(r"\b\d{4}[-/]\d{2}[-/]\d{2}\b"), "<ts>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<ts>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    # URLs keep scheme and host (which service was called matters), lose credentials, port, path.
    (re.compile(r"\b([a-z][a-z0-9+.-]*)://(?:[^@/\s]*@)?([\w.-]+)(?::\d+)?(?:[/?#][^\s\"'<>]*)?", re.I),
     r"\1://\2"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b", re.I), "<ip>"),
    # Paths of two or more segments (single segments such as /health are routes that matter).
    (re.compile(r"(?<![\w/<])(?:~|\.{1,2})?(?:/[\w.@%+-]+){2,}/?"), "<path>"),
    (re.compile(r"\b[A-Za-z]:\\[^\s\"']+"), "<path>"),
    (re.compile(r"\b(?:sha256|sha1|md5):[0-9a-f]{8,}\b", re.I), "<hash>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b", re.I), "<hex>"),
    # Numbers, with units, and the numeric tail of ids ("worker-12", "pid=4711").
    (re.compile(r"(?<![<\w])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?:ms|us|µs|ns|s|m|h|d|b|kb|kib|mb|mib|gb|gib|%)?\b",
                re.I), "<n>"),
    (re.compile(r"(?<=[A-Za-z_-])\d+\b"), "<n>"),
]
_LEADING_NOISE = re.compile(r"^(?:(?:<ts>|<n>|[\[\](){}|:,.\-]|\s)+)")
_SPACES = re.compile(r"\s+")


def normalize_line(line: str) -> str:
    """The template of one log line: variable parts replaced by placeholders, lowercased.

    A leading ``docker compose logs`` prefix and leading timestamps, counters and brackets are
    dropped, so the same message from ``docker logs -t`` and from ``compose logs`` agree.
    """
    text = _ANSI.sub("", line[:MAX_LINE_CHARS])
    for _ in range(2):  # either order: "ts name | msg" or "name | ts msg"
        text = _COMPOSE_PREFIX.sub("", _SYSLOG_PREFIX.sub("", _ISO_PREFIX.sub("", text)))
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = _LEADING_NOISE.sub("", text)
    return _SPACES.sub(" ", text).strip().lower()


def signature_of(text: str) -> str:
    """A short, stable id of a normalised template."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def line_signatures(lines: Iterable[str]) -> dict[str, str]:
    """Signature -> template for every line long enough to fingerprint (order kept, no duplicates)."""
    out: dict[str, str] = {}
    for raw in lines:
        for line in raw.splitlines():
            if len(line.strip()) < MIN_LINE_CHARS:
                continue
            template = normalize_line(line)
            if len(template) < MIN_LINE_CHARS or _placeholders_only(template):
                continue
            out.setdefault(signature_of(template), template)
    return out


def text_signature(text: str) -> str:
    """The signature of a whole text (all its lines normalised and joined)."""
    lines = [normalize_line(line) for line in text.splitlines()]
    return signature_of("\n".join(line for line in lines if line))


def strip_placeholders(template: str) -> str:
    """A template without its placeholders, for the text that is embedded and BM25-indexed."""
    return _SPACES.sub(" ", re.sub(r"<(?:ts|uuid|email|ip|hash|hex|path|n)>", " ", template)).strip()


def _placeholders_only(template: str) -> bool:
    return len(re.sub(r"[^a-z]", "", strip_placeholders(template))) < 4
