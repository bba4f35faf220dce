"""A normalised symptom summary: what kind of failure, on what kind of product, in plain words.

Operators describe a failure in their words ("the chat thing keeps falling over after I updated
it"); records hold the product's words ("LibreChat api exits: MongoServerError: Authentication
failed"). Both sides are mapped to the same small vocabulary of failure kinds ("crashes keeps
restarting", "after an upgrade", "credentials rejected") and, on the record side, to what the stack
is ("ai chat app"), so BM25 and the dense model see shared words where the raw texts share none.

The kinds are detected by patterns that match the technical form (OOMKilled, exit 137, ENOTFOUND,
EACCES, No space left on device) and the everyday one (ran out of room, keeps bouncing, can't log
in). Adding a kind: a pattern for both forms and a few canonical words; tests/memory_data's sets
measure the effect (bench/memory.py per query kind).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_KINDS: list[tuple[str, str]] = [
    # (pattern, canonical words)
    (r"\boom|out of memory|oomkilled|exit(?:ed)?(?: with)?(?: code)? 137|signal 9|sigkill|heap limit|mem_limit"
     r"|\bram\b|memory", "out of memory killed"),
    (r"no space left|disk (?:is )?full|volume full|\bdf\b|out of (?:disk|space|room)|maxed out|could not extend"
     r"|filled up|fills? up|disk space|storage is full", "disk full no space left"),
    (r"authenticat|password|passwd|credential|unauthori[sz]ed|\b401\b|\b403\b|invalid (?:\w+ )?token|\blog ?in"
     r"|sign.?ins?\b|secret|\bkeys?\b|two.factor|\b2fa\b|totp", "credentials password login rejected"),
    (r"econnrefused|connection refused|(?:can'?t|cannot|could not|unable to) (?:connect|reach)|unreachable"
     r"|lost (?:\w+ )?connections?|connection failed|dropped (?:\w+ )?connections?",
     "connection refused cannot connect"),
    (r"enotfound|eai_again|name or service not known|translate host ?name|lookups?\b|resolv|\bdns\b|by name"
     r"|\bhostnames?\b", "name resolution dns lookup"),
    (r"eacces|permission|ownership|owned by|\bchown|read-only|\bowner\b|\buid\b|access denied",
     "permission denied file ownership"),
    (r"certificate|\bcerts?\b|\bacme\b|let'?s ?encrypt|\btls\b|\bssl\b|not secure", "tls certificate"),
    (r"upgrad|\bupdat(?:e|ed|es|ing)\b|new (?:release|version|image|tag)|image tag|\bbump|pull(?:ed|ing)? "
     r"(?:the )?(?:new|newest|latest|updates?)|\bversions?\b|\brelease|migrat", "after upgrade new version"),
    (r"crash|restart(?:s|ing)?\b|keeps? (?:\w+ )?(?:bouncing|dying|falling|restarting|crashing)|falling over"
     r"|\bdies\b|\bdied\b|\bexit(?:s|ed)?\b|won'?t (?:start|boot|stay up|come up|launch)|refuses? to (?:start|launch)"
     r"|\bloops?\b|bounc|unavailable|\bdown\b|\bvanish", "crashes keeps restarting exits"),
    (r"reboot|at boot|on boot|startup|start-up|comes? back (?:up|from)|power (?:loss|outage)|depends_on"
     r"|not (?:yet )?ready|\bhealthy\b|service_started", "at startup after reboot start order"),
    (r"\bqueues?\b|queued|pending|\bwaiting\b|\bstuck\b|never (?:run|start|begin|finish|complete)|background"
     r"|\bcron\b|scheduled|\bworkers?\b|\bjobs?\b|\btasks?\b|broker|celery", "jobs stuck in queue not processed"),
    (r"time(?:s|d)? ?out|timeout|\b504\b|\bhangs?\b|\bhung\b|i/o timeout", "timeout no answer"),
    (r"proxy|gateway|\b502\b|\b404\b|upstream|not found|websocket|\bports?\b|bind for|traefik|nginx|kong|routing",
     "proxy gateway routing network"),
    (r"\bsmtp\b|e-?mails?\b|\bmails?\b|confirmation|verif(?:y|ication)|invit", "email not sent smtp"),
]
_COMPILED = [(re.compile(p, re.I), words) for p, words in _KINDS]

STACK_ROLES = {
    "supabase": "backend platform database api auth storage",
    "librechat": "ai chat app chatgpt assistant conversations",
    "n8n": "workflow automation tool",
    "nextcloud": "file cloud sync",
    "immich": "photo library pictures phone backup",
    "paperless": "document archive scans",
    "vaultwarden": "password manager bitwarden vault",
    "gitea": "git server code hosting",
    "traefik": "reverse proxy certificates",
    "linkwarden": "bookmark manager links",
    "postiz": "social media scheduler posts",
    "portainer": "container management ui",
    "netdata": "monitoring metrics",
    "jellyfin": "media server movies streaming",
    "homeassistant": "home automation smart home",
    "grafana": "dashboards monitoring",
    "minio": "object storage s3",
    "uptime-kuma": "uptime monitor",
}
"""What each reference stack is, in the words an operator uses for it ("the photo app")."""
SERVICE_ROLES = {
    "db": "database", "postgres": "database", "database": "database", "mongodb": "database", "mariadb": "database",
    "mysql": "database", "redis": "cache queue", "broker": "queue", "meilisearch": "search", "kong": "api gateway",
    "rest": "api", "auth": "login signup", "storage": "files buckets uploads", "realtime": "live updates",
    "machine-learning": "ai recognition", "vectordb": "vector database", "rag_api": "document upload",
    "cron": "scheduled jobs", "n8n-worker": "worker", "gotenberg": "document conversion",
}


def failure_kinds(texts: Iterable[str]) -> list[str]:
    """The canonical words of every failure kind found in ``texts``, in a fixed order."""
    joined = "\n".join(t for t in texts if t)
    return [words for pattern, words in _COMPILED if pattern.search(joined)]


def record_summary(title: str, symptoms: str, root_cause: str | None, templates: Iterable[str],
                   stack: str | None, service: str | None, tags: Iterable[str] = ()) -> str:
    """One line indexed with an incident: its failure kinds and what its stack and service are.

    The resolution is left out: it names what was changed ("raised mem_limit"), not what failed."""
    kinds = failure_kinds([title, symptoms, root_cause or "", *templates, " ".join(tags)])
    roles = [STACK_ROLES.get(stack or "", ""), SERVICE_ROLES.get(service or "", "")]
    return " ".join([*kinds, *(r for r in roles if r)])


def query_expansion(query: str) -> str:
    """The canonical words of the failure kinds a query describes ("" when none)."""
    return " ".join(failure_kinds([query]))
