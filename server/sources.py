"""Every file a stack makes Compose read, found, path-checked and screened before Compose runs.

Starting from the top-level compose files (COMPOSE_FILE, or compose.yaml + override), the walk
follows ``include`` (at every depth, with its ``env_file`` and ``project_directory``), ``extends``
files, service ``env_file`` and ``label_file``, the ``file`` of top-level secrets and
configs, and what a ``build`` sends to the engine (context, Dockerfile, additional contexts, ssh
keys). Remote includes and build contexts (``oci://``, git and http URLs) are refused: their
content cannot be screened first. References are interpolated the way Compose will (server.interpolation), resolved with
symlinks followed, and must stay inside the stacks root. Compose files met on the way pass
server.yamlsafe (size, depth, alias budget); env files pass the size cap. Each file is read at
most once (a cycle of includes stops at the second visit) and includes nest at most
:data:`MAX_INCLUDE_DEPTH` deep. Secrets and configs files are path-checked, never read: Compose
mounts them, it does not parse them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from server.errors import PathRejected, UnsafeYaml
from server.interpolation import MissingRequired, substitute
from server.models import Finding
from server.settings import Settings
from server.stacks import check_argument, read_compose_file, relative_name
from server.yamlsafe import Line, YamlDocument, read_text_capped

MAX_INCLUDE_DEPTH = 8
_REMOTE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|git@|github\.com/)")
MAX_ENV_FILE_BYTES = 256 * 1024

Kind = Literal["include", "extends", "env_file", "mounted"]


@dataclass
class StackSources:
    """What the walk found: compose documents by role, every file read, and what was refused."""

    included: list[YamlDocument] = field(default_factory=list)
    """Compose files reached through ``include`` (deepest first: they load before their includer)."""
    extended: list[YamlDocument] = field(default_factory=list)
    """Compose files reached through ``extends.file`` (their services are templates, not services)."""
    files: list[str] = field(default_factory=list)
    """Every file Compose will read, relative to the stack directory, in the order met."""
    findings: list[Finding] = field(default_factory=list)


def collect_sources(
    settings: Settings,
    directory: Path,
    top: list[tuple[Path, YamlDocument]],
    variables: Mapping[str, str],
    *,
    inline: bool = False,
) -> StackSources:
    """Walk every reference from the ``top`` documents; refusals become findings, nothing raises."""
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    allowed = [root] + ([directory.resolve()] if inline else [])
    out = StackSources()
    seen: set[Path] = {file.resolve() for file, _ in top}
    out.files.extend(relative_name(file, directory) for file, _ in top)

    def visit(doc: YamlDocument, base: Path, depth: int) -> None:
        for raw, where, kind in _references(doc):
            try:
                ref = substitute(raw, variables) if "$" in raw else raw
            except MissingRequired:
                continue  # Compose refuses the file and says which variable; it reads nothing
            line = doc.lines.get(*where)
            service = where[1] if where[0] == "services" and len(where) > 1 else None
            try:
                check_argument(ref, "referenced path")
            except PathRejected as exc:
                out.findings.append(_outside(exc.what, service, line, doc.lines.file))
                continue
            if _REMOTE.match(ref):
                out.findings.append(
                    _outside(
                        f"{ref!r} is a remote resource: Compose would fetch a file that cannot be screened first",
                        service,
                        line,
                        doc.lines.file,
                    )
                )
                continue
            target = Path(ref) if Path(ref).is_absolute() else base / ref
            resolved = target.resolve()
            if not any(resolved.is_relative_to(a) for a in allowed):
                out.findings.append(
                    _outside(f"{ref!r} resolves outside the stacks root {root}", service, line, doc.lines.file)
                )
                continue
            if kind == "mounted" or not resolved.is_file() or resolved in seen:
                continue  # missing: Compose says so (or the env_file is optional); seen: read once, no cycle
            seen.add(resolved)
            out.files.append(relative_name(resolved, directory))
            if kind == "env_file":
                try:
                    read_text_capped(resolved, MAX_ENV_FILE_BYTES)
                except UnsafeYaml as exc:
                    out.findings.append(_refused(exc, service, line, doc.lines.file))
                continue
            if depth >= MAX_INCLUDE_DEPTH:
                out.findings.append(
                    Finding(
                        rule="unsafe-yaml",
                        severity="error",
                        category="security",
                        service=service,
                        message=f"includes nest deeper than {MAX_INCLUDE_DEPTH} levels at {ref!r}",
                        line=line,
                        file=doc.lines.file,
                    )
                )
                continue
            try:
                child = read_compose_file(resolved, settings, directory)
            except UnsafeYaml as exc:
                out.findings.append(
                    _refused(exc, service, line, doc.lines.file, child=relative_name(resolved, directory))
                )
                continue
            child_base = _include_base(doc, where, resolved, base, variables) if kind == "include" else resolved.parent
            if kind == "include" and not _include_entry_has_env(doc, where):
                _check_default_env(child_base, child, service, line, doc.lines.file)
            visit(child, child_base, depth + 1)
            (out.included if kind == "include" else out.extended).append(child)

    def _check_default_env(base: Path, child: YamlDocument, service: str | None, line: Line | None, file: str) -> None:
        # An included project reads the .env of its own project directory, as the top one does.
        env = base / ".env"
        if not env.is_file():
            return
        resolved = env.resolve()
        if not any(resolved.is_relative_to(a) for a in allowed):
            out.findings.append(
                _outside(
                    f"{relative_name(env, directory)} resolves outside the stacks root {root}", service, line, file
                )
            )
            return
        if resolved in seen:
            return
        seen.add(resolved)
        out.files.append(relative_name(resolved, directory))
        try:
            read_text_capped(resolved, MAX_ENV_FILE_BYTES)
        except UnsafeYaml as exc:
            out.findings.append(_refused(exc, service, line, file))

    for _, doc in top:
        visit(doc, directory, 0)
    return out


def _include_entry_has_env(doc: YamlDocument, where: tuple[str, ...]) -> bool:
    entry = _include_entry(doc, where)
    return isinstance(entry, dict) and entry.get("env_file") is not None


def _include_base(
    doc: YamlDocument, where: tuple[str, ...], resolved: Path, base: Path, variables: Mapping[str, str]
) -> Path:
    """An included file's relative paths resolve against its project_directory, else its own folder."""
    entry = _include_entry(doc, where)
    project_dir = entry.get("project_directory") if isinstance(entry, dict) else None
    if isinstance(project_dir, str):
        try:
            return base / substitute(project_dir, variables)
        except MissingRequired:
            pass
    return resolved.parent


def _include_entry(doc: YamlDocument, where: tuple[str, ...]) -> Any:
    includes = doc.data.get("include") if isinstance(doc.data, dict) else None
    if isinstance(includes, list) and len(where) > 1 and where[1].isdigit() and int(where[1]) < len(includes):
        return includes[int(where[1])]
    return None


def _references(doc: YamlDocument) -> Iterator[tuple[str, tuple[str, ...], Kind]]:
    """(path as written, key path for its line, kind) for every file reference in one document."""
    data = doc.data if isinstance(doc.data, dict) else {}
    includes = data.get("include")
    for index, entry in enumerate(includes if isinstance(includes, list) else []):
        where: tuple[str, ...] = ("include", str(index))
        if isinstance(entry, str):
            yield entry, where, "include"
        elif isinstance(entry, dict):
            for path in _strings(entry.get("path")):
                yield path, where, "include"
            for path in _strings(entry.get("env_file")):
                yield path, where, "env_file"
            if isinstance(entry.get("project_directory"), str):
                yield entry["project_directory"], where, "mounted"
    for section in ("secrets", "configs"):
        entries = data.get(section)
        for name, entry in entries.items() if isinstance(entries, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                yield entry["file"], (section, str(name), "file"), "mounted"
    services = data.get("services")
    for svc, body in services.items() if isinstance(services, dict) else []:
        if not isinstance(body, dict):
            continue
        for key in ("env_file", "label_file"):
            for path in _strings(body.get(key)):
                yield path, ("services", str(svc), key), "env_file"
        ext = body.get("extends")
        if isinstance(ext, dict) and isinstance(ext.get("file"), str):
            yield ext["file"], ("services", str(svc), "extends"), "extends"
        yield from _build_paths(str(svc), body.get("build"))


def _build_paths(svc: str, build: Any) -> Iterator[tuple[str, tuple[str, ...], Kind]]:
    """A build reads its context, Dockerfile, additional contexts and ssh keys from the host: the
    builder sends them to the engine, so they are path-checked like every file Compose reads."""
    where: tuple[str, ...] = ("services", svc, "build")
    if isinstance(build, str):
        yield build, where, "mounted"
        return
    if not isinstance(build, dict):
        return
    context = build.get("context", ".")
    if isinstance(context, str):
        yield context, where, "mounted"
        dockerfile = build.get("dockerfile")
        if isinstance(dockerfile, str) and not _REMOTE.match(context):
            joined = dockerfile if dockerfile.startswith("/") else f"{context.rstrip('/') or '.'}/{dockerfile}"
            yield joined, where, "mounted"
    extra = build.get("additional_contexts")
    pairs = list(extra.values()) if isinstance(extra, dict) else [
        str(item).split("=", 1)[1] for item in extra if "=" in str(item)] if isinstance(extra, list) else []
    for value in pairs:
        if not isinstance(value, str) or value.startswith(("docker-image://", "service:")):
            continue  # an image or another service's build: no host file
        yield value.removeprefix("oci-layout://"), where, "mounted"
    ssh = build.get("ssh")
    keys = list(ssh.values()) if isinstance(ssh, dict) else [
        str(item).split("=", 1)[1] for item in ssh if "=" in str(item)] if isinstance(ssh, list) else []
    for key in keys:
        if isinstance(key, str) and key:
            yield key, where, "mounted"


def _strings(value: Any) -> list[str]:
    """A path, a list of paths, or a list of {path: ..., required: ...} entries."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("path"), str):
                out.append(item["path"])
        return out
    return []


def _outside(message: str, service: str | None, line: Line | None, file: str) -> Finding:
    return Finding(
        rule="path-outside-root",
        severity="error",
        category="security",
        service=service,
        message=message + "; Compose was not run, so the file was not read",
        line=int(line) if line is not None else None,
        file=file,
        fix="keep every file a stack uses inside its own directory under the stacks root",
    )


def _refused(
    exc: UnsafeYaml, service: str | None, line: Line | None, file: str, *, child: str | None = None
) -> Finding:
    syntax = "syntax error" in exc.what
    return Finding(
        rule="compose-syntax" if syntax else "unsafe-yaml",
        severity="error",
        category="syntax" if syntax else "security",
        service=service,
        message=exc.what + "; Compose was not run",
        line=exc.line if child else (int(line) if line is not None else None),
        file=child or file,
        evidence=[f"column {exc.column}"] if exc.column else [],
    )
