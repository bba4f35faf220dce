"""``compose.dsm.yaml``: the one override file through which we change a stack.

Our changes (images pinned by a rollback; replicas and limits set by scale_service) live here,
never in the user's files. A deploy drops the pins (it states its own images) and keeps the scale
entries: they are the operator's choice until scale_service changes them. The stack's ``.env``
lists it in ``COMPOSE_FILE`` after the user's own files, so a plain ``docker compose up`` in the
stack directory gives the same state we deployed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from server.deploy.project import OVERRIDE_NAME, user_files
from server.stacks import read_dotenv
from server.yamlsafe import dump_yaml, load_yaml, read_text_capped

_HEADER = (
    "# Written by docker-stack-mcp: images pinned by a rollback, replicas and limits set by scale_service.\n"
    "# Listed in .env COMPOSE_FILE after your own files. A successful deploy_stack removes the pins;\n"
    "# replicas and limits stay until scale_service changes them.\n"
)
_COMPOSE_FILE_LINE = re.compile(r"^\s*(?:export\s+)?COMPOSE_FILE\s*=.*$", re.MULTILINE)


def read_override(directory: Path) -> dict[str, Any]:
    path = directory / OVERRIDE_NAME
    if not path.is_file():
        return {}
    data = load_yaml(read_text_capped(path, 1_048_576), OVERRIDE_NAME).data
    return data if isinstance(data, dict) else {}


PINS_KEY = "x-dsm-pins"
"""Top-level extension key: ``service -> {pinned: ref, original: ref}``. The original reference a
pin stands for (``postgres:16``), so what a pinned service IS stays known (server.roles)."""


def pinned_images(directory: Path) -> dict[str, str]:
    services = read_override(directory).get("services") or {}
    return {str(k): str(v["image"]) for k, v in services.items() if isinstance(v, dict) and v.get("image")}


def pin_originals(directory: Path) -> dict[str, str]:
    """``service -> original image reference`` for the pins in place (none recorded: not listed)."""
    data = read_override(directory)
    pinned = pinned_images(directory)
    out: dict[str, str] = {}
    for name, entry in (data.get(PINS_KEY) or {}).items():
        if isinstance(entry, dict) and entry.get("original") and str(name) in pinned:
            out[str(name)] = str(entry["original"])
    return out


def write_pins(directory: Path, pins: Mapping[str, str], *, originals: Mapping[str, str] | None = None,
               defined: Iterable[str] | None = None) -> list[str]:
    """Pin ``service -> image ref`` (replacing earlier pins) and list the file in COMPOSE_FILE.

    ``originals``: the reference each pin stands for, recorded under ``x-dsm-pins``. ``defined``:
    the services the user's files define; a pin for any other service is left out (a pin alone
    would make Compose create a service the files dropped). Returns the services left out."""
    data = read_override(directory)
    keep = set(defined) if defined is not None else None
    dropped = sorted(name for name in pins if keep is not None and name not in keep)
    services: dict[str, Any] = {}
    for name, body in (data.get("services") or {}).items():
        rest = {k: v for k, v in (body or {}).items() if k != "image"}
        if rest and (keep is None or name in keep):
            services[name] = rest
    records: dict[str, Any] = {}
    for name, ref in sorted(pins.items()):
        if name in dropped:
            continue
        services.setdefault(name, {})["image"] = ref
        if originals and originals.get(name):
            records[name] = {"pinned": ref, "original": originals[name]}
    rest = {k: v for k, v in data.items() if k not in ("services", PINS_KEY)}
    _write(directory, {**rest, "services": services, **({PINS_KEY: records} if records else {})})
    return dropped


def drop_undefined_pins(directory: Path, defined: Iterable[str]) -> list[str]:
    """Take out our entries for services the user's files no longer define. Returns them."""
    data = read_override(directory)
    keep = set(defined)
    gone = sorted(str(n) for n in (data.get("services") or {}) if str(n) not in keep)
    if not gone:
        return []
    services = {k: v for k, v in (data.get("services") or {}).items() if str(k) in keep}
    records = {k: v for k, v in (data.get(PINS_KEY) or {}).items() if str(k) in keep}
    rest = {k: v for k, v in data.items() if k not in ("services", PINS_KEY)}
    _write(directory, {**rest, "services": services, **({PINS_KEY: records} if records else {})})
    return gone


def holds_pins(directory: Path) -> bool:
    """A rollback's image pins are in place (a deploy's view of the stack leaves the file out then)."""
    return bool(pinned_images(directory))


def scale_entry(directory: Path, service: str) -> dict[str, Any]:
    """Our entry for ``service`` without its pinned image: what scale_service wrote (replicas,
    limits, reservations); ``{}`` when none."""
    body = (read_override(directory).get("services") or {}).get(service)
    return {str(k): v for k, v in body.items() if k != "image"} if isinstance(body, dict) else {}


def write_scale(directory: Path, service: str, entry: Mapping[str, Any]) -> None:
    """Replace our entry for ``service`` (a pinned image stays) and list the file in COMPOSE_FILE;
    an empty entry with no pin takes the service out of the file (the file too when it empties)."""
    data = read_override(directory)
    services: dict[str, Any] = dict(data.get("services") or {})
    old = services.get(service)
    body = {"image": old["image"]} if isinstance(old, dict) and old.get("image") else {}
    body.update(entry)
    if body:
        services[service] = body
    else:
        services.pop(service, None)
    records = data.get(PINS_KEY)
    rest = {k: v for k, v in data.items() if k not in ("services", PINS_KEY)}
    _write(directory, {**rest, "services": services, **({PINS_KEY: records} if records else {})})


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
    rest_top = {k: v for k, v in data.items() if k not in ("services", PINS_KEY)}
    _write(directory, {**rest_top, "services": services})
    return True


def _write(directory: Path, data: dict[str, Any]) -> None:
    path = directory / OVERRIDE_NAME
    if not data.get("services") and set(data) <= {"services", PINS_KEY}:
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
