"""The security and secrets rules as tables: each escape route and each secret shape found, with its
severity, line and fix; the look-alikes that are not findings stay quiet. Pure: hand-built models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.models import Finding
from server.policy.security import is_sensitive_path
from server.yamlsafe import SourceLines, load_yaml
from tests.test_policy_units import good, make_stack, run

LINES = SourceLines("compose.yaml", {("services", "svc"): 2, ("services", "svc", "privileged"): 3,
                                     ("services", "svc", "volumes"): 4, ("services", "svc", "pid"): 5,
                                     ("services", "svc", "cap_add"): 6, ("services", "svc", "security_opt"): 7,
                                     ("services", "svc", "network_mode"): 8, ("services", "svc", "ipc"): 9})


def of(rule: str, directory: Path | None = None, **svc: Any) -> list[Finding]:
    stack = replace(make_stack({"svc": good(**svc)}, directory=directory), lines=LINES)
    return [f for f in run(stack) if f.rule == rule]


def bind(source: str, target: str = "/data", read_only: bool = False) -> dict[str, Any]:
    return {"type": "bind", "source": source, "target": target, "read_only": read_only}


def test_privileged() -> None:
    [f] = of("privileged", privileged=True)
    assert (f.severity, f.service, f.line, f.category) == ("error", "svc", 3, "security")
    assert f.fix and "cap_add" in f.fix
    assert of("privileged", privileged=False) == [] and of("privileged") == []


@pytest.mark.parametrize("sock", ["/var/run/docker.sock", "/run/podman/podman.sock", "/run/containerd/containerd.sock",
                                  "/var/run/crio/crio.sock", "/home/u/.docker/run/docker.sock"])
@pytest.mark.parametrize("ro", [False, True])
def test_every_container_socket(sock: str, ro: bool) -> None:
    [f] = of("docker-socket", volumes=[bind(sock, "/var/run/docker.sock", ro)])
    assert (f.severity, f.line, f.evidence) == ("error", 4, [f"{sock} -> /var/run/docker.sock"])
    assert f.message.startswith(f"{sock} is mounted into the container")
    assert ("read-only does not help" in f.message) is ro
    assert "socket-proxy" in (f.fix or "")
    assert of("host-path-mount", volumes=[bind(sock, "/s", ro)]) == []  # reported once, as the socket


def test_a_socket_look_alike_and_a_named_volume_are_not_sockets() -> None:
    assert of("docker-socket", volumes=[bind("/srv/docker.sock.d", "/x")]) == []
    assert of("docker-socket", volumes=[{"type": "volume", "source": "docker.sock", "target": "/x"}]) == []


@pytest.mark.parametrize(
    ("key", "severity", "says"),
    [
        ("pid", "error", "see and signal (pid)"),
        ("ipc", "error", "read the shared memory (ipc)"),
        ("network_mode", "warning", "published ports are ignored"),
        ("uts", "warning", ""),
        ("userns_mode", "warning", ""),
        ("cgroup", "warning", ""),
    ],
)
def test_host_namespaces(key: str, severity: str, says: str) -> None:
    [f] = of("host-namespace", **{key: "host"})
    assert f.severity == severity and f.message.startswith(f"{key}: host shares the host's "
                                                           f"{key.replace('_mode', '')} namespace")
    assert says in f.message and (says or f.message.endswith("namespace with the container"))
    assert f.fix == f"remove {key}: host unless the service monitors the host by design (then waive it in x-dsm)"
    assert of("host-namespace", **{key: "service:other"}) == []


def test_namespace_lines() -> None:
    found = of("host-namespace", pid="host", ipc="host", network_mode="host")
    assert [f.line for f in found] == [5, 9, 8]  # pid, ipc, network_mode


@pytest.mark.parametrize(
    ("source", "sensitive"),
    [
        ("/", True), ("/etc", True), ("/etc/", True), ("/etc/nginx", True), ("/root/.bashrc", True),
        ("/proc", True), ("/sys/fs/cgroup", True), ("/dev/sda", True), ("/boot", True), ("/usr/bin", True),
        ("/var/lib/docker/volumes/x", True), ("/run/user/1000", True), ("/var/run/x", True), ("/opt", True),
        ("/home", True), ("/var", True), ("/var/log", True), ("/lib/modules", True), ("/bin", True),
        ("/sbin", True), ("/lib64", True), ("/var/lib", True),
        ("/home/u/.ssh", True), ("/srv/x/.aws/credentials", True), ("/home/u/.kube", True), ("/a/.gnupg", True),
        ("/home/u/.config/app", True), ("/home/u/.docker/config.json", True),
        ("/etc/localtime", False), ("/etc/timezone", False), ("/etc/hostname", False), ("/dev/null", False),
        ("/etcetera", False), ("/opt/app/data", False), ("/srv/data", False), ("/var/lib/postgres", False),
        ("/home/u/media", False), ("./data", False), ("data", False), ("/home/u/.sshkeys-not", False),
    ],
)
def test_sensitive_host_paths(source: str, sensitive: bool) -> None:
    assert is_sensitive_path(source, None) is sensitive


def test_the_stack_s_own_directory_is_not_sensitive() -> None:
    assert not is_sensitive_path("/etc/stacks/app", "/etc/stacks/app")
    assert not is_sensitive_path("/etc/stacks/app/conf", "/etc/stacks/app/")
    assert is_sensitive_path("/etc/stacks/app-other", "/etc/stacks/app")  # a prefix sibling is not inside


@pytest.mark.parametrize(("ro", "severity"), [(True, "warning"), (False, "error")])
def test_host_path_mount(ro: bool, severity: str) -> None:
    [f] = of("host-path-mount", volumes=[bind("/etc/nginx", "/etc/nginx", ro)])
    assert (f.severity, f.line) == (severity, 4)
    assert f.message == ("host path /etc/nginx is bind-mounted read-only at /etc/nginx" if ro else
                         "host path /etc/nginx is bind-mounted writable at /etc/nginx: the container can change "
                         "the host's system files")
    assert f.evidence == [f"/etc/nginx -> /etc/nginx ({'ro' if ro else 'rw'})"]
    assert of("host-path-mount", volumes=[bind("/srv/data", "/data")]) == []


def test_host_path_inside_the_stack_directory_is_fine() -> None:
    assert of("host-path-mount", directory=Path("/etc/stacks/app"), volumes=[bind("/etc/stacks/app/conf")]) == []
    assert len(of("host-path-mount", directory=Path("/etc/stacks/app"), volumes=[bind("/etc/other")])) == 1


@pytest.mark.parametrize("cap", ["ALL", "SYS_ADMIN", "sys_module", "CAP_SYS_RAWIO", "SYS_PTRACE", "DAC_READ_SEARCH",
                                 "SYS_BOOT", "MAC_ADMIN", "MAC_OVERRIDE", "BPF"])
def test_escape_capabilities(cap: str) -> None:
    [f] = of("dangerous-capability", cap_add=[cap, "CHOWN"])
    name = cap.upper().removeprefix("CAP_")
    assert (f.severity, f.line) == ("error", 6) and f.message.startswith(f"cap_add {name}: enough to break out")
    assert f.evidence == [f"cap_add: {name}, CHOWN"]


@pytest.mark.parametrize("cap", ["NET_ADMIN", "SYS_TIME", "PERFMON", "SYS_RESOURCE", "SYSLOG", "LINUX_IMMUTABLE",
                                 "SYS_NICE", "IPC_LOCK", "net_broadcast"])
def test_risky_capabilities(cap: str) -> None:
    [f] = of("dangerous-capability", cap_add=[cap])
    assert (f.severity, f.line) == ("warning", 6)
    assert f.message.startswith(f"cap_add {cap.upper()}: broadens")


def test_escape_and_risky_together_and_harmless_caps() -> None:
    found = of("dangerous-capability", cap_add=["NET_ADMIN", "SYS_ADMIN", "BPF"])
    assert [(f.severity, f.message.split(":")[0]) for f in found] == [
        ("error", "cap_add BPF, SYS_ADMIN"), ("warning", "cap_add NET_ADMIN")]
    assert of("dangerous-capability", cap_add=["CHOWN", "NET_BIND_SERVICE"]) == []


@pytest.mark.parametrize("opt", ["seccomp:unconfined", "seccomp=unconfined", "apparmor:unconfined",
                                 "apparmor=UNCONFINED", "label:disable", "label=disable", "systempaths=unconfined"])
def test_unconfined_profiles(opt: str) -> None:
    [f] = of("unconfined-security-profile", security_opt=["no-new-privileges:true", opt])
    assert (f.severity, f.line) == ("warning", 7)
    assert f.message == f"security_opt {opt.replace('=', ':', 1).lower()} turns off a layer of confinement"


def test_confining_options_are_fine() -> None:
    assert of("unconfined-security-profile", security_opt=["no-new-privileges:true", "seccomp:profile.json",
                                                           "label:type:container_t"]) == []


# ---------------------------------------------------------------- plaintext-secret


def secret_findings(environment: Any, rendered: dict[str, str] | None = None) -> list[Finding]:
    source = load_yaml("services:\n  svc:\n    image: x\n    environment: ENV\n".replace(
        "ENV", "{}" if isinstance(environment, dict) else "[]"))
    source.data["services"]["svc"]["environment"] = environment
    keys = environment if isinstance(environment, dict) else dict(
        str(e).partition("=")[::2] for e in environment)
    stack = make_stack({"svc": good(environment=rendered if rendered is not None else dict.fromkeys(keys, "v"))})
    stack = replace(stack, sources=(source,), lines=SourceLines(
        "compose.yaml", {("services", "svc", "environment", k): 10 + i for i, k in enumerate(keys)}))
    return [f for f in run(stack) if f.rule == "plaintext-secret"]


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("POSTGRES_PASSWORD", "hunter2", "a literal value"),
        ("DB_PASSWD", "hunter2", "a literal value"),
        ("GPG_PASSPHRASE", "open sesame", "a literal value"),
        ("JWT_SECRET", "x" * 40, "a literal value"),
        ("GITEA_TOKEN", "abc123", "a literal value"),
        ("APIKEY", "k-1", "a literal value"),
        ("OPENAI_API_KEY", "sk-1", "a literal value"),
        ("S3_ACCESS_KEY", "AKIA1", "a literal value"),
        ("SSH_PRIVATE_KEY", "-----BEGIN", "a literal value"),
        ("CREDENTIALS", "u:p", "a literal value"),
        ("PASSWORD_SALT", "pepper", "a literal value"),
        ("STRIPE_KEY", "pk_live", "a literal value"),
        ("KEY", "abcdef", "a literal value"),
        ("secret", "lower-case key", "a literal value"),
        ("POSTGRES_PASSWORD", "${DB_PW:-changeme}", "a default credential written in ${VAR:-default}"),
        ("POSTGRES_PASSWORD", "${DB_PW-changeme}", "a default credential written in ${VAR:-default}"),
        ("DATABASE_URL", "postgres://app:hunter2@db/app", "a URL with a password written in it"),
        ("REDIS_URL", "redis://:hunter2@cache:6379", "a URL with a password written in it"),  # `:pw@` counts
        ("DATABASE_URL", "postgres://app:${DB_PW}@db/app", None),
        ("DATABASE_URL", "postgres://app@db/app", None),
        ("POSTGRES_PASSWORD", "${DB_PW}", None),
        ("POSTGRES_PASSWORD", "$DB_PW", None),
        ("POSTGRES_PASSWORD", "${DB_PW:-${OTHER}}", None),
        ("POSTGRES_PASSWORD", "prefix-${DB_PW}", None),
        ("POSTGRES_PASSWORD_FILE", "/run/secrets/db", None),
        ("DB_USER", "admin", None),
        ("TOKEN_TTL", "3600x", None),
        ("KEYBOARD", "us", None),
        ("AUTH_ENABLED", "yes-please", None),
        ("POSTGRES_PASSWORD", "true", None),
        ("POSTGRES_PASSWORD", "8080", "a literal value"),  # the key decides, not the value
        ("POSTGRES_PASSWORD", "30s", "a literal value"),  # the key decides, not the value
        ("POSTGRES_PASSWORD", "  ", None),
        ("POSTGRES_PASSWORD", "null", "a literal value"),  # the key decides, not the value
        ("MODE", "production", None),
    ],
)
def test_secret_shapes(key: str, value: str, what: str | None) -> None:
    found = secret_findings({key: value})
    if what is None:
        assert found == []
        return
    [f] = found
    assert f.message == (f"{key} of service 'svc' holds {what} in the compose file (value not shown): it ends up in "
                         "git, backups and `docker inspect` of anyone who reads the file")
    assert f.service == "svc"
    assert value not in f.message + (f.fix or "") + "".join(f.evidence)
    assert (f.severity, f.line, f.evidence) == ("warning", 10, [f"environment key {key}"])
    assert f.fix and f.fix.startswith(f"move the value to the stack's .env (kept out of git) and write "
                                      f"{key}: ${{{key}}}")


def test_list_form_bools_and_keys_compose_did_not_render() -> None:
    found = secret_findings(["API_TOKEN=abc=123", "JUST_A_FLAG", "DB_PASSWORD=hunter2"])
    assert [f.evidence for f in found] == [["environment key API_TOKEN"], ["environment key DB_PASSWORD"]]
    assert [f.line for f in found] == [10, 12]
    # A key Compose did not render (from env_file or unset) is not written here: not a finding.
    assert secret_findings({"DB_PASSWORD": "hunter2"}, rendered={"OTHER": "x"}) == []
    assert secret_findings({"DB_PASSWORD": True}) == []
    assert secret_findings({"DB_PASSWORD": None}) == []


def test_each_security_finding_reads_whole() -> None:
    """What the calling model reads: message, service, evidence and fix of each rule, verbatim."""
    svc = good(privileged=True, pid="host", network_mode="host", cap_add=["SYS_ADMIN", "NET_ADMIN"],
               security_opt=["seccomp=unconfined"],
               volumes=[bind("/var/run/docker.sock", "/s", True), bind("/etc/ssl", "/ssl")])
    stack = replace(make_stack({"svc": svc}), lines=LINES)
    got = {(f.rule, f.severity): f for f in run(stack) if f.category == "security"}
    expect = {
        ("privileged", "error"): (
            "privileged: true gives the container every capability and every host device: a compromise of the "
            "service is a compromise of the host",
            [], "remove privileged: true; grant only the capability or device it needs (cap_add, devices)"),
        ("docker-socket", "error"): (
            "/var/run/docker.sock is mounted into the container (read-only does not help: the API still works): "
            "whoever controls the service controls every container and the host as root",
            ["/var/run/docker.sock -> /s"],
            "put a filtering socket proxy in between (e.g. tecnativa/docker-socket-proxy with only the endpoints "
            "it needs), or waive it in x-dsm with the reason (Portainer, Netdata)"),
        ("host-namespace", "error"): (
            "pid: host shares the host's pid namespace with the container: it can see and signal (pid) or read the "
            "shared memory (ipc) of every host process",
            [], "remove pid: host unless the service monitors the host by design (then waive it in x-dsm)"),
        ("host-namespace", "warning"): (
            "network_mode: host shares the host's network namespace with the container; isolation is weaker and "
            "published ports are ignored",
            [], "remove network_mode: host unless the service monitors the host by design (then waive it in x-dsm)"),
        ("host-path-mount", "error"): (
            "host path /etc/ssl is bind-mounted writable at /ssl: the container can change the host's system files",
            ["/etc/ssl -> /ssl (rw)"],
            "mount only the file or directory it needs, read-only (:ro); keep data in named volumes"),
        ("dangerous-capability", "error"): (
            "cap_add SYS_ADMIN: enough to break out of the container", ["cap_add: SYS_ADMIN, NET_ADMIN"],
            "drop these capabilities; find the narrower one the service needs"),
        ("dangerous-capability", "warning"): (
            "cap_add NET_ADMIN: broadens what a compromised service can do to the host",
            ["cap_add: SYS_ADMIN, NET_ADMIN"],
            "keep only if the service needs it (VPN, time sync) and waive it in x-dsm with the reason"),
        ("unconfined-security-profile", "warning"): (
            "security_opt seccomp:unconfined turns off a layer of confinement", [],
            "remove it, or use a custom profile that allows only the extra syscalls the service needs"),
    }
    assert set(got) == set(expect)
    for key, (message, evidence, fix) in expect.items():
        f = got[key]
        assert (f.message, f.evidence, f.fix, f.service) == (message, evidence, fix, "svc"), key


def test_a_socket_mount_before_a_sensitive_one_does_not_hide_it() -> None:
    found = of("host-path-mount", volumes=[bind("/var/run/docker.sock", "/s"), bind("/etc", "/host-etc")])
    assert [f.evidence for f in found] == [["/etc -> /host-etc (rw)"]]


def test_a_trailing_slash_does_not_make_a_harmless_path_sensitive() -> None:
    assert not is_sensitive_path("/etc/localtime/", None) and not is_sensitive_path("/dev/null/", None)
