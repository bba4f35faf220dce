"""x-dsm policy over findings, one promise per case: a waiver covers exactly the services it names,
severity overrides and development relaxation change only what they name, waived findings stay
visible, unknown references are reported, secrets are scrubbed, hints fold per rule."""

from __future__ import annotations

from typing import Any

import pytest

from server.models import Finding
from server.policy.catalog import RULES, finding
from server.policy.waivers import apply_policy
from server.redact import MASK
from tests.test_policy_units import good, make_stack

SERVICES = {"a": good(), "b": good(), "c": good()}


def policy(findings: list[Finding], **kw: Any) -> dict[tuple[str, str | None], Finding]:
    out = apply_policy(make_stack(SERVICES, **kw), findings)
    return {(f.rule, f.service): f for f in out}


def privileged(*services: str | None) -> list[Finding]:
    return [finding("privileged", f"{s} runs privileged", service=s, fix="drop privileged") for s in services]


def is_waived(f: Finding, reason: str) -> bool:
    return f.severity == "info" and f.message.startswith("waived: ") and f.evidence[-1] == f"waived by x-dsm: {reason}"


def untouched(f: Finding) -> bool:
    return f.severity == "error" and not f.message.startswith("waived") and f.evidence == []


@pytest.mark.parametrize(
    ("scope", "waived"),
    [
        (["a"], {"a"}),
        (["a", "c"], {"a", "c"}),
        ([], set()),
        (None, {"a", "b", "c", None}),  # no services: the whole stack, service-less findings too
    ],
)
def test_a_top_level_waiver_covers_exactly_its_services(scope: list[str] | None, waived: set[str | None]) -> None:
    waiver: dict[str, Any] = {"rule": "privileged", "reason": "needs /dev/kvm"}
    if scope is not None:
        waiver["services"] = scope
    by = policy(privileged("a", "b", "c", None), x_dsm={"policy": {"waive": [waiver]}})
    for service in ("a", "b", "c", None):
        f = by[("privileged", service)]
        assert is_waived(f, "needs /dev/kvm") if service in waived else untouched(f), (service, f)


def test_a_service_s_own_waiver_covers_only_that_service() -> None:
    by = policy(privileged("a", "b", None), service_dsm={"b": {"waive": [{"rule": "privileged", "reason": "kvm"}]}})
    assert is_waived(by[("privileged", "b")], "kvm")
    assert untouched(by[("privileged", "a")]) and untouched(by[("privileged", None)])


def test_a_waiver_covers_only_its_rule() -> None:
    findings = [*privileged("a"), finding("host-namespace", "a shares the host pid namespace", service="a")]
    by = policy(findings, x_dsm={"policy": {"waive": [{"rule": "host-namespace", "reason": "monitor"}]}},
                service_dsm={"a": {"waive": [{"rule": "host-namespace", "reason": "own"}]}})
    assert untouched(by[("privileged", "a")])
    assert is_waived(by[("host-namespace", "a")], "own")  # the service's own waiver is the one quoted


def test_waived_findings_keep_their_text_and_fix() -> None:
    [f] = apply_policy(make_stack(SERVICES, x_dsm={"policy": {"waive": [{"rule": "privileged", "reason": "r"}]}}),
                       privileged("a"))
    assert f.message == "waived: a runs privileged" and f.fix == "drop privileged" and f.rule == "privileged"


def test_severity_override_and_off() -> None:
    findings = [*privileged("a"), finding("image-unpinned", "a: busybox", service="a"),
                finding("no-cap-drop", "a keeps caps", service="a")]
    by = policy(findings, x_dsm={"policy": {"severity": {"privileged": "warning", "image-unpinned": "off",
                                                         "no-cap-drop": "info"}}})
    assert by[("privileged", "a")].severity == "warning"
    assert by[("privileged", "a")].evidence == ["severity warning set by x-dsm policy"]
    assert ("image-unpinned", "a") not in by
    assert by[("no-cap-drop", "a")].evidence == []  # already info: nothing to say
    # A waiver still wins over a severity override.
    both = policy(privileged("a"), x_dsm={"policy": {"severity": {"privileged": "warning"},
                                                     "waive": [{"rule": "privileged", "reason": "r"}]}})
    assert both[("privileged", "a")].severity == "info"


def test_development_relaxes_only_its_rules() -> None:
    findings = [*privileged("a"), finding("image-unpinned", "a: busybox", service="a"),
                finding("image-unpinned", "b: busybox", service="b", severity="info")]
    dev = policy(findings, x_dsm={"environment": "development"})
    assert dev[("image-unpinned", "a")].severity == "info"
    assert dev[("image-unpinned", "a")].evidence == ["relaxed to info: x-dsm environment is development"]
    assert dev[("image-unpinned", "b")].evidence == []
    assert untouched(dev[("privileged", "a")])
    prod = policy(findings, x_dsm={"environment": "production"})
    assert prod[("image-unpinned", "a")].severity == RULES["image-unpinned"].severity != "info"


def test_unknown_rules_and_services_are_reported_once_each() -> None:
    stack = make_stack(
        SERVICES,
        x_dsm={"policy": {"severity": {"no-such-rule": "off", "privileged": "warning"},
                          "waive": [{"rule": "typo", "reason": "r"},
                                    {"rule": "privileged", "services": ["a", "ghost"], "reason": "r"}]}},
        service_dsm={"b": {"waive": [{"rule": "nope", "reason": "r"}, {"rule": "privileged", "reason": "r"}]}},
    )
    messages = sorted(f.message for f in apply_policy(stack, []))
    assert messages == sorted([
        "policy.severity names unknown rule 'no-such-rule': the setting has no effect (a typo?)",
        "policy.waive names unknown rule 'typo': the setting has no effect (a typo?)",
        "policy.waive of 'privileged' names unknown service 'ghost': the setting has no effect (a typo?)",
        "service 'b' waives unknown rule 'nope': the setting has no effect (a typo?)",
    ])
    assert {f.severity for f in apply_policy(stack, [])} == {"warning"}
    assert apply_policy(make_stack(SERVICES), []) == []


def test_known_secrets_and_url_credentials_are_scrubbed_everywhere() -> None:
    secret = "hunter2-long-secret"
    raw = [finding("plaintext-secret", f"DB_PASSWORD={secret}", service="a", fix=f"remove {secret}",
                   evidence=[f"value {secret}", "url postgres://app:pw-in-url@db/x", "plain"])]
    [f] = apply_policy(make_stack(SERVICES, secrets=frozenset({secret, "abc"})), raw)
    text = f.message + f.fix + "".join(f.evidence)  # type: ignore[operator]
    assert secret not in text and "pw-in-url" not in text and MASK in f.message and MASK in f.fix  # type: ignore[operator]
    assert f.evidence[2] == "plain"
    short = [finding("plaintext-secret", "abc is too short to mask safely", service="a")]
    assert apply_policy(make_stack(SERVICES, secrets=frozenset({"abc"})), short)[0].message.startswith("abc ")


def test_hints_fold_into_one_finding_per_rule() -> None:
    hints = [finding("no-cap-drop", f"{s} keeps its capabilities", service=s, line=i, fix="cap_drop: [ALL]")
             for i, s in enumerate(("c", "a", "b"), start=3)]
    [folded] = apply_policy(make_stack(SERVICES), hints)
    assert folded.rule == "no-cap-drop" and folded.severity == "info" and folded.service is None
    assert folded.message == f"{RULES['no-cap-drop'].summary}: 3 service(s): a, b, c"
    assert folded.line is None and folded.fix == "cap_drop: [ALL]"
    assert folded.evidence == ["c: c keeps its capabilities", "a: a keeps its capabilities",
                               "b: b keeps its capabilities"]
    mixed = [*hints[:2], finding("no-cap-drop", "b", service="b", fix="other fix")]
    assert apply_policy(make_stack(SERVICES), mixed)[0].fix == "per service: see evidence"


def test_what_does_not_fold() -> None:
    one = [finding("no-cap-drop", "a keeps caps", service="a", line=7)]
    assert apply_policy(make_stack(SERVICES), one) == one  # a single finding stays as it was
    two_in_one_service = [finding("no-cap-drop", f"a keeps caps {i}", service="a", line=7, fix="f") for i in (1, 2)]
    [f] = apply_policy(make_stack(SERVICES), two_in_one_service)
    assert f.service == "a" and f.line == 7
    many = [finding("no-cap-drop", f"s{i}", service=f"s{i}") for i in range(25)]
    assert len(apply_policy(make_stack(SERVICES), many)[0].evidence) == 20
    # Waived or raised hints keep their own findings.
    waived = apply_policy(make_stack(SERVICES, x_dsm={"policy": {"waive": [{"rule": "no-cap-drop", "reason": "r"}]}}),
                          [finding("no-cap-drop", s, service=s) for s in "ab"])
    assert len(waived) == 2
    raised = apply_policy(make_stack(SERVICES, x_dsm={"policy": {"severity": {"no-cap-drop": "warning"}}}),
                          [finding("no-cap-drop", s, service=s) for s in "ab"])
    assert [f.severity for f in raised] == ["warning", "warning"]
    errors = [finding("privileged", s, service=s) for s in "ab"]  # not a hint rule
    assert len(apply_policy(make_stack(SERVICES), errors)) == 2


def test_output_is_sorted_errors_first() -> None:
    out = apply_policy(make_stack(SERVICES), [finding("no-cap-drop", "x", service="a"), *privileged("b")])
    assert [f.severity for f in out] == ["error", "info"]


def test_a_waiver_later_in_the_list_still_applies() -> None:
    waive = [{"rule": "host-namespace", "reason": "other"}, {"rule": "privileged", "services": ["b"], "reason": "x"},
             {"rule": "privileged", "services": ["a"], "reason": "kvm"}]
    by = policy(privileged("a"), x_dsm={"policy": {"waive": waive}})
    assert is_waived(by[("privileged", "a")], "kvm")


@pytest.mark.parametrize("where", ["message", "fix", "evidence"])
def test_a_secret_in_any_one_field_is_scrubbed(where: str) -> None:
    secret = "abcd"  # four characters: the shortest value that is masked
    fields = {"message": "m", "fix": "f", "evidence": ["e"]}
    fields[where] = [f"saw {secret}"] if where == "evidence" else f"saw {secret}"
    raw = [finding("plaintext-secret", fields["message"], service="a", fix=fields["fix"],  # type: ignore[arg-type]
                   evidence=fields["evidence"])]  # type: ignore[arg-type]
    [f] = apply_policy(make_stack(SERVICES, secrets=frozenset({secret})), raw)
    assert secret not in f.message + (f.fix or "") + "".join(f.evidence)
    assert MASK in {"message": f.message, "fix": f.fix, "evidence": "".join(f.evidence)}[where]


def test_unknown_references_point_at_the_x_dsm_block_and_say_what_to_use() -> None:
    from dataclasses import replace

    from server.yamlsafe import SourceLines

    stack = make_stack(SERVICES, x_dsm={"policy": {"severity": {"nope": "off"}}})
    stack = replace(stack, lines=SourceLines("compose.yaml", {("x-dsm",): 3, ("services",): 9}))
    [f] = apply_policy(stack, [])
    assert f.line == 3 and f.rule == "policy-unknown-reference" and f.severity == "warning"
    assert f.fix == "use a rule id from the validate_compose findings or the README's rule list"


def test_one_rule_with_a_single_hint_does_not_stop_the_folding_of_the_next() -> None:
    hints = [finding("no-cap-drop", "a keeps caps", service="a"),
             *[finding("writable-rootfs", f"{s} writes", service=s) for s in ("a", "b")]]
    out = apply_policy(make_stack(SERVICES), hints)
    assert sorted((f.rule, f.service) for f in out) == [("no-cap-drop", "a"), ("writable-rootfs", None)]


def test_a_fold_within_one_service_keeps_the_first_line() -> None:
    two = [finding("no-cap-drop", f"a keeps caps {i}", service="a", line=line, fix="f") for i, line in ((1, 7), (2, 9))]
    [f] = apply_policy(make_stack(SERVICES), two)
    assert f.service == "a" and f.line == 7
