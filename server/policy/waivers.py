"""The one place where a stack's ``x-dsm`` policy changes what the rules said.

Order: rule default -> relaxed in ``environment: development`` -> ``policy.severity`` override
(``off`` drops the finding) -> waivers (top-level ``policy.waive`` for some or all services, and
a service's own ``waive``). A waived finding stays visible as info, with the reason, so nobody
wonders where it went. Then every text is scrubbed of the stack's secret values, and hardening
hints that apply to several services are folded into one finding per rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.models import Finding, Severity, sort_findings
from server.policy.catalog import DEVELOPMENT_RELAXED, RULES, finding
from server.redact import Scrubber
from server.stackmodel import LoadedStack

_WAIVED = "waived: "


def apply_policy(stack: LoadedStack, findings: Iterable[Finding]) -> list[Finding]:
    policy = stack.settings.policy
    out: list[Finding] = []
    for f in findings:
        severity: Severity = f.severity
        evidence = list(f.evidence)
        if stack.settings.environment == "development" and f.rule in DEVELOPMENT_RELAXED and severity != "info":
            severity = "info"
            evidence.append("relaxed to info: x-dsm environment is development")
        override = policy.severity.get(f.rule)
        if override == "off":
            continue
        if override is not None and override != severity:
            severity = override
            evidence.append(f"severity {override} set by x-dsm policy")
        reason = _waiver(stack, f)
        message = f.message
        if reason is not None:
            severity = "info"
            message = _WAIVED + message
            evidence.append(f"waived by x-dsm: {reason}")
        if severity != f.severity or message != f.message or evidence != f.evidence:
            f = f.model_copy(update={"severity": severity, "message": message, "evidence": evidence})
        out.append(f)
    out.extend(_unknown_references(stack))
    scrub = _Scrub(stack.secret_values)
    return sort_findings([_scrubbed(f, scrub) for f in _fold_hints(out)])


def _waiver(stack: LoadedStack, f: Finding) -> str | None:
    if f.service is not None:
        for w in stack.service_settings_for(f.service).waive:
            if w.rule == f.rule:
                return w.reason
    for w in stack.settings.policy.waive:
        if w.rule != f.rule:
            continue
        if w.services is None or (f.service is not None and f.service in w.services):
            return w.reason
    return None


def _unknown_references(stack: LoadedStack) -> list[Finding]:
    policy = stack.settings.policy
    problems: list[str] = []
    for rule in policy.severity:
        if rule not in RULES:
            problems.append(f"policy.severity names unknown rule {rule!r}")
    for w in policy.waive:
        if w.rule not in RULES:
            problems.append(f"policy.waive names unknown rule {w.rule!r}")
        for svc in w.services or []:
            if svc not in stack.services and svc not in stack.inactive:
                problems.append(f"policy.waive of {w.rule!r} names unknown service {svc!r}")
    for svc in sorted(stack.services):
        for w in stack.service_settings_for(svc).waive:
            if w.rule not in RULES:
                problems.append(f"service {svc!r} waives unknown rule {w.rule!r}")
    return [
        finding(
            "policy-unknown-reference",
            f"{p}: the setting has no effect (a typo?)",
            line=stack.line_of(None, "x-dsm"),
            fix="use a rule id from the validate_compose findings or the README's rule list",
        )
        for p in problems
    ]


class _Scrub:
    """server.redact.Scrubber, skipped for texts that can hold no secret (the common case, and hot)."""

    def __init__(self, secrets: frozenset[str]) -> None:
        self._scrubber = Scrubber(secrets)
        self._secrets = [s for s in secrets if len(s) >= 4]

    def __call__(self, text: str) -> str:
        if "://" not in text and not any(s in text for s in self._secrets):
            return text
        return self._scrubber(text)


def _scrubbed(f: Finding, scrub: _Scrub) -> Finding:
    message = scrub(f.message)
    fix = scrub(f.fix) if f.fix else f.fix
    evidence = [scrub(e) for e in f.evidence]
    if message == f.message and fix == f.fix and evidence == f.evidence:
        return f
    return f.model_copy(update={"message": message, "fix": fix, "evidence": evidence})


def _fold_hints(findings: list[Finding]) -> list[Finding]:
    """One finding per hint rule (still info, not waived) listing every service it applies to."""
    groups: dict[str, list[Finding]] = {}
    out: list[Finding] = []
    for f in findings:
        meta = RULES.get(f.rule)
        if meta and meta.hint and f.severity == "info" and not f.message.startswith(_WAIVED):
            groups.setdefault(f.rule, []).append(f)
        else:
            out.append(f)
    for rule, group in groups.items():
        if len(group) == 1:
            out.extend(group)
            continue
        services = sorted({f.service for f in group if f.service})
        fixes = {f.fix for f in group}
        out.append(
            Finding(
                rule=rule,
                severity="info",
                category=group[0].category,
                service=services[0] if len(services) == 1 else None,
                message=f"{RULES[rule].summary}: {len(services)} service(s): {', '.join(services)}",
                line=group[0].line if len(services) == 1 else None,
                fix=group[0].fix if len(fixes) == 1 else "per service: see evidence",
                evidence=[f"{f.service}: {f.message}" for f in group][:20],
            )
        )
    return out
