"""Keeping secrets out of everything we say: tool output, errors and logs.

Two layers: keys that look like credentials have their values masked wherever they appear
in a mapping, and known secret values (from .env files, given env, such keys) are replaced in
free text such as Compose's stderr or container logs.
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


class Scrubber:
    """Replaces known secret values in free text. Longest first, so overlapping secrets go whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted(
            {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SCRUB_LEN}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)

    def extend(self, secrets: Iterable[str]) -> Scrubber:
        return Scrubber([*self._secrets, *secrets])
