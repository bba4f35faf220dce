"""Turning a stack's files (or inline YAML) into a :class:`LoadedStack`, safely.

Order matters: screen every file (yamlsafe), refuse references that leave the stacks root,
and only then let ``docker compose config`` render the model. When something fails the
result is a list of findings with real line numbers, never a half-read model.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server.compose import ComposeRunner
from server.errors import ComposeError, DsmError, PathRejected, UnsafeYaml
from server.models import Finding
from server.redact import Scrubber, is_secret_key, positional_secrets, remember_secrets
from server.settings import Settings
from server.stackmodel import LoadedStack
from server.stacks import check_argument, locate_stack, normalize_project_name, read_compose_file, read_dotenv
from server.xdsm import ServiceSettings, XdsmInvalid, parse_service_settings, parse_stack_settings
from server.yamlsafe import SourceLines, YamlDocument, load_yaml

_COMPOSE_TOP_KEYS = {"services", "include", "name", "version", "networks", "volumes", "secrets", "configs"}


class StackRenderFailed(DsmError):
    """The stack could not be read or rendered; ``findings`` say why, with lines."""

    def __init__(self, name: str, findings: list[Finding]) -> None:
        self.name = name
        self.findings = findings
        first = findings[0].message if findings else "unknown problem"
        super().__init__(
            f"stack {name!r} could not be rendered: {first}",
            state="nothing was changed",
            next_step="fix the findings (validate_compose lists them all) and try again",
        )


async def load_stack(
    settings: Settings,
    compose: ComposeRunner,
    *,
    path: str | None = None,
    content: str | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedStack:
    """Screen, check and render one stack. Raises StackRenderFailed (findings) or PathRejected."""
    env = dict(env or {})
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise PathRejected(f"env key {key!r} is not a valid variable name", state="nothing was read")
    if (path is None) == (content is None):
        raise PathRejected("pass exactly one of path or content", state="nothing was read")
    if content is not None:
        return await _load_inline(settings, compose, content, env)
    assert path is not None
    location = locate_stack(settings, path)
    docs: list[YamlDocument] = []
    for file, located in zip(location.files, location.documents, strict=True):
        doc = located if located is not None else _screen_file(file, settings, location.name)
        _require_compose_shape(doc, location.name)
        docs.append(doc)
    dotenv = read_dotenv(location.directory)
    _check_references(settings, location.directory, docs, location.name)
    return await _render(settings, compose, location.name, location.directory, location.files, docs, dotenv, env)


async def _load_inline(settings: Settings, compose: ComposeRunner, content: str, env: dict[str, str]) -> LoadedStack:
    try:
        doc = load_yaml(content, "content", max_bytes=settings.yaml_max_bytes)
    except UnsafeYaml as exc:
        raise StackRenderFailed("inline", [yaml_finding(exc)]) from None
    _require_compose_shape(doc, "inline")
    declared = doc.data.get("name") if isinstance(doc.data, dict) else None
    name = normalize_project_name(declared) if isinstance(declared, str) and "$" not in declared else "inline"
    with tempfile.TemporaryDirectory(prefix="dsm-inline-") as tmp:
        directory = Path(tmp) / (name or "inline")
        directory.mkdir()
        _check_references(settings, directory, [doc], name, inline=True)
        file = directory / "compose.yaml"
        file.write_text(content, encoding="utf-8")
        return await _render(settings, compose, name or "inline", None, [file], [doc], {}, env, cwd=directory)


def _screen_file(file: Path, settings: Settings, name: str) -> YamlDocument:
    """Read a file that was refused when the stack was located, to report why as a finding."""
    try:
        return read_compose_file(file, settings)
    except UnsafeYaml as exc:
        raise StackRenderFailed(name, [yaml_finding(exc)]) from None


def yaml_finding(exc: UnsafeYaml) -> Finding:
    syntax = "syntax error" in exc.what
    return Finding(
        rule="compose-syntax" if syntax else "unsafe-yaml",
        severity="error",
        category="syntax" if syntax else "security",
        message=exc.what,
        line=exc.line,
        evidence=[f"column {exc.column}"] if exc.column else [],
    )


def _require_compose_shape(doc: YamlDocument, name: str) -> None:
    data = doc.data
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise StackRenderFailed(name, [_invalid(f"the file is {kind}, not a Compose mapping with services:", 1)])
    if "apiVersion" in data and "kind" in data:
        raise StackRenderFailed(
            name,
            [
                _invalid(
                    f"this is a Kubernetes manifest (kind: {data.get('kind')}), not a Compose file",
                    doc.lines.get("kind"),
                )
            ],
        )
    if not (set(map(str, data)) & {"services", "include"}):
        keys = ", ".join(sorted(map(str, data))[:6])
        raise StackRenderFailed(name, [_invalid(f"no services: or include: at the top level (found: {keys})", 1)])


def _invalid(message: str, line: int | None) -> Finding:
    return Finding(rule="compose-invalid", severity="error", category="syntax", message=message, line=line)


def _references(doc: YamlDocument) -> list[tuple[str, tuple[str, ...]]]:
    """File paths a compose document makes Compose read: include, env_file, secrets/configs file."""
    data = doc.data if isinstance(doc.data, dict) else {}
    refs: list[tuple[str, tuple[str, ...]]] = []

    def add(value: Any, where: tuple[str, ...]) -> None:
        if isinstance(value, str):
            refs.append((value, where))
        elif isinstance(value, list):
            for item in value:
                add(item, where)
        elif isinstance(value, dict):
            for key in ("path", "file", "env_file", "project_directory"):
                if key in value:
                    add(value[key], where)

    add(data.get("include"), ("include",))
    for section in ("secrets", "configs"):
        for entry_name, entry in (data.get(section) or {}).items() if isinstance(data.get(section), dict) else []:
            if isinstance(entry, dict) and "file" in entry:
                add(entry["file"], (section, str(entry_name)))
    services = data.get("services")
    for svc, body in services.items() if isinstance(services, dict) else []:
        if isinstance(body, dict):
            add(body.get("env_file"), ("services", str(svc), "env_file"))
            ext = body.get("extends")
            if isinstance(ext, dict) and "file" in ext:
                add(ext["file"], ("services", str(svc), "extends"))
    return refs


def _check_references(
    settings: Settings, directory: Path, docs: list[YamlDocument], name: str, *, inline: bool = False
) -> None:
    root = settings.stacks_root.resolve() if settings.stacks_root.exists() else settings.stacks_root
    findings: list[Finding] = []
    for doc in docs:
        for ref, where in _references(doc):
            if "$" in ref:
                continue  # interpolated; checked again on the rendered model
            try:
                check_argument(ref, "referenced path")
            except PathRejected as exc:
                findings.append(_outside_finding(ref, where, doc.lines, exc.what))
                continue
            target = Path(ref) if Path(ref).is_absolute() else directory / ref
            resolved = target.resolve()
            inside = resolved.is_relative_to(root) or (inline and resolved.is_relative_to(directory.resolve()))
            if not inside:
                findings.append(
                    _outside_finding(ref, where, doc.lines, f"{ref!r} resolves outside the stacks root {root}")
                )
    if findings:
        raise StackRenderFailed(name, findings)


def _outside_finding(ref: str, where: tuple[str, ...], lines: SourceLines, message: str) -> Finding:
    return Finding(
        rule="path-outside-root",
        severity="error",
        category="security",
        service=where[1] if where[0] == "services" else None,
        message=message + "; Compose was not run, so the file was not read",
        line=lines.get(*where),
        fix="keep every file a stack uses inside its own directory under the stacks root",
    )


async def _render(
    settings: Settings,
    compose: ComposeRunner,
    name: str,
    directory: Path | None,
    files: list[Path],
    docs: list[YamlDocument],
    dotenv: dict[str, str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
) -> LoadedStack:
    # Both sources: a value in .env that the given env overrides is still a secret on disk.
    secrets = {v for d in (dotenv, env) for k, v in d.items() if is_secret_key(k)} | _literal_secrets(docs)
    scrub = Scrubber(secrets, assignments=False)
    project_dir = directory or cwd
    assert project_dir is not None
    try:
        rendered = await compose.config(project_dir, files, env=env, scrub=scrub)
    except ComposeError as exc:
        if exc.returncode is None:  # timed out: not a property of the file we can point at
            raise
        raise StackRenderFailed(name, compose_error_findings(exc.stderr, docs[0])) from None
    for svc in (rendered.get("services") or {}).values():
        for key, value in ((svc or {}).get("environment") or {}).items():
            if is_secret_key(key) and isinstance(value, str):
                secrets.add(value)
    try:
        stack_settings = parse_stack_settings(rendered.get("x-dsm"))
        service_settings = _service_settings(rendered, docs)
    except XdsmInvalid as exc:
        raise StackRenderFailed(
            name,
            [
                Finding(
                    rule="xdsm-invalid",
                    severity="error",
                    category="config",
                    message=exc.what,
                    line=docs[0].lines.get("x-dsm"),
                )
            ],
        ) from None
    positional = positional_secrets(secrets, [d.data for d in docs], rendered)
    remember_secrets(positional)  # tool errors are scrubbed of them too (tools._common)
    return LoadedStack(
        name=str(rendered.get("name") or name),
        directory=directory,
        files=files,
        rendered=rendered,
        settings=stack_settings,
        service_settings=service_settings,
        lines=docs[0].lines,
        secret_values=positional,
        sources=tuple(docs),
        dotenv_keys=frozenset(dotenv),
    )


def _literal_secrets(docs: list[YamlDocument]) -> set[str]:
    """Values written in the files under credential-looking environment keys (mapping or list form)."""
    found: set[str] = set()
    for doc in docs:
        services = doc.data.get("services") if isinstance(doc.data, dict) else None
        for body in services.values() if isinstance(services, dict) else []:
            environment = body.get("environment") if isinstance(body, dict) else None
            if isinstance(environment, list):
                pairs = [str(item).split("=", 1) for item in environment if "=" in str(item)]
                environment = {k: v for k, v in pairs}
            for key, value in (environment or {}).items() if isinstance(environment, dict) else []:
                if is_secret_key(str(key)) and isinstance(value, str | int) and "$" not in str(value):
                    found.add(str(value))
    return found


def _service_settings(rendered: dict[str, Any], docs: list[YamlDocument]) -> dict[str, ServiceSettings]:
    # Compose drops service-level x- keys when rendering; read them from the source files,
    # the override's block replacing the main file's.
    raw: dict[str, Any] = {}
    for doc in docs:
        services = doc.data.get("services") if isinstance(doc.data, dict) else None
        for svc, body in services.items() if isinstance(services, dict) else []:
            if isinstance(body, dict) and "x-dsm" in body:
                raw[str(svc)] = body["x-dsm"]
    result: dict[str, ServiceSettings] = {}
    for svc, body in (rendered.get("services") or {}).items():
        labels = (body or {}).get("labels") or {}
        result[svc] = parse_service_settings(svc, raw.get(svc), labels if isinstance(labels, dict) else {})
    return result


_ERROR_PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"dependency cycle detected: (?P<detail>.+)"), "dependency-cycle", "dependencies"),
    (
        re.compile(
            r"service \"?(?P<service>[\w.-]+)\"? refers to undefined (?P<kind>network|volume|secret|config) "
            r"(?P<detail>[\w.-]+)"
        ),
        "undefined-reference",
        "references",
    ),
    (
        re.compile(r"service \"?(?P<service>[\w.-]+)\"? depends on undefined service \"?(?P<detail>[\w.-]+)"),
        "undefined-reference",
        "dependencies",
    ),
    (re.compile(r"required variable (?P<detail>\w+) is missing a value"), "missing-variable", "config"),
    (re.compile(r"(?:yaml|failed to parse [^:]+): line (?P<line>\d+): (?P<detail>.+)"), "compose-syntax", "syntax"),
]


def compose_error_findings(stderr: str, doc: YamlDocument) -> list[Finding]:
    """Map Compose's error text to findings, with lines from our own parse where we have them."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else "docker compose config failed without a message"
    for pattern, rule, category in _ERROR_PATTERNS:
        match = pattern.search(text)
        if not match:
            continue
        groups = match.groupdict()
        service = groups.get("service")
        line: int | None = None
        if rule == "compose-syntax":
            line = int(groups["line"])
        elif rule == "missing-variable":
            where = re.search(r"interpolating ([\w.-]+)", text)
            parts = tuple(where.group(1).split(".")) if where else ()
            service = parts[1] if len(parts) > 1 and parts[0] == "services" else None
            line = doc.lines.get(*parts) if parts else None
        elif service:
            line = doc.lines.get("services", service, _REF_KEYS.get(groups.get("kind") or "", "depends_on"))
        elif rule == "dependency-cycle":
            first = groups["detail"].split(" -> ")[0].strip()
            service = first or None
            line = doc.lines.get("services", first, "depends_on")
        return [
            Finding(
                rule=rule,
                severity="error",
                category=category,
                service=service,
                message=text[:500],
                line=line,
                evidence=[f"compose: {text[:300]}"],
            )
        ]
    service, key = _service_and_key(text, doc)
    return [
        Finding(
            rule="compose-invalid",
            severity="error",
            category="syntax",
            service=service,
            message=text[:500],
            line=(doc.lines.get("services", service, key) if key else doc.lines.get("services", service))
            if service
            else None,
            evidence=[f"compose: {text[:300]}"],
        )
    ]


_SERVICE_PATH = re.compile(
    r"services(?:\[['\"]?(?P<bracket>[^\]'\"]+)['\"]?\](?:\.(?P<bkey>[\w-]+))?|\.(?P<dotted>[\w.-]+))"
)
_CONTAINER_NAME_CLASH = re.compile(r"can't set container_name and (?P<service>[\w.-]+) as container name")
_EXTRA_PROPERTY = re.compile(r"additional propert(?:y|ies) '(?P<key>[\w.-]+)'")


def _service_and_key(text: str, doc: YamlDocument) -> tuple[str | None, str | None]:
    """The service (and key in it) a Compose error names: services.web.ports, services[web].mem_limit, ..."""
    names = _services(doc)
    for match in _SERVICE_PATH.finditer(text):
        if match.group("bracket"):
            name, key = match.group("bracket"), match.group("bkey")
        else:
            dotted = match.group("dotted")
            candidates = [n for n in names if dotted == n or dotted.startswith(n + ".")]
            if not candidates:
                continue
            name = max(candidates, key=len)
            key = dotted[len(name) + 1 :].split(".")[0] or None
        if name in names:
            if key is None and (extra := _EXTRA_PROPERTY.search(text)):
                key = extra.group("key")
            return name, key
    clash = _CONTAINER_NAME_CLASH.search(text)
    if clash and clash.group("service") in names:
        return clash.group("service"), "container_name"
    return None, None


_REF_KEYS = {"network": "networks", "volume": "volumes", "secret": "secrets", "config": "configs"}


def _services(doc: YamlDocument) -> set[str]:
    services = doc.data.get("services") if isinstance(doc.data, dict) else None
    return set(map(str, services)) if isinstance(services, dict) else set()
