"""Credential rules: literals in the compose file, placeholder or published defaults, no auth at all.

What a credential is, is defined once, in :func:`server.redact.is_secret_key` (shared with the
Scrubber that keeps values out of our output): the key decides, not the value.

plaintext-secret reads the source as written (before interpolation): ``POSTGRES_PASSWORD:
${POSTGRES_PASSWORD}`` is the right way (the value lives in .env), so is
``POSTGRES_PASSWORD_FILE: /run/secrets/db``; ``POSTGRES_PASSWORD: hunter2`` (or ``1234``) is a
finding. Only keys Compose rendered into a service's environment are looked at; keys from
``env_file`` are not written in the compose file and are not findings. Values are never repeated
in a finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.interpolation import has_reference, references
from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.redact import DEFAULT_ACCOUNTS, URL_CREDENTIALS, is_secret_key

# A switch, not a credential, whatever its key says (DISABLE_PASSWORD_LOGIN=true in list form).
_SWITCH = re.compile(r"^(true|false)$", re.IGNORECASE)
# Values that documentation tells a user to replace, and the classic defaults.
_PLACEHOLDER = re.compile(
    r"^(change[\w.-]*|your[-_][\w.-]*|replace[-_ ]?me[\w.-]*|<[^>]*>|x{4,}|\*{4,}|todo|tbd|placeholder|example|"
    r"password|passw0rd|secret|changeit|admin|default|test|123456|12345678|qwerty|letmein|supersecret[\w.-]*)$",
    re.IGNORECASE,
)
_EXAMPLE_FILES = (".env.example", ".env.sample", "example.env", ".env.dist", ".env.template")
_EXAMPLE_MAX_BYTES = 256 * 1024
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")


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


def plaintext_secret(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        rendered = svc.get("environment") or {}
        written = dict(environment_items(ctx.stack.source_services.get(name) or {}))
        for key, value in written.items():
            if key not in rendered or value is None or isinstance(value, bool):
                continue
            what = literal_kind(key, str(value))
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


def literal_kind(key: str, text: str) -> str | None:
    """What kind of credential literal ``text`` under ``key`` is, or None when it is none."""
    url = URL_CREDENTIALS.search(text) if "://" in text else None
    if url and not has_reference(url.group("pw")):
        return "a URL with a password written in it"
    if not is_secret_key(key) or text.strip() == "" or _SWITCH.match(text.strip()):
        return None
    # One tokenizer (server.interpolation): `$$` is a literal dollar, nested defaults are seen.
    refs = list(references(text))
    if any(r.default and not has_reference(r.default) for r in refs):
        return "a default credential written in ${VAR:-default}"
    if not refs:
        return "a literal value"
    return None


def example_values(directory: Path | None) -> dict[str, str]:
    """KEY=value pairs of the stack's .env.example (and its usual spellings): the published defaults."""
    values: dict[str, str] = {}
    if directory is None:
        return values
    root = directory.resolve()
    for name in _EXAMPLE_FILES:
        path = directory / name
        try:
            resolved = path.resolve()
            if not path.is_file() or not resolved.is_relative_to(root) or resolved.stat().st_size > _EXAMPLE_MAX_BYTES:
                continue
            text = resolved.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            match = _ENV_LINE.match(line)
            if not match or line.lstrip().startswith("#"):
                continue
            value = match.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            values.setdefault(match.group(1), value)
    return values


def default_credential(ctx: LintContext) -> Iterator[Finding]:
    """A credential the service will run with that is a placeholder, an image's default account
    name, or the project's published default."""
    published = {v for k, v in example_values(ctx.stack.directory).items() if is_secret_key(k) and len(v) >= 4}
    for name, svc in sorted(ctx.services.items()):
        env = svc.get("environment") or {}
        for key, value in sorted(env.items()) if isinstance(env, dict) else []:
            if not is_secret_key(str(key)) or not isinstance(value, str) or not value.strip():
                continue
            text = value.strip()
            if _PLACEHOLDER.match(text) or text.lower() in DEFAULT_ACCOUNTS:
                why = "a placeholder or well-known default"
            elif text in published:
                why = "the value published in the project's .env.example"
            else:
                continue
            yield finding(
                "default-credential",
                f"{key} of service {name!r} is {why} (value not shown): anyone who read the docs knows it",
                service=name,
                line=ctx.stack.line_of(name, "environment", key) or ctx.stack.line_of(name, "environment"),
                evidence=[f"environment key {key}"],
                fix=f"set {key} in the stack's .env to a fresh random value (e.g. `openssl rand -hex 32`) before the "
                "first start: many images keep the first value in their data",
            )


# Settings that turn authentication off: (key, values that mean "off", what it does).
_NO_AUTH: list[tuple[str, frozenset[str], str]] = [
    ("POSTGRES_HOST_AUTH_METHOD", frozenset({"trust"}), "PostgreSQL accepts every connection without a password"),
    ("MYSQL_ALLOW_EMPTY_PASSWORD", frozenset({"yes", "true", "1"}), "MySQL's root account has no password"),
    ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", frozenset({"yes", "true", "1"}), "MariaDB's root account has no password"),
    ("MARIADB_ALLOW_EMPTY_PASSWORD", frozenset({"yes", "true", "1"}), "MariaDB's root account has no password"),
    ("ALLOW_EMPTY_PASSWORD", frozenset({"yes", "true", "1"}), "the database accepts an empty password"),
]


def passwordless_database(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        env = svc.get("environment") or {}
        if not isinstance(env, dict):
            continue
        for key, off, what in _NO_AUTH:
            value = str(env.get(key) or "").strip().lower()
            if value in off:
                yield finding(
                    "passwordless-database",
                    f"{key}={value} on service {name!r}: {what}; any container on its network (and any host that "
                    "reaches a published port) is in",
                    service=name,
                    line=ctx.stack.line_of(name, "environment", key) or ctx.stack.line_of(name, "environment"),
                    evidence=[f"environment {key}={value}"],
                    fix=f"remove {key} and set a password from the stack's .env",
                )


RULES = [plaintext_secret, default_credential, passwordless_database]
