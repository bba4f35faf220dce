"""The rendered view of one stack that checks run over.

Built by :mod:`server.stacks` (screened source files + ``docker compose config --format json``);
read by policy rules, host preflight, deployment and inspection. Plain data, no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from server.project import ComposeProject
from server.xdsm import ServiceSettings, StackSettings
from server.yamlsafe import Line, SourceLines, YamlDocument


@dataclass(frozen=True)
class SourceMap:
    """Where each key was set across every file of the project: key path -> Line (file + line).

    Built in Compose's load order (included files, then the top-level files in merge order), the
    last file that sets a key wins, as in Compose's merge; YAML merge keys are resolved per file
    (server.yamlsafe); a service's ``extends`` lends the lines of keys it inherits.
    """

    by_path: dict[tuple[str, ...], Line] = field(default_factory=dict)
    file: str = ""

    def get(self, *path: str) -> Line | None:
        """Line of the deepest known prefix of ``path`` (so a nested key falls back to its parent)."""
        for end in range(len(path), 0, -1):
            line = self.by_path.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    @classmethod
    def merge(cls, docs: Sequence[YamlDocument], templates: Sequence[YamlDocument] = (), main: str = "") -> SourceMap:
        """``docs`` in Compose's load order; ``main`` names the first top-level file."""
        by_path: dict[tuple[str, ...], Line] = {}
        for doc in docs:
            for path, line in doc.lines.by_path.items():
                by_path[path] = Line(line, doc.lines.file)
        for doc in docs:
            services = doc.data.get("services") if isinstance(doc.data, dict) else None
            for svc, body in services.items() if isinstance(services, dict) else []:
                ext = body.get("extends") if isinstance(body, dict) else None
                base = ext if isinstance(ext, str) else ext.get("service") if isinstance(ext, dict) else None
                if not isinstance(base, str):
                    continue
                lender = _lender(doc, ext, templates)
                if lender is None:
                    continue
                for path, line in lender.lines.by_path.items():
                    if path[:2] == ("services", base) and len(path) > 2:
                        by_path.setdefault(("services", str(svc), *path[2:]), Line(line, lender.lines.file))
        return cls(by_path=by_path, file=main or (docs[-1].lines.file if docs else ""))


def _lender(doc: YamlDocument, ext: Any, templates: Sequence[YamlDocument]) -> YamlDocument | None:
    file = ext.get("file") if isinstance(ext, dict) else None
    if not isinstance(file, str):
        return doc
    wanted = os.path.normpath(Path(doc.lines.file).parent / file)
    return next((t for t in templates if os.path.normpath(t.lines.file) == wanted), None)


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
    lines: SourceMap | SourceLines
    """Where each key was set (file and line), across every file of the project."""
    secret_values: frozenset[str] = field(default_factory=frozenset)
    """Values that must never appear in output (from .env, given env, credential-looking keys)."""
    sources: tuple[YamlDocument, ...] = ()
    """The screened compose files as written (main file first), parsed once by the loader."""
    dotenv_keys: frozenset[str] = field(default_factory=frozenset)
    """Names the stack's .env defines (their values are not kept here)."""
    project: ComposeProject | None = None
    """The description every later Compose call on this stack uses (named as Compose rendered it)."""
    templates: tuple[YamlDocument, ...] = ()
    """Files read only through ``extends.file`` (their services are templates)."""
    read_files: tuple[str, ...] = ()
    """Every file Compose reads for this stack, relative to its directory (compose, env files)."""
    inactive: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Services behind profiles that are not active -> the profiles that would enable them."""
    inactive_rendered: dict[str, Any] | None = None
    """Compose's render with every profile enabled, when some services are inactive (linted apart)."""

    @property
    def all_sources(self) -> tuple[YamlDocument, ...]:
        """Every compose document Compose reads: project files and extends templates."""
        return (*self.sources, *self.templates)

    @property
    def source_text(self) -> str:
        """The main compose file as written (rules that read text read every file: all_sources)."""
        main = next((d for d in self.sources if d.lines.file == self.lines.file), None)
        return main.text if main else (self.sources[0].text if self.sources else "")

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
