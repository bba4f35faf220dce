"""A running stack's x-dsm settings, read from its screened source files (no Compose run).

Compose drops service-level ``x-`` keys when it renders, so the watcher reads the files as
written; stacks without files (started by hand elsewhere) get the defaults, merged with the
``dsm.*`` labels of their containers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from server.stacks import StackLocation
from server.xdsm import ServiceSettings, StackSettings, XdsmInvalid, parse_service_settings, parse_stack_settings

log = logging.getLogger("docker_stack_mcp.monitor")


@dataclass(frozen=True)
class StackPolicy:
    settings: StackSettings = field(default_factory=StackSettings)
    services: dict[str, ServiceSettings] = field(default_factory=dict)

    def service(self, name: str) -> ServiceSettings:
        return self.services.get(name) or ServiceSettings()

    @property
    def critical(self) -> bool:
        return self.settings.critical or any(s.critical for s in self.services.values())


def stack_policy(location: StackLocation | None, labels: dict[str, dict[str, str]] | None = None) -> StackPolicy:
    """Settings from the files (top level and per service), labels under x-dsm; defaults when invalid."""
    labels = labels or {}
    top: Any = None
    raw_services: dict[str, Any] = {}
    for doc in (location.documents if location else ()):
        data = doc.data if doc is not None and isinstance(doc.data, dict) else {}
        if isinstance(data.get("x-dsm"), dict):
            top = {**(top or {}), **data["x-dsm"]}
        for name, body in (data.get("services") or {}).items() if isinstance(data.get("services"), dict) else []:
            if isinstance(body, dict) and isinstance(body.get("x-dsm"), dict):
                raw_services[str(name)] = {**raw_services.get(str(name), {}), **body["x-dsm"]}
    try:
        settings = parse_stack_settings(top)
    except XdsmInvalid as exc:
        log.warning("%s; using defaults", exc)
        settings = StackSettings()
    services: dict[str, ServiceSettings] = {}
    for name in set(raw_services) | set(labels):
        try:
            services[name] = parse_service_settings(name, raw_services.get(name), labels.get(name))
        except XdsmInvalid as exc:
            log.warning("%s; using defaults", exc)
    return StackPolicy(settings, services)
