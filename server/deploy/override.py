"""``compose.dsm.yaml``: the one override file through which we change a stack.

Our changes (today: images pinned by a rollback; later replicas and limits) live here, never in
the user's files. The stack's ``.env`` lists it in ``COMPOSE_FILE`` after the user's own files, so
a plain ``docker compose up`` in the stack directory gives the same state we deployed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from server.deploy.project import OVERRIDE_NAME, user_files
from server.stacks import read_dotenv
from server.yamlsafe import dump_yaml, load_yaml, read_text_capped

_HEADER = (
    "# Written by docker-stack-mcp: images pinned by a rollback (and, later, replicas and limits).\n"
    "# Listed in .env COMPOSE_FILE after your own files. A successful deploy_stack removes the pins.\n"
)
_COMPOSE_FILE_LINE = re.compile(r"^\s*(?:export\s+)?COMPOSE_FILE\s*=.*$", re.MULTILINE)


def read_override(directory: Path) -> dict[str, Any]:
    path = directory / OVERRIDE_NAME
    if not path.is_file():
        return {}
    data = load_yaml(read_text_capped(path, 1_048_576), OVERRIDE_NAME).data
    return data if isinstance(data, dict) else {}


def pinned_images(directory: Path) -> dict[str, str]:
    services = read_override(directory).get("services") or {}
    return {str(k): str(v["image"]) for k, v in services.items() if isinstance(v, dict) and v.get("image")}


def write_pins(directory: Path, pins: dict[str, str]) -> None:
    """Pin ``service -> image ref`` (replacing earlier pins) and list the file in COMPOSE_FILE."""
    data = read_override(directory)
    services: dict[str, Any] = {}
    for name, body in (data.get("services") or {}).items():
        rest = {k: v for k, v in (body or {}).items() if k != "image"}
        if rest:
            services[name] = rest
    for name, ref in sorted(pins.items()):
        services.setdefault(name, {})["image"] = ref
    _write(directory, {**{k: v for k, v in data.items() if k != "services"}, "services": services})


def clear_pins(directory: Path) -> bool:
    """Drop every image pin (a new deploy states its own images). True when the file changed."""
    data = read_override(directory)
    if not data:
        return False
    before = pinned_images(directory)
    if not before:
        return False
    services = {}
    for name, body in (data.get("services") or {}).items():
        rest = {k: v for k, v in (body or {}).items() if k != "image"}
        if rest:
            services[name] = rest
    _write(directory, {**{k: v for k, v in data.items() if k != "services"}, "services": services})
    return True


def _write(directory: Path, data: dict[str, Any]) -> None:
    path = directory / OVERRIDE_NAME
    if not data.get("services") and set(data) <= {"services"}:
        # Nothing of ours left: no file, and COMPOSE_FILE no longer lists it.
        path.unlink(missing_ok=True)
        _set_compose_file(directory, include=False)
        return
    _atomic_write(path, _HEADER + dump_yaml(data))
    _set_compose_file(directory, include=True)


def _set_compose_file(directory: Path, *, include: bool) -> None:
    """Keep ``COMPOSE_FILE`` in .env = the user's files (+ ours when ``include``)."""
    env_path = directory / ".env"
    text = env_path.read_text(encoding="utf-8") if env_path.is_file() else ""
    files = [str(f.relative_to(directory)) if f.is_relative_to(directory) else str(f) for f in user_files(directory)]
    # Compose splits COMPOSE_FILE on COMPOSE_PATH_SEPARATOR when the project sets one.
    separator = read_dotenv(directory).get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    value = separator.join([*files, OVERRIDE_NAME] if include else files)
    line = f"COMPOSE_FILE={value}"
    marker = "# added by docker-stack-mcp"
    if _COMPOSE_FILE_LINE.search(text):
        if not include and marker in text:
            # We added the line: take it (and our marker) out again.
            lines = text.splitlines(keepends=True)
            keep = [ln for ln in lines if ln.rstrip("\n") != marker and not _COMPOSE_FILE_LINE.match(ln)]
            text = "".join(keep)
        else:
            # Every definition: Compose uses the last one in .env, so ours must be in that one.
            text = _COMPOSE_FILE_LINE.sub(line, text)
    elif include:
        prefix = text if not text or text.endswith("\n") else text + "\n"
        text = prefix + marker + "\n" + line + "\n"
    else:
        return
    _atomic_write(env_path, text)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.dsm-tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
