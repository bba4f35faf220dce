"""A tool's arguments that do not validate, said in one line per argument: which argument, what
type it must be, and that nothing ran. Pydantic's own text (a class name, the rejected value, a
documentation link) is for programmers; the value may be the caller's data (a secret in env), so
only its JSON type is named.

Used once, by the server's ``call_tool`` (server/app.py), for every tool.
"""

from __future__ import annotations

from typing import Any

_EXPECTED = {
    "bool": "true or false", "int": "an integer", "float": "a number", "string": "a string",
    "dict": "an object (name -> value)", "list": "a list", "model": "an object", "enum": "one of the listed values",
    "literal": "one of the listed values", "none": "null",
}
_JSON = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
         type(None): "null"}
MAX_LISTED = 4


def _expected(err: dict[str, Any]) -> str:
    kind = str(err.get("type") or "")
    if kind == "literal_error" and (err.get("ctx") or {}).get("expected"):
        return f"one of {err['ctx']['expected']}"
    if kind == "enum" and (err.get("ctx") or {}).get("expected"):
        return f"one of {err['ctx']['expected']}"
    if kind == "int_from_float":
        return "a whole number"
    if kind.startswith(("too_short", "too_long", "greater_than", "less_than", "string_too", "string_pattern")):
        msg = str(err.get("msg") or "valid")
        for prefix in ("Input should be ", "String should be ", "Input should ", "String should "):
            if msg.startswith(prefix):  # "must be" is said by describe(): never "must be be"
                return msg.removeprefix(prefix)
        return msg
    for prefix, text in _EXPECTED.items():
        if kind.startswith(prefix):
            return text
    return str(err.get("msg") or "valid").removeprefix("Input should be ").removeprefix("Value error, ")


def _got(err: dict[str, Any]) -> str:
    value = err.get("input")
    return next((name for cls, name in _JSON.items() if type(value) is cls), type(value).__name__)


def describe(tool: str, errors: list[dict[str, Any]]) -> str:
    """One line: ``tool: argument 'x' must be ...; ... Nothing was run.``"""
    parts: list[str] = []
    for err in errors[:MAX_LISTED]:
        loc = [str(p) for p in err.get("loc") or ()]
        name = ".".join(loc) or "arguments"
        kind = str(err.get("type") or "")
        if kind == "missing":
            parts.append(f"argument {name!r} is required")
        elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"{name!r} is not an argument of {tool}")
        else:
            expected = _expected(err)
            verb = "must" if expected.startswith(("have ", "match ")) else "must be"  # pydantic's own verbs
            parts.append(f"argument {name!r} {verb} {expected} (got {_got(err)})")
    more = len(errors) - MAX_LISTED
    if more > 0:
        parts.append(f"and {more} more")
    return (f"{tool}: {'; '.join(parts)}. State: nothing was run. Next: call {tool} again with the arguments "
            "its schema gives (tools/list).")
