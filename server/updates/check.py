"""check_updates: what newer images exist for a stack's services, asked of their registries
without pulling anything.

Per image: one HEAD of the tag's manifest (server/registry.py; a HEAD does not count as a pull)
gives the registry's digest for the tag, which is compared with EVERY digest the local image
carries for that repository (RepoDigests). The registry answers a multi-arch tag with its index
digest, and a pull records that same index digest, so a multi-arch image is current when it is
(comparing with the platform manifest's digest would call it outdated forever). Newer tags come
from the repository's tag list, only of the same shape (server/updates/versions.py). A registry
that refuses, is silent or rate-limits us is a note on that image, never a failed call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import anyio
from pydantic import Field

from server.deploy.tags import repo_digests
from server.models import Frozen
from server.registry import RegistryView, is_loopback, list_tags, parse_reference, read_image_config
from server.updates import versions

if TYPE_CHECKING:
    from server.engine import Engine
    from server.runtime import Runtime
    from server.stackmodel import LoadedStack

TIMEOUT_S = 6.0
PARALLEL = 4
"""Registries asked at once (a stack of 12 images does not open 12 connections to one registry)."""
_PIN_PREFIX = "dsm-pin/"
FALLBACKS = 3
"""Tags tried per level when the newest failed on the stack before (one manifest HEAD each)."""
MEMORY_WAIT_S = 2.0
FailedLookup = Callable[[list[str], set[str]], Awaitable[dict[str, str]]]
"""``(stack/service entries, digests) -> {digest: why}``: the digests that failed a deployment of
those stacks before (the incident memory)."""


class NewerTag(Frozen):
    tag: str
    level: versions.Level
    created: str | None = Field(default=None, description="Image creation time (asked with min_age_days).")
    failed_before: str | None = Field(default=None, description="This version's digest failed a deployment of "
                                      "the stack before (the incident); the next newer one of the level follows.")


class ImageUpdate(Frozen):
    image: str
    services: list[str] = Field(description="stack/service entries running this image reference.")
    status: Literal["current", "digest_moved", "unknown"] = Field(
        description="digest_moved: the tag now points at other content (update_stack to=digest pulls it).")
    local_digest: str | None = None
    registry_digest: str | None = None
    newer: list[NewerTag] = Field(default_factory=list, description="Newest tag per level, same shape; "
                                  "update_stack to=patch|minor|major takes them.")
    note: str | None = Field(default=None, description="Registry error, rate limit, age filter: this image only.")


class UpdatesReport(Frozen):
    images: list[ImageUpdate] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="Stacks that could not be read.")


def candidates(stack: LoadedStack) -> dict[str, list[str]]:
    """image reference -> services, for the images a registry can tell about (not built here, not
    pinned by digest, not our rollback pins)."""
    out: dict[str, list[str]] = {}
    for name, body in sorted(stack.services.items()):
        ref = str((body or {}).get("image") or "")
        if not ref or (body or {}).get("build") or "@" in ref or ref.startswith(_PIN_PREFIX):
            continue
        out.setdefault(ref, []).append(name)
    return out


async def check_stacks(runtime: Runtime, stack: str | None, *, min_age_days: float | None = None
                       ) -> UpdatesReport:
    """check_updates for one stack, or every stack under the root."""
    from server.stackload import StackRenderFailed, load_stack
    from server.stacks import discover

    names = [stack] if stack else [loc.directory.name for loc in discover(runtime.settings)[0]]
    refs: dict[str, list[str]] = {}
    problems: list[str] = []
    for name in names:
        try:
            loaded = await load_stack(runtime.settings, runtime.compose(), path=name, dsm_override=False)
        except StackRenderFailed as exc:
            if stack:
                raise
            problems.append(f"{name}: not rendered ({exc.what})")
            continue
        for ref, services in candidates(loaded).items():
            refs.setdefault(ref, []).extend(f"{loaded.name}/{s}" for s in services)
    images = await check_refs(runtime.engine(), refs, min_age_days=min_age_days, failed=memory_lookup(runtime))
    return UpdatesReport(images=images, problems=problems)


def memory_lookup(runtime: Runtime) -> FailedLookup:
    """The failed deployments the memory recorded, per stack (as update_stack's plan reads them)."""
    import logging

    async def lookup(services: list[str], digests: set[str]) -> dict[str, str]:
        stacks = sorted({s.split("/", 1)[0] for s in services})

        def look() -> dict[str, str]:
            out: dict[str, str] = {}
            for stack in stacks:
                for incident in runtime.memory().failed_incidents_with(stack, digests):
                    for digest in incident.get("digests") or []:
                        out.setdefault(str(digest).rsplit("@", 1)[-1],
                                       f"incident {incident['incident_id']} ({incident.get('outcome')}) on {stack}")
            return out

        try:
            with anyio.move_on_after(MEMORY_WAIT_S):
                return await anyio.to_thread.run_sync(look, abandon_on_cancel=True)
        except Exception as exc:  # the memory is advice: a check never fails for it
            logging.getLogger("docker_stack_mcp.updates").info("check_updates: past failures not read (%s)", exc)
        return {}

    return lookup


async def check_refs(engine: Engine, refs: dict[str, list[str]], *, min_age_days: float | None = None,
                     timeout_s: float = TIMEOUT_S, failed: FailedLookup | None = None) -> list[ImageUpdate]:
    """Each reference against its registry, in parallel; one answer per reference, always."""
    if not refs:
        return []
    view = RegistryView.from_info(await engine.info())
    limiter = anyio.CapacityLimiter(PARALLEL)
    results: dict[str, ImageUpdate] = {}
    limited: dict[str, str] = {}
    """registry -> why: a registry that rate-limited us is not asked again in this call."""

    async def one(ref: str) -> None:
        registry = parse_reference(ref).registry
        async with limiter:
            if registry in limited:
                results[ref] = ImageUpdate(image=ref, services=refs[ref], status="unknown",
                                           note=f"not asked: {limited[registry]}; call again later")
                return
            try:
                results[ref] = await _check_one(engine, view, ref, refs[ref], min_age_days, timeout_s, failed)
            except Exception as exc:  # one image's trouble is that image's note
                results[ref] = ImageUpdate(image=ref, services=refs[ref], status="unknown",
                                           note=f"not checked: {type(exc).__name__}: {str(exc)[:160]}")
                return
            note = results[ref].note or ""
            if "rate limited" in note:
                limited[registry] = f"registry {registry} rate-limited an earlier request"

    async with anyio.create_task_group() as tg:
        for ref in refs:
            tg.start_soon(one, ref)
    return [results[ref] for ref in sorted(refs)]


async def _check_one(engine: Engine, view: RegistryView, ref: str, services: list[str],
                     min_age_days: float | None, timeout_s: float, failed: FailedLookup | None = None
                     ) -> ImageUpdate:
    notes: list[str] = []
    attrs = await engine.image_attrs(ref)
    local = repo_digests(ref, attrs)
    direct = engine.endpoint().local or not is_loopback(ref)
    answer = await engine.registry_digest(ref, view, timeout_s, direct=direct)
    if answer.rate_limit:
        notes.append(answer.rate_limit)
    if not answer.digest and attrs is not None and not local and answer.state == "unreachable":
        # Built or loaded on this engine, never pulled from (or pushed to) its registry: nothing to ask.
        notes.append(f"a local image, never pulled from {parse_reference(ref).registry} (unreachable: "
                     f"{answer.detail[:80]})")
    elif not answer.digest:
        notes.append(f"digest not compared: {answer.detail}")
    elif not local:
        notes.append("no local image pulled from this registry: nothing to compare its digest with")
    if answer.digest and local:
        status: Literal["current", "digest_moved", "unknown"] = (
            "current" if answer.digest in local else "digest_moved")
    else:
        status = "unknown"
    newer: list[NewerTag] = []
    tag = parse_reference(ref).reference
    if not direct:
        notes.append("newer tags not listed: a remote engine's loopback registry is reachable only by the engine")
    elif versions.parse(tag) is None:
        notes.append(f"tag {tag!r} is not a version: no newer tags to compare")
    elif answer.state != "unreachable" or answer.digest:
        newer, more = await _newer_tags(engine, view, ref, tag, min_age_days, timeout_s,
                                        _Failed(engine, view, ref, services, failed, timeout_s) if failed else None)
        notes.extend(more)
    if failed and status == "digest_moved" and answer.digest:
        why = (await failed(services, {answer.digest})).get(answer.digest)
        if why:
            notes.append(f"the registry's digest for {tag} failed a deployment before ({why})")
    return ImageUpdate(image=ref, services=services, status=status, local_digest=local[0] if local else None,
                       registry_digest=answer.digest, newer=newer, note="; ".join(notes) or None)


class _Failed:
    """Which newer tags failed a deployment of the stack before: each tag's registry digest (a
    manifest HEAD) against the lookup."""

    def __init__(self, engine: Engine, view: RegistryView, ref: str, services: list[str], lookup: FailedLookup,
                 timeout_s: float) -> None:
        self.engine, self.view, self.ref, self.services = engine, view, ref, services
        self.lookup, self.timeout_s = lookup, timeout_s

    async def why(self, tag: str) -> str | None:
        answer = await self.engine.registry_digest(with_tag(self.ref, tag), self.view, self.timeout_s)
        if not answer.digest:
            return None
        return (await self.lookup(self.services, {answer.digest})).get(answer.digest)


async def _offers(found: list[tuple[str, versions.Level]], failed: _Failed | None) -> list[NewerTag]:
    """The newest tag per level; one that failed on the stack before stays, flagged, and the next
    newest of its level that did not follows it (up to FALLBACKS tried)."""
    by_level: dict[versions.Level, list[str]] = {}
    for found_tag, lvl in found:  # newest first
        by_level.setdefault(lvl, []).append(found_tag)
    offers: list[NewerTag] = []
    for lvl in versions.LEVELS:
        for index, found_tag in enumerate(by_level.get(lvl, [])[:FALLBACKS] if failed else by_level.get(lvl, [])[:1]):
            why = await failed.why(found_tag) if failed else None
            offers.append(NewerTag(tag=found_tag, level=lvl, failed_before=why))
            if why is None or index == FALLBACKS - 1:
                break
    return offers


async def _newer_tags(engine: Engine, view: RegistryView, ref: str, tag: str, min_age_days: float | None,
                      timeout_s: float, failed: _Failed | None = None) -> tuple[list[NewerTag], list[str]]:
    credentials = getattr(engine, "_credentials", None)
    listed = await anyio.to_thread.run_sync(
        lambda: list_tags(ref, view, timeout_s=timeout_s, credentials=credentials), abandon_on_cancel=True)
    notes = [listed.rate_limit] if listed.rate_limit else []
    if listed.state != "present":
        return [], [*notes, f"tags not listed: {listed.detail}"]
    offers = await _offers(versions.newer(tag, listed.tags), failed)
    if min_age_days is None or not offers:
        return offers, notes
    kept: list[NewerTag] = []
    for offer in offers:
        other = with_tag(ref, offer.tag)
        config = await anyio.to_thread.run_sync(
            lambda: read_image_config(other, view, timeout_s=timeout_s, credentials=credentials),  # noqa: B023
            abandon_on_cancel=True)
        age = _age_days(config.created)
        if age is None:
            notes.append(f"{offer.tag}: age unknown (no creation time in its config), offered anyway")
            kept.append(offer)
        elif age < min_age_days:
            notes.append(f"{offer.tag}: {age:.1f} days old, under min_age_days {min_age_days:g}: not offered")
        else:
            kept.append(offer.model_copy(update={"created": config.created}))
    return kept, notes


def with_tag(ref: str, tag: str) -> str:
    """``ref`` with another tag (registry and repository as written)."""
    name = ref.split("@", 1)[0]
    colon = name.rfind(":")
    base = name[:colon] if colon > name.rfind("/") else name
    return f"{base}:{tag}"


def _age_days(created: str | None) -> float | None:
    if not created:
        return None
    try:
        text = created.strip().replace("Z", "+00:00")
        if "." in text:  # Go writes nanoseconds; Python reads up to microseconds
            head, _, rest = text.partition(".")
            frac = "".join(ch for ch in rest if ch.isdigit())
            zone = rest[len(frac):]
            text = f"{head}.{frac[:6]}{zone}"
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when.year < 1990:  # reproducible builds stamp 1970: no real age
        return None
    return (dt.datetime.now(dt.UTC) - when).total_seconds() / 86400

