"""unset-variable: ``${VAR}`` with no value and no default. Compose substitutes an empty string
(and only warns on stderr), which turns into an empty password or a port of ''."""

from __future__ import annotations

from collections.abc import Iterator

from server.interpolation import references
from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.yamlsafe import Line


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
    """Every compose file Compose reads (overrides, includes, extends templates), with file and line."""
    if ctx.defined_variables is None or not ctx.stack.all_sources:
        return
    # Names only (values are secrets): a defined name counts as set and non-empty for nested forms.
    defined = dict.fromkeys(ctx.defined_variables, "set")
    reported: set[str] = set()
    for doc in ctx.stack.all_sources:
        for number, raw in enumerate(doc.text.splitlines(), start=1):
            if "$" not in raw:
                continue
            for ref in references(_strip_comment(raw), defined):
                var = ref.name
                if ref.has_default or var in defined or var in reported:
                    continue
                reported.add(var)
                yield finding(
                    "unset-variable",
                    f"${{{var}}} has no value (not in .env, not given) and no default: Compose substitutes an "
                    "empty string",
                    line=Line(number, doc.lines.file),
                    evidence=[f"variable {var}"],
                    fix=f"set {var} in the stack's .env, pass it in env, or write ${{{var}:-default}} / "
                    f"${{{var}:?{var} must be set}}",
                )


RULES = [unset_variable]
