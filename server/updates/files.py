"""Where a service's image is written, and the new reference written there, as the user keeps it.

Most real stacks interpolate the image (``image: ghcr.io/acme/api:${API_TAG}``): the new value goes
into ``.env`` (the line of that variable, or a new line when only a default supplied it).
Otherwise the compose file that sets ``image:`` (the last of the merge order that does) is edited
with a round-trip YAML library: comments, key order and layout stay as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import DsmError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(?::?[-?+])[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Edit:
    """One new value, where it goes: ``file`` (.env or a compose file), ``key`` (a variable or a
    service), ``value`` (what is written)."""

    service: str
    file: Path
    kind: str  # "env" | "compose"
    key: str
    value: str

    def describe(self) -> str:
        if self.kind == "env":
            return f"{self.file.name} {self.key}={self.value}"
        return f"{self.file.name} services.{self.key}.image: {self.value}"


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, order, quotes kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
"""What may be written: an image reference and nothing else (no space, quote, ``#``, ``$`` or line
break that would end the value and start another variable or key)."""


def plan_edit(directory: Path, files: list[Path], service: str, new_ref: str) -> Edit:
    """Where ``service``'s image is set, and what to write there for ``new_ref``."""
    if not _REFERENCE.fullmatch(new_ref):
        raise DsmError(f"{new_ref[:80]!r} is not an image reference", state="nothing was changed",
                       next_step="pass images as {service: 'registry/name:tag'}")
    yaml = _yaml()
    for file in reversed(files):
        try:
            doc = yaml.load(file.read_text())
        except Exception:  # noqa: S112 - a file Compose itself renders; one we cannot parse is not the one
            continue
        body = ((doc or {}).get("services") or {}).get(service) if isinstance(doc, dict) else None
        if not isinstance(body, dict) or "image" not in body:
            continue
        raw = str(body["image"])
        found = list(_VAR.finditer(raw))
        if not found:
            return Edit(service, file, "compose", service, new_ref)
        if len(found) > 1:
            raise DsmError(f"{service}'s image {raw!r} in {file.name} uses several variables: not rewritten",
                           state="nothing was changed", next_step="set the new image yourself, or pass images")
        match = found[0]
        prefix, suffix = raw[: match.start()], raw[match.end():]
        if not (new_ref.startswith(prefix) and new_ref.endswith(suffix)) or len(new_ref) <= len(prefix) + len(suffix):
            raise DsmError(f"{service}'s image {raw!r} in {file.name} cannot express {new_ref!r}",
                           state="nothing was changed", next_step="change the compose file by hand")
        return Edit(service, directory / ".env", "env", match.group(1) or match.group(2),
                    new_ref[len(prefix): len(new_ref) - len(suffix)])
    raise DsmError(f"no compose file of the stack sets services.{service}.image (extends or include?)",
                   state="nothing was changed", next_step="change the image where it is defined, by hand")


def apply_edits(edits: list[Edit]) -> dict[Path, bytes | None]:
    """Write every edit; returns each touched file's previous bytes (None: it did not exist), so a
    deploy that does not go through can put them back (:func:`restore`)."""
    before: dict[Path, bytes | None] = {}
    for edit in edits:
        if edit.file not in before:
            before[edit.file] = edit.file.read_bytes() if edit.file.is_file() else None
    try:
        for edit in edits:
            if edit.kind == "env":
                _set_env(edit.file, edit.key, edit.value)
            else:
                _set_image(edit.file, edit.key, edit.value)
    except BaseException:
        restore(before)
        raise
    return before


def restore(before: dict[Path, bytes | None]) -> None:
    for path, data in before.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


def _set_env(path: Path, key: str, value: str) -> None:
    text = path.read_text() if path.is_file() else ""
    lines = text.splitlines(keepends=True)
    pattern = re.compile(rf"^(\s*(?:export\s+)?{re.escape(key)}\s*=\s*)(['\"]?)(.*?)(\2)(\s*(?:#.*)?)$")
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        match = pattern.match(body)
        if match:
            ending = line[len(body):]
            lines[index] = f"{match.group(1)}{match.group(2)}{value}{match.group(2)}{match.group(5)}{ending}"
            path.write_text("".join(lines))
            return
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(f"{text}{key}={value}\n")


def _set_image(path: Path, service: str, value: str) -> None:
    """Only the image's scalar changes: the round-trip parser says on which line and column it
    starts, and the bytes around it (comments, quotes, indentation) are left exactly as written."""
    text = path.read_text()
    doc = _yaml().load(text)
    line_no, col = doc["services"][service].lc.value("image")
    lines = text.splitlines(keepends=True)
    line = lines[line_no]
    quote = line[col] if line[col] in "'\"" else ""
    if quote:
        end = line.index(quote, col + 1) + 1
    else:
        rest = line[col:].rstrip("\r\n")
        comment = re.search(r"\s#", rest)
        end = col + len((rest[: comment.start()] if comment else rest).rstrip())
    lines[line_no] = f"{line[:col]}{quote}{value}{quote}{line[end:]}"
    path.write_text("".join(lines))


def own_edits(settings: Any, stack: str, directory: Path, before: dict[Path, bytes | None]) -> set[str]:
    """The files (relative names) that were as the last deployment left them until we wrote them:
    a plan's ``file ... edited`` drift for those is our own edit, not a change by hand."""
    import hashlib

    from server.monitor.baseline import load

    base = load(settings, stack)
    if base is None:
        return set()
    out: set[str] = set()
    for path, data in before.items():
        try:
            rel = str(path.absolute().relative_to(directory.absolute()))
        except ValueError:
            continue
        was = hashlib.sha256(data).hexdigest() if data is not None else None
        if base.files.get(rel) == was:
            out.add(rel)
    return out


def drop_own(drift: list[str], own: set[str]) -> list[str]:
    """``drift`` (a plan's lines) without the ``file`` lines of ``own``."""
    return [line for line in drift if not any(line.startswith(f"file files: {rel} ") for rel in own)]
