"""Masking credentials in free text before it is stored in memory.

Incidents carry pasted log lines and symptoms, and those often hold secrets: connection URLs
with passwords, ``POSTGRES_PASSWORD=...`` assignments, Supabase JWTs, bearer tokens. Memory
outlives the incident and is searched by every later session, so everything goes through
:func:`mask_secrets` first: :class:`server.redact.Scrubber` (URL credentials) plus the
assignment and token patterns below.
"""

from __future__ import annotations

import re

from server.redact import MASK, Scrubber, is_secret_key

# KEY=value, KEY: value, "key": "value" where KEY looks like a credential name.
_ASSIGNMENT = re.compile(
    r"""(?P<key>["']?[A-Za-z_][\w.-]{0,80}["']?)(?P<sep>\s*[=:]\s*)(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;&}]+)"""
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# Tokens that are secrets whatever key they stand next to.
_TOKENS = re.compile(
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT (Supabase anon/service keys)
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub tokens
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style API keys (LibreChat)
    r"|\bxox[abpors]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)


def _mask_assignment(match: re.Match[str]) -> str:
    key = match["key"].strip("\"'")
    if not is_secret_key(key):
        return match[0]
    value = match["value"]
    if value.strip("\"'") in ("", MASK):
        return match[0]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


def mask_secrets(text: str, scrubber: Scrubber | None = None) -> str:
    """``text`` with URL passwords, credential assignments and well-known token shapes masked."""
    if not text:
        return text
    text = (scrubber or Scrubber())(text)
    text = _TOKENS.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
    return _ASSIGNMENT.sub(_mask_assignment, text)
