"""Policy rules as pure functions: hand-built rendered models and host facts, no Compose, no engine.

These cover what Compose never lets through to the rules (cycles it already refuses, which we
re-check as defence in depth) and every rule that reads host facts, with fakes for the facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.models import Finding
from server.policy import RULES, HostFacts, ImageFact, LintContext, PortHolder, Usage, lint
from server.policy.catalog import finding
from server.policy.reliability import dependency_cycle
from server.policy.shape import parse_image
from server.policy.sizing import propose
from server.policy.waivers import apply_policy
from server.stackmodel import LoadedStack
from server.xdsm import parse_service_settings, parse_stack_settings
from server.yamlsafe import SourceLines

GIB = 1024**3
MIB = 1024**2

GOOD: dict[str, Any] = {
    "image": "dsm-test/web:1.0",
    "healthcheck": {"test": ["CMD", "true"]},
    "deploy": {"resources": {"limits": {"memory": str(256 * MIB), "cpus": 0.5}}},
    "restart": "unless-stopped",
    "user": "1000:1000",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
    "pids_limit": 256,
}


def make_stack(
    services: dict[str, dict[str, Any]],
    *,
    x_dsm: dict[str, Any] | None = None,
    service_dsm: dict[str, dict[str, Any]] | None = None,
    directory: Path | None = None,
    secrets: frozenset[str] = frozenset(),
) -> LoadedStack:
    rendered: dict[str, Any] = {"name": "unit", "services": services}
    if x_dsm is not None:
        rendered["x-dsm"] = x_dsm
    return LoadedStack(
        name="unit",
        directory=directory,
        files=[],
        rendered=rendered,
        settings=parse_stack_settings(x_dsm),
        service_settings={n: parse_service_settings(n, (service_dsm or {}).get(n)) for n in services},
        lines=SourceLines("compose.yaml"),
        secret_values=secrets,
    )


def good(**changes: Any) -> dict[str, Any]:
    svc = {**GOOD, **changes}
    return {k: v for k, v in svc.items() if v is not None}


def run(stack: LoadedStack, facts: HostFacts | None = None) -> list[Finding]:
    return lint(LintContext(stack=stack, facts=facts))


def rules_of(findings: list[Finding], severity: str | None = None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity == severity}


def host(**kw: Any) -> HostFacts:
    base: dict[str, Any] = {
        "engine_local": True, "cpus": 4, "memory_total_bytes": 16 * GIB, "memory_available_bytes": 12 * GIB,
        "disk_total_bytes": 100 * GIB, "disk_free_bytes": 60 * GIB,
    }
    base.update(kw)
    return HostFacts(**base)


def test_a_well_run_service_has_no_findings_at_all() -> None:
    assert rules_of(run(make_stack({"web": good()}))) == {"image-no-digest"}
    pinned = make_stack({"web": good(image="dsm-test/web:1.0@sha256:" + "a" * 64)})
    assert run(pinned) == []
    image = ImageFact("dsm-test/web:1.0@sha256:" + "a" * 64, local=True, healthcheck=True, user="")
    assert run(pinned, host(images={image.ref: image})) == []


def test_dependency_cycle_rule_catches_what_compose_would_let_through() -> None:
    stack = make_stack({
        "a": good(depends_on={"b": {"condition": "service_started"}}),
        "b": good(network_mode="service:c"),
        "c": good(volumes_from=["a:ro"]),
        "d": good(links=["d"]),
    })
    found = list(dependency_cycle(LintContext(stack=stack)))
    paths = sorted(f.evidence[0] for f in found)
    assert paths == ["a -> b -> c -> a", "d -> d"]
    assert all(f.severity == "error" for f in found)
    assert list(dependency_cycle(LintContext(stack=make_stack({"a": good(depends_on={"b": {}}), "b": good()})))) == []


def test_missing_healthcheck_uses_the_image_s_own_healthcheck_when_its_config_was_read() -> None:
    stack = make_stack({"web": good(healthcheck=None)})
    found = run(stack)  # file only: the image's config was not read -> a warning, never the error
    assert "missing-healthcheck" not in rules_of(found)
    unverified = next(f for f in found if f.rule == "healthcheck-unverified")
    assert unverified.severity == "warning" and "check_host is off" in unverified.message
    assert unverified.fix and "healthcheck:" in unverified.fix
    baked = host(images={"dsm-test/web:1.0": ImageFact("dsm-test/web:1.0", local=True, healthcheck=True, user="1000",
                                                       config_source="local")})
    assert {"missing-healthcheck", "healthcheck-unverified"}.isdisjoint(rules_of(run(stack, baked)))
    from_registry = host(images={"dsm-test/web:1.0": ImageFact(
        "dsm-test/web:1.0", local=False, registry="present", healthcheck=True, config_source="registry")})
    assert {"missing-healthcheck", "healthcheck-unverified"}.isdisjoint(rules_of(run(stack, from_registry)))
    bare = host(images={"dsm-test/web:1.0": ImageFact("dsm-test/web:1.0", local=True, healthcheck=False,
                                                      config_source="local")})
    f = next(f for f in run(stack, bare) if f.rule == "missing-healthcheck")
    assert "none in the image" in f.message and f.severity == "error" and f.fix and "healthcheck:" in f.fix
    bare_remote = host(images={"dsm-test/web:1.0": ImageFact(
        "dsm-test/web:1.0", local=False, registry="present", healthcheck=False, config_source="registry")})
    f = next(f for f in run(stack, bare_remote) if f.rule == "missing-healthcheck")
    assert "its registry" in f.message
    # Host checked, but the image neither local nor readable from its registry: still unknown.
    unreadable = host(images={"dsm-test/web:1.0": ImageFact(
        "dsm-test/web:1.0", local=False, registry="unreachable", detail="could not verify: timeout")})
    assert "healthcheck-unverified" in rules_of(run(stack, unreadable))
    assert "missing-healthcheck" not in rules_of(run(stack, unreadable))
    disabled = make_stack({"web": good(healthcheck={"disable": True})})
    assert "missing-healthcheck" in rules_of(run(disabled, baked))  # an explicit disable wins over the image
    assert "missing-healthcheck" in rules_of(run(disabled))  # ... and is known without the host
    # `disable: false`, or only timings: the image's own test stays, so the image decides.
    for keeps in ({"disable": False}, {"interval": "30s", "retries": 3}):
        kept = make_stack({"web": good(healthcheck=keeps)})
        assert {"missing-healthcheck", "healthcheck-unverified"}.isdisjoint(rules_of(run(kept, baked))), keeps
        assert "missing-healthcheck" in rules_of(run(kept, bare)), keeps
        assert "healthcheck-unverified" in rules_of(run(kept)), keeps


def test_waiting_on_an_unverified_healthcheck_is_a_warning_on_the_dependency() -> None:
    stack = make_stack({"db": good(healthcheck=None),
                        "app": good(depends_on={"db": {"condition": "service_healthy"}})})
    found = run(stack)
    assert "dependency-without-healthcheck" not in rules_of(found)
    f = next(f for f in found if f.rule == "healthcheck-unverified")
    assert f.service == "db" and any("app waits for it" in e for e in f.evidence)
    bare = host(images={"dsm-test/web:1.0": ImageFact("dsm-test/web:1.0", local=True, healthcheck=False)})
    assert "dependency-without-healthcheck" in rules_of(run(stack, bare))


def test_images_absent_unverified_present() -> None:
    stack = make_stack({
        "a": good(image="reg:5000/x/a:1"), "b": good(image="reg:5000/x/b:1"), "c": good(image="reg:5000/x/c:1"),
        "d": good(image="local/d:1", build={"context": "."}),
    })
    facts = host(images={
        "reg:5000/x/a:1": ImageFact("reg:5000/x/a:1", local=False, registry="absent", detail="manifest unknown"),
        "reg:5000/x/b:1": ImageFact("reg:5000/x/b:1", local=False, registry="unreachable", detail="refused"),
        "reg:5000/x/c:1": ImageFact("reg:5000/x/c:1", local=False, registry="present"),
        "local/d:1": ImageFact("local/d:1", local=False),
    })
    by = {(f.rule, f.service): f for f in run(stack, facts)}
    assert by[("image-unavailable", "a")].severity == "error"
    unverified = by[("image-unverified", "b")]
    assert unverified.severity == "warning" and "could not verify" in unverified.message
    assert not {("image-unavailable", "c"), ("image-unverified", "c"), ("image-unavailable", "d")} & set(by)


def test_port_holders_on_the_host() -> None:
    port = {"target": 80, "published": "8080", "protocol": "tcp", "host_ip": "127.0.0.1"}
    stack = make_stack({"web": good(ports=[port])})
    other_ip = host(port_holders=[PortHolder("tcp", 8080, "192.168.1.5", "process nginx (pid 1)", "process")])
    assert "port-conflict" not in rules_of(run(stack, other_ip))
    udp = host(port_holders=[PortHolder("udp", 8080, "", "process dnsmasq (pid 1)", "process")])
    assert "port-conflict" not in rules_of(run(stack, udp))
    wildcard = host(port_holders=[PortHolder("tcp", 8080, "0.0.0.0", "container app-web-1 (stack app)", "container")],
                    ports_scope="checked: containers")
    f = next(f for f in run(stack, wildcard) if f.rule == "port-conflict")
    assert "container app-web-1 (stack app)" in f.message and "checked: containers" in f.evidence


def test_insufficient_resources_credits_the_stack_s_own_containers() -> None:
    svc = good(deploy={"replicas": 2, "resources": {"limits": {"memory": str(4 * GIB), "cpus": 1},
                                                     "reservations": {"memory": str(3 * GIB)}}})
    stack = make_stack({"db": svc})  # reserves 2 x 3 GiB = 6 GiB
    tight = host(memory_available_bytes=5 * GIB)
    f = next(f for f in run(stack, tight) if f.rule == "insufficient-resources")
    assert "6.00 GiB" in f.message and any("credited back" in e for e in f.evidence)
    credited = host(memory_available_bytes=5 * GIB, own_usage={"db": Usage(memory_bytes=2 * GIB)})
    assert "insufficient-resources" not in rules_of(run(stack, credited))
    # Headroom: 5% of 16 GiB is kept free, so 6.5 GiB available is not enough for 6 GiB + 0.8 GiB.
    assert "insufficient-resources" in rules_of(run(stack, host(memory_available_bytes=int(6.5 * GIB))))
    assert "insufficient-resources" not in rules_of(run(stack, host(memory_available_bytes=7 * GIB)))
    assert "insufficient-resources" not in rules_of(run(stack, host(memory_available_bytes=None)))


def test_cpu_limit_above_the_host_and_host_level_findings() -> None:
    stack = make_stack({"web": good(deploy={"resources": {"limits": {"memory": str(GIB), "cpus": 8}}})})
    assert "cpu-limit-exceeds-host" in rules_of(run(stack, host(cpus=4)), "error")
    assert "cpu-limit-exceeds-host" not in rules_of(run(stack, host(cpus=16)))
    ok = make_stack({"web": good()})
    assert rules_of(run(ok, host(disk_free_bytes=1 * GIB)), "error") == {"disk-space"}
    assert rules_of(run(ok, host(disk_free_bytes=8 * GIB)), "warning") == {"disk-space"}
    assert rules_of(run(ok, host(memory_available_bytes=GIB // 2)), "error") >= {"host-pressure"}
    assert "host-pressure" in rules_of(run(ok, host(cpu_used_percent=99.0)))
    assert "host-pressure" not in rules_of(run(ok, host(cpu_used_percent=80.0)))


def test_no_resource_limits_proposes_from_observed_usage_else_by_family() -> None:
    stack = make_stack({"db": good(image="supabase/postgres:15.8.1.060", deploy=None),
                        "cache": good(image="redis:7.2", deploy={"resources": {"limits": {"memory": str(GIB)}}})})
    found = {(f.rule, f.service): f for f in run(stack)}
    f = found[("no-resource-limits", "db")]
    assert f.severity == "error" and "memory: 1g" in (f.fix or "") and 'cpus: "2"' in (f.fix or "")
    assert found[("no-cpu-limit", "cache")].severity == "info"
    observed = host(own_usage={"db": Usage(memory_bytes=300 * MIB)})
    f = next(f for f in run(stack, observed) if f.rule == "no-resource-limits")
    assert "memory: 640m" in (f.fix or "") and "in use now" in f.message


def test_sizing_families_and_image_parsing() -> None:
    assert propose("postgrest/postgrest:v12", None).memory_bytes == 256 * MIB  # not mistaken for postgres
    assert propose("supabase/postgres-meta:v0.91", None).memory_bytes == 256 * MIB
    assert propose("ghcr.io/example/unknown:1", None).memory_bytes == 512 * MIB
    assert propose("x", 3 * GIB, replicas=3).memory_bytes == 2 * GIB
    ref = parse_image("127.0.0.1:5000/dsm-test/web:1.0@sha256:abc")
    assert (ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000/dsm-test/web", "1.0", "sha256:abc")
    assert parse_image("127.0.0.1:5000/web").tag is None


def test_policy_severity_off_override_waivers_and_development() -> None:
    services = {"web": good(image="busybox", privileged=True), "mon": good(image="busybox:1", pid="host")}
    plain = run(make_stack(services))
    assert {("privileged", "error"), ("host-namespace", "error"), ("image-unpinned", "warning")} <= {
        (f.rule, f.severity) for f in plain}
    stack = make_stack(
        services,
        x_dsm={"environment": "development",
               "policy": {"severity": {"image-no-digest": "off", "privileged": "warning"},
                          "waive": [{"rule": "host-namespace", "services": ["mon"], "reason": "monitors the host"}]}},
        service_dsm={"web": {"waive": [{"rule": "privileged", "reason": "needs /dev/kvm"}]}},
    )
    by = {(f.rule, f.service): f for f in run(stack)}
    assert by[("image-unpinned", "web")].severity == "info"  # relaxed in development
    assert ("image-no-digest", "mon") not in by  # off
    waived = by[("privileged", "web")]
    assert waived.severity == "info" and waived.message.startswith("waived: ")
    assert "waived by x-dsm: needs /dev/kvm" in waived.evidence
    assert by[("host-namespace", "mon")].severity == "info"
    assert "waived by x-dsm: monitors the host" in by[("host-namespace", "mon")].evidence


def test_unknown_rule_or_service_in_policy_is_a_warning() -> None:
    stack = make_stack(
        {"web": good()},
        x_dsm={"policy": {"severity": {"no-such-rule": "off"},
                          "waive": [{"rule": "privileged", "services": ["ghost"], "reason": "r"}]}},
        service_dsm={"web": {"waive": [{"rule": "typo-rule", "reason": "r"}]}},
    )
    msgs = [f.message for f in run(stack) if f.rule == "policy-unknown-reference"]
    assert len(msgs) == 3 and any("ghost" in m for m in msgs) and any("typo-rule" in m for m in msgs)


def test_hints_fold_into_one_finding_per_rule_and_secrets_are_scrubbed() -> None:
    services = {n: good(cap_drop=None) for n in ("a", "b", "c")}
    hints = [f for f in run(make_stack(services)) if f.rule == "no-cap-drop"]
    assert len(hints) == 1 and hints[0].service is None and "a, b, c" in hints[0].message
    raw = [finding("plaintext-secret", "value s3cr3t-value-123 leaked", service="a", evidence=["s3cr3t-value-123"])]
    out = apply_policy(make_stack(services, secrets=frozenset({"s3cr3t-value-123"})), raw)
    assert "s3cr3t-value-123" not in out[0].message + "".join(out[0].evidence)


def test_catalog_is_the_public_contract() -> None:
    required = {
        "compose-syntax": "error", "compose-invalid": "error", "dependency-cycle": "error",
        "undefined-reference": "error", "missing-variable": "error", "port-conflict": "error",
        "missing-healthcheck": "error", "no-resource-limits": "error", "image-unpinned": "warning",
        "image-unavailable": "error", "plaintext-secret": "warning", "privileged": "error",
        "docker-socket": "error", "host-namespace": "error", "host-path-mount": "error",
        "dangerous-capability": "error", "insufficient-resources": "error",
    }
    for rule, severity in required.items():
        assert RULES[rule].severity == severity, rule
    assert {RULES[r].category for r in ("privileged", "docker-socket", "host-namespace", "host-path-mount",
                                         "dangerous-capability")} == {"security"}
    assert all(r.severity == "info" for r in RULES.values() if r.hint)


@pytest.mark.parametrize(
    ("source", "ro", "expected"),
    [
        ("/", False, ("host-path-mount", "error")),
        ("/etc", True, ("host-path-mount", "warning")),
        ("/root/.ssh", True, ("host-path-mount", "warning")),
        ("/run/containerd/containerd.sock", True, ("docker-socket", "error")),
        ("/etc/localtime", True, None),
        ("/srv/media", True, None),
    ],
)
def test_host_path_classes(source: str, ro: bool, expected: tuple[str, str] | None) -> None:
    mount = {"type": "bind", "source": source, "target": "/x", "read_only": ro}
    found = {(f.rule, f.severity) for f in run(make_stack({"web": good(volumes=[mount])}))
             if f.category == "security"}
    assert found == ({expected} if expected else set())


def test_a_service_built_from_a_dockerfile_has_an_unverified_healthcheck() -> None:
    stack = make_stack({"app": good(image=None, healthcheck=None, build={"context": "."})})
    found = [f for f in run(stack, host()) if f.rule in ("missing-healthcheck", "healthcheck-unverified")]
    assert [(f.rule, f.severity) for f in found] == [("healthcheck-unverified", "warning")]
    assert "Dockerfile" in found[0].message
