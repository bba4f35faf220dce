"""Re-ranking the fused candidates of an incident search by the stack the query names.

Reciprocal rank fusion knows positions only. An operator nearly always says which product is
broken, by name ("why does n8n ...") or by what it is ("the chat thing", "my photo app"), and
among 10,000 incidents most belong to other stacks. Over the fused top candidates an incident of
a named stack gets a bonus worth a few fused ranks; hits that share an error signature with the
query stay first (a pasted log line is the strongest evidence there is).

Measured on tests/memory_data's harder set with bench/memory.py's 10k distractors, the bonus and
the query expansion of :mod:`.summary` together; adding the dense cosine to this score (weights
0.3 and 1.0) made paraphrases and why-questions worse there, so it is left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from server.memory.store import Hit

W_STACK = 0.3
"""Bonus of an incident of a named stack, against fused scores scaled to 0..1 (the best is 1)."""
CANDIDATES = 30
"""Fused candidates re-ranked."""

_STACK_NAMES: dict[str, str] = {
    "supabase": r"supabase|gotrue|postgrest|supavisor",
    "librechat": r"librechat|\bchat\b|chatgpt",
    "n8n": r"\bn8n\b|automation|workflow",
    "nextcloud": r"nextcloud|\bcloud\b",
    "immich": r"immich|photo|picture",
    "paperless": r"paperless|document archive|\bscans?\b",
    "vaultwarden": r"vaultwarden|bitwarden|password manager",
    "gitea": r"gitea|\bgit server|code hosting",
    "traefik": r"traefik|reverse proxy",
    "linkwarden": r"linkwarden|bookmark",
    "postiz": r"postiz",
    "portainer": r"portainer",
    "netdata": r"netdata",
    "jellyfin": r"jellyfin|media server",
    "homeassistant": r"home ?assistant|zigbee|mosquitto",
    "grafana": r"grafana|prometheus|\bloki\b",
    "minio": r"minio",
    "uptime-kuma": r"uptime.kuma",
}
"""How operators name the reference stacks (an unknown stack is matched by its own name)."""
_COMPILED = {stack: re.compile(p, re.I) for stack, p in _STACK_NAMES.items()}


def named_stacks(query: str, stacks: set[str]) -> set[str]:
    """Which of ``stacks`` the query names, by name or by what they are ("the chat thing")."""
    lowered = query.lower()
    out = set()
    for stack in stacks:
        pattern = _COMPILED.get(stack)
        if (pattern is not None and pattern.search(query)) or (len(stack) >= 3 and stack in lowered):
            out.add(stack)
    return out


def rerank(hits: Sequence[Hit], by_signature: set[str], query: str, limit: int) -> list[Hit]:
    """Signature matches first (their order kept), the rest by fused score plus the named-stack bonus."""
    first = [h for h in hits if h.id in by_signature]
    rest = [h for h in hits if h.id not in by_signature]
    named = named_stacks(query, {str(h.payload.get("stack")) for h in rest if h.payload.get("stack")})
    if not rest or not named:
        return [*first, *rest][:limit]
    top = max(h.score for h in rest) or 1.0

    def key(h: Hit) -> float:
        return h.score / top + (W_STACK if h.payload.get("stack") in named else 0.0)

    return [*first, *sorted(rest, key=key, reverse=True)][:limit]
