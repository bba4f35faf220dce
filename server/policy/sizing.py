"""Proposed limits for services that have none: from observed usage, else by image family.

Upstream stacks (Supabase's among them) ship without limits, so a bare "add limits" finding
leaves the operator guessing. A proposal is a YAML patch to merge into the compose file (or an
override file). Observed usage wins: the limit is twice what the service uses now, the
reservation what it uses now. Without usage, conservative defaults by image family apply. Either
way a limit never goes below what the service is known to need: its family's documented floor,
the JVM heap it configures, or the memory it reserves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from server.policy.families import UNKNOWN, family_of
from server.policy.shape import memory_reservation

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Proposal:
    memory_bytes: int
    reservation_bytes: int
    cpus: float
    basis: str


_JAVA_HEAP = re.compile(r"-Xmx(\d+)([kKmMgG]?)")
_JAVA_VARS = ("ES_JAVA_OPTS", "OPENSEARCH_JAVA_OPTS", "JAVA_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JVM_OPTS")
_JVM_OVERHEAD = 1.5
"""A JVM needs its heap plus metaspace, threads and direct buffers: about half again."""


def known_need(service: dict[str, Any], family_floor: int) -> tuple[int, str]:
    """The least memory ``service`` is known to need, and why: a JVM heap it sets, the memory it
    reserves, or its image family's documented floor."""
    need, why = family_floor, "its image family's floor" if family_floor else ""
    env = service.get("environment") or {}
    for var in _JAVA_VARS:
        match = _JAVA_HEAP.search(str(env.get(var) or "")) if isinstance(env, dict) else None
        if match:
            unit = {"k": 1024, "m": MIB, "g": GIB, "": 1}[match.group(2).lower()]
            heap = int(int(match.group(1)) * unit * _JVM_OVERHEAD)
            if heap > need:
                need, why = heap, f"{var} sets a {_human(int(match.group(1)) * unit)} JVM heap"
    reserved = memory_reservation(service)
    if reserved and reserved > need:
        need, why = reserved, f"it reserves {_human(reserved)}"
    return need, why


def propose(
    image: str | None, observed_bytes: int | None, replicas: int = 1, *, service: dict[str, Any] | None = None,
    host_cpus: int | None = None,
) -> Proposal:
    """Limits for one container of a service (``observed_bytes`` is the sum over its replicas).

    The family is read from the image's repository name (:mod:`server.policy.families`). The
    limit is twice the observed usage, else the family's default, and never below what the
    service is known to need (:func:`known_need`). CPUs never exceed the host's.
    """
    fam = family_of(image)
    family = "unknown image family" if fam is UNKNOWN else f"image family '{fam.name}'"
    need, need_why = known_need(service or {}, fam.floor)
    cpus = min(fam.cpus, float(host_cpus)) if host_cpus else fam.cpus
    if observed_bytes:
        per_container = observed_bytes / max(replicas, 1)
        base = max(per_container * 2, 64 * MIB)
        reservation = _nice(max(per_container, 32 * MIB), step=32 * MIB)
        basis = f"twice the {_human(int(per_container))} in use now"
    else:
        base = fam.memory
        reservation = 0
        basis = f"conservative default for {family}"
    limit = _nice(max(base, need))
    if need > base:
        basis += f", raised to what it is known to need ({need_why})"
    if not observed_bytes:
        reservation = limit // 2
    return Proposal(limit, min(reservation, limit), cpus, basis)


def _nice(value: float, step: int = 64 * MIB) -> int:
    if value > GIB:
        step = 256 * MIB
    return int(math.ceil(value / step) * step)


def _human(n: int) -> str:
    if n >= GIB and n % (GIB // 4) == 0:
        return f"{n / GIB:g}g"
    if n >= GIB:
        return f"{n / GIB:.1f}g"
    return f"{max(n // MIB, 1)}m"


def compose_size(n: int) -> str:
    """A Compose memory value: '512m', '1g', '1536m'."""
    if n % GIB == 0:
        return f"{n // GIB}g"
    return f"{max(n // MIB, 1)}m"


def limits_patch(service: str, *, memory: int | None, reservation: int | None, cpus: float | None) -> str:
    """A YAML patch for ``services.<service>.deploy.resources`` (written out by hand: it is hot)."""
    lines = ["services:", f"  {service}:", "    deploy:", "      resources:"]
    if cpus is not None or memory is not None:
        lines.append("        limits:")
        if cpus is not None:
            lines.append(f'          cpus: "{cpus:g}"')
        if memory is not None:
            lines.append(f"          memory: {compose_size(memory)}")
    if reservation is not None:
        lines += ["        reservations:", f"          memory: {compose_size(reservation)}"]
    return "\n".join(lines) + "\n"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.0f} MiB"
