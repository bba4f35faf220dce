"""The stored record format: point ids, the text each record is indexed by, and payload -> model.

A record is one Qdrant point whose payload holds its fields plus ``kind`` and ``text`` (what BM25
and the dense model index). Ids of incidents and patterns derive from their title and scope, so
recording the same thing again updates it.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from server.memory.fingerprint import strip_placeholders
from server.memory.models import Deployment, Incident, Pattern, SearchMode
from server.memory.store import Hit
from server.memory.summary import record_summary
from server.memory.timespec import iso

if TYPE_CHECKING:
    from server.memory.embedding import DenseEncoder

_NS = uuid.UUID("6f1c7e0a-3d7b-4c2e-9a51-5d0c2f3b8e41")
ANY_SCOPE = "*"
"""Stored as a pattern's stack/service when it applies to every stack/service."""
OUT_TEXT = 1500
"""Long fields are cut to this in search results, to keep tool output bounded."""


def derived_id(*parts: str) -> str:
    """The point id for these parts (the kind first): the same parts always give the same id."""
    return str(uuid.uuid5(_NS, "\n".join(parts)))


def norm_title(title: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\d+", "#", title.strip().lower()))


def clip_text(text: str | None, limit: int = OUT_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def search_mode(encoder: DenseEncoder | None) -> SearchMode:
    return "hybrid" if encoder is not None else "lexical"


def incident_text(p: dict[str, Any]) -> str:
    templates = [strip_placeholders(t) for t in p.get("log_templates", [])[:20]]
    parts = [p["title"], p["symptoms"], p.get("root_cause") or "", p.get("resolution") or "", " ".join(templates),
             " ".join(x for x in (p.get("stack"), p.get("service")) if x), " ".join(p.get("tags", [])),
             record_summary(p["title"], p["symptoms"], p.get("root_cause"), templates, p.get("stack"),
                            p.get("service"), p.get("tags", []))]
    return "\n".join(part for part in parts if part)


def pattern_text(p: dict[str, Any]) -> str:
    scope = " ".join(x for x in (p.get("stack"), p.get("service"), p.get("operation")) if x and x != ANY_SCOPE)
    parts = [p["title"], scope, "\n".join(p.get("steps", [])), p.get("notes") or "", " ".join(p.get("tags", []))]
    return "\n".join(part for part in parts if part)


def deployment_text(p: dict[str, Any]) -> str:
    return " ".join(
        [p["stack"], *p["service"], p["outcome"], p["strategy"] or "", p["notes"] or "",
         *(strip_placeholders(t) for t in p["log_templates"])])


def to_incident(hit: Hit) -> Incident:
    p = hit.payload
    return Incident(
        incident_id=hit.id, title=p.get("title", ""), symptoms=p.get("symptoms", ""),
        root_cause=p.get("root_cause"), resolution=p.get("resolution"), stack=p.get("stack"),
        service=p.get("service"), severity=p.get("severity", "medium"), tags=list(p.get("tags", [])),
        log_lines=list(p.get("log_lines", [])), signatures=list(p.get("signatures", [])),
        first_seen=iso(float(p.get("first_seen_ts", p.get("ts", 0)))), last_seen=iso(float(p.get("ts", 0))),
        occurrences=int(p.get("occurrences", 1)), source=p.get("source", "agent"),
        deployment_id=p.get("deployment_id"), image_digests=dict(p.get("image_digests") or {}),
        time_to_recover_s=p.get("time_to_recover_s"), outcome=p.get("outcome"),
    )


def pattern_fields(p: dict[str, Any], *, clip: bool = False) -> dict[str, Any]:
    def scope(value: Any) -> str | None:
        return None if value in (None, ANY_SCOPE) else str(value)

    last_used = p.get("last_used_ts")
    return {
        "title": p.get("title", ""),
        "steps": [(clip_text(s, 500) or "") if clip else s for s in p.get("steps", [])],
        "stack": scope(p.get("stack")),
        "service": scope(p.get("service")),
        "operation": p.get("operation"),
        "successes": int(p.get("successes", 0)),
        "failures": int(p.get("failures", 0)),
        "last_outcome": p.get("last_outcome"),
        "last_used": iso(float(last_used)) if last_used else None,
        "tags": list(p.get("tags", [])),
        "notes": clip_text(p.get("notes")) if clip else p.get("notes"),
    }


def to_pattern(hit: Hit) -> Pattern:
    return Pattern(pattern_id=hit.id, history=list(hit.payload.get("history", [])), **pattern_fields(hit.payload))


def to_deployment(hit: Hit) -> Deployment:
    p = hit.payload
    return Deployment(
        deployment_id=hit.id, stack=p.get("stack", ""), services=list(p.get("service") or []),
        image_digests=dict(p.get("image_digests") or {}), outcome=p.get("outcome", "success"),
        duration_s=p.get("duration_s"), time=iso(float(p.get("ts", 0))), strategy=p.get("strategy"),
        error_signatures=list(p.get("error_signatures", [])), notes=p.get("notes"),
        pattern_id=p.get("pattern_id"), incident_id=p.get("incident_id"), operation_id=p.get("operation_id"),
    )
