"""The rule catalogue: every rule id, its default severity and family.

Rule ids are a public contract. The calling agent reads them in findings, and users name them
in ``x-dsm`` policies to change a severity or waive a rule for a service, so an id never changes
meaning once published. Add rules; do not rename them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.models import Finding, Severity


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    category: str
    summary: str
    hint: bool = False
    """Hardening advice: one finding per rule lists every service it applies to."""
    needs_host: bool = False
    """Only checked when the live host is (validate_compose check_host=true)."""


_RULES: list[Rule] = [
    # Rendering (reported by server.stackload before any rule runs).
    Rule("compose-syntax", "error", "syntax", "YAML that does not parse; line and column"),
    Rule("compose-invalid", "error", "syntax", "Compose rejects the model"),
    Rule("unsafe-yaml", "error", "security", "YAML refused before parsing: too large, too deep, alias bomb"),
    Rule("path-outside-root", "error", "security", "a file the stack reads lies outside the stacks root"),
    Rule("xdsm-invalid", "error", "config", "an x-dsm block does not follow its schema"),
    Rule("missing-variable", "error", "config", "a required ${VAR:?} has no value"),
    Rule("undefined-reference", "error", "references", "network, volume, secret, config or service used, not declared"),
    Rule("dependency-cycle", "error", "dependencies", "services wait for each other in a circle"),
    Rule("too-many-services", "error", "config", "more than 1000 services in one stack (server.stackload)"),
    # What other projects on the host claim (server.ownership, preflight.datadirs); never waived by x-dsm.
    Rule("foreign-project", "error", "deploy", "the project name runs from another directory", needs_host=True),
    Rule("directory-in-use", "error", "deploy", "the stack directory runs under another project name",
         needs_host=True),
    Rule("shared-data-directory", "error", "deploy", "two databases on one host data directory"),
    # Configuration.
    Rule("unset-variable", "warning", "config", "${VAR} without a value or default: Compose substitutes ''"),
    Rule("policy-unknown-reference", "warning", "config", "x-dsm policy names a rule or service that does not exist"),
    # Reliability.
    Rule("missing-healthcheck", "error", "reliability",
         "long-running service without a healthcheck, in the file or in the image's own config"),
    Rule("healthcheck-unverified", "warning", "reliability",
         "no healthcheck in the file and the image's own config could not be read (check_host off, or the "
         "image neither local nor readable from its registry)"),
    Rule(
        "dependency-without-healthcheck",
        "error",
        "reliability",
        "depends_on condition service_healthy on a service that has no healthcheck: `up` fails",
    ),
    Rule("no-restart-policy", "info", "reliability", "long-running service that is not restarted", hint=True),
    Rule("fixed-container-name", "info", "reliability", "container_name blocks scaling and start-first updates",
         hint=True),
    # Resources.
    Rule("no-resource-limits", "error", "resources", "no memory limit"),
    Rule("no-cpu-limit", "info", "resources", "memory limit set, CPU limit not"),
    Rule("cpu-limit-exceeds-host", "error", "resources", "a CPU limit above the host's CPU count", needs_host=True),
    Rule(
        "insufficient-resources",
        "error",
        "resources",
        "the memory the stack reserves does not fit what the host has free",
        needs_host=True,
    ),
    Rule("disk-space", "error", "resources", "Docker's root filesystem is nearly full", needs_host=True),
    Rule("host-pressure", "error", "resources", "host memory or CPU above 95% in use", needs_host=True),
    # Network.
    Rule("port-conflict", "error", "network", "a host port published twice, or already bound on the host"),
    Rule("exposed-port", "warning", "network", "a database or admin port published on every interface"),
    # Images.
    Rule("image-unpinned", "warning", "images", "`latest`, no tag, a floating tag (stable, edge, alpine...) or a "
         "pre-release"),
    Rule("image-no-digest", "info", "images", "a tag without a digest can change under you", hint=True),
    Rule("image-unavailable", "error", "images", "image neither local nor in its registry", needs_host=True),
    Rule("image-unverified", "warning", "images", "the image's registry could not be reached", needs_host=True),
    Rule("image-registry-not-allowed", "error", "images",
         "an image from a registry the operator's DSM_POLICY does not allow (not waivable by x-dsm)"),
    Rule("build-and-image", "warning", "images", "build and image together without pull_policy"),
    # What Compose accepts and the engine refuses at create time.
    Rule("engine-refuses", "error", "engine", "a setting the engine refuses (container_name, image reference, "
         "memory reservation above the limit, ports in a borrowed network namespace)"),
    Rule("engine-version-unsupported", "error", "engine", "a key the negotiated Engine API version does not "
         "support (healthcheck.start_interval below API 1.44)", needs_host=True),
    # Security.
    Rule("plaintext-secret", "warning", "security", "a credential written as a literal in the compose file"),
    Rule("privileged", "error", "security", "privileged: true gives the container the host"),
    Rule("docker-socket", "error", "security", "the Docker socket mounted: root on the host"),
    Rule("host-namespace", "error", "security", "host pid/ipc namespace (error) or network/uts/userns (warning)"),
    Rule("host-path-mount", "error", "security", "a sensitive host path bind-mounted (read-only: warning)"),
    Rule("dangerous-capability", "error", "security", "cap_add of an escape-grade capability"),
    Rule("unconfined-security-profile", "warning", "security", "seccomp/apparmor/SELinux confinement disabled"),
    Rule("default-credential", "warning", "security", "a placeholder or the project's published default credential"),
    Rule("passwordless-database", "warning", "security", "database authentication turned off "
         "(POSTGRES_HOST_AUTH_METHOD=trust)"),
    Rule("host-device", "warning", "security", "a raw host device (disk, memory) passed into the container"),
    Rule("logging-disabled", "warning", "hardening", "logging driver none: nothing to diagnose a crash with"),
    Rule("no-pids-limit", "warning", "hardening", "no pids_limit (or deploy.resources.limits.pids)"),
    Rule("bind-source-missing", "warning", "reliability", "a long-syntax bind whose host path does not exist"),
    Rule("remote-client-files", "warning", "deploy", "on a remote engine: bind sources, configs/secrets files, build "
         "contexts Compose reads on this machine", needs_host=True),
    # Hardening hints (info).
    Rule("no-cap-drop", "info", "hardening", "capabilities not dropped (cap_drop: [ALL])", hint=True),
    Rule("writable-rootfs", "info", "hardening", "root filesystem writable (read_only: true)", hint=True),
    Rule("no-new-privileges", "info", "hardening", "security_opt no-new-privileges:true missing", hint=True),
    Rule("root-user", "info", "hardening", "runs as root (no user:, none in the image)", hint=True),
    Rule("no-log-rotation", "info", "hardening", "json-file logs without max-size grow without bound", hint=True),
    Rule("bind-mount-data", "info", "hardening", "data in a bind mount rather than a named volume", hint=True),
    # Swarm (x-dsm mode: swarm; server/preflight/swarm.py).
    Rule("swarm-not-manager", "error", "swarm", "x-dsm mode: swarm on an engine that is not a swarm manager",
         needs_host=True),
    Rule("swarm-ignored-option", "warning", "swarm", "docker stack deploy ignores container_name, restart, "
         "depends_on, build"),
    Rule("swarm-build-only", "error", "swarm", "build without image: swarm nodes cannot build"),
    Rule("swarm-host-port-collision", "error", "swarm", "a host-mode port with several replicas that may share a node"),
    Rule("swarm-needs-ipvs", "error", "swarm", "an ingress port or a VIP on an engine whose kernel has no IPVS"),
    Rule("swarm-vip-start-first", "warning", "swarm", "VIP endpoint updated start-first: requests reach tasks "
         "shutting down (use dnsrr)"),
    Rule("swarm-placement-unsatisfiable", "error", "swarm", "placement constraints no ready node meets",
         needs_host=True),
    Rule("swarm-resources-exceeded", "error", "swarm", "reservations beyond the nodes' resources minus other "
         "services' reservations", needs_host=True),
    # Host-level problems that stop the checks themselves.
    Rule("engine-unreachable", "error", "host", "the Docker engine could not be reached", needs_host=True),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}

DEVELOPMENT_RELAXED: frozenset[str] = frozenset({"image-unpinned"})
"""Rules downgraded to info when the stack declares ``x-dsm: {environment: development}``."""


def finding(
    rule: str,
    message: str,
    *,
    service: str | None = None,
    line: int | None = None,
    fix: str | None = None,
    evidence: list[str] | None = None,
    severity: Literal["error", "warning", "info"] | None = None,
) -> Finding:
    """A finding of a catalogued rule, with the rule's default severity and category."""
    meta = RULES[rule]
    return Finding(
        rule=rule,
        severity=severity or meta.severity,
        category=meta.category,
        service=service,
        message=message,
        line=line,
        fix=fix,
        evidence=evidence or [],
    )
