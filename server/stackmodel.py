"""The rendered view of one stack that checks run over.

Built by :mod:`server.stacks` (screened source files + ``docker compose config --format json``);
read by policy rules, host preflight, deployment and inspection. Plain data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from server.xdsm import ServiceSettings, StackSettings
from server.yamlsafe import SourceLines, YamlDocument


@dataclass(frozen=True)
class LoadedStack:
    """A stack as Compose renders it, plus our settings and where each key sits in the source."""

    name: str
    directory: Path | None
    """The stack directory; ``None`` for inline content that has no home on disk."""
    files: list[Path]
    """Compose files in the order Compose merges them (main file, then override)."""
    rendered: dict[str, Any]
    """Output of ``docker compose config --format json``: interpolated, merged, normalised."""
    settings: StackSettings
    service_settings: dict[str, ServiceSettings]
    lines: SourceLines
    """Line numbers in the main compose file, by key path."""
    secret_values: frozenset[str] = field(default_factory=frozenset)
    """Values that must never appear in output (from .env, given env, credential-looking keys)."""
    sources: tuple[YamlDocument, ...] = ()
    """The screened compose files as written (main file first), parsed once by the loader."""
    dotenv_keys: frozenset[str] = field(default_factory=frozenset)
    """Names the stack's .env defines (their values are not kept here)."""

    @property
    def source_text(self) -> str:
        """The main compose file as written (for ${VAR} references and their lines)."""
        return self.sources[0].text if self.sources else ""

    @cached_property
    def source_services(self) -> dict[str, dict[str, Any]]:
        """Services as written (before interpolation), each later file merged over the earlier."""
        services: dict[str, dict[str, Any]] = {}
        for doc in self.sources:
            raw = doc.data.get("services") if isinstance(doc.data, dict) else None
            for name, body in raw.items() if isinstance(raw, dict) else []:
                if not isinstance(body, dict):
                    continue
                before = services.get(str(name), {})
                merged = {**before, **body}
                if isinstance(before.get("environment"), dict) and isinstance(body.get("environment"), dict):
                    merged["environment"] = {**before["environment"], **body["environment"]}
                services[str(name)] = merged
        return services

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services = self.rendered.get("services") or {}
        return services if isinstance(services, dict) else {}

    def service_settings_for(self, service: str) -> ServiceSettings:
        return self.service_settings.get(service) or ServiceSettings()

    def line_of(self, service: str | None, *keys: str) -> int | None:
        """Best line for a finding: the key inside the service, else the service, else None."""
        if service is None:
            return self.lines.get(*keys) if keys else None
        return self.lines.get("services", service, *keys)
