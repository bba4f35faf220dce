"""Compose's variable interpolation, read the way Compose reads it: the one tokenizer every rule uses.

Forms (the Compose specification's): ``$$`` (a literal ``$``), ``$VAR``, ``${VAR}``,
``${VAR:-default}`` / ``${VAR-default}`` (default when unset or empty / when unset),
``${VAR:?error}`` / ``${VAR?error}`` (required), ``${VAR:+alternative}`` / ``${VAR+alternative}``;
the text after the operator may itself hold references (``${A:-${B:-x}}``), matched by brace depth.

:func:`references` lists what a text refers to (for lint rules over the source as written);
:func:`substitute` computes what Compose would substitute (for paths we must check before Compose runs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


@dataclass(frozen=True)
class Reference:
    """One ``$`` expression: the variable, its operator (``""`` when none) and the text after it."""

    name: str
    op: str
    arg: str
    start: int
    end: int
    """Offsets in the text: ``text[start:end]`` is the whole expression."""

    @property
    def has_default(self) -> bool:
        """A value is used when the variable is unset (``-``/``:-``), or it is required (``?``)."""
        return self.op in (":-", "-", ":+", "+", ":?", "?")

    @property
    def default(self) -> str | None:
        return self.arg if self.op in (":-", "-") else None


def tokens(text: str) -> Iterator[Reference | str]:
    """The text split into literal runs and references; ``$$`` yields a literal ``$``."""
    i, n, literal = 0, len(text), []
    while i < n:
        j = text.find("$", i)
        if j < 0 or j + 1 >= n:  # no more references (a trailing lone `$` is literal)
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        nxt = text[j + 1]
        ref: Reference | None
        if nxt == "$":
            literal.append("$")
            i = j + 2
            continue
        if nxt == "{":
            ref = _braced(text, j)  # None: unterminated or invalid; Compose refuses it, we keep the text
        else:
            match = _NAME.match(text, j + 1)
            ref = Reference(match.group(), "", "", j, match.end()) if match else None
        if ref is None:
            literal.append("$")
            i = j + 1
            continue
        if any(literal):
            yield "".join(literal)
        literal = []
        yield ref
        i = ref.end
    if any(literal):
        yield "".join(literal)


def _braced(text: str, start: int) -> Reference | None:
    match = _NAME.match(text, start + 2)
    if match is None:
        return None
    pos = match.end()
    op = next((o for o in _OPS if text.startswith(o, pos)), "")
    pos += len(op)
    if not op and not text.startswith("}", pos):
        return None
    depth, i = 1, pos
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return Reference(match.group(), op, text[pos:i], start, i + 1)
        i += 1
    return None


def references(text: str, lookup: Mapping[str, str] | None = None) -> Iterator[Reference]:
    """Every reference Compose would evaluate, nested ones included.

    With ``lookup`` (the defined variables), only the nested references Compose would actually
    reach are listed: ``${A:-${B}}`` reaches ``B`` only when ``A`` is unset or empty.
    """
    for tok in tokens(text):
        if isinstance(tok, str):
            continue
        yield tok
        if tok.arg and "$" in tok.arg and (lookup is None or _reaches_arg(tok, lookup)):
            yield from references(tok.arg, lookup)


def _reaches_arg(ref: Reference, lookup: Mapping[str, str]) -> bool:
    value = lookup.get(ref.name)
    if ref.op == ":-":
        return not value
    if ref.op == "-":
        return value is None
    if ref.op == ":+":
        return bool(value)
    if ref.op == "+":
        return value is not None
    return False  # ?-forms: the argument is an error message, not evaluated for values


class MissingRequired(ValueError):
    """``${VAR:?err}`` / ``${VAR?err}`` with the variable unset: Compose refuses the file."""


def substitute(text: str, lookup: Mapping[str, str] | Callable[[str], str | None]) -> str:
    """What Compose substitutes for ``text`` given the variables; unset plain references become ''."""
    get = lookup.get if isinstance(lookup, Mapping) else lookup
    out: list[str] = []
    for tok in tokens(text):
        if isinstance(tok, str):
            out.append(tok)
            continue
        value = get(tok.name)
        if tok.op == ":-":
            out.append(value if value else substitute(tok.arg, get))
        elif tok.op == "-":
            out.append(value if value is not None else substitute(tok.arg, get))
        elif tok.op == ":+":
            out.append(substitute(tok.arg, get) if value else "")
        elif tok.op == "+":
            out.append(substitute(tok.arg, get) if value is not None else "")
        elif tok.op in (":?", "?"):
            if value is None or (tok.op == ":?" and not value):
                raise MissingRequired(f"required variable {tok.name} is missing a value: {tok.arg}")
            out.append(value)
        else:
            out.append(value or "")
    return "".join(out)


def has_reference(text: str) -> bool:
    """True when ``text`` holds at least one variable reference (``$$`` is not one)."""
    return "$" in text and any(not isinstance(t, str) for t in tokens(text))
