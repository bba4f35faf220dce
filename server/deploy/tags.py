"""Moved tags: a tag re-pushed upstream (``:latest``, ``:stable``) is pulled by the next deploy.

Compose's ``up`` pulls only missing images, so a tag that moved in its registry never reached the
host. For each service whose image is a tag (not a digest, not built by Compose, no pull_policy
that forbids pulling) and is local, the registry's digest for the tag now (one HEAD of the
manifest: nothing is pulled) is compared with the local image's RepoDigests for that repository
(the digest it was pulled or pushed as). A digest not among them means the tag moved: the plan
pulls the service and, the image id then differing, Compose recreates it.

Only a registry answer moves anything. A local image with no digest for that repository (built or
loaded here) is never compared (a pull would replace it with whatever the registry has); a
registry that does not answer, refuses or has no such tag leaves the service as it is, with a
note. All images are read in parallel, bounded in total; the plan never fails for a registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import DsmError
from server.registry import RegistryView, is_loopback, parse_reference

if TYPE_CHECKING:
    from server.engine import Engine
    from server.stackmodel import LoadedStack

TAG_CHECK_TIMEOUT_S = 4.0
_NO_PULL_POLICIES = frozenset({"never", "build", "missing", "if_not_present"})
_PIN_PREFIX = "dsm-pin/"


@dataclass(frozen=True)
class TagCheck:
    """One tag compared with its registry."""

    ref: str
    local: tuple[str, ...]
    """Digests the local image carries for the tag's repository (RepoDigests)."""
    remote: str | None = None
    """The registry's digest for the tag now; None when it could not be read (see note)."""
    note: str | None = None

    @property
    def moved(self) -> bool:
        return bool(self.local and self.remote and self.remote not in self.local)

    @property
    def local_digest(self) -> str | None:
        return self.local[0] if self.local else None


def compared_refs(stack: LoadedStack, services: list[str], images: dict[str, dict[str, Any] | None]
                  ) -> dict[str, tuple[str, ...]]:
    """``ref -> local digests`` for the tags worth asking the registry about (see the module doc)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in services:
        body = stack.services.get(name) or {}
        ref = str(body.get("image") or "")
        if (not ref or "@" in ref or ref.startswith(_PIN_PREFIX) or body.get("build")
                or str(body.get("pull_policy") or "").lower() in _NO_PULL_POLICIES):
            continue
        digests = repo_digests(ref, images.get(ref))
        if digests:
            out[ref] = digests
    return out


def repo_digests(ref: str, attrs: dict[str, Any] | None) -> tuple[str, ...]:
    """The digests in the image's RepoDigests that belong to ``ref``'s registry and repository."""
    if not attrs:
        return ()
    wanted = parse_reference(ref)
    found: list[str] = []
    for entry in attrs.get("RepoDigests") or []:
        try:
            parsed = parse_reference(str(entry))
        except ValueError:
            continue
        if (parsed.registry, parsed.repository) == (wanted.registry, wanted.repository) and "@" in str(entry):
            found.append(parsed.reference)
    return tuple(found)


async def check_tags(engine: Engine, refs: dict[str, tuple[str, ...]], *,
                     timeout_s: float = TAG_CHECK_TIMEOUT_S) -> dict[str, TagCheck]:
    """Each ref's registry digest next to its local ones, read in parallel within ``timeout_s``
    (+1 s of grace). Never raises for a registry; an unreachable engine still raises."""
    if not refs:
        return {}
    view = RegistryView.from_info(await engine.info())
    local_engine = engine.endpoint().local
    results: dict[str, TagCheck] = {ref: TagCheck(ref, local, note=f"registry not read within {timeout_s + 1:g}s")
                                    for ref, local in refs.items()}

    async def one(ref: str) -> None:
        # A loopback registry of a remote engine is on the engine's machine: only the engine can ask it.
        direct = local_engine or not is_loopback(ref)
        try:
            answer = await engine.registry_digest(ref, view, timeout_s, direct=direct)
        except DsmError as exc:  # the engine refused the reference: a note for this image only
            results[ref] = TagCheck(ref, refs[ref], note=f"registry not compared: {exc.what}")
            return
        if answer.digest:
            results[ref] = TagCheck(ref, refs[ref], remote=answer.digest)
        else:
            results[ref] = TagCheck(ref, refs[ref], note=f"registry not compared: {answer.detail}")

    with anyio.move_on_after(timeout_s + 1):
        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(one, ref)
    return results

