"""unset-variable: ``${VAR}`` with no value and no default. Compose substitutes an empty string
(and only warns on stderr), which turns into an empty password or a port of ''."""

from __future__ import annotations

import re
from collections.abc import Iterator

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext

# $$ is an escaped dollar; ${VAR}, $VAR plain; ${VAR<op>...} has a default, an error or an alternative.
_REFERENCE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+][^}]*)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _strip_comment(line: str) -> str:
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def unset_variable(ctx: LintContext) -> Iterator[Finding]:
    if ctx.defined_variables is None or not ctx.stack.source_text:
        return
    reported: set[str] = set()
    for number, raw in enumerate(ctx.stack.source_text.splitlines(), start=1):
        if "$" not in raw:
            continue
        for match in _REFERENCE.finditer(_strip_comment(raw)):
            var = match.group("braced") or match.group("bare")
            if not var or match.group("op") or var in ctx.defined_variables or var in reported:
                continue
            reported.add(var)
            yield finding(
                "unset-variable",
                f"${{{var}}} has no value (not in .env, not given) and no default: Compose substitutes an "
                "empty string",
                line=number,
                evidence=[f"variable {var}"],
                fix=f"set {var} in the stack's .env, pass it in env, or write ${{{var}:-default}} / "
                f"${{{var}:?{var} must be set}}",
            )


RULES = [unset_variable]
