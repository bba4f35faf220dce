"""Results a model can afford: findings of one rule folded into one, and what a report leaves out.

A check that fires on twelve services yields twelve findings that differ in the service name and
the line. The tools answer with one finding per rule (and severity) listing every service with
its file and line; ``detail="full"`` gives them one by one. Folding never hides an error: a
folded error keeps each service's own message and fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from server.models import SEVERITY_ORDER, Finding, Severity, sort_findings

Detail = Literal["summary", "full"]

MAX_EXAMPLE = 240
"""A folded warning or info shows one service's message and fix as the example, cut to this."""


def where(f: Finding, *, file_known: bool = False) -> str:
    """'service (file:line)', as much of it as is known; 'service:line' when the folded finding's
    own `file` names the one file."""
    if file_known:
        return f"{f.service}:{f.line}" if f.line else str(f.service)
    at = f"{f.file}:{f.line}" if f.file and f.line else (f.file or "")
    return f"{f.service} ({at})" if at else str(f.service)


def at_least(findings: Iterable[Finding], min_severity: Severity) -> list[Finding]:
    floor = SEVERITY_ORDER[min_severity]
    return [f for f in findings if SEVERITY_ORDER[f.severity] <= floor]


def fold(findings: list[Finding]) -> list[Finding]:
    """One finding per (rule, severity) over the services it fires on; stack-wide findings and
    rules that fire once are kept as they are. Order: errors first, as sort_findings."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    out: list[Finding] = []
    for f in findings:
        if f.service is None:
            out.append(f)
        else:
            groups.setdefault((f.rule, f.severity), []).append(f)
    for group in groups.values():
        out.append(group[0] if len(group) == 1 else _folded(group))
    return sort_findings(out)


def _folded(group: list[Finding]) -> Finding:
    from server.policy.catalog import RULES

    first = group[0]
    rule = RULES.get(first.rule)
    headline = rule.summary if rule is not None else first.message
    files = {f.file for f in group}
    one_file = len(files) == 1 and None not in files  # the folded finding's `file` names it
    places = ", ".join(where(f, file_known=one_file) for f in group)
    services = {f.service for f in group}
    fixes = list(dict.fromkeys(f.fix for f in group if f.fix))
    if first.severity == "error":
        # Every error stays readable on its own: its message, and its fix when they differ.
        evidence = [f"{where(f)}: {f.message}" for f in group]
        fix = fixes[0] if len(fixes) == 1 else "\n".join(f"{f.service}: {f.fix}" for f in group if f.fix) or None
    else:
        evidence = [_cut(f"e.g. {first.service}: {first.message}")]
        fix = _cut(fixes[0]) if len(fixes) == 1 else (
            _cut(f"e.g. {first.service}: {fixes[0]}", "each service's own fix: detail='full'") if fixes else None)
    return Finding(
        rule=first.rule, severity=first.severity, category=first.category,
        service=services.pop() if len(services) == 1 else None,
        message=f"{headline}: {len(group)} service(s): {places}" if len(services) > 1 else
        f"{headline}: {len(group)} times: {places}",
        file=files.pop() if len(files) == 1 else None, line=None, fix=fix, evidence=evidence,
    )


def _cut(text: str, more: str = "detail='full'") -> str:
    """At most MAX_EXAMPLE characters, cut at a line end where there is one (a YAML patch stays
    whole lines), saying where the rest is."""
    if len(text) <= MAX_EXAMPLE:
        return text
    head = text[:MAX_EXAMPLE]
    head = head[: head.rfind("\n")] if "\n" in head else head
    return f"{head.rstrip()} [...: {more}]"


def briefly(findings: list[Finding]) -> tuple[list[Finding], int]:
    """For a deploy or rollback report: pre-flight (lint catalog) warnings reduced to the rule and
    where it fires (one finding per rule naming its services); their wording, fix and evidence
    are validate_compose's to give. Everything else is folded as :func:`fold` does, errors whole.
    Returns the findings and how many warnings lost a detail."""
    from server.policy.catalog import RULES

    lint = [f for f in findings if f.severity == "warning" and f.rule in RULES]
    rest = fold([f for f in findings if not (f.severity == "warning" and f.rule in RULES)])
    groups: dict[str, list[Finding]] = {}
    for f in lint:
        groups.setdefault(f.rule, []).append(f)
    for group in groups.values():
        first = group[0]
        names = sorted({f.service for f in group if f.service})
        if len(group) == 1:
            rest.append(first.model_copy(update={"fix": None, "evidence": []}))
            continue
        rest.append(Finding(rule=first.rule, severity="warning", category=first.category,
                            service=names[0] if len(names) == 1 else None,
                            message=("" if len(group) == len(names) else f"{len(group)}x ")
                            + f"in {len(names)} service(s): {', '.join(names)}",
                            file=first.file))
    return sort_findings(rest), len(lint)
