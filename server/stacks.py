"""Where stacks live and what they are called.

A stack is a directory directly under the stacks root holding a Compose file. Its name is its
Compose project name, decided the way Compose decides it: COMPOSE_PROJECT_NAME in the stack's
``.env``, else the file's top-level ``name:``, else the directory's name, normalised. Every path a
caller gives is resolved here, and anything that escapes the root (``..``, absolute paths
elsewhere, symlinks out, arguments that look like command-line flags) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from server.errors import PathRejected, StackConflict, StackNotFound, UnsafeYaml
from server.settings import Settings
from server.yamlsafe import YamlDocument, load_yaml, read_text_capped

COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAMES = {
    "compose.yaml": ("compose.override.yaml", "compose.override.yml"),
    "compose.yml": ("compose.override.yml", "compose.override.yaml"),
    "docker-compose.yaml": ("docker-compose.override.yaml", "docker-compose.override.yml"),
    "docker-compose.yml": ("docker-compose.override.yml", "docker-compose.override.yaml"),
}
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$")
_MAX_ENV_BYTES = 256 * 1024


@dataclass(frozen=True)
class StackLocation:
    """A stack directory under the root and the compose files Compose would merge."""

    directory: Path
    files: list[Path]
    name: str
    documents: tuple[YamlDocument | None, ...] = ()
    """Each file screened and parsed once when the stack was located (None: unreadable, and
    loading the stack reports why)."""

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


def locate_stack(settings: Settings, raw_path: str) -> StackLocation:
    """A stack from ``path``: the stack directory, or a compose file directly inside it."""
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
    files = compose_files(directory, explicit)
    if not files:
        raise StackNotFound(
            f"{directory.name}/ holds no compose file ({', '.join(COMPOSE_FILE_NAMES)})",
            next_step="add a compose.yaml or pass the compose file itself",
        )
    for file in files:
        if not file.resolve().is_relative_to(root):
            raise _outside(f"{directory.name}/{file.name}", root)
    return _located(directory, files, settings)


def read_compose_file(file: Path, settings: Settings) -> YamlDocument:
    """Screen and parse one compose file; raises UnsafeYaml with the line when it is refused."""
    return load_yaml(read_text_capped(file, settings.yaml_max_bytes), file.name, max_bytes=settings.yaml_max_bytes)


def _located(directory: Path, files: list[Path], settings: Settings) -> StackLocation:
    documents: list[YamlDocument | None] = []
    for file in files:
        try:
            documents.append(read_compose_file(file, settings))
        except UnsafeYaml:
            documents.append(None)  # unreadable files still get a name; loading them reports the problem
    return StackLocation(directory=directory, files=files, name=project_name(directory, documents[0]),
                         documents=tuple(documents))


def compose_files(directory: Path, explicit: Path | None = None) -> list[Path]:
    """The files Compose merges for ``directory``: the main file and, when present, its override."""
    if explicit is not None:
        return [explicit]
    for name in COMPOSE_FILE_NAMES:
        main = directory / name
        if main.is_file():
            overrides = [directory / o for o in OVERRIDE_NAMES[name] if (directory / o).is_file()]
            return [main, *overrides[:1]]
    return []


def read_dotenv(directory: Path) -> dict[str, str]:
    """Parse the stack's ``.env`` (KEY=VALUE lines, optional quotes); empty when absent."""
    path = directory / ".env"
    if not path.is_file():
        return {}
    resolved = path.resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise PathRejected(f"{directory.name}/.env is a symlink out of the stack directory", state="nothing was read")
    try:
        text = read_text_capped(resolved, _MAX_ENV_BYTES)
    except UnsafeYaml as exc:
        raise PathRejected(f"{directory.name}/.env cannot be read: {exc.what}") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _ENV_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def project_name(directory: Path, main: YamlDocument | None) -> str:
    """COMPOSE_PROJECT_NAME from .env, else the main file's ``name:``, else the directory's name."""
    from_env = read_dotenv(directory).get("COMPOSE_PROJECT_NAME")
    if from_env:
        return normalize_project_name(from_env)
    declared = main.data.get("name") if main is not None and isinstance(main.data, dict) else None
    if isinstance(declared, str) and declared.strip() and "$" not in declared:
        return normalize_project_name(declared)
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
        files = compose_files(entry)
        if not files:
            continue
        if any(not f.resolve().is_relative_to(root) for f in files):
            problems.append(f"{entry.name}: compose file is a symlink out of the stacks root, ignored")
            continue
        try:
            stacks.append(_located(entry, files, settings))
        except PathRejected as exc:  # one stack's bad .env must not hide every other stack
            problems.append(f"{entry.name}: {exc.what}, ignored")
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
