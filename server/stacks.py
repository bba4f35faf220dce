"""Where stacks live and what they are called.

A stack is a directory directly under the stacks root holding a Compose file. Its files and name
are decided the way ``docker compose up`` in that directory decides them: the files from
COMPOSE_FILE (given env, else the stack's ``.env``), else compose.yaml and its override; the
name from COMPOSE_PROJECT_NAME, else the last top-level ``name:``, else the directory's name,
normalised. (Loading a stack takes the name from Compose's own render; this is the same rule,
for list_stacks, which renders nothing.) Every path a caller gives is resolved here, and anything
that escapes the root (``..``, absolute paths elsewhere, symlinks out, arguments that look like
command-line flags) is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server.dotenv import DotenvError, parse_dotenv
from server.errors import PathRejected, StackConflict, StackNotFound, UnsafeYaml
from server.interpolation import MissingRequired, substitute
from server.project import DSM_OVERRIDE_NAME, ComposeProject
from server.settings import Settings
from server.yamlsafe import YamlDocument, load_yaml, read_text_capped

COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAMES = {
    "compose.yaml": ("compose.override.yaml", "compose.override.yml"),
    "compose.yml": ("compose.override.yml", "compose.override.yaml"),
    "docker-compose.yaml": ("docker-compose.override.yaml", "docker-compose.override.yml"),
    "docker-compose.yml": ("docker-compose.override.yml", "docker-compose.override.yaml"),
}
_MAX_ENV_BYTES = 256 * 1024
MAX_NAME_BYTES = 255
"""A file name's limit (NAME_MAX): a longer stack name or path part cannot exist on disk."""
MAX_ARGUMENT_CHARS = 1024


@dataclass(frozen=True)
class StackLocation:
    """A stack directory under the root and the compose files Compose would merge."""

    directory: Path
    files: list[Path]
    """The compose files Compose reads at the top level, in merge order."""
    name: str
    documents: tuple[YamlDocument | None, ...] = ()
    """Each file screened and parsed once when the stack was located (None: unreadable, and
    loading the stack reports why)."""
    named_files: tuple[Path, ...] = ()
    """Files the user named (a path to a compose file); empty when Compose picks them."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The variables the caller gave (they win over .env)."""
    dotenv: Mapping[str, str] = field(default_factory=dict)
    """The stack's .env as Compose reads it (values are secrets: never print them)."""
    dotenv_error: str | None = None
    """Why the .env could not be read (Compose would refuse it too)."""

    @property
    def active_services(self) -> list[str]:
        """Declared services that `up` starts: those no inactive profile holds back."""
        held = inactive_services(self.documents, self.profiles, self.variables)
        return [s for s in self.declared_services if s not in held]

    @property
    def variables(self) -> dict[str, str]:
        """What Compose interpolates from, minus its own process environment: .env, then env over it."""
        return {**self.dotenv, **self.env}

    @property
    def profiles(self) -> tuple[str, ...]:
        """The profiles Compose activates: COMPOSE_PROFILES (env, else .env), comma-separated."""
        raw = self.variables.get("COMPOSE_PROFILES", "")
        return tuple(p.strip() for p in raw.split(",") if p.strip())

    @property
    def overrides(self) -> tuple[Path, ...]:
        """Our own override (compose.dsm.yaml) when it exists: the last of ``files``."""
        return tuple(f for f in self.files[-1:] if f.name == DSM_OVERRIDE_NAME and f.parent == self.directory)

    def project(self) -> ComposeProject:
        """The one description every Compose call on this stack uses (name filled in after render)."""
        overrides = self.overrides
        user = self.files[: len(self.files) - len(overrides)]
        return ComposeProject(
            directory=self.directory,
            env=dict(self.env),
            files=self.named_files,
            profiles=self.profiles,
            overrides=overrides,
            resolved_files=tuple(user),
        )

    @property
    def main_file(self) -> Path:
        return self.files[0]

    @property
    def declared_services(self) -> list[str]:
        """Service names as declared across the files, in order of first appearance."""
        names: dict[str, None] = {}
        for doc in self.documents:
            services = doc.data.get("services") if doc is not None and isinstance(doc.data, dict) else None
            names.update(dict.fromkeys(map(str, services)) if isinstance(services, dict) else {})
        return list(names)


def inactive_services(
    docs: Sequence[YamlDocument | None], profiles: tuple[str, ...], variables: Mapping[str, str]
) -> dict[str, tuple[str, ...]]:
    """Declared services whose profiles are all inactive -> those profiles (interpolated)."""
    if "*" in profiles:
        return {}
    found: dict[str, tuple[str, ...]] = {}
    for doc in docs:
        services = doc.data.get("services") if doc is not None and isinstance(doc.data, dict) else None
        for svc, body in services.items() if isinstance(services, dict) else []:
            raw = body.get("profiles") if isinstance(body, dict) else None
            if not isinstance(raw, list):
                if isinstance(body, dict) and "profiles" in body:
                    found.pop(str(svc), None)
                continue
            names: list[str] = []
            for item in raw:
                try:
                    names.append(substitute(str(item), variables))
                except MissingRequired:
                    names.append(str(item))
            if names and not set(names) & set(profiles):
                found[str(svc)] = tuple(names)
            else:
                found.pop(str(svc), None)
    return found


def normalize_project_name(raw: str) -> str:
    """Compose's rule: lowercase, keep [a-z0-9_-], must start with a letter or digit."""
    name = re.sub(r"[^a-z0-9_-]", "", raw.lower())
    return name.lstrip("_-")


def check_argument(value: str, what: str = "path") -> str:
    """Refuse values that a CLI would take as a flag, and control characters."""
    if not value or not value.strip():
        raise PathRejected(f"the {what} is empty", next_step="call list_stacks to see the stacks")
    if value.lstrip().startswith("-"):
        raise PathRejected(
            f"the {what} {value!r} starts with '-' and would be read as a command-line flag",
            state="nothing was read",
            next_step="pass a stack directory relative to the stacks root, e.g. 'myapp'",
        )
    if any(ord(c) < 32 for c in value):
        raise PathRejected(f"the {what} contains control characters", state="nothing was read")
    longest = max(len(part.encode("utf-8", "surrogatepass")) for part in value.split("/"))
    if len(value) > MAX_ARGUMENT_CHARS or longest > MAX_NAME_BYTES:
        raise PathRejected(
            f"the {what} is too long ({len(value)} characters): a stack name or path part is at most "
            f"{MAX_NAME_BYTES} bytes, a path at most {MAX_ARGUMENT_CHARS} characters",
            state="nothing was read", next_step="call list_stacks for the names and paths")
    return value


def resolve_in_root(settings: Settings, raw: str) -> Path:
    """Resolve ``raw`` (relative to the root, or absolute inside it) with symlinks followed."""
    check_argument(raw)
    root = settings.stacks_root
    if not root.is_dir():
        raise StackNotFound(
            f"the stacks root {root} does not exist",
            next_step="create it or set DSM_STACKS_ROOT to the directory that holds your stacks",
        )
    root = root.resolve()
    candidate = Path(raw)
    candidate = candidate if candidate.is_absolute() else root / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        lexical = Path(*_normalise_parts(candidate))
        if not lexical.is_relative_to(root):
            raise _outside(raw, root) from None
        raise StackNotFound(
            f"{raw!r} does not exist under the stacks root {root}",
            next_step="call list_stacks to see the stacks there",
        ) from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        raise PathRejected(f"{raw!r} cannot be resolved: {exc}", state="nothing was read") from None
    if not resolved.is_relative_to(root):
        raise _outside(raw, root)
    return resolved


def _normalise_parts(path: Path) -> list[str]:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if len(parts) > 1:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return parts


def _outside(raw: str, root: Path) -> PathRejected:
    return PathRejected(
        f"{raw!r} is outside the stacks root {root} (or a symlink that leads out of it)",
        state="nothing was read",
        next_step="pass a stack directory relative to the stacks root; call list_stacks to see them",
    )


def locate_stack(settings: Settings, raw_path: str, env: Mapping[str, str] | None = None) -> StackLocation:
    """A stack from ``path``: the stack directory, or a compose file directly inside it.

    ``env`` is what the caller gives Compose; it can name the files (COMPOSE_FILE) and profiles.
    """
    resolved = resolve_in_root(settings, raw_path)
    root = settings.stacks_root.resolve()
    if resolved == root:
        raise PathRejected(
            "the path names the stacks root itself, not a stack in it",
            next_step="pass one stack directory, e.g. 'myapp'; call list_stacks to see them",
        )
    if resolved.is_dir():
        directory, explicit = resolved, None
    else:
        directory, explicit = resolved.parent, resolved
    if directory.parent != root:
        raise PathRejected(
            f"{raw_path!r} is not a stack: stacks are directories directly under {root}",
            next_step="pass the stack directory (or a compose file inside it)",
        )
    location = _located(directory, explicit, settings, env or {})
    if not location.files:
        raise StackNotFound(
            f"{directory.name}/ holds no compose file ({', '.join(COMPOSE_FILE_NAMES)})",
            next_step="add a compose.yaml or pass the compose file itself",
        )
    return location


def _located(directory: Path, explicit: Path | None, settings: Settings, env: Mapping[str, str]) -> StackLocation:
    dotenv_error: str | None = None
    try:
        dotenv = read_dotenv(directory, env)
    except PathRejected as exc:
        dotenv, dotenv_error = {}, exc.what
    variables = {**dotenv, **env}
    files = compose_files(directory, explicit, variables)
    dsm_override = directory / DSM_OVERRIDE_NAME
    if files and dsm_override.is_file() and dsm_override not in files:
        files.append(dsm_override)
    documents: list[YamlDocument | None] = []
    root = settings.stacks_root.resolve()
    for file in files:
        if not file.resolve().is_relative_to(root):
            documents.append(None)  # COMPOSE_FILE pointing out of the root: never read; loading refuses it
            continue
        try:
            documents.append(read_compose_file(file, settings, directory))
        except (UnsafeYaml, PathRejected):
            documents.append(None)  # unreadable files still get a name; loading them reports the problem
    return StackLocation(
        directory=directory,
        files=files,
        name=project_name(directory, documents, variables),
        documents=tuple(documents),
        named_files=(explicit,) if explicit is not None else (),
        env=dict(env),
        dotenv=dotenv,
        dotenv_error=dotenv_error,
    )


def relative_name(file: Path, directory: Path) -> str:
    """How findings name a file: relative to the stack directory when inside it."""
    try:
        return str(file.relative_to(directory))
    except ValueError:
        try:
            return str(file.resolve().relative_to(directory.resolve()))
        except ValueError:
            return file.name


def read_compose_file(file: Path, settings: Settings, directory: Path | None = None) -> YamlDocument:
    """Screen and parse one compose file; raises UnsafeYaml with the line when it is refused."""
    name = relative_name(file, directory) if directory is not None else file.name
    return load_yaml(read_text_capped(file, settings.yaml_max_bytes), name, max_bytes=settings.yaml_max_bytes)


def compose_files(
    directory: Path, explicit: Path | None = None, variables: Mapping[str, str] | None = None
) -> list[Path]:
    """The files Compose merges for ``directory``: a named file; else COMPOSE_FILE; else the main
    file and, when present, its override."""
    if explicit is not None:
        return [explicit]
    listed = (variables or {}).get("COMPOSE_FILE", "")
    if listed.strip():
        separator = (variables or {}).get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [Path(p) if Path(p).is_absolute() else directory / p for p in listed.split(separator) if p.strip()]
    for name in COMPOSE_FILE_NAMES:
        main = directory / name
        if main.is_file():
            overrides = [directory / o for o in OVERRIDE_NAMES[name] if (directory / o).is_file()]
            return [main, *overrides[:1]]
    return []


def read_dotenv(directory: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stack's ``.env`` as Compose reads it (server.dotenv); empty when absent.

    ``env`` is the environment Compose runs with: its values win, COMPOSE_ENV_FILES in it
    replaces ``.env`` with the files it lists and COMPOSE_DISABLE_ENV_FILE turns it off, as in Compose.
    """
    env = env or {}
    if env.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "t", "true"):
        return {}
    listed = env.get("COMPOSE_ENV_FILES", "")
    names = [n for n in listed.split(",") if n.strip()] if listed.strip() else [".env"]
    values: dict[str, str] = {}
    for name in names:
        path = directory / name
        if not path.is_file():
            if name != ".env":
                raise PathRejected(f"env file {name!r} named by COMPOSE_ENV_FILES does not exist")
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(directory.resolve()):
            raise PathRejected(
                f"{directory.name}/{name} is a symlink out of the stack directory", state="nothing was read"
            )
        try:
            text = read_text_capped(resolved, _MAX_ENV_BYTES)
        except UnsafeYaml as exc:
            raise PathRejected(f"{directory.name}/{name} cannot be read: {exc.what}") from None
        try:
            values.update(parse_dotenv(text, {**values, **env}))
        except DotenvError as exc:
            raise PathRejected(f"{directory.name}/{name} is not a valid env file: {exc}") from None
    return values


def project_name(
    directory: Path,
    documents: list[YamlDocument | None] | YamlDocument | None,
    variables: Mapping[str, str] | None = None,
) -> str:
    """COMPOSE_PROJECT_NAME (env, else .env), else the last file's ``name:`` (interpolated), else the
    directory's name: Compose's order."""
    variables = dict(variables) if variables is not None else read_dotenv(directory)
    from_env = variables.get("COMPOSE_PROJECT_NAME")
    if from_env:
        return normalize_project_name(from_env)
    docs = documents if isinstance(documents, list) else [documents]
    for doc in reversed(docs):
        declared = doc.data.get("name") if doc is not None and isinstance(doc.data, dict) else None
        if isinstance(declared, str) and declared.strip():
            try:
                value = substitute(declared, variables)
            except MissingRequired:
                continue
            if value.strip():
                return normalize_project_name(value)
    return normalize_project_name(directory.name)


def discover(settings: Settings) -> tuple[list[StackLocation], list[str]]:
    """All stacks under the root, and problems found on the way (name conflicts, unreadable dirs)."""
    root = settings.stacks_root
    if not root.is_dir():
        return [], [f"stacks root {root} does not exist"]
    stacks: list[StackLocation] = []
    problems: list[str] = []
    root = root.resolve()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not entry.resolve().is_relative_to(root):
            problems.append(f"{entry.name}: symlink out of the stacks root, ignored")
            continue
        location = _located(entry, None, settings, {})
        if not location.files:
            continue
        if any(not f.resolve().is_relative_to(root) for f in location.files):
            problems.append(f"{entry.name}: compose file is a symlink out of the stacks root, ignored")
            continue
        if location.dotenv_error:  # one stack's bad .env must not hide the others, nor be read
            problems.append(f"{entry.name}: {location.dotenv_error}, ignored")
            continue
        stacks.append(location)
    by_name: dict[str, list[StackLocation]] = {}
    for stack in stacks:
        by_name.setdefault(stack.name, []).append(stack)
    for name, claims in by_name.items():
        if len(claims) > 1:
            problems.append(
                f"project name {name!r} is claimed by {', '.join(c.directory.name for c in claims)}: "
                "Compose would treat them as one project; rename one (top-level name:)"
            )
    return stacks, problems


def find_by_name(settings: Settings, name: str) -> StackLocation:
    """The stack directory whose project name is ``name``; errors on none or several."""
    check_argument(name, "stack name")
    stacks, _ = discover(settings)
    matches = [s for s in stacks if s.name == name]
    if not matches:
        raise StackNotFound(
            f"no stack named {name!r} under {settings.stacks_root}",
            next_step="call list_stacks for the names; stacks outside the root can be observed, not changed",
        )
    if len(matches) > 1:
        raise StackConflict(
            f"stack name {name!r} is claimed by {', '.join(m.directory.name for m in matches)}",
            state="nothing was changed",
            next_step="give one of them a distinct top-level name: in its compose file",
        )
    return matches[0]


def resolve_stack(settings: Settings, stack: str) -> StackLocation:
    """A stack named by what a caller passes as ``stack``: its Compose project name (as
    list_stacks shows it) or its directory (or a compose file in it) under the root.

    The project name wins when both readings match different stacks. Raises StackNotFound,
    StackConflict or PathRejected.
    """
    check_argument(stack, "stack")
    value = stack.strip()
    if "/" not in value and value == normalize_project_name(value):
        try:
            return find_by_name(settings, value)
        except StackNotFound:
            pass  # maybe a directory whose project name differs (name: or COMPOSE_PROJECT_NAME)
    try:
        return locate_stack(settings, value)
    except StackNotFound:
        raise StackNotFound(
            f"no stack named {value!r} and no stack directory {value!r} under {settings.stacks_root}",
            state="nothing was read or changed",
            next_step="call list_stacks for the names and paths",
        ) from None
