"""Keeping secrets out of everything we say or store: tool output, errors, logs, memory.

Two layers: keys that look like credentials have their values masked wherever they appear
in a mapping, and free text (Compose's stderr, container logs, pasted incident symptoms) goes
through :class:`Scrubber`, which replaces known secret values (from .env files, given env, such
keys) and anything shaped like a credential: URL passwords, ``PASSWORD=...`` assignments,
bearer tokens, JWTs (Supabase keys), cloud and API keys, private keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|"
    r"jwt|cookie|session[_-]?key|salt|dsn|connection[_-]?string|database[_-]?url|signing)",
    re.IGNORECASE,
)
_NOT_SECRET_SUFFIX = re.compile(r"(_FILE|_PATH|_URL_FILE|_USER(NAME)?|_HOST|_PORT|_ENABLED|_TTL|_EXPIRY)$", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)
# Values shorter than this are too common ("1", "true") to scrub from free text safely.
_MIN_SCRUB_LEN = 4


def is_secret_key(key: str) -> bool:
    """True for keys whose values are credentials (``POSTGRES_PASSWORD``, ``JWT_SECRET``, ...).

    ``*_FILE`` keys point at a secret file rather than holding one, so they are not secret.
    """
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_SUFFIX.search(key)


def mask_value(key: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
    return value


def redact_mapping(data: Any) -> Any:
    """Deep copy of ``data`` with credential-looking keys masked and URL passwords hidden."""
    if isinstance(data, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and _scalar(v) and v not in (None, "") else redact_mapping(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact_mapping(v) for v in data]
    if isinstance(data, str):
        return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", data)
    return data


def _scalar(v: Any) -> bool:
    return not isinstance(v, dict | list)


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



class Scrubber:
    """Masks known secret values (longest first) and credential-shaped text in free text.

    ``assignments=False`` keeps ``KEY: value`` pairs as they are: Compose's own error messages
    read like ``...environment.TOKEN_URL: required variable X is missing`` and must stay
    parseable; the values that could be secret there are passed in as known ``secrets``.
    """

    def __init__(self, secrets: Iterable[str] = (), *, assignments: bool = True) -> None:
        self._secrets = sorted(
            {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SCRUB_LEN}, key=len, reverse=True
        )
        self._assignments = assignments

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        text = _TOKENS.sub(MASK, text)
        text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
        return _ASSIGNMENT.sub(_mask_assignment, text) if self._assignments else text
