"""What Compose accepts but the engine refuses when it creates the container.

``docker compose config`` validates against the Compose schema, not against the engine: a
``container_name`` with a space, a memory reservation above the limit or ports published
from a service that borrows another's network namespace all render fine and fail at ``up``,
after the earlier services were already replaced. Two rules:

- ``engine-refuses`` (error, no host needed): cross-field conflicts the engine refuses on every
  version.
- ``engine-version-unsupported`` (error, with check_host): keys that need a newer Engine API
  than the negotiated one (``healthcheck.start_interval`` needs API 1.44, Engine 25).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.shape import memory_reservation
from server.stackview import memory_limit, parse_bytes

# The engine's own pattern (daemon/names): at least two characters, first one alphanumeric.
_CONTAINER_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# distribution/reference, simplified: lower-case path components, optional registry host[:port],
# a tag of word characters, an optional digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])"
_IMAGE_REF = re.compile(
    rf"^(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# Keys the engine refuses next to network_mode: service:x / container:x (runconfig errors).
_SHARED_NETNS_CONFLICTS = {
    "ports": "port publishing",
    "expose": "port exposing",
    "hostname": "hostname",
    "dns": "dns",
    "extra_hosts": "custom host-to-IP mapping",
    "mac_address": "mac-address",
    "links": "links",
}


def valid_image_reference(ref: str) -> bool:
    return len(ref) <= 255 and bool(_IMAGE_REF.match(ref))


def _refusal(ctx: LintContext, name: str, key: str, message: str, fix: str, evidence: str = "") -> Finding:
    return finding(
        "engine-refuses",
        f"{message}: Compose accepts it, the engine refuses to create the container, so `up` fails midway",
        service=name,
        line=ctx.stack.line_of(name, key) or ctx.stack.line_of(name),
        evidence=[evidence] if evidence else [],
        fix=fix,
    )


def engine_refuses(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        cname = svc.get("container_name")
        if cname is not None and not _CONTAINER_NAME.match(str(cname)):
            yield _refusal(
                ctx, name, "container_name", f"container_name {str(cname)!r} is not a name the engine accepts",
                "use letters, digits, '_', '.' and '-', starting with a letter or digit, at least two characters "
                "(or drop container_name and let Compose name it)",
            )
        image = svc.get("image")
        if image and not valid_image_reference(str(image)):
            yield _refusal(
                ctx, name, "image", f"image {str(image)!r} is not a valid reference (empty tag, upper case, spaces?)",
                "write repository[:tag][@digest] in lower case, e.g. postgres:16.4",
            )
        mode = str(svc.get("network_mode") or "")
        if mode.startswith(("service:", "container:")):
            for key, what in _SHARED_NETNS_CONFLICTS.items():
                if svc.get(key):
                    yield _refusal(
                        ctx, name, key, f"{key} with network_mode {mode}: conflicting options ({what} and the "
                        "container's network mode)",
                        f"set {key} on the service that owns the network namespace ({mode.split(':', 1)[1]}), "
                        f"not here",
                    )
        yield from _memory(ctx, name, svc)


def _memory(ctx: LintContext, name: str, svc: dict[str, Any]) -> Iterator[Finding]:
    limit = memory_limit(svc)
    reservation = memory_reservation(svc)
    if limit and reservation and reservation > limit:
        yield _refusal(
            ctx, name, "deploy", f"memory reservation {reservation} bytes is above the memory limit {limit} bytes",
            "make the reservation at most the limit (reservations: {memory: ...} <= limits: {memory: ...})",
        )
    swap_raw = svc.get("memswap_limit")
    swap = None if swap_raw in (None, "", -1, "-1", 0, "0") else parse_bytes(swap_raw)
    if limit and swap is not None and 0 < swap < limit:
        yield _refusal(
            ctx, name, "memswap_limit", f"memswap_limit {swap} bytes is below the memory limit {limit} bytes (it "
            "counts memory plus swap)",
            "set memswap_limit at least as high as the memory limit, or -1 for unlimited swap",
        )


def _api(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


# (what, minimum API version, Engine release that brought it, reader over a rendered service)
def _start_interval(svc: dict[str, Any]) -> bool:
    hc = svc.get("healthcheck")
    return isinstance(hc, dict) and bool(hc.get("start_interval")) and not hc.get("disable")


def _subpath(svc: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and (v.get("volume") or {}).get("subpath") for v in svc.get("volumes") or [])


def _recursive(svc: dict[str, Any]) -> bool:
    return any(
        isinstance(v, dict) and (v.get("bind") or {}).get("recursive") not in (None, "", "enabled")
        for v in svc.get("volumes") or []
    )


def _gw_priority(svc: dict[str, Any]) -> bool:
    nets = svc.get("networks")
    return isinstance(nets, dict) and any(isinstance(n, dict) and n.get("gw_priority") for n in nets.values())


def _per_network_mac(svc: dict[str, Any]) -> bool:
    nets = svc.get("networks")
    return isinstance(nets, dict) and any(isinstance(n, dict) and n.get("mac_address") for n in nets.values())


_VERSIONED: list[tuple[str, str, str, str, Any]] = [
    ("healthcheck.start_interval", "healthcheck", "1.44", "25.0", _start_interval),
    ("bind.recursive (read-only recursion)", "volumes", "1.44", "25.0", _recursive),
    ("networks.<name>.mac_address", "networks", "1.44", "25.0", _per_network_mac),
    ("volume.subpath", "volumes", "1.45", "26.0", _subpath),
    ("networks.<name>.gw_priority", "networks", "1.48", "28.0", _gw_priority),
]


def engine_version_unsupported(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is None or not ctx.facts.api_version:
        return
    have = _api(ctx.facts.api_version)
    for name, svc in sorted(ctx.services.items()):
        for what, key, needs, release, present in _VERSIONED:
            if have < _api(needs) and present(svc):
                yield finding(
                    "engine-version-unsupported",
                    f"{what} needs Engine API {needs} (Docker Engine {release}+); this engine speaks API "
                    f"{ctx.facts.api_version}: `up` fails when it creates the container",
                    service=name,
                    line=ctx.stack.line_of(name, key) or ctx.stack.line_of(name),
                    evidence=[f"negotiated API {ctx.facts.api_version} < {needs}"],
                    fix=f"remove {what} from the service, or upgrade Docker Engine to {release} or later",
                )


RULES = [engine_refuses, engine_version_unsupported]
