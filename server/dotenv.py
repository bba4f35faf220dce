"""A stack's ``.env``, read by Compose's own dotenv rules (compose-go's parser, re-stated).

We need the values before Compose runs, for one reason: ``COMPOSE_FILE`` and
``COMPOSE_PROFILES`` name the files and profiles Compose will read, and every file must be
screened first. The rules, checked against Compose itself by tests/test_fidelity.py:

- blank lines and lines starting with ``#`` are skipped; ``export KEY=...`` is ``KEY=...``;
  ``KEY: value`` (YAML style) is accepted; a bare ``KEY`` takes the value from the environment;
- unquoted values end at the line's end, cut at the first `` #``, trailing spaces trimmed;
- ``'single'`` quotes are literal and may span lines; ``"double"`` quotes may span lines,
  turn ``\\n``/``\\r`` into line breaks, drop a backslash before other characters, and are
  interpolated; anything after the closing quote (`` # rotated``) is a comment;
- unquoted and double-quoted values are interpolated (``${VAR:-default}`` ...) from the values
  above and the environment;
- a variable given in the environment (the tool's ``env``) wins over the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from server.interpolation import MissingRequired, substitute

_SPACE = " \t\v\f\r\x85\xa0"
_ESCAPE = re.compile(r"\\.")
_BLANK = re.compile(r"\s*")
_KEY_END = re.compile(r"[=:\n]")
_KEY_BAD = re.compile(r"[^\w.\t\v\f\r \x85\xa0]")


class DotenvError(ValueError):
    """The file is not valid for Compose (it would refuse it too)."""


def parse_dotenv(text: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """KEY -> value as Compose reads ``text``; ``environ`` is the environment Compose runs in."""
    environ = environ or {}
    out: dict[str, str] = {}
    src = text.replace("\r\n", "\n")
    pos, n = 0, len(src)

    def lookup(name: str) -> str | None:
        return environ.get(name, out.get(name))

    while True:
        # statement start: skip whitespace (line breaks too) and whole comment lines
        pos = _BLANK.match(src, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            break
        if src[pos] == "#":
            nl = src.find("\n", pos)
            if nl < 0:
                break
            pos = nl
            continue
        if src.startswith("export", pos) and pos + 6 < n and src[pos + 6] in _SPACE:
            pos += 6
            while pos < n and src[pos] in _SPACE:
                pos += 1
        key_start = pos
        end = _KEY_END.search(src, pos)
        pos = end.start() if end else n
        inherited = end is None or end.group() == "\n"
        bad = _KEY_BAD.search(src, key_start, pos)
        if bad:
            raise DotenvError(f"unexpected character {bad.group()!r} in variable name near {src[key_start:pos]!r}")
        key = src[key_start:pos].rstrip()
        if not key:
            raise DotenvError("a line has no variable name")
        if any(c in key for c in _SPACE):
            raise DotenvError(f"variable name {key!r} contains a space")
        pos += 1
        if inherited:
            if key in environ:
                out[key] = environ[key]
            continue
        while pos < n and src[pos] in _SPACE:
            pos += 1
        value, pos = _value(src, pos, key, lookup)
        out[key] = environ.get(key, value)
    return out


def _value(src: str, pos: int, key: str, lookup: object) -> tuple[str, int]:
    n = len(src)
    quote = src[pos] if pos < n and src[pos] in "'\"" else ""
    if not quote:
        end = src.find("\n", pos)
        end = n if end < 0 else end
        raw = src[pos:end].split(" #", 1)[0].rstrip()
        return _expand(raw, key, lookup), end
    i = pos + 1
    while i < n:
        if src[i] == quote and src[i - 1] != "\\":
            inner = src[pos + 1 : i]
            if quote == '"':
                inner = _expand(_unescape(inner), key, lookup)
            return inner, i + 1
        i += 1
    line_end = src.find("\n", pos)
    raise DotenvError(f"unterminated quoted value for {key}: {src[pos : line_end if line_end >= 0 else n]}")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        c = match.group()[1]
        return {"n": "\n", "r": "\r", "$": "$$"}.get(c, c)  # \$ stays a literal dollar

    return _ESCAPE.sub(one, text)


def _expand(text: str, key: str, lookup: object) -> str:
    if "$" not in text:
        return text
    try:
        return substitute(text, lookup)  # type: ignore[arg-type]
    except MissingRequired as exc:
        raise DotenvError(f"{key}: {exc}") from None
