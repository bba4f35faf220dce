"""The pydantic reports validate_compose and check_resources return (the tools' output schemas)."""

from __future__ import annotations

from pydantic import Field

from server.models import Finding, Frozen


class ValidationReport(Frozen):
    stack: str = Field(description="Compose project name (or 'inline').")
    path: str | None = Field(description="Stack directory relative to the stacks root; null for inline content.")
    valid: bool = Field(description="Compose accepts the model (it renders).")
    go: bool = Field(description="No error findings: a deployment may proceed.")
    host_checked: bool = Field(description="The live host was checked (ports, images, memory, disk).")
    services: list[str]
    summary: str
    errors: int
    warnings: int
    infos: int
    findings: list[Finding] = Field(description="Errors first. Each has rule, severity, line, fix, evidence.")
    notes: list[str] = Field(default_factory=list, description="What could not be checked, and why.")


class HostResources(Frozen):
    engine: str = Field(description="The engine measured: its URL and what chose it (DOCKER_HOST, a context).")
    engine_local: bool = Field(description="The engine runs on this machine (figures read from its kernel).")
    cpus: int | None
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    memory_used_percent: float | None
    cpu_used_percent: float | None = Field(description="Whole host, 0-100, sampled over 0.25 s.")
    disk_total_bytes: int | None
    disk_free_bytes: int | None = Field(description="Of the filesystem holding Docker's root dir.")
    docker_root_dir: str | None
    source: dict[str, str] = Field(description="How each figure was measured.")


class ContainerUsage(Frozen):
    name: str
    project: str | None
    service: str | None
    cpu_percent: float | None = Field(description="100 = one full CPU (as docker stats counts).")
    memory_bytes: int | None
    memory_limit_bytes: int | None


class ServiceRequest(Frozen):
    service: str
    replicas: int
    memory_bytes: int | None = Field(description="Per replica: the reservation, else the limit, else null.")
    memory_source: str = Field(description="reservation | limit | none")
    cpus: float | None


class ResourceRequest(Frozen):
    memory_bytes: int = Field(description="Total over services and replicas.")
    cpus: float = Field(description="Sum of CPU limits times replicas (may exceed the host: limits overcommit).")
    credited_bytes: int = Field(description="Memory the stack's own running containers use now (freed by a redeploy).")
    services: list[ServiceRequest]
    unknown_services: list[str] = Field(description="Services with neither a limit nor a reservation: not counted.")


class ResourceReport(Frozen):
    host: HostResources
    containers_running: int
    top_cpu: list[ContainerUsage]
    top_memory: list[ContainerUsage]
    stack: str | None
    requested: ResourceRequest | None = Field(description="What the stack asks for; null without a stack.")
    sufficient: bool | None = Field(
        description="The stack fits with 5% headroom; null without a stack, or when no service of it declares "
        "memory (nothing to measure: see no-resource-limits)."
    )
    findings: list[Finding]
    summary: str
