"""After a successful update: the replaced versions of the updated images, removed when nothing
needs them, and the bytes that freed.

Only images of the updated repositories are candidates (never the engine's other images). One is
kept when any container (running or stopped, any project) uses it, when a backup within its
retention pinned it (a ``dsm-pin/`` tag: backup retention drops that tag with the backup), or when
any stack's compose.dsm.yaml (a rollback pin in force) or compose file names it literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.registry import parse_reference

if TYPE_CHECKING:
    from server.engine import Engine

_PIN = "dsm-pin/"
_IMAGE_LINE = re.compile(r"^\s*image:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


@dataclass
class Pruned:
    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept: list[str] = field(default_factory=list)

    def describe(self) -> str:
        # Image sizes as the engine reports them: layers a kept image shares are not freed.
        text = f"removed {len(self.removed)} unused image(s), up to {_size(self.freed_bytes)} freed"
        if self.removed:
            text += ": " + ", ".join(self.removed[:6])
        if self.kept:
            text += "; kept " + ", ".join(self.kept[:6])
        return text[:600]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def _repo(ref: str) -> tuple[str, str] | None:
    try:
        parsed = parse_reference(ref)
    except ValueError:
        return None
    return parsed.registry, parsed.repository


def _key(ref: str) -> tuple[str, str, str] | None:
    """A reference as the engine would resolve it (``nginx:1`` = ``docker.io/library/nginx:1``)."""
    try:
        parsed = parse_reference(ref)
    except ValueError:
        return None
    return parsed.registry, parsed.repository, parsed.reference


def named_refs(stacks_root: Path) -> dict[tuple[str, str, str], str]:
    """Every literal image reference in the stacks' YAML files under the root, and why it stays:
    a rollback pin in a compose.dsm.yaml, or a service's image in a compose file (a stopped
    stack's image is not ours to remove either)."""
    found: dict[tuple[str, str, str], str] = {}
    if not stacks_root.is_dir():
        return found
    for path in sorted([*stacks_root.glob("*/*.yaml"), *stacks_root.glob("*/*.yml")]):
        why = "pinned in a compose.dsm.yaml" if path.name == "compose.dsm.yaml" else (
            f"named in {path.parent.name}/{path.name}")
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for ref in _IMAGE_LINE.findall(text):
            key = _key(ref) if "$" not in ref else None
            if key is not None and (key not in found or why.startswith("pinned")):
                found[key] = why
    return found


async def prune_replaced(engine: Engine, refs: list[str], stacks_root: Path) -> Pruned:
    """Remove the unused versions of ``refs``' repositories (see the module doc)."""
    wanted = {r for r in (_repo(ref) for ref in refs) if r}
    out = Pruned()
    if not wanted:
        return out

    def read(c: Any) -> tuple[list[dict[str, Any]], set[str]]:
        return list(c.api.images()), {str(x.get("ImageID") or "") for x in c.api.containers(all=True)}

    rows, used = await engine.call(read, "list images and containers")
    named = named_refs(stacks_root)
    for row in rows:
        tags = [t for t in (row.get("RepoTags") or []) if not t.startswith("<none>")]
        names = tags + list(row.get("RepoDigests") or [])
        if not any(_repo(n) in wanted for n in names):
            continue
        label = tags[0] if tags else str(row.get("Id", ""))[:19]
        if row.get("Id") in used:
            continue  # what runs (or ran and may start again) stays, without a word
        if any(t.startswith(_PIN) for t in tags):
            out.kept.append(f"{label} (pinned by a backup within retention)")
            continue
        why = next((named[k] for k in map(_key, names) if k in named), None)
        if why:
            out.kept.append(f"{label} ({why})")
            continue
        ours = [t for t in tags if _repo(t) in wanted]  # another repository's tag on it stays (and so does it)
        if len(ours) < len(tags):
            continue
        try:
            for tag in ours or [str(row["Id"])]:
                await engine.remove_image_tag(tag)
            gone = await engine.image_attrs(str(row["Id"])) is None
        except Exception as exc:  # another process may hold it now: a note, never a failed update
            out.kept.append(f"{label} (not removed: {str(exc)[:80]})")
            continue
        if gone:
            out.removed.append(label)
            out.freed_bytes += int(row.get("Size") or 0)
    return out
