"""Pydantic models that cross module borders.

Every check in the product (lint rules, host preflight, health gates, diagnosis) reports
through the one :class:`Finding` model so the calling agent reads one shape everywhere.
Results are frozen: a report, once built, is evidence and must not be edited in place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


class Frozen(BaseModel):
    """Base for results: immutable, and unknown fields are a bug, not data."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(Frozen):
    """One observation of a check, with what to do about it."""

    rule: str = Field(description="Stable rule id, e.g. 'missing-healthcheck'. Policies name rules by it.")
    severity: Severity = Field(description="error blocks a deployment; warning and info do not.")
    category: str = Field(description="Family: syntax, reliability, security, resources, network, images, ...")
    service: str | None = Field(default=None, description="The service concerned, or null for the stack.")
    message: str = Field(description="What is wrong, in one or two sentences.")
    file: str | None = Field(
        default=None, description="The file that set the value, relative to the stack directory, when known."
    )
    line: int | None = Field(default=None, description="1-based line in `file`, when known.")
    fix: str | None = Field(default=None, description="A concrete fix, as a YAML patch when one exists.")
    evidence: list[str] = Field(default_factory=list, description="What was observed (redacted).")

    @model_validator(mode="before")
    @classmethod
    def _file_from_line(cls, data: Any) -> Any:
        # Lines come from server.yamlsafe.SourceLines as `Line` ints that know their file; every
        # rule passes `line=stack.line_of(...)` unchanged and the finding gets `file` here.
        if isinstance(data, dict) and data.get("file") is None:
            file = getattr(data.get("line"), "file", None)
            if file is not None:
                data = {**data, "file": file, "line": int(data["line"])}
        return data


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then by service and rule, so output is stable between runs."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.service or "", f.rule, f.line or 0))


class PortBinding(Frozen):
    host_ip: str | None = None
    published: str | None = Field(default=None, description="Host port or range; null when not published.")
    target: int
    protocol: str = "tcp"


class VolumeMount(Frozen):
    type: str = Field(description="volume, bind, tmpfs, npipe or cluster")
    source: str | None = None
    target: str
    read_only: bool = False


class ServiceView(Frozen):
    """A service as Compose renders it, with secrets redacted."""

    name: str
    image: str | None
    build: bool = Field(description="True when the service is built from a context rather than pulled.")
    ports: list[PortBinding] = Field(default_factory=list)
    volumes: list[VolumeMount] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    depends_on: dict[str, str] = Field(
        default_factory=dict, description="Dependency -> condition (service_started, service_healthy, ...)."
    )
    healthcheck: bool = Field(description="A healthcheck is declared in the compose file (and not disabled).")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Environment with secret-looking values replaced by '***'."
    )
    memory_limit_bytes: int | None = None
    cpu_limit: float | None = None
    restart: str | None = None
    profiles: list[str] = Field(default_factory=list)
    dsm: dict[str, object] = Field(default_factory=dict, description="The service's x-dsm settings.")


# -- inventory: list_stacks / inspect_stack ------------------------------------------------


class StackEntry(Frozen):
    name: str = Field(description="Compose project name; pass it as `stack` to tools that act on a running stack.")
    path: str = Field(description="Directory relative to the stacks root; pass it as `path` to tools that read files.")
    compose_files: list[str]
    services: list[str] = Field(description="Services `up` starts (declared, minus those behind inactive profiles).")
    containers: int = Field(description="Containers of this project on the engine, in any state.")
    running: int
    healthy: int = Field(description="Running containers whose healthcheck passes or that have none.")
    state: str = Field(description="not-deployed | running | degraded (some not running/healthy) | stopped | unknown")
    engine: str | None = None
    """The DSM_ENGINES engine it runs on (null with one engine)."""


class ObservedProject(Frozen):
    name: str
    working_dir: str | None
    containers: int
    running: int
    healthy: int
    engine: str | None = None


class StackList(Frozen):
    stacks_root: str
    stacks: list[StackEntry]
    other_projects: list[ObservedProject] = Field(
        description="Compose projects running on the host that are not under the stacks root: observed only."
    )
    problems: list[str] = Field(description="Name conflicts, unreadable directories, engine unreachable, ...")
    engine: str | None = Field(default=None, description="The engine listed: its URL and what chose it "
                               "(DOCKER_HOST, a docker context); null when no engine could be named.")
    engines: dict[str, str] | None = Field(default=None, description="Several engines: each engine's "
                                           "state (reachable, read-only, unreachable: why).")


class StackInspection(Frozen):
    stack: str
    path: str | None
    files: list[str] = Field(description="Every file Compose reads for the stack (compose files, includes, env files).")
    rendered: bool = Field(description="True when Compose rendered the model; false means see findings.")
    services: list[ServiceView]
    networks: list[str]
    volumes: list[str]
    secrets: list[str] = Field(description="Names of declared secrets (never their values).")
    settings: dict[str, object] = Field(description="The stack's top-level x-dsm settings.")
    findings: list[Finding]
