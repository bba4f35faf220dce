"""Labelled cases per rule (tests/rule_cases/<rule>.yaml), positive and negative, one parametrized test.

Each case is a compose file (plus any files the stack holds: .env, .env.example, directories)
rendered by the real ``docker compose config``, linted, and labelled with what the file's rule
must say: ``expect: error | warning | info`` (a finding of that rule at that severity, on
``service`` when given) or ``expect: none`` (no finding of that rule). ``facts`` gives host facts
for rules that need them (``api_version``). A case the rule is known to get wrong carries
``wrong: <why>`` and runs as a strict xfail, so it is counted and noticed when fixed.

All cases render concurrently once per session (Compose costs ~0.3 s a call).
``python -m tests.test_rule_cases`` prints how many cases each rule gets right.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.compose import ComposeRunner
from server.models import Finding
from server.policy import HostFacts, LintContext, PortHolder, lint
from server.preflight.validation import source_context
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stackmodel import LoadedStack
from server.yamlsafe import load_yaml

CASES_DIR = Path(__file__).resolve().parent / "rule_cases"


@dataclass
class Case:
    rule: str
    name: str
    compose: str
    expect: str
    service: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    wrong: str | None = None

    @property
    def id(self) -> str:
        return f"{self.rule}:{self.name}"


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = load_yaml(path.read_text(), str(path)).data
        rule = doc["rule"]
        for raw in doc["cases"]:
            cases.append(Case(rule=rule, name=raw["name"], compose=raw["compose"], expect=str(raw["expect"]),
                              service=raw.get("service"), files=raw.get("files") or {}, facts=raw.get("facts"),
                              env=raw.get("env") or {}, wrong=raw.get("wrong")))
    return cases


CASES = load_cases()


def slug(case: Case) -> str:
    return "".join(c if c.isalnum() else "-" for c in case.id.lower())[:60]


async def render_all(root: Path) -> dict[str, LoadedStack | list[Finding]]:
    settings = Settings(stacks_root=root, state_dir=root.parent / "state")
    compose = ComposeRunner(settings)
    out: dict[str, LoadedStack | list[Finding]] = {}
    limit = anyio.Semaphore(4)

    async def one(case: Case) -> None:
        directory = root / slug(case)
        directory.mkdir()
        (directory / "compose.yaml").write_text(case.compose)
        for rel, text in case.files.items():
            target = directory / rel
            if rel.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        async with limit:
            try:
                out[case.id] = await load_stack(settings, compose, path=directory.name, env=case.env)
            except StackRenderFailed as exc:
                out[case.id] = exc.findings

    async with anyio.create_task_group() as tg:
        for case in CASES:
            tg.start_soon(one, case)
    return out


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedStack | list[Finding]]:
    root = tmp_path_factory.mktemp("rule-cases") / "stacks"
    root.mkdir()
    return anyio.run(render_all, root)


def findings_for(case: Case, stack: LoadedStack | list[Finding]) -> list[Finding]:
    if isinstance(stack, list):
        raise AssertionError(f"{case.id}: Compose did not render the case: {[f.message for f in stack]}")
    ctx = source_context(stack, env=case.env)
    if case.facts is not None:
        facts: dict[str, Any] = {"engine_local": True, **case.facts}
        facts["port_holders"] = [PortHolder(**h) for h in facts.get("port_holders") or []]
        ctx = LintContext(stack=stack, defined_variables=ctx.defined_variables,
                          facts=HostFacts(**facts))
    return [f for f in lint(ctx) if f.rule == case.rule]


def verdict(case: Case, found: list[Finding]) -> bool:
    if case.service is not None:
        found = [f for f in found if f.service == case.service or f.service is None]
    if case.expect == "none":
        return not found
    return any(f.severity == case.expect for f in found)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.wrong)] if c.wrong else [])
     for c in CASES],
)
def test_rule_case(case: Case, rendered: dict[str, LoadedStack | list[Finding]]) -> None:
    found = findings_for(case, rendered[case.id])
    assert verdict(case, found), (case.expect, [(f.severity, f.service, f.message) for f in found])


def test_every_case_file_has_positive_and_negative_cases() -> None:
    by_rule: dict[str, set[str]] = {}
    for c in CASES:
        by_rule.setdefault(c.rule, set()).add("none" if c.expect == "none" else "finding")
    assert by_rule and all(kinds == {"none", "finding"} for kinds in by_rule.values()), by_rule


def main() -> int:
    """Per rule: cases right / cases, positives and negatives apart."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "stacks"
        root.mkdir()
        stacks = anyio.run(render_all, root)
        table: dict[str, list[int]] = {}
        for case in CASES:
            right = verdict(case, findings_for(case, stacks[case.id]))
            row = table.setdefault(case.rule, [0, 0, 0, 0])
            row[0 if case.expect != "none" else 2] += right
            row[1 if case.expect != "none" else 3] += 1
        print(f"{'rule':32} {'right':>7} {'positive':>9} {'negative':>9}")
        for rule, (pr, pn, nr, nn) in sorted(table.items()):
            print(f"{rule:32} {pr + nr:>3}/{pn + nn:<3} {pr:>4}/{pn:<4} {nr:>4}/{nn:<4}")
        total = [sum(r[i] for r in table.values()) for i in range(4)]
        print(f"{'total':32} {total[0] + total[2]:>3}/{total[1] + total[3]:<3}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
