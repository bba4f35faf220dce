"""Turning a stack's files (or inline YAML) into a :class:`LoadedStack`, safely.

Order matters: find every file the stack makes Compose read (server.sources), screen each
(yamlsafe), refuse references that leave the stacks root, and only then let ``docker compose
config`` render the model, through the stack's one :class:`server.project.ComposeProject`, as
``up`` would see it (no ``--profile '*'``; services behind inactive profiles are rendered apart,
concurrently, only when there are any). When something fails the result is a list of findings
with real files and line numbers, never a half-read model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from server.compose import ComposeRunner
from server.errors import ComposeError, DsmError, PathRejected, UnsafeYaml
from server.interpolation import references
from server.models import Finding
from server.project import ComposeProject
from server.redact import Scrubber, is_secret_key, positional_secrets, remember_secrets
from server.settings import Settings
from server.sources import collect_sources
from server.stackmodel import LoadedStack, SourceMap
from server.stacks import (
    StackLocation,
    inactive_services,
    locate_stack,
    normalize_project_name,
    read_compose_file,
    read_dotenv,
    relative_name,
)
from server.xdsm import ServiceSettings, XdsmInvalid, parse_service_settings, parse_stack_settings
from server.yamlsafe import Line, YamlDocument, load_yaml

MAX_SERVICES = 1000
"""Services per stack: a 1 MiB file of 26,000 one-line services gave a 119 MB answer."""
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
    dsm_override: bool = True,
) -> LoadedStack:
    """Screen, check and render one stack. Raises StackRenderFailed (findings) or PathRejected.

    ``dsm_override=False`` leaves our compose.dsm.yaml out while it pins images: a deploy states
    its own images, so it checks the user's files as it will run them (the pins of an earlier
    rollback are dropped). Without pins the file holds only scale_service's replicas and limits,
    which the deploy runs: it stays in."""
    env = dict(env or {})
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise PathRejected(f"env key {key!r} is not a valid variable name", state="nothing was read")
    if (path is None) == (content is None):
        raise PathRejected("pass exactly one of path or content", state="nothing was read")
    if content is not None:
        return await _load_inline(settings, compose, content, env)
    assert path is not None
    location = locate_stack(settings, path, env)
    project = location.project()
    if not dsm_override and location.overrides and _pins_in(location.directory):
        keep = len(location.files) - len(location.overrides)
        location = dataclasses.replace(location, files=location.files[:keep], documents=location.documents[:keep])
        # Spelled out with -f: with none, Compose reads COMPOSE_FILE from .env, which lists our
        # override, and would render the pins (and services only a pin still names) after all.
        project = dataclasses.replace(project, files=project.files or project.resolved_files, overrides=())
    if location.dotenv_error:
        raise StackRenderFailed(location.name, [_invalid(location.dotenv_error, None, file=".env")])
    top: list[tuple[Path, YamlDocument]] = []
    for file, located in zip(location.files, location.documents, strict=True):
        if located is None and not file.is_file():
            raise StackRenderFailed(
                location.name,
                [
                    _invalid(
                        f"{relative_name(file, location.directory)} (named by COMPOSE_FILE) does not exist",
                        None,
                        file=_compose_file_origin(location),
                    )
                ],
            )
        _check_inside(settings, file, location)
        doc = located if located is not None else _screen_file(file, settings, location.name, location.directory)
        _require_compose_shape(doc, location.name, main=not top)
        top.append((file, doc))
    found = collect_sources(settings, location.directory, top, location.variables)
    if found.findings:
        raise StackRenderFailed(location.name, found.findings)
    # Compose's dotenv lets the given env win; the .env values it shadows are still secrets on disk.
    compose_env = {k: v for k, v in env.items() if k.startswith("COMPOSE_")}
    shadowed = read_dotenv(location.directory, compose_env) if set(env) & set(location.dotenv) else {}
    return await _render(
        settings,
        compose,
        location.name,
        project,
        [f for f, _ in top],
        [*found.included, *(d for _, d in top)],
        found.extended,
        location.dotenv,
        env,
        location.profiles,
        read_files=found.files,
        directory=location.directory,
        shadowed=shadowed,
    )


def _compose_file_origin(location: StackLocation) -> str | None:
    """Where COMPOSE_FILE was set: the stack's .env, or (None) the env the caller gave."""
    return ".env" if "COMPOSE_FILE" in location.dotenv and "COMPOSE_FILE" not in location.env else None


def _check_inside(settings: Settings, file: Path, location: StackLocation) -> None:
    root = settings.stacks_root.resolve()
    resolved = file.resolve()
    if not resolved.is_relative_to(root):
        where = f"outside the stacks root {root}"
    elif not resolved.is_relative_to(location.directory.resolve()):
        # Inside the root but in another stack's directory: deploying it would run (and, with
        # --remove-orphans, fight over) that stack's services under this one's name.
        where = f"outside the stack directory {location.directory.name}/ (in {resolved.parent.relative_to(root)}/)"
    else:
        return
    raise StackRenderFailed(
        location.name,
        [
            Finding(
                rule="path-outside-root",
                severity="error",
                category="security",
                file=_compose_file_origin(location),
                message=f"COMPOSE_FILE names {str(file)!r}, {where}; Compose was not run",
                fix="keep every file a stack uses inside its own directory under the stacks root",
            )
        ],
    )


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
        file = directory / "compose.yaml"
        found = collect_sources(settings, directory, [(file, doc)], env, inline=True)
        if found.findings:
            raise StackRenderFailed(name, found.findings)
        file.write_text(content, encoding="utf-8")
        profiles = tuple(p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip())
        project = ComposeProject(directory=directory, env=env, profiles=profiles)
        return await _render(
            settings,
            compose,
            name or "inline",
            project,
            [file],
            [*found.included, doc],
            found.extended,
            {},
            env,
            profiles,
            read_files=["content"],
            directory=None,
        )


def _screen_file(file: Path, settings: Settings, name: str, directory: Path) -> YamlDocument:
    """Read a file that was refused when the stack was located, to report why as a finding."""
    try:
        return read_compose_file(file, settings, directory)
    except UnsafeYaml as exc:
        raise StackRenderFailed(name, [yaml_finding(exc, relative_name(file, directory))]) from None


def yaml_finding(exc: UnsafeYaml, file: str | None = None) -> Finding:
    syntax = "syntax error" in exc.what
    return Finding(
        rule="compose-syntax" if syntax else "unsafe-yaml",
        severity="error",
        category="syntax" if syntax else "security",
        message=exc.what,
        line=exc.line,
        file=file,
        evidence=[f"column {exc.column}"] if exc.column else [],
    )


def _require_compose_shape(doc: YamlDocument, name: str, *, main: bool = True) -> None:
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
    if main and not (set(map(str, data)) & {"services", "include"}):
        keys = ", ".join(sorted(map(str, data))[:6])
        raise StackRenderFailed(name, [_invalid(f"no services: or include: at the top level (found: {keys})", 1)])


def _invalid(message: str, line: int | None, *, file: str | None = None) -> Finding:
    return Finding(rule="compose-invalid", severity="error", category="syntax", message=message, line=line, file=file)


async def _render(
    settings: Settings,
    compose: ComposeRunner,
    name: str,
    project: ComposeProject,
    files: list[Path],
    docs: list[YamlDocument],
    templates: list[YamlDocument],
    dotenv: Mapping[str, str],
    env: dict[str, str],
    profiles: tuple[str, ...],
    *,
    read_files: list[str],
    directory: Path | None,
    shadowed: Mapping[str, str] | None = None,
) -> LoadedStack:
    declared = _services(docs)
    if len(declared) > MAX_SERVICES:
        raise StackRenderFailed(name, [Finding(
            rule="too-many-services", severity="error", category="config",
            message=f"the stack declares {len(declared)} services; at most {MAX_SERVICES} per stack are managed "
                    "(every answer, plan and check grows with them); Compose was not run",
            fix="split the stack into several stacks")])
    # Every source: a value in .env that the given env overrides is still a secret on disk.
    secrets = {v for d in (dotenv, env, shadowed or {}) for k, v in d.items() if is_secret_key(k)} | _literal_secrets(
        [*docs, *templates]
    )
    scrub = Scrubber(secrets, assignments=False)
    lines = SourceMap.merge(docs, templates, main=relative_name(files[0], project.directory))
    variables = {**dotenv, **env}
    inactive = inactive_services(docs, profiles, variables)
    # The go/no-go model is what `up` starts: no --profile flag, Compose reads COMPOSE_PROFILES.
    # Services behind inactive profiles are rendered apart (concurrently, only when there are any).
    renders = [compose.config(project, scrub=scrub)]
    if inactive:
        renders.append(compose.config(project, all_profiles=True, scrub=scrub))
    results = await asyncio.gather(*renders, return_exceptions=True)
    rendered_or_error = results[0]
    if isinstance(rendered_or_error, ComposeError):
        if rendered_or_error.returncode is None:  # timed out: not a property of the file we can point at
            raise rendered_or_error
        raise StackRenderFailed(
            name, compose_error_findings(rendered_or_error.stderr, lines, docs, inactive, templates=templates)
        ) from None
    if isinstance(rendered_or_error, BaseException):
        raise rendered_or_error
    rendered: dict[str, Any] = rendered_or_error
    full = results[1] if len(results) > 1 else None
    if isinstance(full, BaseException) and not isinstance(full, ComposeError):
        raise full
    for model in (rendered, full if isinstance(full, dict) else {}):
        for svc in (model.get("services") or {}).values():
            for key, value in ((svc or {}).get("environment") or {}).items():
                if is_secret_key(key) and isinstance(value, str):
                    secrets.add(value)
    try:
        stack_settings = parse_stack_settings(rendered.get("x-dsm"))
        service_settings = _service_settings(rendered, docs)
        if isinstance(full, dict):
            service_settings = {**_service_settings(full, docs), **service_settings}
    except XdsmInvalid as exc:
        raise StackRenderFailed(
            name,
            [
                Finding(
                    rule="xdsm-invalid",
                    severity="error",
                    category="config",
                    message=exc.what,
                    line=lines.get("x-dsm"),
                )
            ],
        ) from None
    rendered_name = str(rendered.get("name") or name)
    positional = positional_secrets(secrets, [d.data for d in (*docs, *templates)], rendered)
    remember_secrets(positional)  # tool errors are scrubbed of them too (tools._common)
    return LoadedStack(
        name=rendered_name,
        directory=directory,
        files=files,
        rendered=rendered,
        settings=stack_settings,
        service_settings=service_settings,
        lines=lines,
        secret_values=positional,
        sources=tuple(docs),
        dotenv_keys=frozenset(dotenv),
        project=project.named(rendered_name),
        templates=tuple(templates),
        read_files=tuple(read_files),
        inactive=inactive,
        inactive_rendered=full if isinstance(full, dict) else ({} if inactive else None),
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


def compose_error_findings(
    stderr: str,
    lines: SourceMap,
    docs: list[YamlDocument],
    inactive: Mapping[str, tuple[str, ...]] | None = None,
    *,
    templates: Sequence[YamlDocument] = (),
) -> list[Finding]:
    """Map Compose's error text to findings, with file and line from our own parse where we have them."""
    inactive = inactive or {}
    err_lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    text = err_lines[-1] if err_lines else "docker compose config failed without a message"
    names = _services(docs)
    for pattern, rule, category in _ERROR_PATTERNS:
        match = pattern.search(text)
        if not match:
            continue
        groups = match.groupdict()
        service = groups.get("service")
        line: int | None = None
        message = text[:500]
        if rule == "compose-syntax":
            line = int(groups["line"])
        elif rule == "missing-variable":
            where = re.search(r"interpolating ([\w.-]+)", text)
            parts = tuple(where.group(1).split(".")) if where else ()
            service = parts[1] if len(parts) > 1 and parts[0] == "services" else None
            line = lines.get(*parts) if parts else _where_variable(docs, groups["detail"])
        elif service:
            key = _REF_KEYS.get(groups.get("kind") or "", "depends_on")
            line = lines.get("services", service, key, groups.get("detail") or "")
            dep = groups.get("detail") or ""
            if key == "depends_on" and dep in inactive:
                message = (
                    f"service {service!r} depends on {dep!r}, which only profile(s) "
                    f"{', '.join(map(repr, inactive[dep]))} enable, and none of them is active: `up` fails "
                    f"(compose: {text[:300]})"
                )
        elif rule == "dependency-cycle":
            first = groups["detail"].split(" -> ")[0].strip()
            service = first or None
            line = lines.get("services", first, "depends_on")
        return [
            Finding(
                rule=rule,
                severity="error",
                category=category,
                service=service,
                message=message,
                line=line,
                evidence=[f"compose: {text[:300]}"],
            )
        ]
    named, named_key = _service_and_key(text, names)
    place: int | None = None
    fix: str | None = None
    if named:
        # The deepest key the message names (services.web.healthcheck.test.0 -> the `test:` line).
        deeper = re.search(rf"services\.{re.escape(named)}\.(?P<path>[\w.-]+)", text)
        path = deeper.group("path").split(".") if deeper else [named_key] if named_key else []
        place = lines.get("services", named, *path)
    if named is None and _HEALTHCHECK_TEST in text:
        named, place = _bad_healthcheck_test(docs, templates, lines)
    if named is None:
        named, place = _only_place(text, lines, docs)
    if _HEALTHCHECK_TEST in text:
        fix = ('give healthcheck.test a string (a shell command) or a list of strings that starts with "CMD", '
               '"CMD-SHELL" or "NONE"')
    return [
        Finding(
            rule="compose-invalid",
            severity="error",
            category="syntax",
            service=named,
            message=text[:500],
            line=place,
            fix=fix,
            evidence=[f"compose: {text[:300]}"],
        )
    ]


_HEALTHCHECK_TEST = "healthcheck.test"
_TEST_FORMS = ("CMD", "CMD-SHELL", "NONE")


def _bad_healthcheck_test(
    docs: list[YamlDocument], templates: Sequence[YamlDocument], lines: SourceMap
) -> tuple[str | None, int | None]:
    """The service whose healthcheck ``test`` list Compose rejects without naming it ("healthcheck.test
    must start either by CMD, CMD-SHELL or NONE"): the list, as the last file that sets it wrote it
    (or the ``extends`` template it inherits from), whose first word is none of those (Compose
    compares case-sensitively). First in load order when several are wrong (Compose stops at one)."""
    tests: dict[str, Any] = {}
    bases: dict[str, str] = {}
    for doc in [*templates, *docs]:
        services = doc.data.get("services") if isinstance(doc.data, dict) else None
        for svc, body in services.items() if isinstance(services, dict) else []:
            body = body if isinstance(body, dict) else {}
            check = body.get("healthcheck")
            ext = body.get("extends")
            base = ext if isinstance(ext, str) else ext.get("service") if isinstance(ext, dict) else None
            if isinstance(base, str) and doc in docs:
                bases[str(svc)] = base
            if isinstance(check, dict) and "test" in check:
                tests[str(svc) if doc in docs else f"template:{svc}"] = check["test"]
    for svc, base in bases.items():  # inherited: the template's test unless the service sets its own
        inherited = tests.get(f"template:{base}", tests.get(base))
        if svc not in tests and inherited is not None:
            tests[svc] = inherited
    for svc, test in tests.items():
        if svc.startswith("template:"):
            continue
        first = test[0] if isinstance(test, list) and test else None
        if isinstance(first, str) and "$" not in first and first not in _TEST_FORMS:
            return svc, lines.get("services", svc, "healthcheck", "test")
    return None, None


_QUOTED = re.compile(r"['\"](?P<word>[^'\"\s]{2,})['\"]")


def _only_place(text: str, lines: SourceMap, docs: list[YamlDocument]) -> tuple[str | None, int | None]:
    """When Compose names no location: the one place in the sources that holds the offending key or value.

    Candidates are the quoted words of the message and its last token (``invalid IP address: a:b``);
    the first candidate written on exactly one line of all the files wins, and the finding gets that
    file and line, and the service whose block holds it.
    """

    tail = text.rsplit(": ", 1)[-1].strip().strip("'\"") if ": " in text else ""
    candidates = [m.group("word") for m in _QUOTED.finditer(text)] + ([tail] if tail and " " not in tail else [])
    for word in candidates:
        hits = [
            (doc, number)
            for doc in docs
            for number, raw in enumerate(doc.text.splitlines(), start=1)
            if word in raw.split("#", 1)[0]
        ]
        if len(hits) != 1:
            continue
        doc, number = hits[0]
        top = max(
            ((line, path[0]) for path, line in doc.lines.by_path.items() if len(path) == 1 and line <= number),
            default=(0, ""),
        )
        service = None
        best = 0
        for path, line in doc.lines.by_path.items():
            if top[1] == "services" and len(path) == 2 and path[0] == "services" and best < line <= number:
                service, best = path[1], line
        return service, Line(number, doc.lines.file)
    return None, None


def _where_variable(docs: list[YamlDocument], variable: str) -> int | None:
    """The first line (with its file) that references ``variable``, for 'required variable' errors."""

    for doc in docs:
        for number, raw in enumerate(doc.text.splitlines(), start=1):
            if "$" in raw and any(ref.name == variable for ref in references(raw)):
                return Line(number, doc.lines.file)
    return None


_SERVICE_PATH = re.compile(
    r"services(?:\[['\"]?(?P<bracket>[^\]'\"]+)['\"]?\](?:\.(?P<bkey>[\w-]+))?|\.(?P<dotted>[\w.-]+))"
)
_CONTAINER_NAME_CLASH = re.compile(r"can't set container_name and (?P<service>[\w.-]+) as container name")
_EXTRA_PROPERTY = re.compile(r"additional propert(?:y|ies) '(?P<key>[\w.-]+)'")


def _service_and_key(text: str, names: set[str]) -> tuple[str | None, str | None]:
    """The service (and key in it) a Compose error names: services.web.ports, services[web].mem_limit, ..."""
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


def _services(docs: list[YamlDocument]) -> set[str]:
    names: set[str] = set()
    for doc in docs:
        services = doc.data.get("services") if isinstance(doc.data, dict) else None
        names.update(map(str, services) if isinstance(services, dict) else [])
    return names


def _pins_in(directory: Path) -> bool:
    from server.deploy.project import holds_pins

    return holds_pins(directory)
