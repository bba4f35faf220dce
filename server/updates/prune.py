"""After a successful update: the images the update replaced, removed when nothing needs them,
and the bytes that freed.

Only the image ids the updated services ran before are candidates (never another version of the
same repository that the stack did not run: a tag nobody runs may be somebody's, e.g. a CI image),
plus those an earlier update of the stack replaced and had to keep then (remembered under
``DSM_STATE_DIR/updates/<stack>.replaced``). One is kept when any container (running or stopped,
any project) uses it, when a backup within its retention pinned it (a ``dsm-pin/`` tag: backup
retention drops that tag with the backup, and the next update's cleanup then removes it), when
any stack's compose.dsm.yaml (a rollback pin in force) or compose file names it literally, or when
it carries a tag of a repository the update did not touch.
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
        text = f"removed {len(self.removed)} replaced image(s), up to {_size(self.freed_bytes)} freed"
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


def pending_path(state_dir: Path, stack: str) -> Path:
    return state_dir / "updates" / f"{stack}.replaced"


def _read_pending(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip().startswith("sha256:")}
    except OSError:
        return set()


def _write_pending(path: Path, ids: set[str]) -> None:
    from server.statefiles import private_dir, write_private

    if not ids and not path.exists():
        return
    private_dir(path.parent)
    write_private(path, "".join(f"{i}\n" for i in sorted(ids)))


async def prune_replaced(engine: Engine, replaced: set[str], refs: list[str], stacks_root: Path,
                         state_dir: Path, stack: str) -> Pruned:
    """Remove the images ``replaced`` (ids the updated services ran before) and those an earlier
    update of ``stack`` kept, when nothing needs them (see the module doc). ``refs``: the updated
    services' references before and after (the repositories whose tags may be removed)."""
    wanted = {r for r in (_repo(ref) for ref in refs) if r}
    pending_file = pending_path(state_dir, stack)
    candidates = {i for i in replaced if i} | _read_pending(pending_file)
    out = Pruned()
    if not candidates:
        return out

    def read(c: Any) -> tuple[list[dict[str, Any]], set[str]]:
        return list(c.api.images()), {str(x.get("ImageID") or "") for x in c.api.containers(all=True)}

    rows, used = await engine.call(read, "list images and containers")
    named = named_refs(stacks_root)
    still: set[str] = set()
    for row in rows:
        image_id = str(row.get("Id") or "")
        if image_id not in candidates:
            continue
        tags = [t for t in (row.get("RepoTags") or []) if not t.startswith("<none>")]
        names = tags + list(row.get("RepoDigests") or [])
        label = next((t for t in tags if not t.startswith(_PIN)), tags[0] if tags else image_id[:19])
        if image_id in used:
            still.add(image_id)  # what runs (or ran and may start again) stays, without a word
            continue
        if any(t.startswith(_PIN) for t in tags):
            out.kept.append(f"{label} (pinned by a backup within retention)")
            still.add(image_id)
            continue
        why = next((named[k] for k in map(_key, names) if k in named), None)
        if why:
            out.kept.append(f"{label} ({why})")
            still.add(image_id)
            continue
        ours = [t for t in tags if _repo(t) in wanted or not wanted]
        if len(ours) < len(tags):
            continue  # another repository's tag on it: it is that repository's too, and stays
        try:
            for tag in ours or [image_id]:
                await engine.remove_image_tag(tag)
            gone = await engine.image_attrs(image_id) is None
        except Exception as exc:  # another process may hold it now: a note, never a failed update
            out.kept.append(f"{label} (not removed: {str(exc)[:80]})")
            still.add(image_id)
            continue
        if gone:
            out.removed.append(label)
            out.freed_bytes += int(row.get("Size") or 0)
    try:
        _write_pending(pending_file, still)
    except OSError as exc:  # what to look at next time is a convenience, never a failed update
        out.kept.append(f"(not remembered for the next update: {exc})")
    return out
