"""Every lint rule, positive and negative, on compose files rendered by the real `docker compose config`.

No engine needed (check_host=False): Compose renders without one. Host-dependent rules are in
test_preflight_host.py; pure edge cases with fake host facts in test_policy_units.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.compose import ComposeRunner
from server.models import Finding
from server.preflight.reports import ValidationReport
from server.preflight.validation import validate
from server.settings import Settings

pytestmark = pytest.mark.anyio

# A service that passes every rule: start from it and break one thing per test.
OK = """\
    image: dsm-test/web:1.0@sha256:{digest}
    restart: unless-stopped
    user: "1000:1000"
    read_only: true
    cap_drop: [ALL]
    security_opt: ["no-new-privileges:true"]
    logging: {{driver: json-file, options: {{max-size: 10m}}}}
    healthcheck: {{test: ["CMD", "true"]}}
    deploy: {{resources: {{limits: {{memory: 64m, cpus: "0.5", pids: 256}}}}}}
""".format(digest="a" * 64)


def svc(name: str, extra: str = "", base: str = OK) -> str:
    """A service block: the OK body with ``extra`` lines (4-space indented) appended."""
    return f"  {name}:\n{base}{extra}"


async def check(settings: Settings, content: str, env: dict[str, str] | None = None) -> ValidationReport:
    return await validate(settings, ComposeRunner(settings), _no_engine, content=content, env=env, check_host=False)


def _no_engine() -> Any:
    raise AssertionError("check_host=False must not touch the engine")


def of(report: ValidationReport, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule == rule]


async def test_clean_stack_has_no_findings(settings: Settings) -> None:
    report = await check(settings, "services:\n" + svc("web") + svc("api"))
    assert report.valid and report.go and report.findings == [], report.findings
    assert report.services == ["api", "web"] and report.summary.startswith("GO")


# ------------------------------------------------------------------------------ rendering
async def test_compose_syntax_has_the_real_line_and_column(settings: Settings) -> None:
    content = "services:\n  web:\n    image: x:1\n    ports:\n      - 80\n     bad: [\n"
    report = await check(settings, content)
    assert not report.valid and not report.go
    f = report.findings[0]
    assert f.rule == "compose-syntax" and f.line == 6 and f.evidence and "column" in f.evidence[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("services:\n  web:\n    image: x:1\n    container_name: fixed\n    deploy: {replicas: 2}\n", "container"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "Kubernetes"),
        ("just: a mapping\n", "no services"),
        ("services:\n  web:\n    image: x:1\n    ports: 8080\n", "ports"),
    ],
)
async def test_compose_invalid(settings: Settings, content: str, needle: str) -> None:
    report = await check(settings, content)
    assert not report.valid and not report.go
    assert [f.rule for f in report.findings] == ["compose-invalid"]
    assert needle.lower() in report.findings[0].message.lower()


async def test_compose_invalid_names_the_service_and_line(settings: Settings) -> None:
    report = await check(settings, "services:\n  a:\n    image: x:1\n  web:\n    image: x:1\n    mem_limit: lots\n")
    f = report.findings[0]
    assert f.rule == "compose-invalid" and f.service == "web" and f.line == 6


async def test_dependency_cycle_spelled_out(settings: Settings) -> None:
    content = "services:\n" + svc("a", "    depends_on: [b]\n") + svc("b", "    depends_on: [c]\n") + svc(
        "c", "    depends_on: [a]\n")
    report = await check(settings, content)
    f = of(report, "dependency-cycle")[0]
    assert not report.valid and f.severity == "error"
    assert "->" in f.message and f.line is not None
    no_cycle = "services:\n" + svc("a", "    depends_on: [b]\n") + svc("b")
    assert (await check(settings, no_cycle)).go


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("    networks: [nope]\n", "network"),
        ("    volumes: ['nope:/data']\n", "volume"),
        ("    secrets: [nope]\n", "secret"),
        ("    configs: [nope]\n", "config"),
        ("    depends_on: [nope]\n", "service"),
    ],
)
async def test_undefined_reference(settings: Settings, extra: str, kind: str) -> None:
    report = await check(settings, "services:\n" + svc("web", extra))
    f = report.findings[0]
    assert f.rule == "undefined-reference" and "nope" in f.message and f.service == "web", report.findings
    assert kind in f.message


async def test_missing_variable_names_the_variable(settings: Settings) -> None:
    content = "services:\n" + svc("web", "    environment:\n      TOKEN_URL: ${AUTH_URL:?set AUTH_URL}\n")
    report = await check(settings, content)
    f = report.findings[0]
    assert f.rule == "missing-variable" and "AUTH_URL" in f.message and f.line == 13
    assert (await check(settings, content, env={"AUTH_URL": "http://auth"})).go


# ------------------------------------------------------------------------------ variables
async def test_unset_variable(settings: Settings) -> None:
    content = "services:\n" + svc("web", "    environment:\n      A: ${ALPHA}\n      B: $BETA\n      C: ${GAMMA:-x}\n"
                                   "      D: $$NOT_A_VAR  # ${IN_COMMENT}\n")
    report = await check(settings, content)
    names = sorted(f.evidence[0] for f in of(report, "unset-variable"))
    assert names == ["variable ALPHA", "variable BETA"]
    assert all(f.severity == "warning" for f in of(report, "unset-variable"))
    assert of(report, "unset-variable")[0].line == 13
    assert not of(await check(settings, content, env={"ALPHA": "1", "BETA": "2"}), "unset-variable")


# ------------------------------------------------------------------------------ ports
async def test_port_published_twice(settings: Settings) -> None:
    content = "services:\n" + svc("a", "    ports: ['8080:80']\n") + svc("b", "    ports: ['127.0.0.1:8080:81']\n")
    f = of(await check(settings, content), "port-conflict")[0]
    assert f.severity == "error" and "8080" in f.message and "'a'" in f.message and "'b'" in f.message


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("127.0.0.1:8080:80", "192.168.77.1:8080:80"),  # different addresses
        ("8080:80/tcp", "8080:80/udp"),  # different protocols
        ("8080:80", "8081:80"),
        ("80", "80"),  # ephemeral host ports
    ],
)
async def test_ports_that_do_not_conflict(settings: Settings, a: str, b: str) -> None:
    content = "services:\n" + svc("a", f"    ports: ['{a}']\n") + svc("b", f"    ports: ['{b}']\n")
    assert not of(await check(settings, content), "port-conflict")


async def test_fixed_port_with_replicas_conflicts(settings: Settings) -> None:
    base = OK.replace('deploy: {resources: {limits: {memory: 64m, cpus: "0.5", pids: 256}}}',
                      'deploy: {replicas: 3, resources: {limits: {memory: 64m, cpus: "0.5", pids: 256}}}')
    report = await check(settings, "services:\n" + svc("web", "    ports: ['8080:80']\n", base=base))
    assert "3 replicas" in of(report, "port-conflict")[0].message
    assert not of(await check(settings, "services:\n" + svc("web", "    ports: ['80']\n", base=base)), "port-conflict")


@pytest.mark.parametrize(("ports", "replicas", "conflict"), [
    ("18631-18632:80", 2, False),  # a range wide enough for the replicas
    ("18631-18633:80", 2, False),
    ("18631-18632:80", 3, True),  # one replica short of a port
    ("127.0.0.1:18631-18631:80", 2, True),
])
async def test_port_range_with_replicas(settings: Settings, ports: str, replicas: int, conflict: bool) -> None:
    base = OK.replace("deploy: {resources:", f"deploy: {{replicas: {replicas}, resources:")
    report = await check(settings, "services:\n" + svc("web", f"    ports: ['{ports}']\n", base=base))
    assert bool(of(report, "port-conflict")) is conflict, report.findings


# ------------------------------------------------------------------------------ healthchecks
NO_HC = OK.replace('    healthcheck: {test: ["CMD", "true"]}\n', "")


async def test_missing_healthcheck_and_one_shot_exemptions(settings: Settings) -> None:
    report = await check(settings, "services:\n" + svc("web", base=NO_HC))
    # check_host is off: the image's own config was not read, so the image may bring one.
    assert not of(report, "missing-healthcheck")
    f = of(report, "healthcheck-unverified")[0]
    assert f.severity == "warning" and f.service == "web" and f.fix and "healthcheck:" in f.fix
    exempt = (
        "services:\n"
        + svc("job", "    x-dsm: {one-shot: true}\n", base=NO_HC)
        + svc("seed", "    labels: {dsm.one-shot: 'true'}\n", base=NO_HC)
        + svc("init", base=NO_HC)
        + svc("app", "    depends_on:\n      init: {condition: service_completed_successfully}\n")
    )
    found = await check(settings, exempt)
    assert not of(found, "missing-healthcheck") and not of(found, "healthcheck-unverified")


async def test_healthcheck_disabled_is_missing(settings: Settings) -> None:
    report = await check(settings, "services:\n" + svc("web", "    healthcheck: {disable: true}\n", base=NO_HC))
    assert "disabled" in of(report, "missing-healthcheck")[0].message


async def test_waiting_for_health_of_a_service_without_healthcheck(settings: Settings) -> None:
    waits = "    depends_on:\n      db: {condition: service_healthy}\n"
    content = "services:\n" + svc("db", "    healthcheck: {disable: true}\n", base=NO_HC) + svc("app", waits)
    f = of(await check(settings, content), "dependency-without-healthcheck")[0]
    assert f.service == "app" and "'db'" in f.message and f.severity == "error"
    # Unknown (the image may bring one): no error, the dependency's warning names the waiter.
    unknown = await check(settings, "services:\n" + svc("db", base=NO_HC) + svc("app", waits))
    assert not of(unknown, "dependency-without-healthcheck")
    assert any("app waits" in e for e in of(unknown, "healthcheck-unverified")[0].evidence)
    ok = "services:\n" + svc("db") + svc("app", waits)
    assert not of(await check(settings, ok), "dependency-without-healthcheck")


# ------------------------------------------------------------------------------ resources
NO_LIMITS = OK.replace(
    '    deploy: {resources: {limits: {memory: 64m, cpus: "0.5", pids: 256}}}\n', "    pids_limit: 256\n"
)


async def test_no_resource_limits_with_a_yaml_patch(settings: Settings) -> None:
    report = await check(settings, "services:\n" + svc("db", base=NO_LIMITS.replace("dsm-test/web:1.0", "postgres:16")))
    f = of(report, "no-resource-limits")[0]
    assert f.severity == "error" and f.fix is not None
    assert f.fix.startswith("services:\n  db:\n    deploy:\n      resources:") and "memory: 1g" in f.fix


@pytest.mark.parametrize(
    ("extra", "rules"),
    [
        ("    mem_limit: 128m\n    cpus: 0.5\n", set()),
        ("    deploy: {resources: {limits: {memory: 128m, cpus: '1', pids: 256}}}\n", set()),
        ("    mem_limit: 128m\n", {"no-cpu-limit"}),
        ("    cpus: 0.5\n", {"no-resource-limits"}),
    ],
)
async def test_limits_in_either_spelling(settings: Settings, extra: str, rules: set[str]) -> None:
    report = await check(settings, "services:\n" + svc("web", extra, base=NO_LIMITS))
    assert {f.rule for f in report.findings} == rules
    if "no-cpu-limit" in rules:
        assert of(report, "no-cpu-limit")[0].severity == "info"


# ------------------------------------------------------------------------------ images
@pytest.mark.parametrize(
    ("image", "rule", "severity"),
    [
        ("nginx", "image-unpinned", "warning"),
        ("nginx:latest", "image-unpinned", "warning"),
        ("127.0.0.1:5000/team/app", "image-unpinned", "warning"),
        ("nginx:1.27", "image-no-digest", "info"),
        ("nginx@sha256:" + "b" * 64, None, None),
    ],
)
async def test_image_pinning(settings: Settings, image: str, rule: str | None, severity: str | None) -> None:
    base = OK.replace("dsm-test/web:1.0@sha256:" + "a" * 64, image)
    report = await check(settings, "services:\n" + svc("web", base=base))
    found = [(f.rule, f.severity) for f in report.findings if f.category == "images"]
    assert found == ([(rule, severity)] if rule else [])


@pytest.mark.parametrize(("extra", "found"), [
    ("    build: {context: .}\n    pull_policy: build\n", []),
    ("    build: {context: .}\n", ["build-and-image"]),  # `up` may pull myapp instead of building it
])
async def test_built_images_are_not_pinning_findings(settings: Settings, extra: str, found: list[str]) -> None:
    base = OK.replace("dsm-test/web:1.0@sha256:" + "a" * 64, "myapp")
    report = await check(settings, "services:\n" + svc("web", extra, base=base))
    assert [f.rule for f in report.findings if f.category == "images"] == found


# ------------------------------------------------------------------------------ secrets
async def test_plaintext_secret_never_echoes_the_value(settings: Settings) -> None:
    content = "services:\n" + svc("web", (
        "    environment:\n"
        "      DB_PASSWORD: Pl41ntext-Secret-Value\n"
        "      API_TOKEN: ${API_TOKEN:-Default-Token-Value}\n"
        "      DATABASE_URL: postgres://app:Url-Embedded-Pw@db/app\n"
        "      GOOD_PASSWORD: ${GOOD_PASSWORD}\n"
        "      GOOD_PASSWORD_FILE: /run/secrets/db\n"
        "      JWT_EXP: '3600'\n"
        "      AUTH_ENABLED: 'true'\n"
        "      OTHER_URL: postgres://app:${DB_PW}@db/app\n"
    ))
    report = await check(settings, content, env={"GOOD_PASSWORD": "Env-Given-Secret-1", "DB_PW": "Env-Given-2"})
    keys = sorted(f.evidence[0] for f in of(report, "plaintext-secret"))
    assert keys == ["environment key API_TOKEN", "environment key DATABASE_URL", "environment key DB_PASSWORD"]
    assert all(f.severity == "warning" and f.category == "security" for f in of(report, "plaintext-secret"))
    assert of(report, "plaintext-secret")[0].line is not None
    dumped = json.dumps(report.model_dump())
    for value in ("Pl41ntext-Secret-Value", "Default-Token-Value", "Url-Embedded-Pw", "Env-Given-Secret-1",
                  "Env-Given-2"):
        assert value not in dumped


async def test_plaintext_secret_in_list_form(settings: Settings) -> None:
    env = "    environment:\n      - MYSQL_ROOT_PASSWORD=rootpw-literal\n      - MODE=x\n"
    content = "services:\n" + svc("web", env)
    assert [f.evidence[0] for f in of(await check(settings, content), "plaintext-secret")] == [
        "environment key MYSQL_ROOT_PASSWORD"]


# ------------------------------------------------------------------------------ security
@pytest.mark.parametrize(
    ("extra", "rule", "severity"),
    [
        ("    privileged: true\n", "privileged", "error"),
        ("    volumes: ['/var/run/docker.sock:/var/run/docker.sock:ro']\n", "docker-socket", "error"),
        ("    pid: host\n", "host-namespace", "error"),
        ("    ipc: host\n", "host-namespace", "error"),
        ("    network_mode: host\n", "host-namespace", "warning"),
        ("    volumes: ['/:/host']\n", "host-path-mount", "error"),
        ("    volumes: ['/proc:/host/proc:ro']\n", "host-path-mount", "warning"),
        ("    cap_add: [SYS_ADMIN]\n", "dangerous-capability", "error"),
        ("    cap_add: [CAP_SYS_PTRACE]\n", "dangerous-capability", "error"),
        ("    cap_add: [NET_ADMIN]\n", "dangerous-capability", "warning"),
        ("    security_opt: ['seccomp=unconfined', 'no-new-privileges:true']\n", "unconfined-security-profile",
         "warning"),
    ],
)
async def test_container_escapes(settings: Settings, extra: str, rule: str, severity: str) -> None:
    base = OK.replace('    security_opt: ["no-new-privileges:true"]\n', "") if "security_opt" in extra else OK
    report = await check(settings, "services:\n" + svc("web", extra, base=base))
    found = [(f.rule, f.severity) for f in report.findings if f.category == "security"]
    assert found == [(rule, severity)], report.findings


@pytest.mark.parametrize(
    "extra",
    [
        "    volumes: ['./config.yml:/etc/app/config.yml:ro']\n",
        "    volumes: ['/etc/localtime:/etc/localtime:ro']\n",
        "    volumes: ['data:/data']\n",
        "    cap_add: [NET_BIND_SERVICE, CHOWN]\n",
    ],
)
async def test_ordinary_mounts_and_capabilities_are_fine(settings: Settings, extra: str) -> None:
    content = "services:\n" + svc("web", extra) + ("volumes: {data: {}}\n" if "data:/data" in extra else "")
    assert (await check(settings, content)).findings == []


async def test_waiver_in_the_file_turns_an_error_into_info(settings: Settings) -> None:
    content = (
        "x-dsm:\n  policy:\n    waive:\n"
        "      - {rule: docker-socket, services: [portainer], reason: manages containers}\n"
        "services:\n" + svc("portainer", "    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n")
    )
    report = await check(settings, content)
    f = of(report, "docker-socket")[0]
    assert report.go and f.severity == "info" and "waived by x-dsm: manages containers" in f.evidence


# ------------------------------------------------------------------------------ hardening hints
async def test_hardening_hints_are_info_only(settings: Settings) -> None:
    bare = (
        "services:\n  web:\n    image: dsm-test/web:1.0\n    healthcheck: {test: [CMD, 'true']}\n"
        "    mem_limit: 64m\n    cpus: 0.5\n    volumes: ['./data:/data']\n    container_name: web1\n"
    )
    report = await check(settings, bare)
    hints = {f.rule for f in report.findings if f.severity == "info"}
    assert {"no-cap-drop", "writable-rootfs", "no-new-privileges", "root-user", "no-log-rotation",
            "no-restart-policy", "bind-mount-data", "fixed-container-name", "image-no-digest"} == hints
    assert report.go and report.errors == 0
    assert {f.rule for f in report.findings if f.severity == "warning"} == {"no-pids-limit"}


async def test_plaintext_secret_in_override_file_anchor_and_env_file(settings: Settings, stacks_root: Any) -> None:
    from tests.conftest import write_stack

    main = (
        "x-common: &common\n  SHARED_SECRET: anchored-literal-1\n"
        "services:\n" + svc("web", "    env_file: [app.env]\n    environment:\n      <<: *common\n"
                                   "      MODE: x\n")
    )
    directory = write_stack(stacks_root, "layered", main)
    (directory / "compose.override.yaml").write_text(
        "services:\n  web:\n    environment:\n      ADMIN_TOKEN: override-literal-2\n"
    )
    (directory / "app.env").write_text("FROM_ENV_FILE_PASSWORD=env-file-value-3\n")
    report = await validate(settings, ComposeRunner(settings), _no_engine, path="layered", check_host=False)
    keys = sorted(f.evidence[0] for f in of(report, "plaintext-secret"))
    assert keys == ["environment key ADMIN_TOKEN", "environment key SHARED_SECRET"]
    dumped = json.dumps(report.model_dump())
    assert not any(v in dumped for v in ("anchored-literal-1", "override-literal-2", "env-file-value-3"))


async def test_env_file_values_are_not_written_in_the_compose_file(settings: Settings, stacks_root: Any) -> None:
    from tests.conftest import write_stack

    directory = write_stack(stacks_root, "envfile", "services:\n" + svc("web", "    env_file: [app.env]\n"))
    (directory / "app.env").write_text("DB_PASSWORD=env-file-value-4\n")
    report = await validate(settings, ComposeRunner(settings), _no_engine, path="envfile", check_host=False)
    assert report.go and not of(report, "plaintext-secret")
    assert "env-file-value-4" not in json.dumps(report.model_dump())
