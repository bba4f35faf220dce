"""plaintext-secret: credentials written as literals in the compose file itself.

Reads the source as written (before interpolation): ``POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}``
is the right way (the value lives in .env), so is ``POSTGRES_PASSWORD_FILE: /run/secrets/db``;
``POSTGRES_PASSWORD: hunter2`` is a finding. Values are never repeated in the finding.

Only keys Compose rendered into a service's environment are looked at; keys from ``env_file``
are not written in the compose file and are not findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from server.interpolation import has_reference, references
from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext

_CREDENTIAL_KEY = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|SALT|_KEY$|^KEY$)",
    re.IGNORECASE,
)
_NOT_CREDENTIAL = re.compile(
    r"(_FILE|_PATH|_USER(NAME)?|_HOST|_PORT|_ENABLED|_TTL|_EXPIRY|_EXP|_LENGTH|_INTERVAL|_ROTATION|_HEADER|_NAME)$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<pw>[^@/\s]+)@", re.IGNORECASE)
_TRIVIAL = re.compile(r"^(true|false|yes|no|on|off|\d+|\d+[smhd]|none|null)?$", re.IGNORECASE)


def environment_items(body: dict[str, Any]) -> list[tuple[str, Any]]:
    env = body.get("environment")
    if isinstance(env, dict):
        return [(str(k), v) for k, v in env.items()]
    if isinstance(env, list):
        items: list[tuple[str, Any]] = []
        for entry in env:
            key, sep, value = str(entry).partition("=")
            items.append((key, value if sep else None))
        return items
    return []


def is_credential_key(key: str) -> bool:
    return bool(_CREDENTIAL_KEY.search(key)) and not _NOT_CREDENTIAL.search(key)


def plaintext_secret(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        rendered = svc.get("environment") or {}
        written = dict(environment_items(ctx.stack.source_services.get(name) or {}))
        for key, value in written.items():
            if key not in rendered or value is None or isinstance(value, bool):
                continue
            what = _literal_kind(key, str(value))
            if what:
                yield finding(
                    "plaintext-secret",
                    f"{key} of service {name!r} holds {what} in the compose file (value not shown): it ends up in "
                    "git, backups and `docker inspect` of anyone who reads the file",
                    service=name,
                    line=ctx.stack.line_of(name, "environment", key),
                    evidence=[f"environment key {key}"],
                    fix=f"move the value to the stack's .env (kept out of git) and write {key}: ${{{key}}}, or use a "
                    f"Compose secret and {key}_FILE: /run/secrets/<name> if the image supports it",
                )


def _literal_kind(key: str, text: str) -> str | None:
    url = _URL_PASSWORD.search(text) if "://" in text else None
    if url and not has_reference(url.group("pw")):
        return "a URL with a password written in it"
    if not is_credential_key(key) or _TRIVIAL.match(text.strip()):
        return None
    # One tokenizer (server.interpolation): `$$` is a literal dollar, nested defaults are seen.
    refs = list(references(text))
    if any(r.default and not has_reference(r.default) for r in refs):
        return "a default credential written in ${VAR:-default}"
    if not refs:
        return "a literal value"
    return None


RULES = [plaintext_secret]
