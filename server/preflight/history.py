"""The pre-flight's memory: a deploy that failed before with the very same image is a warning.

Before a deploy, the incidents recorded for this stack are read (a filtered scroll: no model, no
search) and every one that ended badly (rolled back, unresolved) and names an image digest the
stack is about to run again becomes a ``failed-before`` warning naming the incident. The memory
is advice: when it is unavailable, busy or slow the pre-flight goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from server.models import Finding
from server.stackmodel import LoadedStack

if TYPE_CHECKING:
    from server.engine import Engine
    from server.memory.service import Memory

log = logging.getLogger("docker_stack_mcp.preflight")

MEMORY_WAIT_S = 2.0
"""The longest the pre-flight waits for the memory (another process may hold the shard)."""


def digest_key(value: str) -> str:
    """'repo@sha256:abc' and 'sha256:abc' compare equal: the content digest alone."""
    return value.rsplit("@", 1)[-1].strip()


async def image_digests(engine: Engine | None, stack: LoadedStack, services: Iterable[str] | None = None,
                        ) -> dict[str, set[str]]:
    """Per service, what identifies the image it would run: a digest pinned in its reference,
    and, when the image is on the host, its registry digests and its id."""
    out: dict[str, set[str]] = {}
    for name in sorted(services if services is not None else stack.services):
        ref = str((stack.services.get(name) or {}).get("image") or "")
        if not ref:
            continue
        keys = {digest_key(ref)} if "@sha256:" in ref else set()
        if engine is not None:
            try:
                attrs = await engine.image_attrs(ref)
            except Exception:  # an engine hiccup must not fail the pre-flight
                attrs = None
            if attrs:
                keys |= {digest_key(str(d)) for d in attrs.get("RepoDigests") or []}
                if attrs.get("Id"):
                    keys.add(str(attrs["Id"]))
        if keys:
            out[name] = keys
    return out


async def failed_before(stack: LoadedStack, engine: Engine | None,
                        memory: Callable[[], Memory] | None) -> list[Finding]:
    """``failed-before`` warnings for this stack; [] when there is no memory or it does not answer."""
    if memory is None:
        return []
    digests = await image_digests(engine, stack)
    if not digests:
        return []
    wanted = {key: service for service, keys in digests.items() for key in keys}

    def look() -> list[dict[str, Any]]:
        return memory().failed_incidents_with(stack.name, set(wanted))

    try:
        with anyio.move_on_after(MEMORY_WAIT_S):
            incidents = await anyio.to_thread.run_sync(look, abandon_on_cancel=True)
            return [_warning(stack, incident, wanted) for incident in incidents]
        log.info("pre-flight: the memory did not answer within %.0f s; past failures not checked", MEMORY_WAIT_S)
    except Exception as exc:  # the memory is advice; the pre-flight never fails for it
        log.info("pre-flight: past failures not checked (%s)", exc)
    return []


def _warning(stack: LoadedStack, incident: dict[str, Any], wanted: dict[str, str]) -> Finding:
    services = sorted({wanted[key] for key in incident["digests"] if key in wanted})
    service = services[0] if len(services) == 1 else None
    images = ", ".join(f"{s}: {(stack.services.get(s) or {}).get('image')}" for s in services)
    return Finding(
        rule="failed-before", severity="warning", category="history", service=service,
        message=f"the same image failed before on this stack: incident {incident['incident_id']} "
                f"({incident['title']!r}, {incident['outcome']}, {incident['time']}) ran {images}",
        line=stack.line_of(service) if service else None,
        fix="read the incident (search_past_incidents with its title) and deploy a fixed image or "
            "configuration; redeploying the same image is likely to fail the same way",
        evidence=[f"{incident['incident_id']}: {', '.join(sorted(incident['digests']))[:200]}"],
    )


async def failed_images(engine: Engine, stack: LoadedStack, services: Iterable[str]) -> dict[str, str]:
    """For the incident of a failed deploy: the digest of each changed service's image (its
    registry digest, else its id), which the next pre-flight compares with what it would run."""
    from server.engine import image_attrs_digest

    out: dict[str, str] = {}
    for name in sorted(services):
        ref = str((stack.services.get(name) or {}).get("image") or "")
        try:
            digest = await image_attrs_digest(engine, ref) if ref else None
        except Exception:  # recording the incident matters more than its digests
            digest = None
        if digest:
            out[name] = digest_key(digest)
    return out
