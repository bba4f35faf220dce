"""What rules read: the rendered stack, its source as written, and (optionally) host facts.

Rules are pure functions of a :class:`LintContext`. Everything that needs I/O (reading the
source files again, asking the engine, reading /proc) is gathered beforehand by
:mod:`server.preflight` into plain data here, so every rule can be tested without a host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from server.stackmodel import LoadedStack

RegistryState = Literal["present", "absent", "unreachable"]


@dataclass(frozen=True)
class ImageFact:
    """What the engine knows of one image reference."""

    ref: str
    local: bool
    healthcheck: bool | None = None
    """A healthcheck baked into the image (None: unknown, its config was not read)."""
    config_source: Literal["local", "registry"] | None = None
    """Where the image's own config (healthcheck, user) was read: image inspect, or its registry."""
    user: str | None = None
    """The image's default user ('' = root; None: unknown)."""
    registry: RegistryState | None = None
    """Checked only when the image is not local."""
    detail: str = ""


@dataclass(frozen=True)
class PortHolder:
    """Something on the host that already holds a port the stack wants to publish."""

    protocol: str
    port: int
    host_ip: str
    holder: str
    """'container NAME (project P)', 'process NAME (pid N)' or 'an unknown process'."""
    kind: Literal["container", "process"]


@dataclass(frozen=True)
class Usage:
    memory_bytes: int | None
    cpu_percent: float | None = None
    """100 = one full CPU, as `docker stats` counts."""
    memory_limit_bytes: int | None = None
    """None: unlimited (or unknown)."""


@dataclass(frozen=True)
class HostFacts:
    engine_local: bool
    cpus: int | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    images: dict[str, ImageFact] = field(default_factory=dict)
    port_holders: list[PortHolder] = field(default_factory=list)
    ports_scope: str = ""
    """How host ports were checked (said in port-conflict evidence)."""
    own_usage: dict[str, Usage] = field(default_factory=dict)
    """Current usage of the stack's own running containers, by service (summed over replicas)."""
    cpu_used_percent: float | None = None
    """Whole-host CPU in use, 0-100 (None: not sampled)."""
    memory_source: str = ""
    notes: list[str] = field(default_factory=list)
    api_version: str | None = None
    """The Engine API version the engine speaks (Compose negotiates down to it; '1.41' is Engine 20.10)."""


@dataclass(frozen=True)
class LintContext:
    stack: LoadedStack
    defined_variables: frozenset[str] | None = None
    """Names Compose had a value for (.env, given env, its own environment); None = unknown."""
    facts: HostFacts | None = None

    @cached_property
    def services(self) -> dict[str, dict[str, Any]]:
        return {name: body or {} for name, body in self.stack.services.items()}

    @cached_property
    def one_shots(self) -> dict[str, str]:
        """One-shot services (exempt from health rules) and why we think so."""
        result: dict[str, str] = {}
        for name in self.services:
            if self.stack.service_settings_for(name).is_one_shot:
                result[name] = "x-dsm marks it one-shot"
        for body in self.services.values():
            for dep, cfg in (body.get("depends_on") or {}).items():
                if (cfg or {}).get("condition") == "service_completed_successfully":
                    result.setdefault(dep, "a dependent waits for service_completed_successfully")
        return result
