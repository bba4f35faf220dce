"""Lint rules over a rendered stack: pure functions, one small module per family.

:func:`lint` runs every rule over a :class:`LintContext` and applies the stack's ``x-dsm``
policy once, at the end (:mod:`server.policy.waivers`). Rule ids and default severities are
listed in :mod:`server.policy.catalog`; they are a public contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from server.models import Finding
from server.policy import (
    engine_refusals,
    hardening,
    images,
    network,
    reliability,
    remote,
    resources,
    secrets,
    security,
    variables,
)
from server.policy.catalog import RULES, Rule, finding
from server.policy.context import HostFacts, ImageFact, LintContext, PortHolder, Usage
from server.policy.waivers import apply_policy

RuleFn = Callable[[LintContext], Iterable[Finding]]

ALL_RULES: list[RuleFn] = [
    *variables.RULES,
    *reliability.RULES,
    *resources.RULES,
    *network.RULES,
    *images.RULES,
    *secrets.RULES,
    *security.RULES,
    *hardening.RULES,
    *engine_refusals.RULES,
    *remote.RULES,
]


def run_rules(ctx: LintContext, rules: Iterable[RuleFn] = ALL_RULES) -> list[Finding]:
    """Raw findings of ``rules``, before the stack's policy is applied."""
    out: list[Finding] = []
    for rule in rules:
        out.extend(rule(ctx))
    return out


def lint(ctx: LintContext, rules: Iterable[RuleFn] = ALL_RULES) -> list[Finding]:
    """Every finding for the stack, with its x-dsm policy applied, secrets scrubbed, sorted."""
    return apply_policy(ctx.stack, run_rules(ctx, rules))


__all__ = [
    "ALL_RULES",
    "RULES",
    "HostFacts",
    "ImageFact",
    "LintContext",
    "PortHolder",
    "Rule",
    "Usage",
    "apply_policy",
    "finding",
    "lint",
    "run_rules",
]
